"""CPU-side preprocessing equals torchvision's eval transforms on PIL images."""

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

from vidbatch.preprocess import PreprocessSpec, to_model_input


@pytest.mark.parametrize(("h", "w", "resize"), [(240, 320, 256), (720, 1280, 232), (1080, 608, 256), (300, 300, 256)])
def test_matches_torchvision_resize_and_centre_crop(h, w, resize):
    rgb = np.random.default_rng(h + w).integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    ours = to_model_input(rgb, PreprocessSpec(resize_size=resize, crop_size=224))
    reference = transforms.Compose([transforms.Resize(resize), transforms.CenterCrop(224), transforms.PILToTensor()])(
        Image.fromarray(rgb)
    )
    assert ours.shape == (224, 224, 3) and ours.dtype == np.uint8
    assert torch.equal(torch.from_numpy(ours.copy()).permute(2, 0, 1), reference)


def test_tiny_frames_are_upscaled_to_the_crop():
    out = to_model_input(np.full((16, 12, 3), 200, np.uint8), PreprocessSpec())
    assert out.shape == (224, 224, 3)
    assert int(out.min()) == int(out.max()) == 200


def test_rejects_non_rgb():
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        to_model_input(np.zeros((10, 10), np.uint8), PreprocessSpec())
