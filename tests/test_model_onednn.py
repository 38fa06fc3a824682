"""The backbone with its convolutions packed for oneDNN computes what torchvision's ResNet computes."""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision

from vidbatch.model import _fold_batchnorm
from vidbatch.model_onednn import _validate_same_features, onednn_packing_available, pack_for_onednn

pytestmark = pytest.mark.skipif(not onednn_packing_available(), reason="this torch has no oneDNN (mkldnn) CPU ops")


def _backbone(arch: str) -> torch.nn.Module:
    torch.manual_seed(3)
    model = getattr(torchvision.models, arch)(num_classes=10)
    for module in model.modules():  # BatchNorm statistics of a trained model, not the identity of a fresh one
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    model.fc = torch.nn.Identity()
    return model.eval()


def _inputs(n: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn((n, 3, 224, 224), generator=generator).contiguous(memory_format=torch.channels_last)


def _relative(got: torch.Tensor, expected: torch.Tensor) -> float:
    return float(((got.float() - expected.float()).norm(dim=1) / expected.float().norm(dim=1)).max())


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])  # BasicBlock and Bottleneck
def test_packed_fp32_matches_torchvisions_resnet_for_any_batch_size(arch):
    reference = _backbone(arch)
    folded = _fold_batchnorm(copy.deepcopy(reference)).to(memory_format=torch.channels_last)
    packed = pack_for_onednn(folded, _inputs(4, seed=0))
    assert packed.check_difference < 1e-5
    with torch.inference_mode():
        for n in (1, 4, 6):  # the size packed for, and others: the size is only a layout hint
            x = _inputs(n, seed=n)
            got, expected = packed(x), reference(x)
            assert got.shape == (n, reference.layer4[-1].conv1.in_channels)
            assert _relative(got, expected) < 1e-4, n


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_packed_bf16_matches_eager_bf16_to_its_rounding(arch):
    reference = _backbone(arch)
    folded = _fold_batchnorm(copy.deepcopy(reference)).to(torch.bfloat16).to(memory_format=torch.channels_last)
    packed = pack_for_onednn(folded, _inputs(4, seed=0).to(torch.bfloat16))
    with torch.inference_mode():
        x = _inputs(3, seed=5)
        fp32, eager, got = reference(x), folded(x.to(torch.bfloat16)), packed(x.to(torch.bfloat16))
    # bf16 keeps 8 bits of mantissa: both bf16 models sit ~5e-3 from fp32, and no further from each other
    assert _relative(got, fp32) < 2e-2
    assert _relative(got, eager) < 2e-2
    assert _relative(got, fp32) < 2 * _relative(eager, fp32) + 1e-3


def test_a_backbone_with_its_batchnorm_unfolded_is_refused_by_name():
    with pytest.raises(ValueError, match="bn1 is BatchNorm2d, not Identity: fold it into its convolution first"):
        pack_for_onednn(_backbone("resnet18"), _inputs(1, seed=0))


def test_a_model_in_training_mode_or_not_a_resnet_is_refused():
    with pytest.raises(ValueError, match="training mode"):
        pack_for_onednn(_fold_batchnorm(_backbone("resnet18")).train(), _inputs(1, seed=0))
    with pytest.raises(ValueError, match="not a torchvision ResNet: Sequential"):
        pack_for_onednn(torch.nn.Sequential(torch.nn.Flatten()), _inputs(1, seed=0))


def test_features_that_differ_beyond_rounding_are_refused_with_the_figures():
    expected = torch.tensor([[1.0, 2.0, 2.0], [0.0, 3.0, 4.0]])
    assert _validate_same_features(expected + 1e-6, expected, dtype=torch.float32) < 1e-5
    assert _validate_same_features(expected * 1.01, expected, dtype=torch.bfloat16) == pytest.approx(0.01, rel=1e-3)
    with pytest.raises(ValueError, match=r"differ from the eager model's by 0\.01 \(relative; at most 0\.0001 expected"):
        _validate_same_features(expected * 1.01, expected, dtype=torch.float32)
    with pytest.raises(ValueError, match="by nan"):
        _validate_same_features(torch.full_like(expected, float("nan")), expected, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match=r"shape \(2, 2\), the eager model \(2, 3\)"):
        _validate_same_features(expected[:, :2], expected, dtype=torch.float32)
