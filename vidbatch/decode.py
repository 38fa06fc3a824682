"""Decode and sample one video with PyAV. The only module that imports `av`.

`open_video` probes the container (limits are checked before any decoding), then
`iter_clips` decodes in presentation order, picks the frames the sampling asks for,
turns each into an upright model-sized uint8 frame, and yields whole clips as soon as
they are complete, so memory does not grow with the video's length.
"""

from __future__ import annotations

import bisect
import math
import time
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import IO, Any

import av
import av.error
import numpy as np

from vidbatch.config import LimitsConfig, SamplingConfig
from vidbatch.errors import RAISE_LIMIT, VideoError
from vidbatch.media_kinds import MATROSKA_HEAD_BYTES, cut_short_iso, matroska_stated_end, read_head, sniff
from vidbatch.orientation import Orientation, frame_orientation
from vidbatch.preprocess import PreprocessSpec, to_model_input
from vidbatch.sampling import OnScreenPicker, fps_times_from, uniform_times
from vidbatch.sampling.clips import clip_index_of, clip_window
from vidbatch.sampling.keyframes import keyframe_sample_time

# Demuxers a video library needs. Anything else (HLS/DASH playlists, concat lists,
# image2 patterns, tee, ...) could make FFmpeg open other files or hosts.
FORMAT_WHITELIST = "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi,mpegts,flv,mpeg,ogg,asf,m4v,h264,hevc,ivf,nut"
# Raw elementary streams: accepted by the whitelist only to be named (their frames carry no times).
_RAW_STREAMS = {"h264": ("H.264", "h264"), "hevc": ("HEVC (H.265)", "hevc")}
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

    def facts(self) -> dict[str, object]:
        """The videos table's columns this probe fills."""
        return {"duration_s": self.duration_s, "width": self.width, "height": self.height, "fps": self.fps, "codec": self.codec}


@dataclass(frozen=True)
class SampledClip:
    index: int
    start_s: float
    end_s: float
    frame_pts_s: tuple[float, ...]
    frames: np.ndarray  # (n, crop, crop, 3) uint8


@dataclass
class StreamFacts:
    """What decoding learns about the stream that probing cannot; iter_clips fills it in.

    `end_s`: where the last frame stops being shown, once decoding has read the whole stream
    (None until then, and when sampling stopped early). The last clip's window and the video's
    duration use it instead of the container's metadata, which overstates truncated files and
    understates some VFR muxes.
    `orientation`: how the display matrix of the first sampled frame turns (and mirrors) the
    stored picture, applied to every frame (None before a frame is sampled). PyAV exposes the display matrix on frames
    only, and the probe's width and height are the stored picture's.
    """

    end_s: float | None = None
    orientation: Orientation | None = None

    def upright_size(self, info: VideoInfo) -> tuple[int, int]:
        """(width, height) as the video is shown."""
        if self.orientation is not None and self.orientation.swaps_sides:
            return info.height, info.width
        return info.width, info.height


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
        kind = sniff(read_head(source))
        if kind is not None:
            raise VideoError(kind.status, kind.message()) from exc
        cut = cut_short_iso(source)
        if cut is not None:
            raise VideoError("decode_error", f"the file is cut short: {cut}; re-upload it") from exc
        raise VideoError("unreadable", f"not a readable media file ({_short(exc)}); {_NOT_MEDIA}") from exc
    try:
        if container.format.name in _RAW_STREAMS:
            codec, suffix = _RAW_STREAMS[container.format.name]
            raise VideoError(
                "unreadable",
                f"the file is a raw {codec} stream with no container, so its frames have no times; put it in a "
                f"container first, e.g. `ffmpeg -r <its frame rate> -i in.{suffix} -c copy out.mp4`",
            )
        if not container.streams.video:
            cut = cut_short_iso(source)  # an index cut short lists no stream: not an audio file
            if cut is not None:
                raise VideoError("decode_error", f"the file is cut short: {cut}; re-upload it")
        stream = _video_stream(container, limits)
        if stream.codec_context is None:
            raise VideoError("decode_error", "the video codec is unknown or not supported by this build; transcode the file")
        stream.thread_type = "AUTO"  # frame + slice threading
        stream.codec_context.thread_count = threads
        info = _probe(container, stream)
        _check_limits(info, limits)
        _check_complete(container, stream, info, source)
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
        samples = _keyframe_samples(container, stream, info, deadline, facts, guard=guard)
    else:
        if sampling.mode == "uniform":
            info = _uniform_span(container, stream, info, facts, deadline=deadline, guard=guard)
        samples = _targeted_samples(container, stream, info, sampling, deadline, stream_facts=facts, guard=guard)
    yield from _group(samples, info, sampling.clip_len_s, spec, facts)


