"""Pure sampling rules: target times, the frame on screen, clip grouping."""

import pytest

from vidbatch.sampling import OnScreenPicker, clip_windows, fps_times, uniform_times
from vidbatch.sampling.clips import clip_index_of


def test_fps_times_below_duration():
    assert fps_times(start_s=0.0, duration_s=3.0, fps=1.0) == [0.0, 1.0, 2.0]
    assert fps_times(start_s=0.0, duration_s=3.01, fps=1.0) == [0.0, 1.0, 2.0, 3.0]
    assert fps_times(start_s=0.5, duration_s=1.0, fps=2.0) == [0.5, 1.0]
    assert fps_times(start_s=0.0, duration_s=0.0, fps=1.0) == []


def test_fps_times_do_not_drift_over_long_videos():
    times = fps_times(start_s=0.0, duration_s=3600.0, fps=3.0)
    assert len(times) == 10800
    assert times[-1] == pytest.approx(10799 / 3.0, abs=1e-12)


def test_fps_rejects_bad_values_by_name():
    with pytest.raises(ValueError, match="fps must be > 0, got -1"):
        fps_times(start_s=0.0, duration_s=1.0, fps=-1)


def test_uniform_times_spread_evenly():
    assert uniform_times(start_s=0.0, duration_s=10.0, num_frames=4) == [0.0, 2.5, 5.0, 7.5]
    assert uniform_times(start_s=0.0, duration_s=0.0, num_frames=4) == []
    with pytest.raises(ValueError, match="num_frames must be >= 1, got 0"):
        uniform_times(start_s=0.0, duration_s=1.0, num_frames=0)


def _pick(targets, frames, end):
    picker = OnScreenPicker(targets)
    out = []
    for pts in frames:
        out += [(t, p) for t, p, _ in picker.push(pts, pts)]
    out += [(t, p) for t, p, _ in picker.finish(end)]
    return out


def test_on_screen_is_last_frame_at_or_before_target():
    frames = [0.0, 0.4, 0.9, 1.0, 2.7]  # variable frame rate
    assert _pick([0.0, 1.0, 2.0, 3.0], frames, end=3.5) == [(0.0, 0.0), (1.0, 1.0), (2.0, 1.0), (3.0, 2.7)]


def test_on_screen_tolerates_float_rounding_of_pts():
    assert _pick([1.0], [0.5, 1.0 + 1e-9], end=2.0) == [(1.0, 1.0 + 1e-9)]


def test_on_screen_stops_at_end_of_stream():
    assert _pick([0.0, 1.0, 5.0], [0.0, 0.5], end=2.0) == [(0.0, 0.0), (1.0, 0.5)]


def test_a_target_at_the_end_within_rounding_is_not_sampled():
    """The end is a float sum (last pts + its duration): 16 s of 30 fps from 2/30 s ends at 16.0666...67
    plus 4e-15, which once let the target 16.0666...67 (start + 16 / fps) take the last frame again."""
    start = 2 / 30
    frames = [start + i / 30 for i in range(480)]
    end = frames[-1] + 1 / 30
    targets = [start + k for k in range(20)]
    assert end > targets[16]  # the rounding this is about
    picked = _pick(targets, frames, end=end)
    assert [t for t, _ in picked] == targets[:16]


def test_clip_grouping_by_sample_time():
    groups = clip_windows([0.0, 1.0, 3.9, 4.0, 9.0], start_s=0.0, clip_len_s=4.0, end_of_video_s=9.5)
    assert [(w.index, w.start_s, w.end_s, pos) for w, pos in groups] == [
        (0, 0.0, 4.0, [0, 1, 2]),
        (1, 4.0, 8.0, [3]),
        (2, 8.0, 9.5, [4]),
    ]


def test_clip_index_boundary_from_division():
    # 12 / 3 == 4.0 exactly, but 0.1 * 30 is 3.0000000000000004: both land in their own clip
    assert clip_index_of(12 / 3, start_s=0.0, clip_len_s=4.0) == 1
    assert clip_index_of(3.9999999, start_s=0.0, clip_len_s=4.0) == 0
