"""The driver's clip arrays (vidbatch.clip_arrays): pure functions, plain unit tests."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest


def test_the_top_labels_rule_is_a_stable_sort_of_every_class_ties_included():
    from vidbatch.clip_arrays import top_order

    rng = np.random.default_rng(9)
    for trial in range(500):
        n, classes = int(rng.integers(1, 20)), int(rng.integers(1, 40))
        k = int(rng.integers(0, classes + 2))
        # few distinct values: many ties, at the k-th value too
        probs = rng.integers(0, 4, size=(n, classes)).astype(np.float32) if trial % 2 else rng.random((n, classes), np.float32)
        if trial % 5 == 0:
            probs[0, -1] = np.nan
        expected = np.argsort(-probs, axis=-1, kind="stable")[..., :k]
        np.testing.assert_array_equal(top_order(probs, k), expected)
        np.testing.assert_array_equal(top_order(probs[0], k), expected[0])


def test_clips_whose_vectors_differ_in_length_are_refused_with_their_lengths():
    from vidbatch.clip_arrays import vector_rows

    with pytest.raises(ValueError, match=r"lengths \[2, 3\] \(0 without one\)"):
        vector_rows(pa.chunked_array([pa.array([[1.0, 2.0], [1.0, 2.0, 3.0]], pa.list_(pa.float32()))]))
    np.testing.assert_array_equal(vector_rows(pa.chunked_array([[[1.0, 2.0]], [[3.0, 4.0]]])), [[1.0, 2.0], [3.0, 4.0]])