# What a person can do, said at the end of each per-video message.
_NOT_MEDIA = "check that it is a video and re-upload it if it was cut short"
_DAMAGED = "the file may be damaged: re-upload or re-encode it"


@dataclass(frozen=True)
class Deadline:
    """When a video's decoding must have ended, and the limit that set it (its timeout names the value)."""

    at: float  # time.monotonic()
    limit_s: float

    @classmethod
    def after(cls, limit_s: float) -> Deadline:
        return cls(at=time.monotonic() + limit_s, limit_s=limit_s)

    def too_slow(self) -> str:
        return (
            f"decoding took longer than limits.decode_timeout_s={self.limit_s:g}; each run tries it again: raise the "
            "limit if the video is long, or check the file"
        )


# --- sampling --------------------------------------------------------------------------


def _targets(info: VideoInfo, sampling: SamplingConfig) -> Iterable[float]:
    if sampling.mode == "fps":
        return fps_times_from(start_s=info.start_s, fps=sampling.fps)
    return uniform_times(start_s=info.start_s, duration_s=info.duration_s, num_frames=sampling.num_frames)


def _targeted_samples(
    container: Any,
    stream: Any,
    info: VideoInfo,
    sampling: SamplingConfig,
    deadline: Deadline | None,
    *,
    fast: bool = True,
    stats: dict[str, int] | None = None,
    stream_facts: StreamFacts | None = None,
    guard: FrameLimits | None = None,
) -> Iterator[tuple[float, float, Any]]:
    """(target t, pts, frame) for every target with a frame on screen. `fast=False` decodes
    every packet (the reference the fast path is tested against); `stats` gets the counts
    of seeks and skipped packets."""
    targets = _TargetTimes(info, sampling)
    picker: OnScreenPicker[Any] = OnScreenPicker(targets.times())
    if picker.done:
        raise VideoError("too_short", f"the video is {info.duration_s:.3f}s long; no frame to sample")
    reader = _TargetedReader(container, stream, targets, deadline, skip=fast, seek=fast, guard=guard)
    last: Any = None
    last_pts = 0.0
    try:
        for pts, frame in reader.frames(picker):
            if last is not None and pts < last_pts - _EPS_S:
                raise _times_go_back(container, pts - info.start_s, last_pts - info.start_s)
            last, last_pts = frame, pts
            # One frame can settle many targets (a still shown for an hour, a jump in the
            # timestamps): the deadline holds per sample, not only per packet read.
            for sample in picker.push(pts, frame):
                _check_deadline(deadline)
                yield sample
            if picker.done:
                return
    finally:
        if stats is not None:
            stats.update(seeks=reader.seeks, skipped_packets=reader.skipped_packets, decoded_frames=reader.decoded)
    if last is None:
        raise _no_frame(packets=reader.packets)
    # The video ends when its last frame stops being shown. Container metadata is not
    # trusted for this: it overstates truncated files and understates some VFR muxes.
    end_s = last_pts + _frame_duration(last, stream, info)
    if stream_facts is not None:
        stream_facts.end_s = end_s
    for sample in picker.finish(end_s):
        _check_deadline(deadline)
        yield sample


def _times_go_back(container: Any, at_s: float, after_s: float) -> VideoError:
    """Frames come out of the decoder in the order they are shown, so their times must not go back.
    They do when the container stores no presentation times for reordered frames (H.264 with
    B-frames in AVI: each frame then carries another frame's time), and when recordings are joined
    end to end and the second one's times start again (`cat a.ts b.ts`): sampling would pick the
    wrong frames, or write clip windows twice, and say `ok`. It is the file's doing, every night."""
    return VideoError(
        "decode_error",
        f"the frames' times go back (a frame at {at_s:.3f}s came after one at {after_s:.3f}s), so which frame is "
        "shown when cannot be told: the file may join recordings whose times start again, or its "
        f"{container.format.name} container may not store the times of reordered frames; re-encode it to MP4 "
        "(e.g. `ffmpeg -i <file> -c:v libx264 out.mp4`)",
    )


