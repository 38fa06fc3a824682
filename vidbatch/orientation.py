"""How to turn a decoded picture upright: its display matrix, read as FFmpeg's command line reads it.

A phone stores the picture as the sensor saw it and says in the display matrix how to show
it: a quarter turn, and for front cameras and edited clips a mirror too. `ffmpeg` (autorotate,
on by default) turns and flips the frames before any filter sees them, so that is the
picture a person saw; the same rules here give the model that picture. They are those of
fftools/ffmpeg_filter.c: the matrix's angle picks a transpose, a half turn or nothing, and the
signs of its entries say which mirror comes with it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Orientation:
    """Turn the stored picture `quarter_turns` counter-clockwise, then mirror it left-right if `mirror`."""

    quarter_turns: int = 0
    mirror: bool = False

    def __post_init__(self) -> None:
        if self.quarter_turns not in range(4):
            raise ValueError(f"quarter_turns={self.quarter_turns}: give 0, 1, 2 or 3 counter-clockwise quarter turns")

    @property
    def swaps_sides(self) -> bool:
        """Is the upright picture the stored one's height wide?"""
        return self.quarter_turns % 2 == 1

    def apply(self, rgb: np.ndarray) -> np.ndarray:
        """The upright picture of an HxWxC array (a view where numpy allows one)."""
        upright = np.rot90(rgb, k=self.quarter_turns) if self.quarter_turns else rgb  # positive k: counter-clockwise
        return upright[:, ::-1] if self.mirror else upright


UPRIGHT = Orientation()

# fftools' transposes, as a turn then a mirror: clock (90 clockwise), cclock (90 counter-clockwise),
# and the two that also flip vertically (a vertical flip is a half turn and a mirror).
_CLOCK = Orientation(3)
_CCLOCK = Orientation(1)
_CLOCK_FLIP = Orientation(1, mirror=True)  # vflip(clock) = mirror(half turn + clock)
_CCLOCK_FLIP = Orientation(3, mirror=True)  # vflip(cclock): the transpose
_HALF_TURN = Orientation(2)
_HFLIP = Orientation(0, mirror=True)
_VFLIP = Orientation(2, mirror=True)


def orientation_of(matrix: Sequence[int] | None) -> Orientation:
    """The orientation FFmpeg shows for a display matrix (9 int32: a, b, u, c, d, v, x, y, w in 16.16).

    Angles between the quarter turns (rare; `ffmpeg` rotates by the exact angle) take the
    nearest quarter turn. A missing or degenerate matrix leaves the picture as stored.
    """
    if matrix is None:
        return UPRIGHT
    _validate_matrix(matrix)
    theta = _clockwise_degrees(matrix)
    if theta is None:
        return UPRIGHT
    a, c, d = matrix[0], matrix[3], matrix[4]
    if abs(theta - 90) < 1.0:
        return _CCLOCK_FLIP if c > 0 else _CLOCK
    if abs(theta - 180) < 1.0:
        if a < 0 and d < 0:
            return _HALF_TURN
        return _HFLIP if a < 0 else _VFLIP if d < 0 else UPRIGHT
    if abs(theta - 270) < 1.0:
        return _CLOCK_FLIP if c < 0 else _CCLOCK
    if abs(theta) < 1.0 or abs(theta - 360) < 1.0:
        return _VFLIP if d < 0 else UPRIGHT
    return Orientation(round(-theta / 90) % 4)


def frame_orientation(frame: Any) -> Orientation:
    """The orientation of a PyAV frame, from its DISPLAYMATRIX side data (PyAV puts the stream's
    matrix on every decoded frame); upright when it has none.

    Read it once per video (ffmpeg too takes the first frame's matrix for the whole stream).
    PyAV 18 keeps a frame's side data on the frame, in a reference cycle with it, so a frame read
    here is freed only by Python's cyclic garbage collector: read on every sampled frame, the
    frames piled up (+95 MB over 1,350 frames of 320x240) and, under the decode sandbox's memory
    cap, FFmpeg then failed with EAGAIN. `decode_video` collects once per video.
    """
    from av.sidedata.sidedata import Type

    side_data = frame.side_data.get(Type.DISPLAYMATRIX)
    if side_data is None:
        return UPRIGHT
    return orientation_of(np.frombuffer(bytes(side_data), dtype=np.int32).tolist())


def _clockwise_degrees(matrix: Sequence[int]) -> float | None:
    """fftools' get_rotation: minus av_display_rotation_get, rounded, in [0, 360); None when degenerate."""
    a, b, c, d = (value / 65536 for value in (matrix[0], matrix[1], matrix[3], matrix[4]))
    scale_x, scale_y = math.hypot(a, c), math.hypot(b, d)
    if scale_x == 0 or scale_y == 0:
        return None
    angle = math.degrees(math.atan2(b / scale_y, a / scale_x))
    theta = math.copysign(math.floor(abs(angle) + 0.5), angle)  # C's round(): halves away from zero
    return theta - 360 * math.floor(theta / 360 + 0.9 / 360)


def _validate_matrix(matrix: Sequence[int]) -> None:
    if len(matrix) != 9:
        raise ValueError(f"a display matrix has 9 entries, got {len(matrix)}: {list(matrix)!r}")
