"""Shared fixtures: generated media (frame index painted in), seeded weights, one local Ray."""

from __future__ import annotations

import os
from pathlib import Path

import media
import pytest

pytest_plugins = ["conftest_s3"]

# Token auth is on by default in Ray 2.60; a fresh local Ray needs nothing, but keep
# test runs from picking up a developer's RAY_ADDRESS.
os.environ.pop("RAY_ADDRESS", None)


@pytest.fixture(scope="session")
def library(tmp_path_factory) -> dict[str, media.GeneratedVideo]:
    """Small videos in several codecs/containers, a variable-frame-rate file and a rotated one."""
    root = tmp_path_factory.mktemp("library")
    vfr_pts = [0.0, 0.1, 0.15, 0.6, 0.65, 1.3, 1.35, 1.4, 2.2, 2.9, 3.05, 3.5, 4.45]
    return {
        "h264": media.write_video(root / "h264.mp4", num_frames=50, fps=10),
        "vp9": media.write_video(root / "vp9.webm", num_frames=45, fps=15, width=352, height=288),
        "mpeg4": media.write_video(root / "mpeg4.avi", num_frames=30, fps=12),
        "vfr": media.write_video(root / "vfr.mp4", num_frames=len(vfr_pts), pts_s=vfr_pts),
        "rotated": media.write_video(root / "rotated.mp4", num_frames=25, fps=10, width=240, height=320, rotation=90),
        "gop": media.write_video(root / "gop.mp4", num_frames=60, fps=10, gop=15),
    }


@pytest.fixture(scope="session")
def seeded_weights(tmp_path_factory) -> Path:
    """A resnet18 state_dict saved to disk: loaded through the same path production uses."""
    import torch
    import torchvision

    torch.manual_seed(1234)
    model = torchvision.models.resnet18(weights=None)
    path = tmp_path_factory.mktemp("weights") / "resnet18-seeded.pt"
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="session")
def ray_local(s3):
    """One local Ray for the session, started after the S3 environment so every test can share it."""
    import ray

    started = not ray.is_initialized()
    if started:
        # log_to_driver=False: Ray's forwarded lines (a raylet's "disk over 95% full", say) would
        # land in the stderr of whatever CLI test runs next in this process.
        ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    yield ray
    if started:
        from vidbatch.ray_leftovers import stop_local_ray

        stop_local_ray(ray)  # no worker left hanging on the machine after the suite
