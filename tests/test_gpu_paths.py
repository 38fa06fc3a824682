"""Decisions of the GPU paths, checked on a machine without a GPU.

Only pure decisions are checked with torch's CUDA queries answered as a GPU machine answers them
(where the model runs, what a pass does after running out of memory); the pipeline's own tests run
real Ray on this machine's CPUs.
"""

from __future__ import annotations

import io

import torch
import torchvision

from vidbatch import pipeline
from vidbatch.stages import ModelStage


def _state_dict_bytes(num_classes: int = 10) -> bytes:
    torch.manual_seed(7)
    buffer = io.BytesIO()
    torch.save(torchvision.models.resnet18(num_classes=num_classes).state_dict(), buffer)
    return buffer.getvalue()


def _model_stage(**options) -> ModelStage:
    return ModelStage(
        arch="resnet18",
        state_dict_ref=_state_dict_bytes(),
        resize_size=256,
        crop_size=224,
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        precision="fp32",
        batch_frames=4,
        want_probs=True,
        threads=1,
        **options,
    )


def test_a_model_actor_that_reserves_no_gpu_runs_on_cpu_even_where_it_sees_one(monkeypatch):
    """Ray hides GPUs only from workers it gives GPUs to: with resources.model_gpus: 0 on a GPU node the
    model actors still see the node's GPUs, and picked GPU 0 for themselves, unreserved."""
    assert pipeline._model_device(0.0) == "cpu"
    assert pipeline._model_device(1.0) is None and pipeline._model_device(0.25) is None  # the GPU Ray assigns
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU node, as torch sees it
    stage = _model_stage(device=pipeline._model_device(0.0))
    assert stage.runner.device == torch.device("cpu")

