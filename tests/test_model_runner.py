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


def _runner(*, num_classes: int = 10, batch_frames: int = 4, **options) -> ResNetRunner:
    torch.manual_seed(7)
    buffer = io.BytesIO()
    torch.save(torchvision.models.resnet18(num_classes=num_classes).state_dict(), buffer)
    return ResNetRunner(
        arch="resnet18",
        state_dict_bytes=buffer.getvalue(),
        preprocess=PreprocessSpec(resize_size=256, crop_size=224),
        precision="fp32",
        batch_frames=batch_frames,
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


@pytest.mark.parametrize(("mode", "due"), [("on", True), ("auto", False), ("off", False)])
def test_only_on_compiles(mode, due):
    assert compile_due(mode) is due


def _independent_features(frames: np.ndarray) -> np.ndarray:
    """resnet18's pooled features by torchvision's own forward, fp32, BatchNorm unfolded: no vidbatch code."""
    torch.manual_seed(7)
    model = torchvision.models.resnet18(num_classes=10).eval()
    model.fc = torch.nn.Identity()
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0
    x = torchvision.transforms.functional.normalize(x, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    with torch.inference_mode():
        return model(x).numpy()


def test_on_cpus_the_runner_packs_its_weights_and_computes_torchvisions_features():
    runner = _runner()
    assert runner.device.type == "cpu" and runner.layout == "onednn-packed"
    frames = _frames(6)  # 4 + 2 frames: a full pass and a partial one
    pooled, probs = runner(frames)
    expected = _independent_features(frames)
    relative = np.linalg.norm(pooled - expected, axis=1) / np.linalg.norm(expected, axis=1)
    assert relative.max() < 1e-4
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_a_frame_s_label_scores_do_not_depend_on_the_frames_it_was_batched_with():
    """How many frames reach a model actor together depends on timing (DESIGN: results never depend
    on how many actors ran). The float32 classifier gave the same frame scores ~3e-7 apart in
    batches of 1, 3 and 17 frames; the pooled features were identical already."""
    runner = _runner(num_classes=1000, batch_frames=32)  # ImageNet's 1000 classes
    frames = _frames(32)
    pooled, probs = runner(frames)
    assert probs.dtype == np.float32
    for size in (1, 3, 17):
        alone_pooled, alone_probs = runner(frames[:size])
        assert np.array_equal(alone_pooled, pooled[:size])
        assert np.array_equal(alone_probs, probs[:size]), f"batch of {size}"


def test_a_backbone_that_cannot_be_packed_stays_as_it_is_with_a_warning(caplog):
    runner = _runner()
    odd = torch.nn.Sequential(torch.nn.Flatten())  # not a ResNet: what packing refuses
    with caplog.at_level("WARNING", logger="vidbatch.model"):
        assert runner._packed_on_cpu(odd) is odd
    assert "oneDNN weight packing failed, the model runs eager (ValueError: not a torchvision ResNet: Sequential)" in caplog.text


def test_a_compile_mode_that_does_not_exist_is_named():
    with pytest.raises(ValueError, match="'always'.*auto, on, off"):
        validate_compile_mode("always")
    with pytest.raises(ValueError, match="'always'"):
        _runner(compile="always")


def _frames(n: int) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (n, 224, 224, 3), dtype=np.uint8)


@pytest.mark.slow
def test_on_compiles_before_the_first_pass_with_the_same_results():
    frames = _frames(6)  # 4 + 2 frames: the compiled model pads the partial pass
    packed = _runner()(frames)
    runner = _runner(compile="on")
    compiled = runner(frames)
    assert runner.compiled and runner.layout == "compiled" and runner.compile_s is not None
    again = runner(_frames(3))
    np.testing.assert_allclose(compiled[0], packed[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(compiled[1], packed[1], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(again[0], packed[0][:3], rtol=1e-4, atol=1e-5)
    assert compiled[0].shape == (6, 512) and again[1].shape == (3, 10)


_COMPILE_FAILS = """
import logging, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
from test_model_runner import _frames, _runner

logging.basicConfig(level=logging.WARNING)
kept = _runner(compile="off")(_frames(4))
runner = _runner(compile="on")
first, second = runner(_frames(4)), runner(_frames(4))
assert not runner.compiled and runner.compile_s is None, "the runner says it is compiled"
assert runner.layout == "onednn-packed", runner.layout
np.testing.assert_array_equal(first[0], kept[0])
np.testing.assert_array_equal(second[1], kept[1])
print("RESULTS SAME AS UNCOMPILED")
"""


@pytest.mark.slow
def test_a_compile_that_fails_leaves_the_runner_with_the_model_it_had(tmp_path):
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
    assert "RESULTS SAME AS UNCOMPILED" in done.stdout
    assert done.stderr.count("torch.compile of the model failed, it runs onednn-packed") == 1, done.stderr[-3000:]  # one attempt
    assert "InvalidCxxCompiler" in done.stderr  # the warning says why


def test_an_assembled_model_holds_the_given_tensors_and_leaves_the_random_state_alone():
    from vidbatch.state_dict_fit import assemble

    state = torchvision.models.resnet18(weights=None).state_dict()
    before = torch.random.get_rng_state()
    model = assemble("resnet18", state)
    assert torch.equal(torch.random.get_rng_state(), before)  # the thrown-away init drew from a fork
    assert model.conv1.weight.data_ptr() == state["conv1.weight"].data_ptr()  # assigned, not copied
    assert all(torch.equal(value, state[key]) for key, value in model.state_dict().items())


def test_auto_precision_on_a_gpu_that_only_emulates_bf16_is_fp16(monkeypatch):
    """A T4 or V100 has no bf16 units; torch's is_bf16_supported() counts emulation by default, so
    `auto` picked a slow bf16 there. (No GPU here: the check is answered as such a GPU answers it.)"""
    from vidbatch.model import pick_dtype

    def t4(including_emulation: bool = True) -> bool:
        return including_emulation  # bf16 only emulated

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", t4)
    assert pick_dtype("auto", torch.device("cuda")) == torch.float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)  # an A100
    assert pick_dtype("auto", torch.device("cuda")) == torch.bfloat16
