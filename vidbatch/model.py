"""The ResNet: weights resolution (once, on the driver) and batched inference (in actors).
The only module that imports torch/torchvision.

torchvision's weights entries bundle the preprocessing and the category names; we read
both from them instead of re-writing them.  A state_dict file or `weights: none` gets
the classic recipe (short side 256, centre crop 224) and ImageNet's category names.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torchvision
from torchvision.models import WeightsEnum, get_model_builder, get_model_weights

from vidbatch.config import ModelConfig, Precision, StorageConfig
from vidbatch.errors import JobError
from vidbatch.preprocess import PreprocessSpec

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
    sha256: str


def resolve_weights(config: ModelConfig, storage: StorageConfig) -> ResolvedWeights:
    """Load the weights on the driver; raises JobError listing the ways to provide them."""
    name = config.weights
    if name.lower() == "none":
        return _random_init(config)
    weights_enum = get_model_weights(config.arch)
    enum_name = "DEFAULT" if name.upper() == "DEFAULT" else name
    if enum_name in weights_enum.__members__:
        return _torchvision_weights(config.arch, weights_enum[enum_name])
    if any(name.endswith(suffix) for suffix in (".pt", ".pth", ".bin", ".safetensors")) or "/" in name:
        return _state_dict_file(config, name, storage)
    known = ", ".join(weights_enum.__members__)
    raise JobError(
        f"model.weights={name!r}: not a torchvision weights name for {config.arch} ({known}), "
        "not a state_dict path (.pt/.pth/.safetensors), and not 'none'"
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


def _torchvision_weights(arch: str, weights: WeightsEnum) -> ResolvedWeights:
    try:
        state_dict = weights.get_state_dict(progress=False, check_hash=True)
    except Exception as exc:  # URLError, OSError, hash mismatch: all mean "not available here"
        raise JobError(
            f"model.weights={weights}: could not load them ({type(exc).__name__}: {str(exc)[:200]}). "
            "Provide them one of these ways: (1) run where the internet is reachable once so torchvision "
            f"caches {weights.url.rsplit('/', 1)[-1]} under $TORCH_HOME/hub/checkpoints; "
            "(2) `vidbatch weights stage NAME --to URI` from a machine with internet, then set "
            "model.weights to that URI; (3) set model.weights to a local .pt/.pth state_dict file"
        ) from exc
    transform = weights.transforms()
    blob = _serialize(state_dict)
    return ResolvedWeights(
        arch=arch,
        model_id=f"{arch}:{weights._name_}",
        state_dict_bytes=blob,
        categories=tuple(weights.meta["categories"]),
        preprocess=PreprocessSpec(
            resize_size=int(transform.resize_size[0]),
            crop_size=int(transform.crop_size[0]),
            mean=tuple(transform.mean),  # type: ignore[arg-type]
            std=tuple(transform.std),  # type: ignore[arg-type]
        ),
        untrained=False,
        sha256=hashlib.sha256(blob).hexdigest(),
    )


def _state_dict_file(config: ModelConfig, uri: str, storage: StorageConfig) -> ResolvedWeights:
    from vidbatch.storage import filesystem  # storage is light; keeps this module's import graph small

    try:
        fs, path = filesystem(uri, storage)
        with fs.open(path, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError as exc:
        raise JobError(f"model.weights={uri!r}: no such file") from exc
    except PermissionError as exc:
        raise JobError(f"model.weights={uri!r}: access denied") from exc
    sha = hashlib.sha256(raw).hexdigest()
    state_dict = _load_state_dict(raw, uri)
    try:
        model = get_model_builder(config.arch)(weights=None, num_classes=_num_classes(state_dict))
        model.load_state_dict(state_dict)
    except (RuntimeError, KeyError) as exc:
        raise JobError(f"model.weights={uri!r} does not fit {config.arch}: {str(exc)[:300]}") from exc
    num_classes = _num_classes(state_dict)
    categories = _IMAGENET_CATEGORIES if num_classes == 1000 else tuple(f"class_{i}" for i in range(num_classes))
    return ResolvedWeights(
        arch=config.arch,
        model_id=f"{config.arch}:sha256-{sha}",
        state_dict_bytes=_serialize(state_dict),
        categories=categories,
        preprocess=PreprocessSpec(),
        untrained=False,
        sha256=sha,
    )


def _load_state_dict(raw: bytes, uri: str) -> dict[str, torch.Tensor]:
    if uri.endswith(".safetensors"):
        try:
            from safetensors.torch import load as load_safetensors
        except ImportError as exc:
            raise JobError(f"model.weights={uri!r}: install the 'safetensors' package to read it") from exc
        return dict(load_safetensors(raw))
    try:
        loaded = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise JobError(f"model.weights={uri!r} is not a torch state_dict file: {str(exc)[:200]}") from exc
    if isinstance(loaded, dict) and "state_dict" in loaded and isinstance(loaded["state_dict"], dict):
        loaded = loaded["state_dict"]  # a training checkpoint
    if not isinstance(loaded, dict):
        raise JobError(f"model.weights={uri!r} holds a {type(loaded).__name__}, not a state_dict")
    return loaded


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


def pick_dtype(precision: Precision, device: torch.device) -> torch.dtype:
    if precision == "fp32":
        return torch.float32
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32  # CPU: exact results by default; ask for bf16 explicitly


class ResNetRunner:
    """Pooled features and class probabilities for batches of uint8 frames."""

    def __init__(
        self,
        *,
        arch: str,
        state_dict_bytes: bytes,
        preprocess: PreprocessSpec,
        precision: Precision = "auto",
        batch_frames: int = 32,
        device: str | None = None,
    ) -> None:
        self.device = torch.device(device) if device else pick_device()
        self.dtype = pick_dtype(precision, self.device)
        state_dict = torch.load(io.BytesIO(state_dict_bytes), map_location="cpu", weights_only=True)
        model = get_model_builder(arch)(weights=None, num_classes=_num_classes(state_dict))
        model.load_state_dict(state_dict)
        self.fc = model.fc
        model.fc = torch.nn.Identity()  # the backbone now returns the pooled feature (fc's input)
        self.backbone = model.eval().to(self.device)
        self.fc = self.fc.eval().to(self.device)
        if self.device.type == "cuda":
            self.backbone = self.backbone.to(memory_format=torch.channels_last)
        shape = (1, 3, 1, 1)
        self.mean = torch.tensor(preprocess.mean, device=self.device).view(shape) * 255.0
        self.std = torch.tensor(preprocess.std, device=self.device).view(shape) * 255.0
        self.batch_frames = batch_frames

    @torch.inference_mode()
    def __call__(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(n, H, W, 3) uint8 -> pooled (n, D) float32, probabilities (n, classes) float32."""
        pooled_parts, prob_parts = [], []
        for start in range(0, len(frames), self.batch_frames):
            pooled, probs = self._forward(frames[start : start + self.batch_frames])
            pooled_parts.append(pooled)
            prob_parts.append(probs)
        return np.concatenate(pooled_parts), np.concatenate(prob_parts)

    def _forward(self, chunk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # uint8 travels to the device; the float conversion and normalisation happen there.
        x = torch.from_numpy(np.ascontiguousarray(chunk))
        if self.device.type == "cuda":
            x = x.pin_memory().to(self.device, non_blocking=True)
        x = x.permute(0, 3, 1, 2).float()
        x = (x - self.mean) / self.std
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
            pooled = self.backbone(x)
            logits = self.fc(pooled)
        pooled = pooled.float()
        probs = torch.softmax(logits.float(), dim=1)
        return pooled.cpu().numpy(), probs.cpu().numpy()
