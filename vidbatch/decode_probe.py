"""What a video is before it is decoded: its main stream, length, size and rate, checked
against the limits and for a file cut short (for uniform sampling, decode_end finds where its packets really end)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import IO, Any

import av
import av.error

from vidbatch.config import LimitsConfig
from vidbatch.errors import RAISE_LIMIT, VideoError
from vidbatch.media_kinds import MATROSKA_HEAD_BYTES, avi_stated_end, matroska_stated_end, read_head
from vidbatch.orientation import Orientation


@dataclass(frozen=True)
class VideoInfo:
    duration_s: float
    start_s: float
    width: int
    height: int
    fps: float | None
    codec: str

    def facts(self) -> dict[str, object]:
        """The videos table's columns this probe fills."""
        return {"duration_s": self.duration_s, "width": self.width, "height": self.height, "fps": self.fps, "codec": self.codec}


@dataclass
class StreamFacts:
    """What decoding learns about the stream that probing cannot; iter_clips fills it in.

    `end_s`: where the last frame stops being shown, once decoding has read the whole stream
    (None until then, and when sampling stopped early). The last clip's window and the video's
    duration use it instead of the container's metadata, which overstates truncated files and
    understates some VFR muxes.
    `spread_s`: uniform only, the length its times were spread over (the header's, or where the
    stream's packets end when that differs by more than rounding): the row's duration_s and the last
    window's end, so that a reader recomputing t_i = i * duration_s / num_frames finds the frames used.
    `orientation`: how the display matrix of the first sampled frame turns (and mirrors) the
    stored picture, applied to every frame (None before a frame is sampled). PyAV exposes the display matrix on frames
    only, and the probe's width and height are the stored picture's.
    """

    end_s: float | None = None
    spread_s: float | None = None
    orientation: Orientation | None = None

    def upright_size(self, info: VideoInfo) -> tuple[int, int]:
        """(width, height) as the video is shown."""
        if self.orientation is not None and self.orientation.swaps_sides:
            return info.height, info.width
        return info.width, info.height


def main_video_stream(container: Any, limits: LimitsConfig) -> Any:
    if len(container.streams) > limits.max_streams:
        raise VideoError(
            "too_large",
            f"the file has {len(container.streams)} streams, above limits.max_streams={limits.max_streams}; {RAISE_LIMIT}",
        )
    if not container.streams:
        raise VideoError("unreadable", "no stream could be found in the file; it may be damaged or truncated")
    if not container.streams.video:
        raise VideoError("no_video_stream", "the file has no video stream (audio only or data); nothing to embed")
    moving = [stream for stream in container.streams.video if not stream.disposition & _STILL_PICTURES]
    if not moving:
        raise VideoError(
            "no_video_stream",
            "the file has no video stream, only a still picture (e.g. an audio file's cover art); nothing to embed",
        )
    # The main picture: the largest stream (a file may carry a small preview track first).
    return max(moving, key=lambda stream: (stream.codec_context.width or 0) * (stream.codec_context.height or 0))


# Streams that are a picture, not the video: cover art and thumbnails.
_STILL_PICTURES = av.stream.Disposition.attached_pic | av.stream.Disposition.timed_thumbnails


def probe(container: Any, stream: Any) -> VideoInfo:
    tb = stream.time_base
    start = float(stream.start_time * tb) if stream.start_time is not None and tb else 0.0
    track_end = _matroska_track_end(container, stream)
    if stream.duration is not None and tb:
        duration = float(stream.duration * tb)
    elif track_end is not None and track_end > start:
        duration = track_end - max(0.0, start)
    elif container.duration is not None:
        duration = container.duration / av.time_base - _container_time_before(container, start)
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
    )


def _matroska_track_end(container: Any, stream: Any) -> float | None:
    """Where a Matroska/WebM video track ends, from its DURATION tag (FFmpeg's and mkvmerge's muxers
    write one per track, from the segment's time 0), or None. The Segment's Duration is the longest
    track's: with audio that runs on after the picture, uniform sampling spread its frames over the
    audio's length and dropped the targets past the picture's end."""
    if "matroska" not in (container.format.name or ""):
        return None
    tag = str(stream.metadata.get("DURATION") or stream.metadata.get("duration") or "")
    hours, _, rest = tag.partition(":")
    minutes, _, seconds = rest.partition(":")
    try:
        end = int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    except ValueError:
        return None
    return end if end > 0 and math.isfinite(end) else None


