"""The two Ray Data stages, as callable classes: state in `__init__`, work in `__call__`.

They do not know they run in a pipeline (no resources, no concurrency here; see
vidbatch.pipeline). Both take and return pyarrow tables with the fixed schemas below,
so a block holding only failures has the same types as one holding only clips.

Rows between the stages are one per clip (`kind="clip"`, carrying the clip's frames
as raw uint8 bytes) plus exactly one per video (`kind="video"`, carrying its status
and probe facts); the driver joins them back together.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa

from vidbatch.config import LimitsConfig, Precision, SamplingConfig, StorageConfig
from vidbatch.video_task import EMBEDDED, DecodeSettings, decode_video

log = logging.getLogger(__name__)


class DecodeStage:
    """One manifest row in, its clips (frames as model-sized uint8) and one video row out."""

    def __init__(
        self,
        *,
        sampling: SamplingConfig,
        limits: LimitsConfig,
        storage: StorageConfig,
        resize_size: int,
        crop_size: int,
        threads: int = 0,
    ) -> None:
        from vidbatch.isolation import IsolatedDecoder
        from vidbatch.preprocess import PreprocessSpec

        self.settings = DecodeSettings(
            sampling=sampling,
            limits=limits,
            storage=storage,
            spec=PreprocessSpec(resize_size=resize_size, crop_size=crop_size),
            threads=threads,
        )
        self.sandbox = IsolatedDecoder(self.settings) if limits.isolate_decode else None

    def __call__(self, batch: pa.Table) -> Iterator[pa.Table]:
        for row in batch.to_pylist():
            if self.sandbox is not None:
                yield from self.sandbox.decode(row["video_id"], row["uri"])
            else:
                yield from decode_video(row["video_id"], row["uri"], self.settings)

    def __del__(self) -> None:
        if self.sandbox is not None:
            self.sandbox.close()


class ModelStage:
    """Clip rows get an embedding (L2-normalised mean of pooled features) and mean class probabilities."""

    def __init__(
        self,
        *,
        arch: str,
        state_dict_ref: Any,
        resize_size: int,
        crop_size: int,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
        precision: Precision,
        batch_frames: int,
        want_probs: bool,
    ) -> None:
        import ray

        from vidbatch.model import ResNetRunner
        from vidbatch.preprocess import PreprocessSpec

        # The weights come from the object store: resolved once on the driver, never fetched here.
        state_dict_bytes = ray.get(state_dict_ref) if isinstance(state_dict_ref, ray.ObjectRef) else state_dict_ref
        spec = PreprocessSpec(resize_size=resize_size, crop_size=crop_size, mean=mean, std=std)
        self.runner = ResNetRunner(
            arch=arch, state_dict_bytes=state_dict_bytes, preprocess=spec, precision=precision, batch_frames=batch_frames
        )
        self.crop = crop_size
        self.want_probs = want_probs

    def __call__(self, batch: pa.Table) -> pa.Table:
        is_clip = np.asarray(batch.column("kind").to_numpy(zero_copy_only=False) == "clip")
        passthrough = batch.drop_columns(["frames"])
        embeddings: list[list[float] | None] = [None] * batch.num_rows
        probs: list[list[float] | None] = [None] * batch.num_rows
        statuses = batch.column("status").to_pylist()
        messages = batch.column("error_message").to_pylist()
        error_types = batch.column("error_type").to_pylist()
        rows = np.flatnonzero(is_clip)
        if len(rows):
            try:
                clip_emb, clip_probs = self._embed(batch, rows)
                for j, row in enumerate(rows):
                    embeddings[row] = clip_emb[j].tolist()
                    probs[row] = clip_probs[j].tolist() if self.want_probs else None
            except Exception as exc:  # one bad batch must not end the run
                log.exception("model failed on a batch of %d clips", len(rows))
                for row in rows:
                    statuses[row] = "model_error"
                    error_types[row] = type(exc).__name__
                    messages[row] = f"the model failed on this video's frames: {str(exc)[:200]}"
        out = passthrough.set_column(passthrough.schema.get_field_index("status"), "status", pa.array(statuses, pa.string()))
        out = out.set_column(out.schema.get_field_index("error_type"), "error_type", pa.array(error_types, pa.string()))
        out = out.set_column(out.schema.get_field_index("error_message"), "error_message", pa.array(messages, pa.string()))
        out = out.append_column("embedding", pa.array(embeddings, pa.list_(pa.float32())))
        out = out.append_column("probs", pa.array(probs, pa.list_(pa.float32())))
        return out.cast(EMBEDDED)

    def _embed(self, batch: pa.Table, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        frames_col = batch.column("frames")
        counts = batch.column("num_frames").to_numpy(zero_copy_only=False)
        shape = (self.crop, self.crop, 3)
        chunks = [np.frombuffer(frames_col[int(r)].as_py(), np.uint8).reshape((-1, *shape)) for r in rows]
        frames = np.concatenate(chunks)
        pooled, class_probs = self.runner(frames)
        bounds = np.cumsum([0, *[int(counts[r]) for r in rows]])
        emb = np.stack([pooled[a:b].mean(axis=0) for a, b in zip(bounds[:-1], bounds[1:], strict=True)])
        emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        mean_probs = np.stack([class_probs[a:b].mean(axis=0) for a, b in zip(bounds[:-1], bounds[1:], strict=True)])
        return emb.astype(np.float32), mean_probs.astype(np.float32)
