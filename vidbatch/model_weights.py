"""The ResNet's weights: resolved once, on the driver, from a torchvision name, a state_dict file
or `weights: none`; checked to fit the arch and hold usable values (vidbatch.state_dict_fit); staged into object storage
by `vidbatch weights stage`. torchvision comes through vidbatch.torchvision_import (which says why).

torchvision's weights entries bundle the preprocessing and the category names; we read
both from them instead of re-writing them.  A state_dict file or `weights: none` gets
the classic recipe (short side 256, centre crop 224) and ImageNet's category names.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import socket
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import torch

from vidbatch.config import STATE_DICT_SUFFIXES, Arch, ModelConfig, StorageConfig
from vidbatch.errors import JobError
from vidbatch.preprocess import PreprocessSpec
from vidbatch.redaction import redact_uri
from vidbatch.state_dict_fit import check_classifier, check_fits, check_values, load_state_dict, num_classes_of, resnet_in
from vidbatch.torchvision_import import WeightsEnum, get_model_builder, get_model_weights, torchvision

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
    state_dict = load_state_dict(raw, str(checkpoint_file(weights)))
    check_fits(arch, state_dict, weights._name_)
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
    state_dict, notes = resnet_in(load_state_dict(raw, uri), config.arch, task=config.task, what=uri)
    check_fits(config.arch, state_dict, uri)
    check_values(state_dict, uri)
    num_classes = num_classes_of(state_dict)
    check_classifier(config, num_classes, uri)
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
    from vidbatch.storage_failures import explain_failure

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
    check_fits(arch, load_state_dict(raw, weights.url), weights._name_)
    target = to if to.lower().endswith((".pth", ".pt")) else join_uri(to, weights.url.rsplit("/", 1)[-1])
    try:
        fs, path = filesystem(target, storage)
        if is_local(target):
            fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        fs.pipe_file(path, raw)
    except Exception as exc:
        raise JobError(f"--to {redact_uri(target)!r} cannot be written ({explain_failure(exc)})") from exc
    return StagedWeights(uri=target, sha256=sha, size=len(raw), source=str(checkpoint_file(weights)))


def _serialize(state_dict: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    return buffer.getvalue()
