"""Weights and model outputs that would commit unusable embeddings are refused, not written as `ok`.

Weights that hold NaN/Inf or a zero first convolution are refused when resolved (before any
video is decoded); weights that load but overflow at run time give `model_error` rows per clip.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from stages_here import decode_and_embed

from vidbatch.config import ModelConfig, StorageConfig
from vidbatch.errors import JobError
from vidbatch.model_weights import resolve_weights
from vidbatch.stages import unusable_outputs


def _saved(tmp_path: Path, name: str, change) -> Path:
    torch.manual_seed(7)
    state = torchvision.models.resnet18(weights=None).state_dict()
    change(state)
    path = tmp_path / name
    torch.save(state, path)
    return path


def _resolve(path: Path):
    return resolve_weights(ModelConfig(arch="resnet18", weights=str(path)), StorageConfig())


def test_unusable_outputs_names_non_finite_and_zero_clips():
    # Rows as _embed gives them: normalised, or left as they were when their norm was below 1e-12.
    emb = np.array([[0.6, 0.8], [np.nan, 0.0], [0.0, 0.0], [1.0, 0.0], [2e-13, 1e-13]], np.float32)
    probs = np.array([[0.5, 0.5], [0.5, 0.5], [0.5, 0.5], [np.inf, 0.0], [0.5, 0.5]], np.float32)
    problems = unusable_outputs(emb, probs)
    assert problems[0] == ""
    assert "NaN or Inf" in problems[1] and "fp32" in problems[1]
    assert "all-zero (or vanishingly small) embedding" in problems[2]
    assert "NaN or Inf" in problems[3]
    assert "vanishingly small" in problems[4]  # subnormal weights: features of 1e-26, not quite zero
    # Without probabilities (task embed), only the embedding counts.
    assert unusable_outputs(emb, None)[3] == ""


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_weights_with_non_finite_values_are_refused_naming_the_tensor(tmp_path, value):
    def poison(state):
        state["layer2.0.conv1.weight"][0, 0, 0, 0] = value

    path = _saved(tmp_path, "poisoned.pt", poison)
    with pytest.raises(JobError, match=r"holds NaN or Inf values \(in 'layer2\.0\.conv1\.weight'\)") as caught:
        _resolve(path)
    assert repr(str(path)) in str(caught.value)


def test_weights_of_zeros_are_refused(tmp_path):
    path = _saved(tmp_path, "zeros.pt", lambda state: [t.zero_() for t in state.values() if t.is_floating_point()])
    with pytest.raises(JobError, match=r"'conv1\.weight' is all zeros, so every video would get the same embedding"):
        _resolve(path)


def test_sound_weights_still_resolve(tmp_path):
    assert not _resolve(_saved(tmp_path, "sound.pt", lambda state: None)).untrained


def _model_rows(weights: Path, video: Path, *, want_probs: bool) -> list[dict]:
    _, embedded = decode_and_embed(video, _resolve(weights).state_dict_bytes, want_probs=want_probs)
    return [row for row in embedded.to_pylist() if row["kind"] == "clip"]


def test_weights_that_overflow_at_run_time_give_model_error_clips(tmp_path, library):
    # Finite weights, so they load; a first convolution of 1e37 everywhere overflows float32 within a
    # few layers and the pooled features become Inf/NaN.
    def blow_up(state):
        state["conv1.weight"].fill_(1e37)

    rows = _model_rows(_saved(tmp_path, "overflow.pt", blow_up), library["h264"].path, want_probs=False)
    assert rows and {row["status"] for row in rows} == {"model_error"}
    assert {row["error_type"] for row in rows} == {"unusable_output"}
    assert all("NaN or Inf" in row["error_message"] for row in rows)


def test_a_classifier_whose_logits_overflow_float32_still_gives_probabilities(tmp_path, library):
    # fc weights of 1e38: finite, but float32 logits overflowed, so softmax gave NaN and a classifying
    # run's clips were model_error. The classifier runs in float64 (see ResNetRunner), where
    # logits of any finite float32 weights and features are finite: the scores are sound.
    def huge_fc(state):
        state["fc.weight"].fill_(1e38)

    weights = _saved(tmp_path, "huge-fc.pt", huge_fc)
    classifying = _model_rows(weights, library["h264"].path, want_probs=True)
    assert classifying and {row["status"] for row in classifying} == {"ok"}
    for row in classifying:
        probs = np.asarray(row["probs"], dtype=np.float64)
        assert np.isfinite(probs).all() and probs.sum() == pytest.approx(1.0, abs=1e-5)
    embedding_only = _model_rows(weights, library["h264"].path, want_probs=False)
    assert {row["status"] for row in embedding_only} == {"ok"}
    assert all(np.isfinite(row["embedding"]).all() for row in embedding_only)


def test_weights_so_small_the_features_vanish_give_model_error_clips(tmp_path, library):
    """conv1 of 1e-40 (subnormal): not zero, so it loads, but the features are ~1e-26. Before, such
    rows were ok with embeddings of norm 1e-13 (they could not be normalised)."""

    def vanishing(state):
        state["conv1.weight"].fill_(1e-40)

    rows = _model_rows(_saved(tmp_path, "vanishing.pt", vanishing), library["h264"].path, want_probs=False)
    assert rows and {row["status"] for row in rows} == {"model_error"}
    assert all("vanishingly small" in row["error_message"] for row in rows)
