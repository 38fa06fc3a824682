"""Which frames to use: pure functions of the timeline, one file per strategy.

All strategies pick frames by presentation time, so variable frame rate is safe: for a
target time t the frame used is the one on screen at t (the last frame whose pts <= t).
"""

from vidbatch.sampling.clips import ClipWindow, clip_windows
from vidbatch.sampling.fps import fps_times, fps_times_from
from vidbatch.sampling.on_screen import OnScreenPicker
from vidbatch.sampling.uniform import uniform_times

__all__ = ["ClipWindow", "OnScreenPicker", "clip_windows", "fps_times", "fps_times_from", "uniform_times"]
