"""Match decoded frames (in presentation order) to target times, streaming.

For each target t the chosen frame is the last one whose pts <= t.  Frames arrive one
by one; a frame is only handed out once the next frame's pts proves it was the one on
screen, so nothing but the previous frame is held in memory.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Generic, TypeVar

Frame = TypeVar("Frame")

# Presentation times are rationals turned into floats; allow for the rounding.
_EPS = 1e-6


class OnScreenPicker(Generic[Frame]):
    """`targets` may be endless (fps mode): the stream's end decides where sampling stops."""

    def __init__(self, targets: Iterable[float]) -> None:
        self._targets = iter(targets)
        self._next: float | None = next(self._targets, None)
        self._prev: tuple[float, Frame] | None = None

    @property
    def done(self) -> bool:
        return self._next is None

    @property
    def next_target(self) -> float | None:
        return self._next

    def _advance(self) -> None:
        previous = self._next
        self._next = next(self._targets, None)
        if self._next is not None and previous is not None and self._next < previous:
            raise ValueError(f"targets must increase; {self._next} came after {previous}")

    def push(self, pts_s: float, frame: Frame) -> Iterator[tuple[float, float, Frame]]:
        """Feed the next frame; yields (target_t, pts_s, frame) for targets now settled."""
        while self._next is not None and pts_s > self._next + _EPS:
            if self._prev is not None:  # a target before the first frame has no frame on screen
                yield self._next, self._prev[0], self._prev[1]
            self._advance()
        self._prev = (pts_s, frame)

    def finish(self, end_s: float) -> Iterator[tuple[float, float, Frame]]:
        """The stream ended: the last frame stays on screen until `end_s` (exclusive).

        A target within rounding of `end_s` is at the end, not before it: the end is a float sum
        (pts + duration), and without the margin a 16 s stream starting at 2/30 s took a 17th
        sample at 16.0667 s (a clip of one repeated frame, 4e-15 s long)."""
        while self._next is not None and self._prev is not None and self._next < end_s - _EPS:
            yield self._next, self._prev[0], self._prev[1]
            self._advance()
        self._next = None
