"""The model runner keeps all torch work on one thread of its own, whichever threads call it.

GNU OpenMP keeps a team of worker threads per thread that calls into torch; a runner built on
one thread and called on another (as Ray Data does with an actor's UDF) ends up with two teams,
more OpenMP threads than cores, and throttled spinning (measured ~15% slower on 2 cores).
"""

from __future__ import annotations

import io
import os
import threading

import numpy as np
import pytest
import torch
import torchvision

from vidbatch.model import ResNetRunner
from vidbatch.model_compile import compile_due, validate_compile_mode
from vidbatch.preprocess import PreprocessSpec


def _runner(**options) -> ResNetRunner:
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
        **options,
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


@pytest.mark.parametrize(
    ("mode", "device", "eager_s", "due"),
    [
        ("off", "cpu", 1e9, False),
        ("on", "cpu", 0.0, True),
        ("on", "cuda", 0.0, True),
        ("auto", "cpu", 0.0, False),  # a run starts eager: a short one never pays for a compile
        ("auto", "cpu", 9.9, False),
        ("auto", "cpu", 10.0, True),  # its passes have taken about what a compile costs
        ("auto", "cuda", 1e9, False),  # not measured on GPUs: auto stays eager there
    ],
)
def test_when_a_model_is_compiled(mode, device, eager_s, due):
    assert compile_due(mode, device_type=device, eager_s=eager_s, after_s=10.0) is due


def test_rates_are_measured_as_a_long_run_ends_up_running():
    # The bench's model bound and plan pass compile_after_s=0: `auto` compiles before the first pass
    # where a long run would compile at all, and stays eager where it would not.
    assert compile_due("auto", device_type="cpu", eager_s=0.0, after_s=0.0)
    assert not compile_due("auto", device_type="cuda", eager_s=0.0, after_s=0.0)
    assert compile_due("on", device_type="cuda", eager_s=0.0, after_s=0.0)
    assert not compile_due("off", device_type="cpu", eager_s=0.0, after_s=0.0)


def test_a_compile_mode_that_does_not_exist_is_named():
    with pytest.raises(ValueError, match="'always'.*auto, on, off"):
        validate_compile_mode("always")
    with pytest.raises(ValueError, match="'always'"):
        _runner(compile="always")


def _frames(n: int) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (n, 224, 224, 3), dtype=np.uint8)


@pytest.mark.slow
def test_auto_runs_eager_first_then_compiled_with_the_same_results():
    runner = _runner(compile="auto", compile_after_s=1e-9)  # any eager pass is enough here
    frames = _frames(6)  # 4 + 2 frames: the compiled model pads the partial pass
    eager = runner(frames)
    assert not runner.compiled and runner.eager_s > 0
    compiled = runner(frames)
    assert runner.compiled and runner.compile_s is not None
    again = runner(_frames(3))
    np.testing.assert_allclose(compiled[0], eager[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(compiled[1], eager[1], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(again[0], eager[0][:3], rtol=1e-4, atol=1e-5)
    assert compiled[0].shape == (6, 512) and again[1].shape == (3, 10)


_COMPILE_FAILS = """
import logging, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
from test_model_runner import _frames, _runner

logging.basicConfig(level=logging.WARNING)
eager = _runner(compile="off")(_frames(4))
runner = _runner(compile="on")
first, second = runner(_frames(4)), runner(_frames(4))
assert not runner.compiled and runner.compile_s is None, "the runner says it is compiled"
np.testing.assert_array_equal(first[0], eager[0])
np.testing.assert_array_equal(second[1], eager[1])
print("RESULTS SAME AS EAGER")
"""


@pytest.mark.slow
def test_a_compile_that_fails_leaves_the_runner_eager(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    # A machine without a working C++ compiler for inductor's kernels, and an empty inductor cache
    # (nothing compiled earlier on this machine is reused); both are read when torch starts.
    env = {**os.environ, "CXX": str(tmp_path / "no-such-g++"), "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")}
    done = subprocess.run(
        [sys.executable, "-c", _COMPILE_FAILS, str(Path(__file__).parent)],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "RESULTS SAME AS EAGER" in done.stdout
    assert done.stderr.count("torch.compile of the model failed, it stays eager") == 1, done.stderr[-3000:]  # one attempt
    assert "InvalidCxxCompiler" in done.stderr  # the warning says why
