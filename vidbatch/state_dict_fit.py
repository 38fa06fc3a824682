"""What a state_dict file holds, and whether it fits the arch: the checkpoint formats and wrappers
training codes save (torch.save, safetensors, DDP/Lightning/EMA prefixes, a head of its own), and
the checks that refuse weights before any video is decoded (another arch's tensors, NaN, a zero
first convolution, a one-output classifier).
"""

from __future__ import annotations

import argparse
import functools
import io
import re
import zipfile
from typing import Any, cast, get_args

import torch

from vidbatch.config import Arch, ModelConfig
from vidbatch.errors import JobError
from vidbatch.torchvision_import import ResNet, get_model_builder


def resnet_in(
    state_dict: dict[str, Any], arch: str, *, task: str, what: str
) -> tuple[dict[str, Any], list[str]]:
    """The `arch` a training run saved, wherever its wrappers put it, and notes on what was set aside.

    Wrappers prefix every key of the network they hold: DistributedDataParallel ('module.'),
    torch.compile ('_orig_mod.'), a LightningModule's attribute ('model.'), an EMA AveragedModel
    ('module.', beside its counter 'n_averaged'), and many training codes keep a projection head or
    a loss's state beside the backbone. The backbone's tensors are found by their names under one
    prefix; what is not the arch's is left out and said. A file without the arch's fc layer (a
    backbone saved alone, or with a head of its own) gives embeddings: with `task: embed` an unused
    fc is put in its place. A state_dict where no one prefix holds the whole backbone (every tensor
    in its shape) is returned as it is, for _check_fits to say what does not fit.
    """
    expected = _expected_shapes(arch, 1000)
    # BatchNorm's num_batches_tracked is not needed: older exports lack it, and loading fills it in.
    backbone = [key for key in expected if not key.startswith("fc.") and not key.endswith(".num_batches_tracked")]
    anchor = backbone[0]
    prefixes = sorted({key[: -len(anchor)] for key in state_dict if isinstance(key, str) and key.endswith(anchor)})
    fitting = [prefix for prefix in prefixes if all(_shaped(state_dict.get(prefix + key), expected[key]) for key in backbone)]
    if not fitting:
        return state_dict, []
    if len(fitting) > 1 and "" not in fitting:
        listed = ", ".join(repr(prefix) for prefix in fitting)
        raise JobError(
            f"model.weights={what!r} holds {len(fitting)} {arch}s (under {listed}): save the one to use alone, "
            "e.g. torch.save(model.state_dict(), path)"
        )
    prefix = "" if "" in fitting else fitting[0]
    inner = {key[len(prefix) :]: value for key, value in state_dict.items() if isinstance(key, str) and key.startswith(prefix)}
    notes = [f"the {arch} found under {prefix!r} in the file"] if prefix not in ("", "module.") else []
    if "fc.weight" in inner and "fc.bias" not in inner and isinstance(inner["fc.weight"], torch.Tensor):
        inner["fc.bias"] = torch.zeros(inner["fc.weight"].shape[0])  # a Linear(bias=False): its bias is zero
    fc = {key: inner[key] for key in ("fc.weight", "fc.bias") if key in inner}
    set_aside = sorted(
        [key for key in inner if key not in expected or (key.startswith("fc.") and len(fc) < 2)]
        + [str(key) for key in state_dict if not (isinstance(key, str) and key.startswith(prefix))]
    )
    if any(key.split(".", 1)[0] in _BACKBONE_ROOTS for key in set_aside):
        return state_dict, []  # more blocks than the arch has: another arch's (resnet34's for resnet18), said by _misfit
    kept = {
        key: value
        for key, value in inner.items()
        if (key in expected and not key.startswith("fc.")) or (key in fc and len(fc) == 2)
    }
    if len(fc) < 2:
        if task != "embed":
            raise JobError(
                f"model.weights={what!r} has no {arch} fc layer (a backbone alone, or a head of its own"
                f"{': ' + ', '.join(set_aside[:3]) if set_aside else ''}): it gives embeddings, not ImageNet-style "
                "labels; set model.task: embed (and train a head on the embeddings with vidbatch train-head)"
            )
        features = int(expected["fc.weight"][1])
        kept["fc.weight"] = torch.zeros(1000, features)  # never used: task embed stops before fc
        kept["fc.bias"] = torch.zeros(1000)
        notes.append("no fc layer of its own (embeddings only)")
    if set_aside:
        shown = ", ".join(set_aside[:3]) + (f" and {len(set_aside) - 3} more" if len(set_aside) > 3 else "")
        notes.append(f"left out {len(set_aside)} tensors that are not {arch}'s ({shown})")
    return kept, notes


