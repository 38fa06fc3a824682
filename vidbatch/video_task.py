"""Everything that happens to one video between its manifest row and its rows for the
model stage: stat, limits, decode, sample, preprocess. Runs inside the decode sandbox
(vidbatch.isolation) or, for tests and debugging, in-process.

Yields one table per clip (frames as raw uint8 bytes) and always exactly one final
video table with the status.
"""

from __future__ import annotations

import errno
import gc
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from vidbatch.config import LimitsConfig, SamplingConfig, StorageConfig
from vidbatch.errors import RAISE_LIMIT, Status, VideoError, out_of_memory_message
from vidbatch.preprocess import PreprocessSpec
from vidbatch.schema import VIDEOS

log = logging.getLogger(__name__)

# The video facts travel with the same types the videos table gives them.
_VIDEO_FACTS = (
    "status", "error_type", "error_message", "duration_s", "width", "height", "fps", "codec", "num_clips", "source_fingerprint",
)  # fmt: skip
_COMMON = [
    ("video_id", pa.string()),
    ("kind", pa.string()),  # "clip" | "video"
    ("clip_index", pa.int32()),
    ("start_s", pa.float64()),
    ("end_s", pa.float64()),
    ("frame_pts_s", pa.list_(pa.float64())),
    ("num_frames", pa.int32()),
    *((name, VIDEOS.field(name).type) for name in _VIDEO_FACTS),
]
DECODED = pa.schema([*_COMMON, ("frames", pa.large_binary())])
# `precision`: the dtype the model actor ran a clip in ("bfloat16", "float32", ...), which
# `precision: auto` decides per host; the run's summary says which were used.
EMBEDDED = pa.schema(
    [*_COMMON, ("embedding", pa.list_(pa.float32())), ("probs", pa.list_(pa.float32())), ("precision", pa.string())]
)


@dataclass(frozen=True)
class DecodeSettings:
    sampling: SamplingConfig
    limits: LimitsConfig
    storage: StorageConfig
    spec: PreprocessSpec
    threads: int = 0
    # inputs.allowed_roots, checked again on the file as it is opened (storage.open_source)
    allowed_roots: tuple[str, ...] = ()


def decode_video(video_id: str, uri: str, settings: DecodeSettings) -> Iterator[pa.Table]:
    from vidbatch.decode import iter_clips, open_video
    from vidbatch.decode_limits import Deadline
    from vidbatch.decode_probe import StreamFacts
    from vidbatch.storage import open_source, source_fingerprint, stat_video
    from vidbatch.storage_failures import error_text

    limits = settings.limits
    video: dict[str, Any] = {"video_id": video_id, "kind": "video", "status": "ok"}
    num_clips = 0
    try:
        info_dict, fs, path = stat_video(uri, settings.storage)
        video["source_fingerprint"] = source_fingerprint(info_dict)
        size = info_dict.get("size") or 0
        if size > limits.max_file_bytes:
            cap = limits.max_file_bytes
            raise VideoError("too_large", f"{size} bytes is above limits.max_file_bytes={cap}; {RAISE_LIMIT}")
        if size == 0:
            raise VideoError("unreadable", "the file is empty (0 bytes); re-upload it")
        deadline = Deadline.after(limits.decode_timeout_s)
        with (
            open_source(fs, path, allowed_roots=settings.allowed_roots) as source,
            open_video(source, limits=limits, threads=settings.threads) as opened,
        ):
            container, stream, info = opened
            video.update(info.facts())
            facts = StreamFacts()
            clips = iter_clips(
                container,
                stream,
                info,
                sampling=settings.sampling,
                spec=settings.spec,
                deadline=deadline,
                stream_facts=facts,
                limits=limits,
            )
            for clip in clips:
                num_clips += 1
                yield row_table(
                    DECODED,
                    {
                        "video_id": video_id,
                        "kind": "clip",
                        "clip_index": clip.index,
                        "start_s": clip.start_s,
                        "end_s": clip.end_s,
                        "frame_pts_s": list(clip.frame_pts_s),
                        "num_frames": len(clip.frame_pts_s),
                        "status": "ok",
                        "frames": clip.frames.tobytes(),
                    },
                )
            if facts.spread_s is not None:  # uniform: the length its times were spread over (t_i = i * duration_s / n)
                video["duration_s"] = facts.spread_s
            elif facts.end_s is not None:  # decoding read the whole stream: its own length, not the metadata's
                video["duration_s"] = max(0.0, facts.end_s - info.start_s)
            video["width"], video["height"] = facts.upright_size(info)
        if num_clips == 0:
            raise VideoError("too_short", "no frame was sampled; the video is shorter than one sample")
    except VideoError as exc:
        video.update(exc.facts)
        video.update(status=exc.status, error_type=exc.error_type, error_message=exc.message)
    except MemoryError:
        video.update(
            status="too_large",
            error_type="MemoryError",
            error_message=out_of_memory_message(limits.decode_memory_mb),
        )
    except Exception as exc:  # a bug or an unexpected library error: still only this row
        # %r: a manifest's id may hold a line break or a terminal escape, which would forge lines in shipped logs
        log.exception("unexpected error decoding %r", video_id[:200])
        short_of = _resource_shortage(exc)
        video.update(
            status="decode_error",
            # out of threads or memory is the node's state, not the file's: the next run retries it
            error_type="resources" if short_of else type(exc).__name__,
            error_message=f"unexpected decoder failure: {error_text(exc)}"
            + (f" ({short_of}: the node was short of resources; the next run retries it)" if short_of else ""),
        )
    finally:
        # Frames whose side data was read are freed only by the cyclic collector (vidbatch.orientation):
        # one pass per video keeps a long-lived decoder's memory flat (~8 ms).
        gc.collect()
    video["num_clips"] = num_clips if video["status"] == "ok" else 0
    yield row_table(DECODED, video)


def _resource_shortage(exc: Exception) -> str | None:
    """EAGAIN or ENOMEM from FFmpeg (no thread or buffer to be had), named; None for anything else."""
    code = getattr(exc, "errno", None)
    return {errno.EAGAIN: "EAGAIN", errno.ENOMEM: "ENOMEM"}.get(code) if isinstance(code, int) else None


def failure_table(
    video_id: str, status: Status, error_type: str, message: str, *, source_fingerprint: str | None = None
) -> pa.Table:
    return row_table(
        DECODED,
        {
            "video_id": video_id,
            "kind": "video",
            "status": status,
            "error_type": error_type,
            "error_message": message,
            "num_clips": 0,
            "source_fingerprint": source_fingerprint,
        },
    )


def row_table(schema: pa.Schema, row: dict[str, Any]) -> pa.Table:
    return pa.Table.from_pylist([{name: row.get(name) for name in schema.names}], schema=schema)
