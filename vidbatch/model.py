"""The ResNet's batched inference, in the model actors: the device, the precision, and the
runner that turns uint8 frames into pooled features and class probabilities. The weights it
runs are resolved on the driver by vidbatch.model_weights; torchvision comes through
vidbatch.torchvision_import (which says why), there and in model_onednn.
"""

from __future__ import annotations

import io
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import numpy as np
import torch

from vidbatch.config import Precision
from vidbatch.model_compile import CompileMode, compile_due, frozen_compile, validate_compile_mode
from vidbatch.model_onednn import onednn_packing_available, pack_for_onednn
from vidbatch.preprocess import PreprocessSpec
from vidbatch.state_dict_fit import assemble

log = logging.getLogger(__name__)


def pick_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


# CPU flags of bf16 matrix instructions oneDNN uses for convolutions. Measured, resnet50 on
# 2 cores: Intel AMX (Sapphire Rapids) 42 vs 13 frames/s per core for bf16 vs fp32;
# AVX512-BF16 (AMD Zen 4) 33 vs 19 frames/s. Without them bf16 is emulated and slower.
_CPU_FP16_FLAGS = frozenset({"avx512_fp16", "amx_fp16", "avx_ne_convert"})
_CPU_BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})


def cpu_has_fast_bf16() -> bool:
    """True on CPUs with bf16 matrix instructions (AMX or AVX512-BF16). VIDBATCH_CPU_BF16=0/1 overrides."""
    forced = os.environ.get("VIDBATCH_CPU_BF16")
    if forced in {"0", "1"}:
        return forced == "1"
    return bool(_CPU_BF16_FLAGS & _cpu_flags()) and torch.backends.mkldnn.is_available()


def cpu_has_fast_fp16() -> bool:
    """True on CPUs whose fp16 convolutions oneDNN can pack (AVX512-FP16, AMX-FP16 or AVX-NE-CONVERT);
    elsewhere an fp16 model runs eager, several times slower than fp32 (resnet18 here: 12 against 59 frames/s)."""
    return bool(_CPU_FP16_FLAGS & _cpu_flags()) and torch.backends.mkldnn.is_available()


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return set(line.split())
    except OSError:
        pass
    return set()


def pick_dtype(precision: Precision, device: torch.device) -> torch.dtype:
    if precision == "fp32":
        return torch.float32
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if device.type == "cuda":
        # bf16 only where the GPU computes it (Ampere and later): torch's default check counts
        # emulation too, which would pick a slow bf16 over fp16 on a T4 or V100.
        return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16
    # CPU: bf16 where the hardware has bf16 matrix units (embeddings within ~5e-3 of fp32,
    # cosine > 0.9999); elsewhere fp32, which emulated bf16 would only slow down.
    return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32


# On CPU, oneDNN is fastest with batches that stay in cache (measured on Sapphire Rapids:
# resnet50 bf16 42 frames/s/core at 8 frames per pass, 30 at 32; fp32 14 vs 12.7).
CPU_MAX_FRAMES_PER_PASS = 8

ModelLayout = Literal["eager", "onednn-packed", "compiled"]


