"""`fps` mode: t = start, start + 1/fps, start + 2/fps, ... below the end of the video."""

from __future__ import annotations

import itertools
from collections.abc import Iterator


def fps_times(*, start_s: float, duration_s: float, fps: float) -> list[float]:
    _validate_fps(fps)
    _validate_duration(duration_s)
    count = _count_below(duration_s, 1.0 / fps)
    # k / fps, not a running sum: no drift over an hour of video.
    return [start_s + k / fps for k in range(count)]


def fps_times_from(*, start_s: float, fps: float) -> Iterator[float]:
    """Endless t = start + k/fps: the decoded stream's real end decides where it stops,
    because container durations lie (truncated uploads, muxers that miscount VFR)."""
    _validate_fps(fps)
    return (start_s + k / fps for k in itertools.count())


def _count_below(duration_s: float, step_s: float) -> int:
    count = int(duration_s / step_s)
    if count * step_s < duration_s - 1e-9:
        count += 1
    while count > 0 and (count - 1) * step_s >= duration_s - 1e-9:
        count -= 1
    return count


def _validate_fps(fps: float) -> None:
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps!r}")


def _validate_duration(duration_s: float) -> None:
    if not duration_s >= 0:
        raise ValueError(f"duration_s must be >= 0, got {duration_s!r}")
