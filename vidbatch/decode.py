"""Decode and sample one video with PyAV. The only module that imports `av`.

`open_video` probes the container (limits are checked before any decoding), then
`iter_clips` decodes in presentation order, picks the frames the sampling asks for,
turns each into an upright model-sized uint8 frame, and yields whole clips as soon as
they are complete, so memory does not grow with the video's length.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any

import av
import av.error
import numpy as np

from vidbatch.config import LimitsConfig, SamplingConfig
from vidbatch.errors import VideoError
from vidbatch.preprocess import PreprocessSpec, to_model_input
from vidbatch.sampling import OnScreenPicker, fps_times_from, uniform_times
from vidbatch.sampling.clips import clip_index_of, clip_window
from vidbatch.sampling.keyframes import keyframe_sample_time

# Demuxers a video library needs. Anything else (HLS/DASH playlists, concat lists,
# image2 patterns, tee, ...) could make FFmpeg open other files or hosts.
FORMAT_WHITELIST = "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi,mpegts,flv,mpeg,ogg,asf,m4v,h264,hevc,ivf,nut"
# Local paths go through FFmpeg's file protocol; nothing else may be opened.
PROTOCOL_WHITELIST = "file"


@dataclass(frozen=True)
class VideoInfo:
    duration_s: float
    start_s: float
    width: int
    height: int
    fps: float | None
    codec: str
    rotation: int


@dataclass(frozen=True)
class SampledClip:
    index: int
    start_s: float
    end_s: float
    frame_pts_s: tuple[float, ...]
    frames: np.ndarray  # (n, crop, crop, 3) uint8


@contextmanager
def open_video(source: str | IO[bytes], *, limits: LimitsConfig, threads: int = 0) -> Iterator[tuple[Any, Any, VideoInfo]]:
    """Open and probe; yields (container, video_stream, info). Raises VideoError."""
    try:
        container = av.open(
            source,
            options={"protocol_whitelist": PROTOCOL_WHITELIST, "format_whitelist": FORMAT_WHITELIST},
            timeout=60.0,
        )
    except FileNotFoundError as exc:
        raise VideoError("not_found", "the file does not exist; check the manifest uri") from exc
    except PermissionError as exc:
        raise VideoError("access_denied", "the file cannot be read with the job's permissions") from exc
    except (av.error.InvalidDataError, av.error.FFmpegError, UnicodeDecodeError) as exc:
        raise VideoError("unreadable", f"not a readable media file ({_short(exc)})") from exc
    try:
        stream = _video_stream(container, limits)
        if stream.codec_context is None:
            raise VideoError("decode_error", "the video codec is unknown or not supported by this build; transcode the file")
        stream.thread_type = "AUTO"  # frame + slice threading
        stream.codec_context.thread_count = threads
        info = _probe(container, stream)
        _check_limits(info, limits)
        yield container, stream, info
    finally:
        container.close()


def iter_clips(
    container: Any,
    stream: Any,
    info: VideoInfo,
    *,
    sampling: SamplingConfig,
    spec: PreprocessSpec,
    deadline: float | None = None,
) -> Iterator[SampledClip]:
    if sampling.mode == "keyframes":
        samples = _keyframe_samples(container, stream, info, deadline)
    else:
        samples = _targeted_samples(container, stream, info, sampling, deadline)
    yield from _group(samples, info, sampling.clip_len_s, spec)


# --- sampling --------------------------------------------------------------------------


def _targets(info: VideoInfo, sampling: SamplingConfig) -> Iterable[float]:
    if sampling.mode == "fps":
        return fps_times_from(start_s=info.start_s, fps=sampling.fps)
    return uniform_times(start_s=info.start_s, duration_s=info.duration_s, num_frames=sampling.num_frames)


def _targeted_samples(
    container: Any, stream: Any, info: VideoInfo, sampling: SamplingConfig, deadline: float | None
) -> Iterator[tuple[float, float, Any]]:
    picker: OnScreenPicker[Any] = OnScreenPicker(_targets(info, sampling))
    if picker.done:
        raise VideoError("too_short", f"the video is {info.duration_s:.3f}s long; no frame to sample")
    last: Any = None
    for frame in _decoded_frames(container, stream, deadline):
        pts = _frame_time(frame, stream)
        if pts is None:
            continue
        last = frame
        yield from picker.push(pts, frame)
        if picker.done:
            return
    if last is None:
        raise VideoError("decode_error", "no frame could be decoded; the video stream is damaged")
    # The video ends when its last frame stops being shown. Container metadata is not
    # trusted for this: it overstates truncated files and understates some VFR muxes.
    last_pts = _frame_time(last, stream)
    assert last_pts is not None  # frames without pts were skipped above
    yield from picker.finish(last_pts + _frame_duration(last, stream, info))


def _keyframe_samples(container: Any, stream: Any, info: VideoInfo, deadline: float | None) -> Iterator[tuple[float, float, Any]]:
    # The decoder drops non-key frames itself: no time spent decoding them.
    stream.codec_context.skip_frame = "NONKEY"
    any_frame = False
    for frame in _decoded_frames(container, stream, deadline):
        pts = _frame_time(frame, stream)
        if pts is None:
            continue
        any_frame = True
        yield keyframe_sample_time(pts), pts, frame
    if not any_frame:
        raise VideoError("decode_error", "no key frame could be decoded; the video stream is damaged")


def _decoded_frames(container: Any, stream: Any, deadline: float | None) -> Iterator[Any]:
    try:
        for packet in container.demux(stream):
            if deadline is not None and time.monotonic() > deadline:
                raise VideoError("timeout", "decoding took longer than limits.decode_timeout_s; raise it or check the file")
            yield from packet.decode()
    except VideoError:
        raise
    except (av.error.FFmpegError, ValueError, MemoryError) as exc:
        raise VideoError("decode_error", f"decoding failed ({_short(exc)}); the file may be damaged") from exc


def _group(
    samples: Iterator[tuple[float, float, Any]], info: VideoInfo, clip_len_s: float, spec: PreprocessSpec
) -> Iterator[SampledClip]:
    """Samples arrive in time order; emit each clip once the next clip starts."""
    current: int | None = None
    pts_list: list[float] = []
    frames: list[np.ndarray] = []
    end_of_video = info.start_s + info.duration_s
    for sample_t, pts, frame in samples:
        index = clip_index_of(sample_t, start_s=info.start_s, clip_len_s=clip_len_s)
        if current is not None and index != current:
            yield _clip(current, pts_list, frames, info, clip_len_s, end_of_video)
            pts_list, frames = [], []
        current = index
        pts_list.append(pts)
        frames.append(to_model_input(_upright_rgb(frame), spec))
    if current is not None:
        yield _clip(current, pts_list, frames, info, clip_len_s, end_of_video)


def _clip(index: int, pts: list[float], frames: list[np.ndarray], info: VideoInfo, clip_len_s: float, end: float) -> SampledClip:
    window = clip_window(index, start_s=info.start_s, clip_len_s=clip_len_s, end_of_video_s=end)
    return SampledClip(index, window.start_s, window.end_s, tuple(pts), np.stack(frames))


# --- frames ----------------------------------------------------------------------------


def _upright_rgb(frame: Any) -> np.ndarray:
    rgb = frame.to_ndarray(format="rgb24")
    # `rotation` is the counter-clockwise angle the display matrix applies; np.rot90
    # turns counter-clockwise for positive k.
    quarter_turns = round((frame.rotation or 0) / 90) % 4
    return np.rot90(rgb, k=quarter_turns) if quarter_turns else rgb


def _frame_duration(frame: Any, stream: Any, info: VideoInfo) -> float:
    if frame.duration:
        return float(frame.duration * (frame.time_base or stream.time_base))
    return 1.0 / info.fps if info.fps else 1.0 / 30


def _frame_time(frame: Any, stream: Any) -> float | None:
    if frame.pts is None:
        return None
    return float(frame.pts * (frame.time_base or stream.time_base))


# --- probing ---------------------------------------------------------------------------


def _video_stream(container: Any, limits: LimitsConfig) -> Any:
    if len(container.streams) > limits.max_streams:
        raise VideoError(
            "too_large", f"the file has {len(container.streams)} streams, above limits.max_streams={limits.max_streams}"
        )
    if not container.streams.video:
        raise VideoError("no_video_stream", "the file has no video stream (audio only or data); nothing to embed")
    return container.streams.video[0]


def _probe(container: Any, stream: Any) -> VideoInfo:
    tb = stream.time_base
    start = float(stream.start_time * tb) if stream.start_time is not None and tb else 0.0
    if stream.duration is not None and tb:
        duration = float(stream.duration * tb)
    elif container.duration is not None:
        duration = container.duration / av.time_base - max(0.0, start - _container_start(container))
    else:
        duration = _duration_by_demuxing(container, stream, start)
    rate = stream.average_rate or stream.guessed_rate
    return VideoInfo(
        duration_s=max(0.0, duration),
        start_s=start,
        width=int(stream.codec_context.width or 0),
        height=int(stream.codec_context.height or 0),
        fps=float(rate) if rate else None,
        codec=stream.codec_context.name,
        rotation=0,
    )


def _container_start(container: Any) -> float:
    return container.start_time / av.time_base if container.start_time is not None else 0.0


def _duration_by_demuxing(container: Any, stream: Any, start: float) -> float:
    """No duration in the metadata: read packet times (no decoding) and seek back."""
    end = start
    for packet in container.demux(stream):
        if packet.pts is not None and packet.time_base:
            end = max(end, float((packet.pts + (packet.duration or 0)) * packet.time_base))
    container.seek(0)
    return end - start


def _check_limits(info: VideoInfo, limits: LimitsConfig) -> None:
    pixels = info.width * info.height
    if pixels > limits.max_pixels:
        raise VideoError(
            "too_large",
            f"{info.width}x{info.height} is above limits.max_pixels={limits.max_pixels}; raise it to process this video",
        )
    if info.duration_s > limits.max_duration_s:
        raise VideoError(
            "too_large",
            f"{info.duration_s:.0f}s is above limits.max_duration_s={limits.max_duration_s:.0f}; raise it to process this video",
        )


def _short(exc: BaseException) -> str:
    # FFmpeg's str() names the file (a path, or a URL with a query string): keep only the reason.
    text = str(getattr(exc, "strerror", None) or exc).strip() or type(exc).__name__
    return text[:200]