class ResNetRunner:
    """Pooled features and class probabilities for batches of uint8 frames.

    Inference layout: BatchNorm folded into the convolutions (eval mode; the same function,
    differences ~1e-7 relative), channels_last memory format on every device, uint8 frames
    moved to the device (pinned memory and a non-blocking copy on CUDA) and normalised there.
    On CPUs the convolution weights are packed once for oneDNN, with the ReLUs and residual adds
    fused into the convolutions (vidbatch.model_onednn; checked against the eager model when
    built, which it stays if packing fails). `layout` says which model runs.
    `compile`: whether the backbone runs through torch.compile with its weights frozen in
    (vidbatch.model_compile: `on` compiles when the runner is built; `auto` and `off` do not). A
    compile that fails (no C++ compiler for inductor, an unsupported op) is logged, and the
    runner keeps the model it had.

    All torch work (building the model and every forward pass) runs on one thread owned by the
    runner, whichever threads call it. PyTorch's CPU kernels use GNU OpenMP, which keeps a team
    of worker threads per calling thread; once two threads have used torch, there are more
    OpenMP threads than cores, and libgomp then stops spinning at its barriers and sleeps
    instead ("throttled" spinning), which leaves cores idle between the layers' parallel
    regions. Measured on 2 cores, resnet50 bf16: built on one thread and called from another,
    66-72 frames/s with 1.71-1.76 cores busy; built and called on one thread, 81-89 frames/s,
    1.99 cores busy. Ray Data builds an actor's UDF on the actor's main thread and calls it on a
    helper thread, so without this the model stage ran ~15% below its bound.
    """

    def __init__(
        self,
        *,
        arch: str,
        state_dict_bytes: bytes,
        preprocess: PreprocessSpec,
        precision: Precision = "auto",
        batch_frames: int = 32,
        device: str | None = None,
        compile: CompileMode = "off",
        threads: int | None = None,
    ) -> None:
        self._torch_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vidbatch-torch")
        compile_mode = validate_compile_mode(compile)
        self.compile_s: float | None = None  # how long the compile took, once it has succeeded
        self.layout: ModelLayout = "eager"
        self.crop = preprocess.crop_size

        def build() -> None:  # on the torch thread, like every forward pass (see the class docstring)
            if threads:
                torch.set_num_threads(threads)  # CPU threads of this process (default: what Ray or OMP_NUM_THREADS set)
            self.device = torch.device(device) if device else pick_device()
            self.dtype = pick_dtype(precision, self.device)
            if self.device.type == "cuda" and self.dtype == torch.float32:
                # fp32 means fp32: PyTorch runs cuDNN's fp32 convolutions in TF32 on Ampere and later
                # (10-bit mantissas) unless told not to, while the rows would say float32.
                torch.backends.cudnn.allow_tf32 = False
                torch.backends.cuda.matmul.allow_tf32 = False
            state_dict = torch.load(io.BytesIO(state_dict_bytes), map_location="cpu", weights_only=True)
            model = assemble(arch, state_dict)
            # The classifier in float64: a float32 matmul's rounding depends on the batch's size (the
            # library blocks it differently), which is how many frames happened to arrive together,
            # so label scores of the same frame differed by ~3e-7 between runs. In float64 the
            # difference is ~1e-16 and rounding to float32 hides it. One small matmul per batch.
            self.fc = model.fc.eval().to(self.device, torch.float64)
            model.fc = torch.nn.Identity()  # the backbone now returns the pooled feature (fc's input)
            backbone: torch.nn.Module = _fold_batchnorm(model.eval())
            # Reduced precision as weights cast once, not autocast: in inference autocast casts every
            # fp32 weight again on every forward pass (its cache only keeps tensors that require grad);
            # measured resnet50 bf16 on 2 CPU cores: 28 -> 35 frames/s, identical pooled features.
            # (BatchNorm is folded already, so no normalisation statistics run in low precision.)
            self.eager_backbone = backbone.to(self.device, self.dtype).to(memory_format=torch.channels_last)
            shape = (1, 3, 1, 1)
            self.mean = torch.tensor(preprocess.mean, device=self.device).view(shape) * 255.0
            self.std = torch.tensor(preprocess.std, device=self.device).view(shape) * 255.0
            self.per_pass = batch_frames if self.device.type == "cuda" else min(batch_frames, CPU_MAX_FRAMES_PER_PASS)
            self.backbone = self._packed_on_cpu(self.eager_backbone)
            if compile_due(compile_mode):
                self._compile()

        self._torch_thread.submit(build).result()

    def __call__(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(n, H, W, 3) uint8 -> pooled (n, D) float32, probabilities (n, classes) float32."""
        if len(frames) == 0:
            raise ValueError("no frames")
        return self._torch_thread.submit(self._run, frames).result()

    @property
    def compiled(self) -> bool:
        return self.layout == "compiled"

    def _packed_on_cpu(self, backbone: torch.nn.Module) -> torch.nn.Module:
        """The backbone with its weights packed for oneDNN, on CPUs where that works; else as given."""
        if self.device.type != "cpu" or not onednn_packing_available():
            return backbone
        # A seeded sample the size of a pass: the layout hint, and what the packed model is checked on.
        generator = torch.Generator().manual_seed(0)
        sample = torch.randn((self.per_pass, 3, self.crop, self.crop), generator=generator)
        try:
            packed = pack_for_onednn(backbone, sample.to(self.dtype).contiguous(memory_format=torch.channels_last))
        except Exception as exc:  # a torch without these oneDNN ops, a layout it rejects, a failed check
            log.warning("oneDNN weight packing failed, the model runs eager (%s: %s)", type(exc).__name__, str(exc)[:300])
            return backbone
        self.layout = "onednn-packed"
        log.info(
            "model weights packed for oneDNN (%s; features within %.1g of the eager model's)", self.dtype, packed.check_difference
        )
        return packed

    @torch.inference_mode()  # thread-local: it has to wrap the code on the torch thread
    def _run(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        source = torch.from_numpy(np.ascontiguousarray(frames))
        if self.device.type == "cuda":
            source = source.pin_memory()
        pooled_parts, prob_parts = [], []
        start = 0
        while start < len(frames):
            chunk = source[start : start + self.per_pass]
            out_of_memory = False
            try:
                pooled, probs = self._forward(chunk)
            except torch.OutOfMemoryError:
                if self.per_pass == 1:
                    raise
                out_of_memory = True
            if out_of_memory:  # outside the except: its traceback no longer holds the pass's tensors
                self._halve_pass()
                continue
            pooled_parts.append(pooled)
            prob_parts.append(probs)
            start += len(chunk)
        pooled_all = torch.cat(pooled_parts).float().cpu().numpy()
        probs_all = torch.cat(prob_parts).float().cpu().numpy()
        return pooled_all, probs_all

    def _halve_pass(self) -> None:
        """After a device ran out of memory on a pass: half as many frames a pass, for the rest of the actor's life.

        Where another process shares the GPU (resources.model_gpus below 1, another job) or
        resources.batch_frames is set too high for it, every pass would otherwise run out of memory
        again and each of the run's videos would end as `model_error`. The results are the same at
        any pass size (on GPUs up to the last bits, as between any two batch sizes)."""
        was = self.per_pass
        self.per_pass = max(1, was // 2)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()  # the failed pass's blocks back to the device, for other processes too
        log.warning(
            "the model ran out of %s memory at %d frames a pass; it runs %d frames a pass from now on "
            "(resources.batch_frames: %d avoids the failed passes)",
            self.device.type,
            was,
            self.per_pass,
            self.per_pass,
        )

    @torch.inference_mode()  # as every forward pass runs: a compile traced outside it would be traced again
    def _compile(self) -> None:
        """Compile the eager backbone (inductor packs the weights itself) and run it once on a blank
        pass; on any failure keep the model the runner had."""
        started = time.monotonic()
        kept, kept_layout = self.backbone, self.layout
        self.backbone, self.layout = frozen_compile(self.eager_backbone), "compiled"
        try:
            self._forward(torch.zeros((self.per_pass, self.crop, self.crop, 3), dtype=torch.uint8))
        except Exception as exc:  # inductor's failures have many types (a missing compiler among them)
            self.backbone, self.layout = kept, kept_layout
            first_line = next((line for line in str(exc).splitlines() if line.strip()), "")
            log.warning(
                "torch.compile of the model failed, it runs %s (%s: %s); resources.model_compile: auto skips the attempt",
                kept_layout,
                type(exc).__name__,
                first_line[:300],
            )
        else:
            self.compile_s = time.monotonic() - started
            log.info("model compiled in %.1f s", self.compile_s)

    def _forward(self, chunk: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # uint8 travels to the device; the float conversion and normalisation happen there.
        # (n, H, W, 3) permuted to (n, 3, H, W) is channels_last in memory already.
        n = len(chunk)
        if self.compiled and n < self.per_pass:
            chunk = torch.cat([chunk, chunk.new_zeros((self.per_pass - n, *chunk.shape[1:]))])
        x = chunk.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float()
        x = ((x - self.mean) / self.std).to(self.dtype).contiguous(memory_format=torch.channels_last)
        pooled = self.backbone(x).float()
        logits = self.fc(pooled.double())  # float64, see build()
        return pooled[:n], torch.softmax(logits[:n], dim=1).float()


def _fold_batchnorm(model: torch.nn.Module) -> torch.nn.Module:
    """Every Conv2d followed by its BatchNorm2d (torchvision's ResNet layout: conv1/bn1,
    convN/bnN in the blocks, downsample = Sequential(conv, bn)) folded into one convolution.
    Eval mode only; the function is the same up to float rounding (~1e-7 relative)."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    def fold(parent: torch.nn.Module, conv_name: str, bn_name: str) -> None:
        conv, bn = getattr(parent, conv_name, None), getattr(parent, bn_name, None)
        if isinstance(conv, torch.nn.Conv2d) and isinstance(bn, torch.nn.BatchNorm2d):
            setattr(parent, conv_name, fuse_conv_bn_eval(conv, bn))
            setattr(parent, bn_name, torch.nn.Identity())

    for module in list(model.modules()):
        for i in range(1, 4):
            fold(module, f"conv{i}", f"bn{i}")
        fold(module, "conv1", "bn1")
        if isinstance(module, torch.nn.Sequential) and len(module) == 2:
            fold(module, "0", "1")
    return model
