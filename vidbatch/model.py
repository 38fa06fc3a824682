"""The ResNet: weights resolution (once, on the driver) and batched inference (in actors).
torchvision comes through vidbatch.torchvision_import (which says why), here and in model_onednn.

torchvision's weights entries bundle the preprocessing and the category names; we read
both from them instead of re-writing them.  A state_dict file or `weights: none` gets
the classic recipe (short side 256, centre crop 224) and ImageNet's category names.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import io
import logging
import os
import re
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast, get_args

import numpy as np
import torch

from vidbatch.config import Arch, ModelConfig, Precision, StorageConfig
from vidbatch.errors import JobError
from vidbatch.model_compile import CompileMode, compile_due, frozen_compile, validate_compile_mode
from vidbatch.model_onednn import onednn_packing_available, pack_for_onednn
from vidbatch.preprocess import PreprocessSpec
from vidbatch.torchvision_import import ResNet, WeightsEnum, get_model_builder, get_model_weights, torchvision

log = logging.getLogger(__name__)

_IMAGENET_CATEGORIES: tuple[str, ...] = tuple(
    torchvision.models.ResNet50_Weights.IMAGENET1K_V2.meta["categories"]
)


@dataclass(frozen=True)
class ResolvedWeights:
    """Everything the actors need, resolved once per job."""

    arch: str
    model_id: str
    state_dict_bytes: bytes  # torch.save'd state_dict; shared through the object store
    categories: tuple[str, ...]
    preprocess: PreprocessSpec
    untrained: bool
    sha256: str  # of the weights file as stored (torchvision's checkpoint or the given file)
    note: str | None = None  # e.g. "a copy of torchvision's resnet50 IMAGENET1K_V2"


STATE_DICT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")
# A download attempt on a machine without internet may hang instead of failing (dropped
# packets); torch.hub's urlopen has no timeout of its own.
DOWNLOAD_TIMEOUT_S = 30.0


def ways_to_provide(arch: str, name: str | None = None) -> str:
    """The ways to get weights onto a machine without internet; every weights error ends with this.

    Without a name, the arch's default weights are named (resnet18 has no IMAGENET1K_V2).
    """
    name = name or get_model_weights(arch).DEFAULT._name_
    return (
        "Provide the weights one of these ways: "
        f"(1) copy torchvision's checkpoint file for {arch} {name} into $TORCH_HOME/hub/checkpoints/ "
        "(default ~/.cache/torch/hub/checkpoints/; torchvision fills it on any machine with internet); "
        f"(2) on a machine with internet run `vidbatch weights stage {name} --arch {arch} --to s3://BUCKET/PREFIX/` "
        "and set model.weights to the URI it prints; "
        "(3) set model.weights to a state_dict file (.pt/.pth/.safetensors) at a local path or a URI such as s3://...; "
        "(4) model.weights: none for a seeded random init (embeddings and labels are then not meaningful)"
    )


def resolve_weights(config: ModelConfig, storage: StorageConfig) -> ResolvedWeights:
    """Load the weights on the driver; raises JobError listing the ways to provide them."""
    name = config.weights
    if name.lower() == "none":
        return _random_init(config)
    weights_enum = get_model_weights(config.arch)
    enum_name = name.split(".", 1)[1] if name.startswith(weights_enum.__name__ + ".") else name
    enum_name = "DEFAULT" if enum_name.upper() == "DEFAULT" else enum_name
    if enum_name in weights_enum.__members__:
        return _torchvision_weights(config.arch, weights_enum[enum_name])
    if name.lower().endswith(STATE_DICT_SUFFIXES) or "/" in name or "\\" in name:
        return _state_dict_file(config, name, storage)
    known = ", ".join(weights_enum.__members__)
    raise JobError(
        f"model.weights={name!r}: not a torchvision weights name for {config.arch} ({known}), "
        "not a state_dict path (.pt/.pth/.safetensors), and not 'none'. " + ways_to_provide(config.arch)
    )


def _random_init(config: ModelConfig) -> ResolvedWeights:
    # Seeded so every actor and every rerun gets the same untrained network.
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(config.seed)
    model = get_model_builder(config.arch)(weights=None)
    torch.random.set_rng_state(generator_state)
    blob = _serialize(model.state_dict())
    return ResolvedWeights(
        arch=config.arch,
        model_id=f"{config.arch}:UNTRAINED-random-init-seed{config.seed}",
        state_dict_bytes=blob,
        categories=_IMAGENET_CATEGORIES,
        preprocess=PreprocessSpec(),
        untrained=True,
        sha256=hashlib.sha256(blob).hexdigest(),
    )


# --- torchvision's checkpoints -----------------------------------------------------------


def checkpoint_file(weights: WeightsEnum) -> Path:
    """Where torchvision keeps this checkpoint: $TORCH_HOME/hub/checkpoints/<file name of the url>."""
    return Path(torch.hub.get_dir()) / "checkpoints" / weights.url.rsplit("/", 1)[-1]


def _hash_prefix(url_or_name: str) -> str | None:
    """torchvision names its files `<arch>-<first hex digits of the sha256>.pth`."""
    match = torch.hub.HASH_REGEX.search(url_or_name.rsplit("/", 1)[-1])
    return match.group(1) if match and match.group(1) else None


def fetch_checkpoint(arch: str, weights: WeightsEnum, *, label: str = "model.weights=") -> tuple[bytes, str]:
    """The checkpoint's bytes and sha256: from the local torch cache, else downloaded into it.

    The hash is checked against the prefix in torchvision's file name for cached files too
    (torch.hub checks only what it downloads). Raises JobError listing the ways.
    """
    path = checkpoint_file(weights)
    name = weights._name_
    what = f"{label}{name} for {arch}"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        previous = socket.getdefaulttimeout()
        socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
        try:
            torch.hub.download_url_to_file(weights.url, str(path), hash_prefix=_hash_prefix(weights.url), progress=False)
        except Exception as exc:  # URLError, timeout, hash mismatch: all mean "not available here"
            raise JobError(
                f"{what}: not in the local torch cache ({path}) and could not be downloaded "
                f"({type(exc).__name__}: {str(exc)[:160]}). " + ways_to_provide(arch, name)
            ) from exc
        finally:
            socket.setdefaulttimeout(previous)
    raw = path.read_bytes()
    sha = hashlib.sha256(raw).hexdigest()
    prefix = _hash_prefix(weights.url)
    if prefix and not sha.startswith(prefix):
        raise JobError(
            f"{what}: the cached file {path} is damaged (sha256 {sha[:12]}..., "
            f"expected {prefix}...); delete it. " + ways_to_provide(arch, name)
        )
    return raw, sha


def _torchvision_preprocess(weights: WeightsEnum) -> PreprocessSpec:
    transform = weights.transforms()
    return PreprocessSpec(
        resize_size=int(transform.resize_size[0]),
        crop_size=int(transform.crop_size[0]),
        mean=tuple(transform.mean),  # type: ignore[arg-type]
        std=tuple(transform.std),  # type: ignore[arg-type]
    )


def _torchvision_weights(arch: str, weights: WeightsEnum) -> ResolvedWeights:
    raw, sha = fetch_checkpoint(arch, weights)
    state_dict = _load_state_dict(raw, str(checkpoint_file(weights)))
    _check_fits(arch, state_dict, weights._name_)
    return ResolvedWeights(
        arch=arch,
        model_id=f"{arch}:{weights._name_}",
        state_dict_bytes=_serialize(state_dict),
        categories=tuple(weights.meta["categories"]),
        preprocess=_torchvision_preprocess(weights),
        untrained=False,
        sha256=sha,
    )


def _known_torchvision(arch: str, sha: str) -> WeightsEnum | None:
    """The torchvision weights this file is a copy of (e.g. made by `vidbatch weights stage`), if any."""
    for member in get_model_weights(arch):
        prefix = _hash_prefix(member.url)
        if prefix and len(prefix) >= 8 and sha.startswith(prefix):
            return member
    return None


# --- state_dict files ----------------------------------------------------------------------


def _state_dict_file(config: ModelConfig, uri: str, storage: StorageConfig) -> ResolvedWeights:
    raw = _read_weights_file(uri, config.arch, storage)
    sha = hashlib.sha256(raw).hexdigest()
    state_dict = _load_state_dict(raw, uri)
    _check_fits(config.arch, state_dict, uri)
    _check_values(state_dict, uri)
    num_classes = _num_classes(state_dict)
    known = _known_torchvision(config.arch, sha)
    if known is not None:
        # A byte-identical copy of torchvision's checkpoint: use its own preprocessing and names.
        categories: tuple[str, ...] = tuple(known.meta["categories"])
        preprocess = _torchvision_preprocess(known)
        note: str | None = f"a copy of torchvision's {config.arch} {known._name_}"
    else:
        categories = _IMAGENET_CATEGORIES if num_classes == 1000 else tuple(f"class_{i}" for i in range(num_classes))
        preprocess = PreprocessSpec()
        note = None
    return ResolvedWeights(
        arch=config.arch,
        model_id=f"{config.arch}:sha256-{sha}",
        state_dict_bytes=_serialize(state_dict),
        categories=categories,
        preprocess=preprocess,
        untrained=False,
        sha256=sha,
        note=note,
    )


def _read_weights_file(uri: str, arch: str, storage: StorageConfig) -> bytes:
    from vidbatch.storage import filesystem, is_pipe_or_device  # storage is light; keeps this module's import graph small

    where = f"model.weights={uri!r}"
    try:
        fs, path = filesystem(uri, storage)
        if is_pipe_or_device(fs.info(path)):
            raise JobError(f"{where} names a pipe or device, not a weights file. " + ways_to_provide(arch))
        return bytes(fs.cat_file(path))  # one GET; read once, on the driver
    except FileNotFoundError as exc:
        raise JobError(f"{where}: no such file. " + ways_to_provide(arch)) from exc
    except PermissionError as exc:
        raise JobError(f"{where}: access denied; grant the job's identity read access. " + ways_to_provide(arch)) from exc
    except (OSError, ValueError) as exc:
        raise JobError(f"{where}: could not be read ({type(exc).__name__}: {str(exc)[:160]}). " + ways_to_provide(arch)) from exc


def _check_fits(arch: str, state_dict: dict[str, torch.Tensor], what: str) -> None:
    try:
        _assemble(arch, state_dict)
    except (RuntimeError, KeyError, ValueError, AttributeError) as exc:
        misfit = _misfit(arch, state_dict) or str(exc)[:300]
        raise JobError(f"model.weights={what!r} does not fit {arch}: {misfit}") from exc


def _check_values(state_dict: dict[str, torch.Tensor], what: str) -> None:
    """Weights that fit but cannot give usable embeddings are refused before any video is decoded:
    NaN or Inf anywhere (a diverged training run, a damaged export), or a first convolution of
    zeros (its output is the same for every frame, so is every embedding)."""
    non_finite = [
        key for key, tensor in state_dict.items() if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())
    ]
    if non_finite:
        more = f" and {len(non_finite) - 3} more" if len(non_finite) > 3 else ""
        shown = ", ".join(repr(key) for key in non_finite[:3]) + more
        raise JobError(
            f"model.weights={what!r} holds NaN or Inf values (in {shown}); the training diverged or the "
            "file is damaged: export the weights again"
        )
    first = state_dict.get("conv1.weight")
    if first is not None and not bool(first.any()):
        raise JobError(
            f"model.weights={what!r}: 'conv1.weight' is all zeros, so every video would get the same "
            "embedding; export the trained weights again"
        )


def _assemble(arch: str, state_dict: dict[str, torch.Tensor]) -> ResNet:
    """torchvision's `arch` holding exactly these tensors (a key or shape that does not fit raises).

    The tensors are assigned, not copied. The model is built on the CPU, not on the meta device,
    though its random init is then thrown away (0.2 s for resnet50): on the meta device that init
    runs torch's Python reference kernels, whose first call imports torch._dynamo, ~1 s of CPU and
    ~77 MB in the driver and in every model actor (see vidbatch.torchvision_import). The init
    draws from a forked generator, so the process's own random state is left as it was.
    """
    with torch.random.fork_rng(devices=[]):
        model = cast(ResNet, get_model_builder(arch)(weights=None, num_classes=_num_classes(state_dict)))
    model.load_state_dict(state_dict, assign=True)
    return model


def _misfit(arch: str, state_dict: dict[str, Any], *, shown: int = 3) -> str:
    """What keeps a state_dict from fitting `arch`, short enough to read ('' when nothing is found).

    torch's own message lists every key (hundreds for a state_dict of another arch), so a cut-off
    copy of it would hide the one fact that matters: which arch the tensors are, if any.
    """
    expected = _expected_shapes(arch, _num_classes(state_dict))
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    wrong = [
        f"size mismatch for {key}: {tuple(value.shape)} in the file, {expected[key]} in {arch}"
        for key, value in state_dict.items()
        if key in expected and isinstance(value, torch.Tensor) and tuple(value.shape) != expected[key]
    ]

    def listed(keys: list[str]) -> str:
        return ", ".join(keys[:shown]) + (", ..." if len(keys) > shown else "")

    parts = [f"{len(missing)} of its keys are missing ({listed(missing)})"] if missing else []
    parts += [f"{len(unexpected)} keys are not {arch}'s ({listed(unexpected)})"] if unexpected else []
    parts += wrong[:shown] + ([f"{len(wrong) - shown} more size mismatches"] if len(wrong) > shown else [])
    if not parts:
        return ""
    others = [a for a in _ARCHS if a != arch and _fits_shapes(state_dict, _expected_shapes(a, _num_classes(state_dict)))]
    if others:  # the likeliest mistake, said first: the details would bury it
        return f"the tensors are {others[0]}'s: set model.arch: {others[0]} ({parts[0]})"
    return "; ".join(parts)


_ARCHS: tuple[str, ...] = get_args(Arch)


@functools.cache
def _expected_shapes(arch: str, num_classes: int) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        model = get_model_builder(arch)(weights=None, num_classes=num_classes)
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


def _fits_shapes(state_dict: dict[str, Any], expected: dict[str, tuple[int, ...]]) -> bool:
    return state_dict.keys() == expected.keys() and all(
        isinstance(state_dict[key], torch.Tensor) and tuple(state_dict[key].shape) == shape for key, shape in expected.items()
    )


# Training checkpoints wrap the state_dict: {'model': ...} from torchvision's reference scripts,
# {'state_dict': ...} from Lightning and many others.
_CHECKPOINT_KEYS = ("model", "state_dict", "model_state_dict")
# Pickled with torchvision's reference checkpoints ('args'); constructing it runs no code of the file's.
_SAFE_CHECKPOINT_GLOBALS: list[Any] = [argparse.Namespace]


def _load_state_dict(raw: bytes, uri: str) -> dict[str, torch.Tensor]:
    if uri.lower().endswith(".safetensors"):
        try:
            from safetensors.torch import load as load_safetensors
        except ImportError as exc:
            raise JobError(f"model.weights={uri!r}: install the 'safetensors' package to read .safetensors files") from exc
        try:
            return dict(load_safetensors(raw))
        except Exception as exc:
            raise JobError(f"model.weights={uri!r} is not a readable .safetensors file: {str(exc)[:200]}") from exc
    try:
        with torch.serialization.safe_globals(_SAFE_CHECKPOINT_GLOBALS):
            loaded = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise JobError(f"model.weights={uri!r} {_unloadable(raw, exc)}") from exc
    if isinstance(loaded, dict):
        wrapped = [key for key in _CHECKPOINT_KEYS if isinstance(loaded.get(key), dict)]
        if wrapped:
            loaded = loaded[wrapped[0]]  # a training checkpoint
    if not isinstance(loaded, dict):
        raise JobError(f"model.weights={uri!r} holds a {type(loaded).__name__}, not a state_dict")
    # Saved from a model wrapped in DistributedDataParallel or DataParallel: every key starts 'module.'.
    if loaded and all(isinstance(key, str) and key.startswith("module.") for key in loaded):
        loaded = {key.removeprefix("module."): value for key, value in loaded.items()}
    return loaded


def _unloadable(raw: bytes, exc: Exception) -> str:
    """Why torch.load refused a weights file, said for a person, not torch's advice on weights_only."""
    text = str(exc)
    refused_global = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if refused_global:
        return (
            f"holds Python objects besides tensors ({refused_global.group(1)}), which are not loaded: they could run "
            "code. Save the weights alone: torch.save(model.state_dict(), path)"
        )
    if not raw.startswith((b"PK\x03\x04", b"\x80")):  # torch.save's zip archive, or its legacy pickle
        return f"is not a torch checkpoint (torch.save writes a zip archive; this file starts with {raw[:20]!r})"
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return f"is not a torch state_dict file: {first[:200]}"