_BACKBONE_ROOTS = frozenset({"conv1", "bn1", "layer1", "layer2", "layer3", "layer4"})


def _shaped(value: Any, shape: tuple[int, ...]) -> bool:
    return isinstance(value, torch.Tensor) and tuple(value.shape) == shape


def check_classifier(config: ModelConfig, num_classes: int, what: str) -> None:
    """Labels are the top_k of a softmax over the classes: one output (a binary head trained with a
    sigmoid) would give every video the same label at 1.0."""
    if config.task != "embed" and num_classes < 2:
        raise JobError(
            f"model.weights={what!r}: its fc layer has {num_classes} output (a binary head trained with a sigmoid?); "
            "labels are the top_k of a softmax over the classes, which for one class is 1.0 for every video. "
            "Set model.task: embed, and train a head on the embeddings with vidbatch train-head"
        )


def check_fits(arch: str, state_dict: dict[str, torch.Tensor], what: str) -> None:
    try:
        assemble(arch, state_dict)
    except (RuntimeError, KeyError, ValueError, AttributeError) as exc:
        misfit = _misfit(arch, state_dict) or str(exc)[:300]
        raise JobError(f"model.weights={what!r} does not fit {arch}: {misfit}") from exc


def check_values(state_dict: dict[str, torch.Tensor], what: str) -> None:
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


def assemble(arch: str, state_dict: dict[str, torch.Tensor]) -> ResNet:
    """torchvision's `arch` holding exactly these tensors (a key or shape that does not fit raises).

    The tensors are assigned, not copied. The model is built on the CPU, not on the meta device,
    though its random init is then thrown away (0.2 s for resnet50): on the meta device that init
    runs torch's Python reference kernels, whose first call imports torch._dynamo, ~1 s of CPU and
    ~77 MB in the driver and in every model actor (see vidbatch.torchvision_import). The init
    draws from a forked generator, so the process's own random state is left as it was.
    """
    with torch.random.fork_rng(devices=[]):
        model = cast(ResNet, get_model_builder(arch)(weights=None, num_classes=num_classes_of(state_dict)))
    model.load_state_dict(state_dict, assign=True)
    return model


def _misfit(arch: str, state_dict: dict[str, Any], *, shown: int = 3) -> str:
    """What keeps a state_dict from fitting `arch`, short enough to read ('' when nothing is found).

    torch's own message lists every key (hundreds for a state_dict of another arch), so a cut-off
    copy of it would hide the one fact that matters: which arch the tensors are, if any.
    """
    expected = _expected_shapes(arch, num_classes_of(state_dict))
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
    others = [a for a in _ARCHS if a != arch and _fits_shapes(state_dict, _expected_shapes(a, num_classes_of(state_dict)))]
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


def load_state_dict(raw: bytes, uri: str) -> dict[str, torch.Tensor]:
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
        # the first of these that holds tensors (a 'model' key may hold a config dict instead)
        wrapped = [key for key in _CHECKPOINT_KEYS if isinstance(loaded.get(key), dict) and _holds_tensors(loaded[key])]
        if wrapped:
            loaded = loaded[wrapped[0]]  # a training checkpoint
    if not isinstance(loaded, dict):
        raise JobError(f"model.weights={uri!r} holds a {type(loaded).__name__}, not a state_dict")
    # Saved from a model wrapped in DistributedDataParallel or DataParallel: every key starts 'module.'.
    if loaded and all(isinstance(key, str) and key.startswith("module.") for key in loaded):
        loaded = {key.removeprefix("module."): value for key, value in loaded.items()}
    return loaded


def _archive_names(raw: bytes) -> list[str] | None:
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as archive:
            return archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return None


def _holds_tensors(mapping: dict[Any, Any]) -> bool:
    return any(isinstance(value, torch.Tensor) for value in mapping.values())


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
    if raw.startswith(b"PK\x03\x04"):
        names = _archive_names(raw)
        if names is None or "central directory" in text:
            return f"is cut short or damaged ({len(raw):,} bytes, not a whole zip archive as torch.save writes): copy it again"
        if any(name.endswith(("/constants.pkl", "/code/")) or "/code/" in name for name in names):
            return (
                "is a TorchScript archive (torch.jit.save): vidbatch builds torchvision's ResNet and loads its "
                "state_dict; save that instead: torch.save(model.state_dict(), path)"
            )
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return f"is not a torch state_dict file: {first[:200]}"


def num_classes_of(state_dict: dict[str, torch.Tensor]) -> int:
    weight = state_dict.get("fc.weight")
    return int(weight.shape[0]) if weight is not None else 1000
