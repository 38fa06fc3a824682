"""The display matrix read as `ffmpeg` reads it (fftools/ffmpeg_filter.c): turns, and mirrors too."""

from __future__ import annotations

import numpy as np
import pytest

from vidbatch.orientation import UPRIGHT, Orientation, orientation_of

ONE = 1 << 16  # 16.16 fixed point
W = 1 << 30  # the matrix's last entry (2.30)


def matrix(a: int, b: int, c: int, d: int) -> list[int]:
    return [a * ONE, b * ONE, 0, c * ONE, d * ONE, 0, 0, 0, W]


@pytest.mark.parametrize(
    ("entries", "ffmpeg_shows", "expected"),
    [
        ((1, 0, 0, 1), "as stored", UPRIGHT),
        ((0, -1, 1, 0), "transpose=cclock", Orientation(1)),  # set_display_rotation(90)
        ((-1, 0, 0, -1), "hflip + vflip", Orientation(2)),  # set_display_rotation(180)
        ((0, 1, -1, 0), "transpose=clock", Orientation(3)),  # set_display_rotation(270)
        ((-1, 0, 0, 1), "hflip", Orientation(0, mirror=True)),  # (0, hflip=True): a front camera's clip
        ((0, -1, -1, 0), "transpose=clock_flip", Orientation(1, mirror=True)),  # (90, hflip=True)
        ((1, 0, 0, -1), "vflip", Orientation(2, mirror=True)),  # (180, hflip=True)
        ((0, 1, 1, 0), "transpose=cclock_flip", Orientation(3, mirror=True)),  # (270, hflip=True)
        ((0, 0, 0, 0), "as stored (a degenerate matrix)", UPRIGHT),
    ],
)
def test_each_matrix_gives_the_orientation_ffmpeg_shows(entries, ffmpeg_shows, expected):
    assert orientation_of(matrix(*entries)) == expected, ffmpeg_shows


def test_an_angle_between_quarter_turns_takes_the_nearest():
    # 80 degrees counter-clockwise, scaled by 2 (the angle, not the scale, decides)
    angle = np.radians(80)
    m = [round(2 * np.cos(angle) * ONE), round(-2 * np.sin(angle) * ONE), 0, round(2 * np.sin(angle) * ONE),
         round(2 * np.cos(angle) * ONE), 0, 0, 0, W]  # fmt: skip
    assert orientation_of(m) == Orientation(1)
    assert orientation_of(None) == UPRIGHT


@pytest.mark.parametrize(
    ("orientation", "expected"),
    [
        (Orientation(1), [[3, 6], [2, 5], [1, 4]]),  # counter-clockwise
        (Orientation(3), [[4, 1], [5, 2], [6, 3]]),  # clockwise
        (Orientation(0, mirror=True), [[3, 2, 1], [6, 5, 4]]),
        (Orientation(2, mirror=True), [[4, 5, 6], [1, 2, 3]]),  # a vertical flip
        (Orientation(3, mirror=True), [[1, 4], [2, 5], [3, 6]]),  # the transpose
        (Orientation(1, mirror=True), [[6, 3], [5, 2], [4, 1]]),  # the anti-transpose
    ],
)
def test_apply_turns_then_mirrors(orientation, expected):
    picture = np.array([[1, 2, 3], [4, 5, 6]])[:, :, None]
    assert orientation.apply(picture)[:, :, 0].tolist() == expected
    assert orientation.swaps_sides == (orientation.quarter_turns % 2 == 1)


def test_bad_values_are_named():
    with pytest.raises(ValueError, match="quarter_turns=4"):
        Orientation(4)
    with pytest.raises(ValueError, match="9 entries, got 4"):
        orientation_of([1, 2, 3, 4])
