"""Golden embeddings: seeded weights + generated media -> stored numbers.

Catches silent drift in decoding, colour conversion, resizing or the model path.
Regenerate deliberately with VIDBATCH_REGEN_GOLDEN=1 and explain why in the commit.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from vidbatch.config import LimitsConfig, SamplingConfig, StorageConfig
from vidbatch.stages import DecodeStage, ModelStage

GOLDEN = Path(__file__).parent / "golden" / "resnet18_seed1234_h264.json"
DIMS = 16


def embed_without_ray(video_path: Path, weights_path: Path) -> list[dict]:
    decode = DecodeStage(
        sampling=SamplingConfig(mode="fps", fps=1.0, clip_len_s=2.0),
        limits=LimitsConfig(),
        storage=StorageConfig(),
        resize_size=256,
        crop_size=224,
    )
    decoded = pa.concat_tables(decode(pa.table({"video_id": ["v"], "uri": [str(video_path)]})))
    model = ModelStage(
        arch="resnet18",
        state_dict_ref=_state_dict_bytes(weights_path),
        resize_size=256,
        crop_size=224,
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        precision="fp32",
        batch_frames=8,
        want_probs=True,
    )
    out = model(decoded).to_pylist()
    return [
        {"clip_index": r["clip_index"], "frame_pts_s": r["frame_pts_s"], "embedding": r["embedding"][:DIMS]}
        for r in out
        if r["kind"] == "clip"
    ]


def _state_dict_bytes(path: Path) -> bytes:
    from vidbatch.config import ModelConfig
    from vidbatch.model import resolve_weights

    return resolve_weights(ModelConfig(arch="resnet18", weights=str(path)), StorageConfig()).state_dict_bytes


def test_golden_embeddings(library, seeded_weights):
    got = embed_without_ray(library["h264"].path, seeded_weights)
    if os.environ.get("VIDBATCH_REGEN_GOLDEN"):
        GOLDEN.write_text(json.dumps(got, indent=1))
        pytest.skip("golden file regenerated")
    want = json.loads(GOLDEN.read_text())
    assert [c["clip_index"] for c in got] == [c["clip_index"] for c in want]
    assert [c["frame_pts_s"] for c in got] == [c["frame_pts_s"] for c in want]
    np.testing.assert_allclose(
        np.array([c["embedding"] for c in got]), np.array([c["embedding"] for c in want]), atol=2e-4, rtol=0
    )