class _TargetTimes:
    """The target times of `fps`/`uniform` sampling, with an interval query for the skip proof."""

    def __init__(self, info: VideoInfo, sampling: SamplingConfig) -> None:
        self.start = info.start_s
        self.fps = sampling.fps if sampling.mode == "fps" else None
        self.listed: list[float] | None = None
        if self.fps is None:
            self.listed = uniform_times(start_s=info.start_s, duration_s=info.duration_s, num_frames=sampling.num_frames)

    def times(self) -> Iterable[float]:
        if self.listed is not None:
            return self.listed
        assert self.fps is not None
        return fps_times_from(start_s=self.start, fps=self.fps)

    def any_in(self, low: float, high: float) -> bool:
        """Is there a target t with low <= t < high?"""
        if self.listed is not None:
            i = bisect.bisect_left(self.listed, low)
            return i < len(self.listed) and self.listed[i] < high
        assert self.fps is not None
        # The same expression as fps_times_from (start + k / fps), checked around the
        # rounded index so float rounding cannot hide a target.
        k = max(0, math.floor((low - self.start) * self.fps))
        return any(kk >= 0 and low <= self.start + kk / self.fps < high for kk in (k - 1, k, k + 1, k + 2))


class _TargetedReader:
    """Decoded frames in presentation order, for a set of target times: (pts_s, frame).

    It returns the same frames as decoding every packet would, for the frames that can
    be on screen at a target, and saves work two ways:

    * skip (H.264): a packet whose frame is provably on screen at no target goes to the
      decoder with skip_frame=NONREF. A non-reference frame is then dropped unseen; a
      reference frame is decoded anyway (later frames need it), so nothing else changes.
      The proof: some other packet with pts q > p is known (the frame after p in
      presentation order comes no later than q) and no target lies in [p, q).
    * seek (indexed MP4/MOV/Matroska): when the key frame before the next target lies
      well ahead of the decoder, seek to it and decode forward from there. The landing
      is checked (a key frame whose pts is at or before the target), leading frames and
      frames already handed out are dropped, and anything unexpected falls back to
      decoding through from where the reader was.
    """

    def __init__(
        self,
        container: Any,
        stream: Any,
        targets: _TargetTimes,
        deadline: Deadline | None,
        *,
        skip: bool,
        seek: bool,
        guard: FrameLimits | None = None,
    ) -> None:
        self.container = container
        self.guard = guard
        self.stream = stream
        self.targets = targets
        self.deadline = deadline
        self.tb = stream.time_base
        self.cc = stream.codec_context
        indexed = _indexed_container(container)
        self.skip = skip and indexed and self.cc.name in _SKIP_NONREF_CODECS
        # Seeking can only pay when targets are further apart than a seek's minimum gain.
        sparse = targets.fps is None or 1.0 / targets.fps > _SEEK_MIN_GAIN_S
        self.keys: list[int] = _key_frame_ticks(stream) if seek and sparse and indexed and self.tb else []
        self.known: list[int] = []  # sorted pts (ticks) of recent packets: successors for the skip proof
        self.skipping = False
        self.position: int | None = None  # dts (or pts) of the last packet read, in ticks
        self.max_delay = 0  # largest pts - dts seen, in ticks
        self.handed_out = -math.inf  # pts of the last frame handed out
        self.drop_through = -math.inf  # after a seek: frames at or before this were handed out already
        self.floor = -math.inf  # after a seek: frames before the key frame are leading frames
        self.seeks = 0
        self.skipped_packets = 0  # sent with skip allowed (reference frames among them are decoded anyway)
        self.decoded = 0
        self.packets = 0  # packets holding data (the demuxer's final flush packets hold none)

    def frames(self, picker: OnScreenPicker[Any]) -> Iterator[tuple[float, Any]]:
        try:
            yield from self._frames(picker)
        except VideoError:
            raise
        except (av.error.FFmpegError, ValueError, MemoryError) as exc:
            raise VideoError("decode_error", f"decoding failed ({_short(exc)}); {_DAMAGED}") from exc
        finally:
            self._set_skip(False)

    def _frames(self, picker: OnScreenPicker[Any]) -> Iterator[tuple[float, Any]]:
        demux = self.container.demux(self.stream)
        lookahead: deque[Any] = deque()
        exhausted = False
        while True:
            while not exhausted and len(lookahead) <= _LOOKAHEAD:
                packet = next(demux, None)
                if packet is None:
                    exhausted = True
                else:
                    self._note(packet)
                    lookahead.append(packet)
            if not lookahead:
                return
            target = picker.next_target
            if self.keys and target is not None:
                landed = self._maybe_seek(target)
                if landed is not None:
                    demux, first = landed
                    lookahead.clear()
                    lookahead.append(first)
                    exhausted = False
                    continue
            packet = lookahead.popleft()
            _check_deadline(self.deadline)
            self._set_skip(self.skip and self._unneeded(packet))
            for frame in packet.decode():
                self.decoded += 1
                pts = _frame_time(frame, self.stream)
                if pts is None or pts <= self.drop_through or pts < self.floor - _EPS_S:
                    continue
                if self.guard is not None:
                    self.guard.check(pts, frame)
                self.handed_out = pts
                yield pts, frame

    # -- skip ---------------------------------------------------------------------------

    def _note(self, packet: Any) -> None:
        if packet.size:
            self.packets += 1
        if packet.pts is None:
            return
        bisect.insort(self.known, packet.pts)
        if len(self.known) > 2 * _SUCCESSOR_WINDOW:
            # Forgetting old times is always safe: a larger q only makes the proof stricter.
            del self.known[:_SUCCESSOR_WINDOW]
        if packet.dts is not None:
            self.max_delay = max(self.max_delay, packet.pts - packet.dts)
            self.position = packet.dts
        else:
            self.position = packet.pts

    def _unneeded(self, packet: Any) -> bool:
        if packet.pts is None:
            return False
        i = bisect.bisect_right(self.known, packet.pts)
        if i >= len(self.known):
            return False  # no later frame known yet: it may be the last one, on screen to the end
        p = float(packet.pts * self.tb)
        q = float(self.known[i] * self.tb)
        return not self.targets.any_in(p - _SKIP_MARGIN_S, q + _SKIP_MARGIN_S)

    def _set_skip(self, on: bool) -> None:
        if on != self.skipping:
            self.cc.skip_frame = "NONREF" if on else "DEFAULT"
            self.skipping = on
        if on:
            self.skipped_packets += 1

    # -- seek ---------------------------------------------------------------------------

    def _maybe_seek(self, target: float) -> tuple[Iterator[Any], Any] | None:
        """Seek when the key frame before `target` lies well ahead; the new demuxer and its first packet."""
        if self.position is None or self.handed_out == -math.inf:
            return None  # seek only once the reader knows where it is
        ticks = math.floor((target + _EPS_S) / self.tb)
        # Index times are decode times; a key frame is shown max_delay ticks later at most.
        i = bisect.bisect_right(self.keys, ticks - self.max_delay) - 1
        if i < 0 or self.keys[i] <= self.position + max(1, round(_SEEK_MIN_GAIN_S / self.tb)):
            return None  # decoding on to the target is as cheap
        before = self.position
        landed = self._seek(ticks)  # FFmpeg: the key frame shown at or before `ticks`
        if landed is None or landed[1].pts * self.tb > target + _EPS_S:
            return self._resume()  # not a usable place: back to where the reader was
        first = landed[1]
        if first.dts is not None and first.dts <= before:
            self.keys = []  # the index and the seek disagree: correct (see drop_through) but no gain; stop seeking
        self.seeks += 1
        self._after_seek(first)
        return landed

    def _seek(self, ticks: int) -> tuple[Iterator[Any], Any] | None:
        """Seek to the key frame at or before `ticks`: the new demuxer and its first packet, if that is a key frame."""
        self.container.seek(ticks, stream=self.stream, backward=True, any_frame=False)
        demux = self.container.demux(self.stream)
        first = next(demux, None)
        if first is None or first.pts is None or not first.is_keyframe:
            return None
        return demux, first

    def _after_seek(self, first: Any) -> None:
        self.drop_through = max(self.drop_through, self.handed_out)
        self.floor = float(first.pts * self.tb)
        self.known.clear()
        self._note(first)

    def _resume(self) -> tuple[Iterator[Any], Any]:
        """A seek went wrong: go back to a key frame at or before what was handed out, and stop seeking."""
        self.keys = []
        resume_at = self.handed_out
        for ticks in (math.floor(resume_at / self.tb) - self.max_delay, self.stream.start_time or 0):
            landed = self._seek(ticks)
            if landed is not None and landed[1].pts * self.tb <= resume_at + _EPS_S:
                self._after_seek(landed[1])
                self.floor = -math.inf
                return landed
        raise VideoError("decode_error", "seeking in the file failed; it may be damaged or badly muxed")


