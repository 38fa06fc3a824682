"""Decisions of the GPU paths, checked on a machine without a GPU.

Only pure decisions are checked with torch's CUDA queries answered as a GPU machine answers them
(where the model runs, what a pass does after running out of memory); the pipeline's own tests run
real Ray on this machine's CPUs.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torchvision
from stages_here import resnet18_stage

from vidbatch import pipeline
from vidbatch.stages import ModelStage


def _state_dict_bytes(num_classes: int = 10) -> bytes:
    torch.manual_seed(7)
    buffer = io.BytesIO()
    torch.save(torchvision.models.resnet18(num_classes=num_classes).state_dict(), buffer)
    return buffer.getvalue()


def _model_stage(**options) -> ModelStage:
    return resnet18_stage(_state_dict_bytes(), batch_frames=4, threads=1, **options)


def test_a_model_actor_that_reserves_no_gpu_runs_on_cpu_even_where_it_sees_one(monkeypatch):
    """Ray hides GPUs only from workers it gives GPUs to: with resources.model_gpus: 0 on a GPU node the
    model actors still see the node's GPUs, and picked GPU 0 for themselves, unreserved."""
    assert pipeline._model_device(0.0) == "cpu"
    assert pipeline._model_device(1.0) is None and pipeline._model_device(0.25) is None  # the GPU Ray assigns
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU node, as torch sees it
    stage = _model_stage(device=pipeline._model_device(0.0))
    assert stage.runner.device == torch.device("cpu")


class _SmallDevice:
    """A backbone on a device with room for `room` frames a pass: larger passes run out of memory,
    as CUDA's allocator reports it (torch.OutOfMemoryError)."""

    def __init__(self, backbone, *, room: int) -> None:
        self.backbone, self.room, self.refused = backbone, room, []

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if len(x) > self.room:
            self.refused.append(len(x))
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {len(x)} frames' worth")
        return self.backbone(x)


def _frames(n: int) -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, (n, 224, 224, 3), dtype=np.uint8)


def test_a_pass_that_runs_out_of_device_memory_is_run_again_in_smaller_passes():
    """Before, every pass larger than the device had room for failed, and with it each batch's videos
    (`model_error`, retried by the next run, which failed the same way)."""
    runner = _model_stage().runner
    frames = _frames(7)
    expected = runner(frames)
    small = _SmallDevice(runner.backbone, room=1)
    runner.backbone = small
    pooled, probs = runner(frames)
    assert small.refused == [4, 2]  # 4 frames a pass, then 2, then 1 for the rest of the actor's life
    assert runner.per_pass == 1
    np.testing.assert_allclose(pooled, expected[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(probs, expected[1], rtol=1e-5, atol=1e-7)
    runner(frames)
    assert small.refused == [4, 2]  # no pass is tried at the failed sizes again


def test_a_device_without_room_for_one_frame_fails_the_batch_s_videos_as_model_error():
    """Nothing hangs and no row is lost: the batch's clips come back as `model_error` (a transient status,
    retried by the next run), with the allocator's error as the error type."""
    import pyarrow as pa

    from vidbatch.video_task import DECODED

    stage = _model_stage()
    stage.runner.backbone = _SmallDevice(stage.runner.backbone, room=0)
    frames = _frames(3)
    rows = [
        {"video_id": "a", "kind": "clip", "clip_index": 0, "num_frames": 2, "frames": frames[:2].tobytes()},
        {"video_id": "b", "kind": "clip", "clip_index": 0, "num_frames": 1, "frames": frames[2:].tobytes()},
        {"video_id": "a", "kind": "video", "status": "ok", "num_clips": 1},
    ]
    out = stage(pa.Table.from_pylist(rows, schema=DECODED)).to_pylist()
    assert [(r["video_id"], r["kind"]) for r in out] == [("a", "clip"), ("b", "clip"), ("a", "video")]
    assert [r["status"] for r in out[:2]] == ["model_error", "model_error"]
    assert {r["error_type"] for r in out[:2]} == {"OutOfMemoryError"}
    assert all(r["embedding"] is None for r in out) and out[2]["status"] == "ok"


def test_more_than_one_gpu_per_model_actor_is_refused_naming_what_to_set_instead():
    """A model actor runs on one GPU: model_gpus: 2 reserved two per actor and left one idle."""
    from vidbatch.config import ResourcesConfig, parse_job
    from vidbatch.errors import JobError

    raw = {"name": "t", "manifest": "m.parquet", "output": "out", "model": {"weights": "none"}}
    with pytest.raises(JobError, match=r"resources.model_gpus=2: .*reserve GPUs it leaves idle.*resources.model_actors"):
        parse_job({**raw, "resources": {"model_gpus": 2}})
    for shared_or_whole in (0, 0.25, 1):
        assert ResourcesConfig(model_gpus=shared_or_whole).model_gpus == shared_or_whole


def test_a_model_actor_given_a_gpu_it_cannot_use_says_so():
    """A CPU-only torch (or no driver) on a GPU node ran the model on the CPU without a word."""
    from vidbatch.stages import gpus_left_unused

    note = gpus_left_unused(["3"], torch.device("cpu"))
    assert note and "GPU 3 from Ray" in note and "resources.model_gpus: 0" in note
    assert gpus_left_unused([], torch.device("cpu")) is None  # a CPU actor
    assert gpus_left_unused(["0"], torch.device("cuda")) is None  # a GPU actor on its GPU
