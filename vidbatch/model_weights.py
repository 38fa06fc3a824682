"""The ResNet's weights: resolved once, on the driver, from a torchvision name, a state_dict file
or `weights: none`; checked to fit the arch and hold usable values; staged into object storage
by `vidbatch weights stage`. torchvision comes through vidbatch.torchvision_import (which says why).

torchvision's weights entries bundle the preprocessing and the category names; we read
both from them instead of re-writing them.  A state_dict file or `weights: none` gets
the classic recipe (short side 256, centre crop 224) and ImageNet's category names.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import io
import re
import socket
import unicodedata
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast, get_args

import torch

from vidbatch.config import STATE_DICT_SUFFIXES, Arch, ModelConfig, StorageConfig
from vidbatch.errors import JobError
from vidbatch.preprocess import PreprocessSpec
from vidbatch.redaction import redact_uri
from vidbatch.torchvision_import import ResNet, WeightsEnum, get_model_builder, get_model_weights, torchvision

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
    weights = _resolve(config, storage)
    if config.categories is None or config.task == "embed":
        return weights
    return _named(weights, read_categories(config.categories, storage), config.categories)


def read_categories(uri: str, storage: StorageConfig) -> tuple[str, ...]:
    """model.categories: one class name per line (blank lines at the end ignored); JobError naming the file."""
    where = f"model.categories={uri!r}"
    fix = "Give a text file with one class name per line"
    try:
        text = _read_job_file(uri, storage, key="model.categories", what="text file", fix=fix).decode("utf-8-sig")
    except UnicodeDecodeError:  # (a byte-order mark, as Windows editors write, is read as none)
        raise JobError(f"{where} is not UTF-8 text. {fix}") from None
    lines = [line.strip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()  # blank lines at the end, \n or \r\n
    names = tuple(unicodedata.normalize("NFC", line) for line in lines)
    blank = [number for number, name in enumerate(names, 1) if not name]
    if blank or not names:
        raise JobError(f"{where}: line {blank[0] if blank else 1} is empty; give one class name per line")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise JobError(f"{where}: {', '.join(map(repr, repeated[:3]))} named twice; labels must tell the classes apart")
    return names


_NOTES_JOINED = "; "
_CLASS_N_NOTE = "its classifier has"  # the note model.categories makes moot


def _named(weights: ResolvedWeights, names: tuple[str, ...], uri: str) -> ResolvedWeights:
    """The weights with their classes named by model.categories; the names go into model_id, so rows
    labelled under other names are redone rather than mixed with these."""
    if len(names) != len(weights.categories):
        raise JobError(
            f"model.categories={uri!r} names {len(names)} classes, but the weights' fc has {len(weights.categories)}: "
            "give one name per output, in the fc's order"
        )
    digest = hashlib.sha256("\n".join(names).encode()).hexdigest()[:12]
    kept = [part for part in (weights.note or "").split(_NOTES_JOINED) if part and not part.startswith(_CLASS_N_NOTE)]
    note = _NOTES_JOINED.join([*kept, f"class names from {uri}"])
    return dataclasses.replace(weights, categories=names, model_id=f"{weights.model_id}+categories-{digest}", note=note or None)


def _resolve(config: ModelConfig, storage: StorageConfig) -> ResolvedWeights:
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
        "not a state_dict path (.pt/.pth/.ckpt/.bin/.safetensors, or any path with a '/'), and not 'none'. "
        + ways_to_provide(config.arch)
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
    state_dict, notes = resnet_in(_load_state_dict(raw, uri), config.arch, task=config.task, what=uri)
    _check_fits(config.arch, state_dict, uri)
    _check_values(state_dict, uri)
    num_classes = _num_classes(state_dict)
    _check_classifier(config, num_classes, uri)
    known = _known_torchvision(config.arch, sha)
    if known is not None:
        # A byte-identical copy of torchvision's checkpoint: use its own preprocessing and names.
        categories: tuple[str, ...] = tuple(known.meta["categories"])
        preprocess = _torchvision_preprocess(known)
        notes.insert(0, f"a copy of torchvision's {config.arch} {known._name_}")
    else:
        categories = _IMAGENET_CATEGORIES if num_classes == 1000 else tuple(f"class_{i}" for i in range(num_classes))
        preprocess = PreprocessSpec()
        if num_classes != 1000 and config.task != "embed":
            notes.append(f"{_CLASS_N_NOTE} {num_classes} classes, named class_0 to class_{num_classes - 1} in the labels")
    if config.task != "embed" and config.top_k > num_classes:
        notes.append(f"model.top_k={config.top_k} but the classifier has {num_classes} classes: labels hold all {num_classes}")
    return ResolvedWeights(
        arch=config.arch,
        model_id=f"{config.arch}:sha256-{sha}",
        state_dict_bytes=_serialize(state_dict),
        categories=categories,
        preprocess=preprocess,
        untrained=False,
        sha256=sha,
        note=_NOTES_JOINED.join(notes) or None,
    )


def _read_weights_file(uri: str, arch: str, storage: StorageConfig) -> bytes:
    return _read_job_file(uri, storage, key="model.weights", what="weights file", fix=ways_to_provide(arch))


def _read_job_file(uri: str, storage: StorageConfig, *, key: str, what: str, fix: str) -> bytes:
    """The bytes of a file a job key names (read once, on the driver: one GET); JobError naming the key
    and saying `fix` when it cannot be had. A pipe or device is refused: reading it could block for ever."""
    from vidbatch.storage import filesystem, is_pipe_or_device  # storage is light; keeps this module's import graph small

    where = f"{key}={uri!r}"
    try:
        fs, path = filesystem(uri, storage)
        if is_pipe_or_device(fs.info(path)):
            raise JobError(f"{where} names a pipe or device, not a {what}. {fix}")
        return bytes(fs.cat_file(path))
    except FileNotFoundError as exc:
        raise JobError(f"{where}: no such file. {fix}") from exc
    except PermissionError as exc:
        raise JobError(f"{where}: access denied; grant the job's identity read access. {fix}") from exc
    except (OSError, ValueError) as exc:
        raise JobError(f"{where}: could not be read ({type(exc).__name__}: {str(exc)[:160]}). {fix}") from exc


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


def _check_classifier(config: ModelConfig, num_classes: int, what: str) -> None:
    """Labels are the top_k of a softmax over the classes: one output (a binary head trained with a
    sigmoid) would give every video the same label at 1.0."""
    if config.task != "embed" and num_classes < 2:
        raise JobError(
            f"model.weights={what!r}: its fc layer has {num_classes} output (a binary head trained with a sigmoid?); "
            "labels are the top_k of a softmax over the classes, which for one class is 1.0 for every video. "
            "Set model.task: embed, and train a head on the embeddings with vidbatch train-head"
        )


def _check_fits(arch: str, state_dict: dict[str, torch.Tensor], what: str) -> None:
    try:
        assemble(arch, state_dict)
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


def assemble(arch: str, state_dict: dict[str, torch.Tensor]) -> ResNet:
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
    from vidbatch.storage import explain_failure, filesystem, is_local, join_uri

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
        raise JobError(f"--to {redact_uri(target)!r} cannot be written ({explain_failure(exc)})") from exc
    return StagedWeights(uri=target, sha256=sha, size=len(raw), source=str(checkpoint_file(weights)))


def _num_classes(state_dict: dict[str, torch.Tensor]) -> int:
    weight = state_dict.get("fc.weight")
    return int(weight.shape[0]) if weight is not None else 1000


def _serialize(state_dict: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    return buffer.getvalue()