# Codecs whose decoder drops non-reference frames with skip_frame=NONREF and nothing else.
_SKIP_NONREF_CODECS = frozenset({"h264"})
# Presentation times are rationals turned into floats (the picker allows 1e-6).
_EPS_S = 1e-6
_SKIP_MARGIN_S = 1e-5
_SUCCESSOR_WINDOW = 256
_LOOKAHEAD = 4
# A seek flushes the decoder; it pays when it skips at least this much video.
_SEEK_MIN_GAIN_S = 0.5


def _indexed_container(container: Any) -> bool:
    """Containers with one frame per packet, exact pts and an index FFmpeg seeks by."""
    name = container.format.name or ""
    return any(part in {"mov", "mp4", "matroska", "webm"} for part in name.split(","))


def _key_frame_ticks(stream: Any) -> list[int]:
    try:
        entries = stream.index_entries
        return sorted({e.timestamp for e in entries if e.is_keyframe})
    except (AttributeError, av.error.FFmpegError):  # older PyAV, or no index
        return []


def _keyframe_samples(
    container: Any,
    stream: Any,
    info: VideoInfo,
    deadline: Deadline | None,
    stream_facts: StreamFacts,
    *,
    guard: FrameLimits | None = None,
) -> Iterator[tuple[float, float, Any]]:
    any_frame = False
    last_pts = -math.inf
    packets = _PacketTally(default_duration_s=_nominal_frame_s(info))
    for frame in _decoded_key_frames(container, stream, deadline, packets=packets):
        # A frame of a key packet decoded alone is a key frame, whatever its own flag says (FFmpeg's
        # QuickTime Animation decoder never sets it: keyframes mode found none, 'damaged').
        pts = _frame_time(frame, stream)
        if pts is None:
            continue
        if pts < last_pts - _EPS_S:
            raise _times_go_back(container, pts - info.start_s, last_pts - info.start_s)
        last_pts = pts
        if guard is not None:
            guard.check(pts, frame)
        any_frame = True
        yield keyframe_sample_time(pts), pts, frame
    if not any_frame and packets.hidden_keys and not packets.shown_keys:
        raise VideoError(
            "too_short",
            "no key frame is shown: the file's only key frames lie in the part its edit list hides (a trimmed "
            "copy); sample it with sampling.mode fps or uniform",
        )
    if not any_frame:
        raise _no_frame(packets=packets.count, what="key frame")
    latest = packets.latest_pts_s
    if guard is not None and latest is not None:  # frames only demuxed (not key frames) count too
        guard.check_time(latest)
    # Every packet was read, so the end is known without decoding the last frames.
    stream_facts.end_s = packets.end_s


