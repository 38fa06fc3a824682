"""Golden references: seeded weights + generated media -> stored numbers.

Catches silent drift in decoding, colour conversion, resizing or the model path. Two
goldens, each with the tolerance its numbers can honestly hold across machines:

- frames: the per-channel mean level of every model-input frame (224x224 uint8). Decoding,
  colour conversion and resizing are integer pipelines, so a mean moves by far less than one
  level unless something changed; a channel swap, a +1 level shift, a wrong frame or a
  different crop moves it by one level or more.
- embeddings: fp32 ResNet numerics differ between CPU kernel paths (oneDNN/ATen on AVX2 vs
  AVX-512 reorder the sums): measured up to 2.2e-4 on these 16 components between the two.
  For scale, on the same frames: a channel swap moves them by 1.9e-3, the next frame by
  2.5e-3, a different clip by >= 4.5e-3. The tolerance sits between (1e-3), and a
  discrimination check asks each clip to be far nearer its own golden than any other's.

Regenerate deliberately with VIDBATCH_REGEN_GOLDEN=1 and explain why in the commit.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from stages_here import decode_and_embed

from vidbatch.config import StorageConfig

GOLDEN = Path(__file__).parent / "golden" / "resnet18_seed1234_h264.json"
DIMS = 16
FRAME_MEAN_ATOL = 0.5  # levels of 0..255
EMBEDDING_ATOL = 1e-3


def embed_without_ray(video_path: Path, weights_path: Path) -> list[dict]:
    decoded, embedded = decode_and_embed(video_path, _state_dict_bytes(weights_path))
    out = embedded.to_pylist()
    frames = {r["clip_index"]: _channel_means(r["frames"]) for r in decoded.to_pylist() if r["kind"] == "clip"}
    return [
        {
            "clip_index": r["clip_index"],
            "frame_pts_s": r["frame_pts_s"],
            "frame_channel_means": frames[r["clip_index"]],
            "embedding": r["embedding"][:DIMS],
        }
        for r in out
        if r["kind"] == "clip"
    ]


def _channel_means(raw: bytes) -> list[list[float]]:
    frames = np.frombuffer(raw, np.uint8).reshape(-1, 224, 224, 3).astype(np.float64)
    return [[round(float(m), 3) for m in frame.mean(axis=(0, 1))] for frame in frames]


def _state_dict_bytes(path: Path) -> bytes:
    from vidbatch.config import ModelConfig
    from vidbatch.model_weights import resolve_weights

    return resolve_weights(ModelConfig(arch="resnet18", weights=str(path)), StorageConfig()).state_dict_bytes


@pytest.fixture(scope="module")
def golden_pair(library, seeded_weights) -> tuple[list[dict], list[dict]]:
    got = embed_without_ray(library["h264"].path, seeded_weights)
    if os.environ.get("VIDBATCH_REGEN_GOLDEN"):
        GOLDEN.write_text(json.dumps(got, indent=1) + "\n")
        pytest.skip("golden file regenerated")
    return got, json.loads(GOLDEN.read_text())


def test_golden_sampled_times(golden_pair):
    got, want = golden_pair
    assert [c["clip_index"] for c in got] == [c["clip_index"] for c in want]
    assert [c["frame_pts_s"] for c in got] == [c["frame_pts_s"] for c in want]


def test_golden_model_input_frames(golden_pair):
    got, want = golden_pair
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(
            g["frame_channel_means"], w["frame_channel_means"], atol=FRAME_MEAN_ATOL, rtol=0, err_msg=f"clip {g['clip_index']}"
        )


def test_golden_embeddings(golden_pair):
    got, want = golden_pair
    got_e = np.array([c["embedding"] for c in got])
    want_e = np.array([c["embedding"] for c in want])
    np.testing.assert_allclose(got_e, want_e, atol=EMBEDDING_ATOL, rtol=0)
    # Each clip is much nearer its own golden than any other clip's golden.
    distances = np.linalg.norm(got_e[:, None, :] - want_e[None, :, :], axis=2)
    own = np.diag(distances)
    others = np.where(np.eye(len(own), dtype=bool), np.inf, distances).min(axis=1)
    assert np.all(own * 4 < others), f"own-golden distances {own} vs nearest other clip {others}"

