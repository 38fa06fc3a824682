"""The model runner keeps all torch work on one thread of its own, whichever threads call it.

GNU OpenMP keeps a team of worker threads per thread that calls into torch; a runner built on
one thread and called on another (as Ray Data does with an actor's UDF) ends up with two teams,
more OpenMP threads than cores, and throttled spinning (measured ~15% slower on 2 cores).
"""

from __future__ import annotations

import io
import threading

import numpy as np
import torch
import torchvision

from vidbatch.model import ResNetRunner
from vidbatch.preprocess import PreprocessSpec


def _runner() -> ResNetRunner:
    torch.manual_seed(7)
    buffer = io.BytesIO()
    torch.save(torchvision.models.resnet18(num_classes=10).state_dict(), buffer)
    return ResNetRunner(
        arch="resnet18",
        state_dict_bytes=buffer.getvalue(),
        preprocess=PreprocessSpec(resize_size=256, crop_size=224),
        precision="fp32",
        batch_frames=4,
        threads=1,
    )


def test_forward_passes_run_on_the_runner_thread_not_the_callers():
    runner = _runner()
    ran_on: list[int] = []
    forward = runner._forward

    def recording_forward(chunk: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ran_on.append(threading.get_ident())
        assert torch.is_inference_mode_enabled(), "inference mode must hold on the thread that runs the model"
        return forward(chunk)

    runner._forward = recording_forward  # type: ignore[method-assign]
    frames = np.random.default_rng(0).integers(0, 256, (6, 224, 224, 3), dtype=np.uint8)
    results: list[tuple[np.ndarray, np.ndarray]] = []
    callers = {threading.get_ident()}

    def call() -> None:
        callers.add(threading.get_ident())
        results.append(runner(frames))

    call()
    workers = [threading.Thread(target=call) for _ in range(2)]  # alive together: distinct idents
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()

    assert len(results) == 3 and len(ran_on) == 3 * 2  # 6 frames at 4 per pass: 2 passes per call
    assert len(set(ran_on)) == 1, "every forward pass on the same thread"
    assert not set(ran_on) & callers, "none of them on a caller's thread"
    pooled, probs = results[0]
    assert pooled.shape == (6, 512) and probs.shape == (6, 10)
    for other_pooled, other_probs in results:
        np.testing.assert_array_equal(other_pooled, pooled)
        np.testing.assert_array_equal(other_probs, probs)