def _decoded_key_frames(
    container: Any, stream: Any, deadline: Deadline | None, *, packets: _PacketTally
) -> Iterator[Any]:
    """The frames of the key packets, each decoded on its own: sent, drained, then the decoder reset.

    A key frame needs no other frame, so this is exact for every codec and costs what decoding the
    key frames costs (the other packets are only read). skip_frame=NONKEY was not: FFmpeg's H.264
    decoder given an open GOP (key frames that are not IDR, as x264's --open-gop writes) returned
    some key frames out of order and dropped the others; its VP9 decoder ignores it.
    """
    codec = stream.codec_context
    try:
        for packet in container.demux(stream):
            packets.note(packet)
            _check_deadline(deadline)
            if not packet.size or not packet.is_keyframe:
                continue
            yield from codec.decode(packet)
            yield from codec.decode(None)
            codec.flush_buffers()
    except VideoError:
        raise
    except (av.error.FFmpegError, ValueError, MemoryError) as exc:
        raise VideoError("decode_error", f"decoding failed ({_short(exc)}); {_DAMAGED}") from exc


class _PacketTally:
    """Packets that held data, and where the last of them (in presentation order) stops being shown.

    Called for every packet, so it only counts and keeps the packet with the latest pts; the
    end is worked out once, from that packet. Packets an edit list hides (FFmpeg flags them
    discard: a trimmed copy's frames before or after the part it shows) are counted apart and
    do not move the end.
    """

    def __init__(self, *, default_duration_s: float) -> None:
        self.default_duration_s = default_duration_s
        self.count = 0
        self.shown_keys = 0
        self.hidden_keys = 0
        self._latest: Any = None

    def note(self, packet: Any) -> None:
        if not packet.size:
            return
        self.count += 1
        if packet.is_discard:
            self.hidden_keys += packet.is_keyframe
            return
        self.shown_keys += packet.is_keyframe
        pts = packet.pts
        if pts is not None and (self._latest is None or pts > self._latest.pts):
            self._latest = packet

    @property
    def latest_pts_s(self) -> float | None:
        latest = self._latest
        return float(latest.pts * latest.time_base) if latest is not None and latest.time_base else None

    @property
    def end_s(self) -> float | None:
        latest = self._latest
        if latest is None or not latest.time_base:
            return None
        duration = float(latest.duration * latest.time_base) if latest.duration else self.default_duration_s
        return float(latest.pts * latest.time_base) + duration


