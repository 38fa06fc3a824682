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

from vidbatch.config import CompileMode, LimitsConfig, Precision, ResizeMethod, SamplingConfig, StorageConfig
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
        resize: ResizeMethod = "exact",
        threads: int = 0,
        allowed_roots: tuple[str, ...] = (),
    ) -> None:
        from vidbatch.isolation import IsolatedDecoder
        from vidbatch.preprocess import PreprocessSpec

        self.settings = DecodeSettings(
            sampling=sampling,
            limits=limits,
            storage=storage,
            spec=PreprocessSpec(resize_size=resize_size, crop_size=crop_size, resize=resize),
            threads=threads,
            allowed_roots=allowed_roots,
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
    """Clip rows get an embedding (L2-normalised mean of pooled features) and mean class probabilities.

    `threads`: torch's CPU threads in this actor (None: what Ray set, i.e. the actor's CPUs).
    `compile`: when the backbone is torch.compiled (resources.model_compile; vidbatch.model_compile).
    `device`: where the model runs ("cpu", "cuda"); None: a GPU when torch sees one (see pipeline._model_device).
    """

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
        threads: int | None = None,
        compile: CompileMode = "auto",
        device: str | None = None,
    ) -> None:
        import ray

        from vidbatch.model import ResNetRunner
        from vidbatch.preprocess import PreprocessSpec

        _log_to_stderr("vidbatch.model")
        # The weights come from the object store: resolved once on the driver, never fetched here.
        state_dict_bytes = ray.get(state_dict_ref) if isinstance(state_dict_ref, ray.ObjectRef) else state_dict_ref
        spec = PreprocessSpec(resize_size=resize_size, crop_size=crop_size, mean=mean, std=std)
        self.runner = ResNetRunner(
            arch=arch,
            state_dict_bytes=state_dict_bytes,
            preprocess=spec,
            precision=precision,
            batch_frames=batch_frames,
            compile=compile,
            threads=threads,
            device=device,
        )
        note = gpus_left_unused(_gpus_given_by_ray(ray), self.runner.device)
        if note:
            log.warning("%s", note)
        self.crop = crop_size
        self.want_probs = want_probs
        self.precision = str(self.runner.dtype).removeprefix("torch.")  # what `auto` became on this host

    def __call__(self, batch: pa.Table) -> pa.Table:
        is_clip = np.asarray(batch.column("kind").to_numpy(zero_copy_only=False) == "clip")
        passthrough = batch.drop_columns(["frames"])
        n = batch.num_rows
        embeddings = probs = pa.nulls(n, pa.list_(pa.float32()))
        rows = np.flatnonzero(is_clip)
        failures: dict[int, tuple[str, str]] = {}  # row -> (error_type, message)
        if len(rows):
            try:
                clip_emb, clip_probs = self._embed(batch, rows)
                embeddings = _list_rows(clip_emb, rows, n)
                if self.want_probs:
                    probs = _list_rows(clip_probs, rows, n)
                for j, problem in enumerate(unusable_outputs(clip_emb, clip_probs if self.want_probs else None)):
                    if problem:
                        failures[int(rows[j])] = ("unusable_output", problem)
            except Exception as exc:  # one bad batch must not end the run
                log.exception("model failed on a batch of %d clips", len(rows))
                message = f"the model failed on this video's frames: {str(exc)[:200]}"
                failures = {int(row): (type(exc).__name__, message) for row in rows}
        if failures:
            statuses = batch.column("status").to_pylist()
            error_types = batch.column("error_type").to_pylist()
            messages = batch.column("error_message").to_pylist()
            for row, (error_type, message) in failures.items():
                statuses[row], error_types[row], messages[row] = "model_error", error_type, message
            passthrough = _set(passthrough, "status", pa.array(statuses, pa.string()))
            passthrough = _set(passthrough, "error_type", pa.array(error_types, pa.string()))
            passthrough = _set(passthrough, "error_message", pa.array(messages, pa.string()))
        precision = pa.array([self.precision if ok else None for ok in is_clip], pa.string())
        out = passthrough.append_column("embedding", embeddings).append_column("probs", probs)
        return out.append_column("precision", precision).cast(EMBEDDED)

    def _embed(self, batch: pa.Table, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per clip: the L2-normalised mean of its frames' pooled features (all zeros where that mean
        is zero; `unusable_outputs` reports it) and the mean class probabilities."""
        counts = batch.column("num_frames").to_numpy(zero_copy_only=False)[rows].astype(np.int64)
        frames = _frames_of(batch.column("frames"), rows, (self.crop, self.crop, 3))
        if len(frames) != int(counts.sum()):
            raise ValueError(f"{len(frames)} frames for clips that say {int(counts.sum())}")
        pooled, class_probs = self.runner(frames)
        bounds = np.concatenate([[0], np.cumsum(counts)])
        # Per-clip means without a Python loop over frames: reduceat sums each clip's rows.
        emb = np.add.reduceat(pooled.astype(np.float64), bounds[:-1], axis=0) / counts[:, None]
        emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        mean_probs = np.add.reduceat(class_probs.astype(np.float64), bounds[:-1], axis=0) / counts[:, None]
        return emb.astype(np.float32), mean_probs.astype(np.float32)


def _gpus_given_by_ray(ray: Any) -> list[str]:
    """The GPU ids Ray gave this actor ([] outside an actor, or where Ray cannot say)."""
    try:
        return list(ray.get_runtime_context().get_accelerator_ids().get("GPU", []))
    except Exception:  # not in a Ray worker (a plain script, the tests), or a Ray that changed the API
        return []


def gpus_left_unused(gpu_ids: list[str], device: Any) -> str | None:
    """Why a model actor that Ray gave GPUs runs on the CPU, or None when it does not.

    A node image with a CPU-only build of torch (or no driver) on a GPU node runs the model on
    the CPU, tens of times slower, while its GPU stays reserved and idle; only this line says so.
    """
    if not gpu_ids or device.type != "cpu":
        return None
    import torch

    return (
        f"this model actor has GPU {','.join(gpu_ids)} from Ray, but torch {torch.__version__} sees no CUDA device "
        f"(built for CUDA {torch.version.cuda}): the model runs on the CPU, much slower; give GPU nodes a CUDA build "
        "of torch and the NVIDIA driver (cluster/Dockerfile's -gpu image), or set resources.model_gpus: 0"
    )


def _log_to_stderr(name: str) -> None:
    """Lines of `name` from INFO up go to this process's stderr: in a Ray actor, its log file and the
    driver's console (why the model's weights were not packed; a compile, how long it took or why it failed)."""
    logger = logging.getLogger(name)
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def unusable_outputs(embeddings: np.ndarray, probs: np.ndarray | None) -> list[str]:
    """Per clip, why its model output cannot be committed ('' when it can).

    A NaN or Inf (an overflow in fp16/bf16, or damaged weights), or an embedding that could not be
    normalised (features of zero or vanishingly small, below the 1e-12 the normalisation divides by
    at least: every video would match it equally) would be committed as an `ok` row that poisons a
    search index; such a clip fails its video with `model_error` instead.
    """
    finite = np.isfinite(embeddings).all(axis=1)
    if probs is not None:
        finite &= np.isfinite(probs).all(axis=1)
    # A normalised embedding has norm 1; one whose features were (nearly) zero keeps its tiny norm.
    zero = finite & (np.linalg.norm(np.where(np.isfinite(embeddings), embeddings, 0.0), axis=1) < 0.5)
    problems = []
    for is_finite, is_zero in zip(finite.tolist(), zero.tolist(), strict=True):
        if not is_finite:
            problems.append(
                "the model gave NaN or Inf for this video's frames; with precision fp16 or bf16 try "
                "model.precision: fp32, otherwise check model.weights"
            )
        elif is_zero:
            problems.append(
                "the model gave an all-zero (or vanishingly small) embedding for this video's frames; check model.weights"
            )
        else:
            problems.append("")
    return problems


def _frames_of(column: pa.ChunkedArray, rows: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """The uint8 frames of the given rows, straight from the Arrow buffers into one array (one copy)."""
    array = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    offsets = np.frombuffer(array.buffers()[1], np.int64)[array.offset : array.offset + len(array) + 1]
    data = np.frombuffer(array.buffers()[2], np.uint8)
    parts = [data[offsets[r] : offsets[r + 1]] for r in rows]
    return np.concatenate(parts).reshape((-1, *shape))


def _list_rows(values: np.ndarray, rows: np.ndarray, n: int) -> pa.Array:
    """list<float32> column of n rows: values[j] at rows[j], null elsewhere; built from buffers."""
    width = values.shape[1]
    lengths = np.zeros(n, np.int32)
    lengths[rows] = width
    offsets = np.zeros(n + 1, np.int32)
    np.cumsum(lengths, out=offsets[1:])
    valid = np.zeros(n, bool)
    valid[rows] = True
    return pa.ListArray.from_arrays(
        pa.array(offsets), pa.array(np.ascontiguousarray(values, np.float32).ravel()), mask=pa.array(~valid)
    )


def _set(table: pa.Table, name: str, column: pa.Array) -> pa.Table:
    return table.set_column(table.schema.get_field_index(name), name, column)