def _container_time_before(container: Any, stream_start_s: float) -> float:
    """The part of the container's duration that lies before the stream's first frame.

    Matroska/WebM store the Segment's Duration, which runs from the segment's time 0 (FFmpeg
    reports it as is): a stream starting at 2.5 s in a 6.5 s segment is 4 s long. Other
    formats' durations run from the container's start.
    """
    if "matroska" in (container.format.name or ""):
        return max(0.0, stream_start_s)
    return max(0.0, stream_start_s - _container_start(container))


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


def _head_in_place(source: str | IO[bytes], size: int) -> bytes:
    """The file's first bytes; a file object FFmpeg reads is left where FFmpeg left it."""
    if isinstance(source, str):
        return read_head(source, size)
    at = source.tell()
    try:
        source.seek(0)
        return source.read(size)
    finally:
        source.seek(at)


def check_complete(container: Any, stream: Any, info: VideoInfo, source: str | IO[bytes]) -> None:
    """decode_error when the file's own index lists packets past its last byte, or a Matroska/WebM
    file's Segment or an AVI file's RIFF chunk ends past it: an upload cut short.

    An MP4 written for streaming has its index first, so a cut-short copy still opens and says its
    full duration; fps sampling then ends early without a word and uniform sampling spreads its
    frames over time the file does not hold (1 of 8 frames from a file cut at a tenth). A Matroska
    file cut short opens and decodes up to the cut just as quietly, and its row was `ok`; so did an
    AVI file, whose index (at its end) is lost with the cut and which FFmpeg reads up to the cut.
    """
    size = getattr(container, "size", 0) or 0
    formats = set((container.format.name or "").split(","))
    if size > 0 and formats & {"matroska", "avi"}:
        head = _head_in_place(source, MATROSKA_HEAD_BYTES)
        stated = matroska_stated_end(head) if "matroska" in formats else avi_stated_end(head)
        if stated is not None and stated > size + _HEADER_SLACK_BYTES:
            held, whole = _two_sizes(size, stated)
            raise VideoError(
                "decode_error",
                f"the file is cut short: it holds {held} of the {whole} its header states; re-upload it",
                facts=info.facts(),
            )
    try:
        entries = stream.index_entries if size > 0 else ()
        listed_end = max((entry.pos + entry.size for entry in entries), default=0)
        if listed_end <= size:
            return
        readable = [entry.timestamp for entry in entries if entry.pos + entry.size <= size]
    except (AttributeError, av.error.FFmpegError):  # no index to compare with
        return
    held = f"{float(max(readable) * stream.time_base):.1f} s of its {info.duration_s:.1f} s" if readable else "none of its video"
    raise VideoError(
        "decode_error",
        f"the file is cut short: it holds {_bytes(size)} of the {_bytes(listed_end)} its index lists ({held}); "
        "re-upload it",
        facts=info.facts(),
    )


# A header may count a pad byte or its own 8 bytes that a writer did not: only a shortfall past this is a cut.
_HEADER_SLACK_BYTES = 16


def _two_sizes(held: int, whole: int) -> tuple[str, str]:
    """Two sizes said so that they differ (exact byte counts where three digits would make them equal)."""
    short = _bytes(held), _bytes(whole)
    return short if short[0] != short[1] else (f"{held:,} bytes", f"{whole:,} bytes")


def _bytes(count: int) -> str:
    """A size a person can compare with another: 3 significant digits in B, KB, MB or GB."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if count >= scale:
            return f"{count / scale:.3g} {unit}"
    return f"{count} bytes"


def check_limits(info: VideoInfo, limits: LimitsConfig) -> None:
    pixels = info.width * info.height
    if pixels > limits.max_pixels:
        raise VideoError(
            "too_large",
            f"{info.width}x{info.height} is above limits.max_pixels={limits.max_pixels}; {RAISE_LIMIT}",
            facts=info.facts(),
        )
    if info.duration_s > limits.max_duration_s:
        raise VideoError(
            "too_large",
            f"{info.duration_s:.1f}s is above limits.max_duration_s={limits.max_duration_s:g}; {RAISE_LIMIT}",
            facts=info.facts(),
        )


def indexed_container(container: Any) -> bool:
    """Containers with one frame per packet, exact pts and an index FFmpeg seeks by."""
    name = container.format.name or ""
    return any(part in {"mov", "mp4", "matroska", "webm"} for part in name.split(","))
