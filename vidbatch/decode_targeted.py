"""Decoding the frames on screen at the target times of `fps` and `uniform` sampling
(vidbatch.sampling computes the targets), skipping and seeking past what no target needs."""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

import av
import av.error

from vidbatch.config import SamplingConfig
from vidbatch.decode_frames import DAMAGED, EPS_S, frame_duration, frame_time, no_frame, short_reason, times_go_back
from vidbatch.decode_limits import Deadline, FrameLimits, check_deadline
from vidbatch.decode_probe import StreamFacts, VideoInfo, indexed_container
from vidbatch.errors import VideoError
from vidbatch.sampling import OnScreenPicker, fps_times_from, uniform_times


def targeted_samples(
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
            if last is not None and pts < last_pts - EPS_S:
                raise times_go_back(container, pts - info.start_s, last_pts - info.start_s)
            last, last_pts = frame, pts
            # One frame can settle many targets (a still shown for an hour, a jump in the
            # timestamps): the deadline holds per sample, not only per packet read.
            for sample in picker.push(pts, frame):
                check_deadline(deadline)
                yield sample
            if picker.done:
                return
    finally:
        if stats is not None:
            stats.update(seeks=reader.seeks, skipped_packets=reader.skipped_packets, decoded_frames=reader.decoded)
    if last is None:
        raise no_frame(packets=reader.packets)
    # The video ends when its last frame stops being shown. Container metadata is not
    # trusted for this: it overstates truncated files and understates some VFR muxes.
    end_s = last_pts + frame_duration(last, stream, info)
    if stream_facts is not None:
        stream_facts.end_s = end_s
    for sample in picker.finish(end_s):
        check_deadline(deadline)
        yield sample


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
        indexed = indexed_container(container)
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
            raise VideoError("decode_error", f"decoding failed ({short_reason(exc)}); {DAMAGED}") from exc
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
            check_deadline(self.deadline)
            self._set_skip(self.skip and self._unneeded(packet))
            for frame in packet.decode():
                self.decoded += 1
                pts = frame_time(frame, self.stream)
                if pts is None or pts <= self.drop_through or pts < self.floor - EPS_S:
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
        ticks = math.floor((target + EPS_S) / self.tb)
        # Index times are decode times; a key frame is shown max_delay ticks later at most.
        i = bisect.bisect_right(self.keys, ticks - self.max_delay) - 1
        if i < 0 or self.keys[i] <= self.position + max(1, round(_SEEK_MIN_GAIN_S / self.tb)):
            return None  # decoding on to the target is as cheap
        before = self.position
        landed = self._seek(ticks)  # FFmpeg: the key frame shown at or before `ticks`
        if landed is None or landed[1].pts * self.tb > target + EPS_S:
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
            if landed is not None and landed[1].pts * self.tb <= resume_at + EPS_S:
                self._after_seek(landed[1])
                self.floor = -math.inf
                return landed
        raise VideoError("decode_error", "seeking in the file failed; it may be damaged or badly muxed")


# Codecs whose decoder drops non-reference frames with skip_frame=NONREF and nothing else.
_SKIP_NONREF_CODECS = frozenset({"h264"})


_SKIP_MARGIN_S = 1e-5
_SUCCESSOR_WINDOW = 256
_LOOKAHEAD = 4
# A seek flushes the decoder; it pays when it skips at least this much video.
_SEEK_MIN_GAIN_S = 0.5


def _key_frame_ticks(stream: Any) -> list[int]:
    try:
        entries = stream.index_entries
        return sorted({e.timestamp for e in entries if e.is_keyframe})
    except (AttributeError, av.error.FFmpegError):  # older PyAV, or no index
        return []
