"""A batch's clips as whole arrays on the driver: their vectors as matrix rows, their top-k labels.

Without a Python object per value: one driver takes every clip of a cluster's run.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vidbatch.schema import LABELS


def vector_rows(lists: pa.ChunkedArray) -> np.ndarray:
    """Lists of one length as the rows of a matrix, without Python objects per value."""
    rows = lists.combine_chunks()
    lengths = pc.list_value_length(rows).to_numpy(zero_copy_only=False)
    if rows.null_count or len(set(lengths.tolist())) > 1:
        lengths_seen = sorted(set(lengths.tolist()))
        raise ValueError(f"ok clips came with vectors of lengths {lengths_seen} ({rows.null_count} without one)")
    values = pc.list_flatten(rows).to_numpy(zero_copy_only=False)
    return values.reshape(len(rows), int(lengths[0]) if len(rows) else 0)


def top_order(probs: np.ndarray, k: int) -> np.ndarray:
    """The k most probable categories of each row, most probable first; ties in category order
    (what a stable argsort of all of them gives, which cost ~40 us a clip of 1000 classes)."""
    rows = np.atleast_2d(probs)
    classes = rows.shape[-1]
    if k <= 0:
        return np.zeros((*probs.shape[:-1], 0), np.intp)
    if k >= classes or not np.isfinite(rows).all():
        return np.argsort(-probs, axis=-1, kind="stable")[..., :k]
    kth = np.partition(rows, classes - k, axis=-1)[:, classes - k]  # each row's k-th largest value
    # The candidates, ties with the k-th value included: row by row, categories in order.
    row, category = np.nonzero(rows >= kth[:, None])
    ranked = np.lexsort((category, -rows[row, category], row))  # by row, then value down, then category
    row, category = row[ranked], category[ranked]
    top = category[np.searchsorted(row, np.arange(len(rows)))[:, None] + np.arange(k)]
    return top.reshape(*probs.shape[:-1], k)


def top_labels(probs: np.ndarray, valid: np.ndarray, categories: pa.Array, k: int) -> pa.Array:
    """Each clip's k most probable categories with their scores; null where a clip has no
    probabilities (`probs` holds a row for each valid clip only)."""
    order = top_order(probs, k)
    scores = np.take_along_axis(probs, order, axis=1).astype(np.float32)
    items = pa.StructArray.from_arrays(
        [categories.take(pa.array(order.ravel())), pa.array(scores.ravel(), pa.float32())],
        names=["label", "score"],
    )
    offsets = np.concatenate([[0], np.cumsum(np.where(valid, order.shape[1], 0))]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), items, mask=pa.array(~valid)).cast(LABELS)