class FrameLimits:
    """limits.max_pixels and max_duration_s held against the decoded frames themselves.

    The probe checks the header, and a header can understate: a stream whose size grows after
    its first frames (a 160x120 header over 16384x8192 pictures), or a file whose stated length
    is 2 s while its frame times run on for hours (every target in between a sample of one held
    frame). Both are refused as soon as such a frame is decoded.
    """

    def __init__(self, info: VideoInfo, limits: LimitsConfig) -> None:
        self.info = info
        self.max_pixels = limits.max_pixels
        self.last_allowed_s = info.start_s + limits.max_duration_s
        self.max_duration_s = limits.max_duration_s

    def check(self, pts: float, frame: Any) -> None:
        self.check_time(pts)
        if frame.width * frame.height > self.max_pixels:
            raise VideoError(
                "too_large",
                f"a frame at {pts - self.info.start_s:.1f}s is {frame.width}x{frame.height}, above limits.max_pixels="
                f"{self.max_pixels} (the stream grows past the {self.info.width}x{self.info.height} its header states); "
                f"{RAISE_LIMIT}",
                facts=self.info.facts(),
            )

    def check_time(self, pts: float) -> None:
        if pts > self.last_allowed_s:
            raise VideoError(
                "too_large",
                f"its frames run past limits.max_duration_s={self.max_duration_s:g} (one at {pts - self.info.start_s:.1f}s) "
                f"although its header says {self.info.duration_s:.1f}s; {RAISE_LIMIT}",
                facts=self.info.facts(),
            )


def _check_deadline(deadline: Deadline | None) -> None:
    if deadline is not None and time.monotonic() > deadline.at:
        raise VideoError("timeout", deadline.too_slow())


def _no_frame(*, packets: int, what: str = "frame") -> VideoError:
    if not packets:
        return VideoError("too_short", "the video stream holds no frames; nothing to sample")
    return VideoError("decode_error", f"no {what} could be decoded; the video stream is damaged")


def _decoded_frames(container: Any, stream: Any, deadline: Deadline | None, *, packets: _PacketTally) -> Iterator[Any]:
    """Every frame the decoder gives; `packets` tallies what was read."""
    try:
        for packet in container.demux(stream):
            packets.note(packet)
            _check_deadline(deadline)
            yield from packet.decode()
    except VideoError:
        raise
    except (av.error.FFmpegError, ValueError, MemoryError) as exc:
        raise VideoError("decode_error", f"decoding failed ({_short(exc)}); {_DAMAGED}") from exc


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
            converted = (frame, to_model_input(facts.orientation.apply(frame.to_ndarray(format="rgb24")), spec))
        frames.append(converted[1])
    if current is not None:
        # The samples are exhausted: a sampler that read the whole stream has set its end.
        end = facts.end_s if facts.end_s is not None else info.start_s + info.duration_s
        yield _clip(current, pts_list, frames, info, clip_len_s, end)


def _clip(
    index: int, pts: list[float], frames: list[np.ndarray], info: VideoInfo, clip_len_s: float, end: float | None
) -> SampledClip:
    window = clip_window(index, start_s=info.start_s, clip_len_s=clip_len_s, end_of_video_s=end)
    return SampledClip(index, window.start_s, window.end_s, tuple(pts), np.stack(frames))


# --- frames ----------------------------------------------------------------------------


def _frame_duration(frame: Any, stream: Any, info: VideoInfo) -> float:
    if frame.duration:
        return float(frame.duration * (frame.time_base or stream.time_base))
    return _nominal_frame_s(info)


