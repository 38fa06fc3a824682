"""`uniform` mode: num_frames times spread evenly over the duration: start + i * duration / n."""

from __future__ import annotations


def uniform_times(*, start_s: float, duration_s: float, num_frames: int) -> list[float]:
    _validate_num_frames(num_frames)
    if not duration_s > 0:
        return []
    step = duration_s / num_frames
    return [start_s + i * step for i in range(num_frames)]


def _validate_num_frames(num_frames: int) -> None:
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames!r}")