# --- staging torchvision weights into object storage ---------------------------------------


@dataclass(frozen=True)
class StagedWeights:
    uri: str
    sha256: str
    size: int
    source: str  # the torch cache file it was copied from


def stage_torchvision_weights(arch: str, name: str, to: str, storage: StorageConfig) -> StagedWeights:
    """Copy torchvision's checkpoint (from the torch cache, or downloaded) byte for byte to `to`.

    `to` is a file URI ending in .pth/.pt, or a prefix: then torchvision's own file name is
    appended (its hash prefix lets later runs recognise the copy and use its preprocessing).
    """
    from vidbatch.storage import filesystem, is_local, join_uri

    archs = get_args(Arch)
    if arch not in archs:
        raise JobError(
            f"model {arch!r} (from --arch, or else the weights name): vidbatch runs {', '.join(archs)}; "
            "weights of another model cannot be used"
        )
    weights_enum = get_model_weights(arch)
    enum_name = name.split(".", 1)[1] if "." in name else name
    if enum_name.upper() == "DEFAULT":
        enum_name = "DEFAULT"
    if "." in name and not name.startswith(weights_enum.__name__ + "."):
        named = name.split(".", 1)[0].removesuffix("_Weights").lower()
        fix = f"--arch {named}" if named in archs else f"weights of one of {', '.join(archs)}"
        raise JobError(f"weights {name!r} are not {arch}'s ({weights_enum.__name__}); give {fix}")
    if enum_name not in weights_enum.__members__:
        raise JobError(f"weights {name!r}: not a torchvision weights name for {arch} ({', '.join(weights_enum.__members__)})")
    weights = weights_enum[enum_name]
    raw, sha = fetch_checkpoint(arch, weights, label="weights ")
    _check_fits(arch, _load_state_dict(raw, weights.url), weights._name_)
    target = to if to.lower().endswith((".pth", ".pt")) else join_uri(to, weights.url.rsplit("/", 1)[-1])
    try:
        fs, path = filesystem(target, storage)
        if is_local(target):
            fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        fs.pipe_file(path, raw)
    except Exception as exc:
        raise JobError(f"--to {target!r} cannot be written ({type(exc).__name__}: {str(exc)[:200]})") from exc
    return StagedWeights(uri=target, sha256=sha, size=len(raw), source=str(checkpoint_file(weights)))


