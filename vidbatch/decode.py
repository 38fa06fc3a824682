"""Decode and sample one video with PyAV (here and in the decode_* modules; the benchmark and the demo
library's writer use PyAV on their own).

`open_video` probes the container (limits are checked before any decoding), then
`iter_clips` decodes in presentation order, picks the frames the sampling asks for,
turns each into an upright model-sized uint8 frame, and yields whole clips as soon as
they are complete, so memory does not grow with the video's length.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any

import av
import av.error
import numpy as np

from vidbatch.config import LimitsConfig, SamplingConfig
from vidbatch.decode_end import uniform_span
from vidbatch.decode_frames import short_reason
from vidbatch.decode_keyframes import keyframe_samples
from vidbatch.decode_limits import Deadline, FrameLimits
from vidbatch.decode_probe import StreamFacts, VideoInfo, check_complete, check_limits, main_video_stream, probe
from vidbatch.decode_start import start_at_first_frame
from vidbatch.decode_targeted import targeted_samples
from vidbatch.errors import VideoError
from vidbatch.media_kinds import cut_short_iso, read_head, sniff
from vidbatch.orientation import Orientation, frame_orientation
from vidbatch.preprocess import PreprocessSpec, crop_resized, resized_size, to_model_input
from vidbatch.sampling.clips import clip_index_of, clip_window

# Demuxers a video library needs. Anything else (HLS/DASH playlists, concat lists,
# image2 patterns, tee, ...) could make FFmpeg open other files or hosts.
FORMAT_WHITELIST = "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi,mpegts,flv,mpeg,ogg,asf,m4v,h264,hevc,ivf,nut"
# Raw elementary streams: accepted by the whitelist only to be named (their frames carry no times).
# ("m4v" is FFmpeg's raw MPEG-4 Part 2 demuxer, not the .m4v file extension, which is MP4's: an AVI
# whose header was overwritten fell back to it and came out ok, at its stream's guessed 25 fps.)
_RAW_STREAMS = {"h264": ("H.264", "h264"), "hevc": ("HEVC (H.265)", "hevc"), "m4v": ("MPEG-4 Part 2", "m4v")}
# Local paths go through FFmpeg's file protocol; nothing else may be opened.
PROTOCOL_WHITELIST = "file"


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
    except av.error.MemoryError as exc:
        # FFmpeg's demuxer sizes its tables by what the header declares (an MP4's sample tables): a header
        # declaring hundreds of millions of entries asks for gigabytes before any frame is read, which FFmpeg
        # (2 GB per allocation) or the sandbox's cap refuses. It said `unreadable ... (Cannot allocate memory)`,
        # which reads as a node short of memory.
        raise VideoError(
            "too_large",
            "opening it needs more memory than the decoder may use: its header declares tables far larger than a "
            "real video's (most often a damaged or crafted file; re-upload it), or, for a genuine very long video, "
            f"more than limits.decode_memory_mb={limits.decode_memory_mb} allows (raise it)",
            error_type="MemoryError",
        ) from exc
    except (av.error.InvalidDataError, av.error.FFmpegError, UnicodeDecodeError) as exc:
        kind = sniff(read_head(source))
        if kind is not None:
            raise VideoError(kind.status, kind.message()) from exc
        cut = cut_short_iso(source)
        if cut is not None:
            raise VideoError("decode_error", f"the file is cut short: {cut}; re-upload it") from exc
        raise VideoError("unreadable", f"not a readable media file ({short_reason(exc)}); {_NOT_MEDIA}") from exc
    try:
        if container.format.name in _RAW_STREAMS:
            codec, suffix = _RAW_STREAMS[container.format.name]
            raise VideoError(
                "unreadable",
                f"the file is a raw {codec} stream with no container (or a file whose container header is "
                "damaged), so its frames have no times; re-upload it, or put the stream in a container first, "
                f"e.g. `ffmpeg -r <its frame rate> -i in.{suffix} -c copy out.mp4`",
            )
        if not container.streams.video:
            cut = cut_short_iso(source)  # an index cut short lists no stream: not an audio file
            if cut is not None:
                raise VideoError("decode_error", f"the file is cut short: {cut}; re-upload it")
        stream = main_video_stream(container, limits)
        if stream.codec_context is None:
            raise VideoError("decode_error", "the video codec is unknown or not supported by this build; transcode the file")
        stream.thread_type = "AUTO"  # frame + slice threading
        stream.codec_context.thread_count = threads
        info = probe(container, stream)
        check_limits(info, limits)
        check_complete(container, stream, info, source)
        info = start_at_first_frame(container, stream, info)
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
    deadline: Deadline | None = None,
    stream_facts: StreamFacts | None = None,
    limits: LimitsConfig | None = None,
) -> Iterator[SampledClip]:
    """The sampled clips in order; `stream_facts` (if given) learns where the stream ends and how it is turned.
    `limits` (if given) are held against every decoded frame, not only the header (`FrameLimits`)."""
    facts = stream_facts if stream_facts is not None else StreamFacts()
    guard = FrameLimits(info, limits) if limits is not None else None
    if sampling.mode == "keyframes":
        samples = keyframe_samples(container, stream, info, deadline, facts, guard=guard)
    else:
        if sampling.mode == "uniform":
            info = uniform_span(container, stream, info, facts, deadline=deadline, guard=guard)
            facts.spread_s = info.duration_s
        samples = targeted_samples(container, stream, info, sampling, deadline, stream_facts=facts, guard=guard)
    yield from _group(samples, info, sampling.clip_len_s, spec, facts)


# What a person can do, said at the end of each per-video message.
_NOT_MEDIA = "check that it is a video and re-upload it if it was cut short"


def _group(
    samples: Iterator[tuple[float, float, Any]], info: VideoInfo, clip_len_s: float, spec: PreprocessSpec, facts: StreamFacts
) -> Iterator[SampledClip]:
    """Samples arrive in time order; emit each clip once the next clip starts."""
    current: int | None = None
    pts_list: list[float] = []
    frames: list[np.ndarray] = []
    converted: tuple[Any, np.ndarray] | None = None  # the last frame and its model input
    for sample_t, pts, frame in samples:
        index = clip_index_of(sample_t, start_s=info.start_s, clip_len_s=clip_len_s)
        if current is not None and index != current:
            # A later clip has a sample, so the video goes on past this clip's window.
            yield _clip(current, pts_list, frames, info, clip_len_s, None)
            pts_list, frames = [], []
        current = index
        pts_list.append(pts)
        if converted is None or converted[0] is not frame:
            # A frame on screen at several targets (a still, a low-rate video) is converted once.
            if facts.orientation is None:  # once per video, as ffmpeg reads it (see frame_orientation)
                facts.orientation = frame_orientation(frame)
            converted = (frame, model_input(frame, facts.orientation, spec))
        frames.append(converted[1])
    if current is not None:
        # The samples are exhausted: a sampler that read the whole stream has set its end. Uniform's
        # video ends where its times were spread to, even when the stream ends a rounding before it.
        end = facts.end_s if facts.end_s is not None and facts.spread_s is None else info.start_s + info.duration_s
        yield _clip(current, pts_list, frames, info, clip_len_s, end)


def model_input(frame: Any, orientation: Orientation, spec: PreprocessSpec) -> np.ndarray:
    """A decoded frame -> its upright crop x crop x 3 uint8 model input, resized as `spec.resize` says."""
    if spec.resize == "exact":
        return to_model_input(orientation.apply(frame.to_ndarray(format="rgb24")), spec)
    # fast: swscale scales while it converts from YUV, so the full-size RGB picture is never made.
    # The size is the recipe's for the upright picture, given in the stored picture's axes.
    upright_w, upright_h = (frame.height, frame.width) if orientation.swaps_sides else (frame.width, frame.height)
    new_w, new_h = resized_size(upright_w, upright_h, spec.resize_size)
    stored_w, stored_h = (new_h, new_w) if orientation.swaps_sides else (new_w, new_h)
    rgb = frame.reformat(width=stored_w, height=stored_h, format="rgb24", interpolation="BILINEAR").to_ndarray()
    return crop_resized(orientation.apply(rgb), spec)


def _clip(
    index: int, pts: list[float], frames: list[np.ndarray], info: VideoInfo, clip_len_s: float, end: float | None
) -> SampledClip:
    window = clip_window(index, start_s=info.start_s, clip_len_s=clip_len_s, end_of_video_s=end)
    return SampledClip(index, window.start_s, window.end_s, tuple(pts), np.stack(frames))
