"""An independent reference: recompute a clip's embedding from its recorded frame times
with plain PyAV decoding, torchvision's own transforms and the model, one frame at a time."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import torch
import torchvision
from PIL import Image
from torchvision import transforms

REFERENCE_TRANSFORM = transforms.Compose(
    [
        transforms.Resize(256),
        transforms.CenterCrop(224),
        transforms.ToTensor(),
        transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
    ]
)


def load_backbone(weights_path: Path) -> torch.nn.Module:
    model = torchvision.models.resnet18(weights=None)
    model.load_state_dict(torch.load(weights_path, map_location="cpu", weights_only=True))
    model.fc = torch.nn.Identity()
    return model.eval()


def frames_at(path: Path, pts_s: list[float]) -> list[Image.Image]:
    """Upright PIL images of the frames whose presentation time is in `pts_s` (order kept)."""
    wanted = {round(p, 6) for p in pts_s}
    found: dict[float, Image.Image] = {}
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            key = round(float(frame.time), 6)
            if key in wanted:
                rgb = np.rot90(frame.to_ndarray(format="rgb24"), k=frame.rotation // 90)
                found[key] = Image.fromarray(np.ascontiguousarray(rgb))
    missing = wanted - set(found)
    assert not missing, f"no frame at {sorted(missing)} in {path}"
    return [found[round(p, 6)] for p in pts_s]


@torch.inference_mode()
def clip_embedding(model: torch.nn.Module, images: list[Image.Image]) -> np.ndarray:
    features = torch.stack([model(REFERENCE_TRANSFORM(img).unsqueeze(0))[0] for img in images])
    mean = features.mean(dim=0)
    return (mean / mean.norm()).numpy()
