"""Match decoded frames (in presentation order) to target times, streaming.

For each target t the chosen frame is the last one whose pts <= t.  Frames arrive one
by one; a frame is only handed out once the next frame's pts proves it was the one on
screen, so nothing but the previous frame is held in memory.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Generic, TypeVar

Frame = TypeVar("Frame")

# Presentation times are rationals turned into floats; allow for the rounding.
_EPS = 1e-6


class OnScreenPicker(Generic[Frame]):
    def __init__(self, targets: Sequence[float]) -> None:
        if any(b < a for a, b in zip(targets, targets[1:], strict=False)):
            raise ValueError("targets must be sorted in increasing order")
        self._targets = list(targets)
        self._next = 0
        self._prev: tuple[float, Frame] | None = None

    @property
    def done(self) -> bool:
        return self._next >= len(self._targets)

    @property
    def next_target(self) -> float | None:
        return None if self.done else self._targets[self._next]

    def push(self, pts_s: float, frame: Frame) -> Iterator[tuple[float, float, Frame]]:
        """Feed the next frame; yields (target_t, pts_s, frame) for targets now settled."""
        while not self.done and pts_s > self._targets[self._next] + _EPS:
            if self._prev is not None:  # a target before the first frame has no frame on screen
                yield self._targets[self._next], self._prev[0], self._prev[1]
            self._next += 1
        self._prev = (pts_s, frame)

    def finish(self, end_s: float) -> Iterator[tuple[float, float, Frame]]:
        """The stream ended: the last frame stays on screen until `end_s`."""
        while not self.done and self._prev is not None and self._targets[self._next] < end_s:
            yield self._targets[self._next], self._prev[0], self._prev[1]
            self._next += 1
        self._next = len(self._targets)