def _nominal_frame_s(info: VideoInfo) -> float:
    """How long a frame is shown when the file does not say: one period of the nominal rate."""
    return 1.0 / info.fps if info.fps else 1.0 / 30


def _frame_time(frame: Any, stream: Any) -> float | None:
    if frame.pts is None:
        return None
    return float(frame.pts * (frame.time_base or stream.time_base))


# --- probing ---------------------------------------------------------------------------


def _video_stream(container: Any, limits: LimitsConfig) -> Any:
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


def _probe(container: Any, stream: Any) -> VideoInfo:
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


def _uniform_span(
    container: Any,
    stream: Any,
    info: VideoInfo,
    facts: StreamFacts,
    *,
    deadline: Deadline | None = None,
    guard: FrameLimits | None = None,
) -> VideoInfo:
    """`info` with the length uniform sampling spreads over: where the stream's packets really end.

    Uniform needs the length before it decodes, and headers can be wrong: a Matroska Duration
    written by a tool that cut the file (80 s stated, 4 s of frames: 1 of 8 frames sampled, `ok`),
    one stating less than the file holds (every frame from the first second), or FFmpeg's duration
    of a VFR MP4 with B-frames, which is its decode times' span (2.9 s of 5.6 s: the second half
    never sampled). In an indexed container a seek to the key frame before the stated end and a
    read of the packets from there (no decoding) finds the real end for the cost of about one GOP,
    which the last target usually reads anyway; then the reader starts again from the beginning.
    A length within two frames or 1% of the header's keeps the header's, so targets of a file that
    tells the truth do not move. Other containers (MPEG-TS, AVI) have no index to seek by cheaply
    and keep the header's length.
    """
    tb = stream.time_base
    if not _indexed_container(container) or not tb:
        return info
    tally = _PacketTally(default_duration_s=_nominal_frame_s(info))
    stated_end = info.start_s + info.duration_s
    try:
        container.seek(math.floor(stated_end / tb), stream=stream, backward=True, any_frame=False)
        for packet in container.demux(stream):
            # A header that states far less than the file holds has the probe read the rest: the
            # decode deadline and max_duration_s hold for every packet, not after the last.
            _check_deadline(deadline)
            tally.note(packet)
            if guard is not None and packet.pts is not None:
                guard.check_time(float(packet.pts * tb))
        end = tally.end_s
    except av.error.FFmpegError:
        end = None  # no usable answer: decoding finds what is wrong
    try:
        container.seek(0)
    except av.error.FFmpegError as exc:
        raise VideoError("decode_error", f"seeking back to the start failed ({_short(exc)}); {_DAMAGED}") from exc
    if end is None or end <= info.start_s:
        return info  # the seek landed on nothing shown: the header is all there is to go by
    facts.end_s = end
    tolerance = max(2 * _nominal_frame_s(info), 0.01 * info.duration_s)
    if abs(end - stated_end) <= tolerance:
        return info
    return replace(info, duration_s=end - info.start_s)


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


def _check_complete(container: Any, stream: Any, info: VideoInfo, source: str | IO[bytes]) -> None:
    """decode_error when the file's own index lists packets past its last byte, or a Matroska/WebM
    file's Segment ends past it: an upload cut short.

    An MP4 written for streaming has its index first, so a cut-short copy still opens and says its
    full duration; fps sampling then ends early without a word and uniform sampling spreads its
    frames over time the file does not hold (1 of 8 frames from a file cut at a tenth). A Matroska
    file cut short opens and decodes up to the cut just as quietly, and its row was `ok`.
    """
    size = getattr(container, "size", 0) or 0
    if size > 0 and "matroska" in (container.format.name or ""):
        stated = matroska_stated_end(_head_in_place(source, MATROSKA_HEAD_BYTES))
        if stated is not None and stated > size:
            raise VideoError(
                "decode_error",
                f"the file is cut short: it holds {_bytes(size)} of the {_bytes(stated)} its header states; re-upload it",
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


def _bytes(count: int) -> str:
    """A size a person can compare with another: 3 significant digits in B, KB, MB or GB."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if count >= scale:
            return f"{count / scale:.3g} {unit}"
    return f"{count} bytes"


def _check_limits(info: VideoInfo, limits: LimitsConfig) -> None:
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


def _short(exc: BaseException) -> str:
    # FFmpeg's str() names the file (a path, or a URL with a query string): keep only the reason.
    text = str(getattr(exc, "strerror", None) or exc).strip() or type(exc).__name__
    return text[:200]
