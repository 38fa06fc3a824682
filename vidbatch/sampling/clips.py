"""Group sampled frames into clips: clip k is the window [k*L, (k+1)*L) of video time."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class ClipWindow:
    index: int
    start_s: float
    end_s: float


def clip_index_of(sample_time_s: float, *, start_s: float, clip_len_s: float) -> int:
    _validate_clip_len(clip_len_s)
    # The small epsilon keeps t = k*L (computed as k/fps) from falling into clip k-1.
    return max(0, math.floor((sample_time_s - start_s) / clip_len_s + 1e-9))


def clip_window(index: int, *, start_s: float, clip_len_s: float, end_of_video_s: float | None) -> ClipWindow:
    start = start_s + index * clip_len_s
    end = start + clip_len_s
    if end_of_video_s is not None and end_of_video_s > start:
        end = min(end, end_of_video_s)
    return ClipWindow(index=index, start_s=start, end_s=end)


def clip_windows(
    sample_times_s: list[float], *, start_s: float, clip_len_s: float, end_of_video_s: float | None = None
) -> list[tuple[ClipWindow, list[int]]]:
    """Windows that hold at least one sample, with the positions of their samples."""
    groups: dict[int, list[int]] = {}
    for position, t in enumerate(sample_times_s):
        groups.setdefault(clip_index_of(t, start_s=start_s, clip_len_s=clip_len_s), []).append(position)
    return [
        (clip_window(k, start_s=start_s, clip_len_s=clip_len_s, end_of_video_s=end_of_video_s), groups[k]) for k in sorted(groups)
    ]


def _validate_clip_len(clip_len_s: float) -> None:
    if not clip_len_s > 0:
        raise ValueError(f"clip_len_s must be > 0, got {clip_len_s!r}")
