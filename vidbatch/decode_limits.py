"""How long decoding may take and how big the decoded stream may get: the decode deadline,
limits.max_pixels and max_duration_s held against frames and packets, and the packet tally
that finds where a stream really ends."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vidbatch.config import LimitsConfig
from vidbatch.errors import RAISE_LIMIT, VideoError

if TYPE_CHECKING:
    from vidbatch.decode_probe import VideoInfo


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


def check_deadline(deadline: Deadline | None) -> None:
    if deadline is not None and time.monotonic() > deadline.at:
        raise VideoError("timeout", deadline.too_slow())


class PacketTally:
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
