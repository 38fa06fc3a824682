"""CPU-side preprocessing: full-resolution RGB frame -> model-sized uint8 frame.

Mirrors torchvision's ImageNet eval recipe on PIL images (Resize of the short side with
bilinear/antialias, then CenterCrop), so that only `crop x crop x 3` uint8 frames travel
to the model actors.  Normalisation (mean/std) happens next to the model, on its device.

`resize="fast"` (model.resize) leaves the resize to FFmpeg's swscale, during the conversion from
YUV (vidbatch.decode); only the crop is done here (`crop_resized`). Same sizes and crop box as
the recipe; swscale's bilinear filter and chroma handling put pixels a few levels off PIL's
(docs/performance.md has the measured figures).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from vidbatch.config import ResizeMethod


@dataclass(frozen=True)
class PreprocessSpec:
    resize_size: int = 256
    crop_size: int = 224
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    resize: ResizeMethod = "exact"

    def __post_init__(self) -> None:
        if self.crop_size > self.resize_size:
            raise ValueError(f"crop_size {self.crop_size} is larger than resize_size {self.resize_size}")


def resized_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """torchvision's rule: the short side becomes `short_side`, the long side scales and truncates."""
    if width <= height:
        return short_side, int(short_side * height / width)
    return int(short_side * width / height), short_side


def center_crop_box(width: int, height: int, crop: int) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) as torchvision's center_crop rounds it."""
    top = int(round((height - crop) / 2.0))
    left = int(round((width - crop) / 2.0))
    return left, top, left + crop, top + crop


def to_model_input(rgb: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """HxWx3 uint8 RGB (upright) -> crop x crop x 3 uint8, contiguous."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 frame, got shape {rgb.shape} dtype {rgb.dtype}")
    image = Image.fromarray(rgb)
    new_w, new_h = resized_size(image.width, image.height, spec.resize_size)
    if (new_w, new_h) != image.size:
        image = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
    cropped = image.crop(center_crop_box(image.width, image.height, spec.crop_size))
    return np.ascontiguousarray(np.asarray(cropped, dtype=np.uint8))


def crop_resized(rgb: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """An upright HxWx3 uint8 frame already resized to the recipe's size -> its centre crop, contiguous."""
    height, width = rgb.shape[:2]
    if (width, height) != resized_size(width, height, spec.resize_size):
        raise ValueError(f"expected a frame resized to short side {spec.resize_size}, got {width}x{height}")
    left, top, right, bottom = center_crop_box(width, height, spec.crop_size)
    return np.ascontiguousarray(rgb[top:bottom, left:right])