def _num_classes(state_dict: dict[str, torch.Tensor]) -> int:
    weight = state_dict.get("fc.weight")
    return int(weight.shape[0]) if weight is not None else 1000


def _serialize(state_dict: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    return buffer.getvalue()


# --- inference -------------------------------------------------------------------------


def pick_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


# CPU flags of bf16 matrix instructions oneDNN uses for convolutions. Measured, resnet50 on
# 2 cores: Intel AMX (Sapphire Rapids) 42 vs 13 frames/s per core for bf16 vs fp32;
# AVX512-BF16 (AMD Zen 4) 33 vs 19 frames/s. Without them bf16 is emulated and slower.
_CPU_BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})


def cpu_has_fast_bf16() -> bool:
    """True on CPUs with bf16 matrix instructions (AMX or AVX512-BF16). VIDBATCH_CPU_BF16=0/1 overrides."""
    forced = os.environ.get("VIDBATCH_CPU_BF16")
    if forced in {"0", "1"}:
        return forced == "1"
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return bool(_CPU_BF16_FLAGS & set(line.split())) and torch.backends.mkldnn.is_available()
    except OSError:
        pass
    return False


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
            model = _assemble(arch, state_dict)
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
        for start in range(0, len(frames), self.per_pass):
            pooled, probs = self._forward(source[start : start + self.per_pass])
            pooled_parts.append(pooled)
            prob_parts.append(probs)
        pooled_all = torch.cat(pooled_parts).float().cpu().numpy()
        probs_all = torch.cat(prob_parts).float().cpu().numpy()
        return pooled_all, probs_all

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
