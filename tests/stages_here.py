"""The decode and model stages called in this process, without Ray: as a plain script would.

Stages are plain callables; these tests feed one video through both with seeded weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from vidbatch.config import LimitsConfig, SamplingConfig, StorageConfig
from vidbatch.stages import DecodeStage, ModelStage


def decode_and_embed(video: Path, state_dict_bytes: bytes, *, want_probs: bool = True) -> tuple[pa.Table, pa.Table]:
    """(the decode stage's rows, the model stage's rows) for one video: fps 1, 2 s clips, resnet18 fp32."""
    decode = DecodeStage(
        sampling=SamplingConfig(mode="fps", fps=1.0, clip_len_s=2.0),
        limits=LimitsConfig(),
        storage=StorageConfig(),
        resize_size=256,
        crop_size=224,
    )
    decoded = pa.concat_tables(decode(pa.table({"video_id": ["v"], "uri": [str(video)]})))
    model = resnet18_stage(state_dict_bytes, batch_frames=8, want_probs=want_probs)
    return decoded, model(decoded)


def resnet18_stage(state_dict_bytes: bytes, *, batch_frames: int, want_probs: bool = True, **options: Any) -> ModelStage:
    """The model stage of a resnet18 state_dict, fp32, with the classic recipe (short side 256, crop 224)."""
    return ModelStage(
        arch="resnet18",
        state_dict_ref=state_dict_bytes,
        resize_size=256,
        crop_size=224,
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        precision="fp32",
        batch_frames=batch_frames,
        want_probs=want_probs,
        **options,
    )
