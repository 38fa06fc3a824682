"""vidbatch.torchvision_import: torchvision without torch._dynamo, and torch._dynamo intact afterwards."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from vidbatch.torchvision_import import _DynamoUtilsOnDemand, import_torchvision

# A fresh interpreter: in this one, other tests have imported torchvision (and torch._dynamo) already.
_FRESH = textwrap.dedent(
    """
    import json, sys
    import torch
    import vidbatch.model  # what the driver and every model actor import
    import vidbatch.model_weights as model_weights
    import vidbatch.state_dict_fit as state_dict_fit
    after_import = {
        "dynamo_imported": "torch._dynamo" in sys.modules,
        "stand_in_left": "torch._dynamo.utils" in sys.modules,
        "categories": len(model_weights.torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"]),
        "resnet18_params": sum(p.numel() for p in model_weights.get_model_builder("resnet18")(weights=None).parameters()),
    }
    # How the driver checks a weights file and every model actor builds its model:
    state_dict_fit.assemble("resnet18", model_weights.get_model_builder("resnet18")(weights=None).state_dict())
    after_import["dynamo_imported_by_assembling"] = "torch._dynamo" in sys.modules
    deferred = sys.modules["torchvision.ops.roi_align"].is_compile_supported("cpu")
    import torch._dynamo.utils as real
    compiled = torch.compile(lambda x: torch.sin(x) * 2, backend="eager")
    x = torch.arange(5.0)
    print(json.dumps({
        **after_import,
        "deferred_answer": deferred,
        "real_answer": real.is_compile_supported("cpu"),
        "real_module_has_counters": hasattr(real, "counters"),
        "compiled_matches_eager": bool(torch.equal(compiled(x), torch.sin(x) * 2)),
        "dynamo_counted_a_frame": real.counters["stats"]["unique_graphs"] >= 1,
    }))
    """
)


def test_vidbatch_imports_torchvision_without_dynamo_and_dynamo_still_works_after():
    proc = subprocess.run([sys.executable, "-c", _FRESH], capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["dynamo_imported"] is False  # the ~1 s and ~77 MB this module exists to save
    assert seen["dynamo_imported_by_assembling"] is False  # not on the meta device: its init kernels import it
    assert seen["stand_in_left"] is False  # torch.compile gets the real module, not the stand-in
    assert seen["categories"] == 1000 and seen["resnet18_params"] == 11_689_512  # torchvision as usual
    assert seen["deferred_answer"] == seen["real_answer"]  # roi_align's deterministic path asks the real one
    assert seen["real_module_has_counters"] and seen["compiled_matches_eager"] and seen["dynamo_counted_a_frame"]


_HAND_OVER = textwrap.dedent(
    """
    import json, sys
    import torch
    from vidbatch.torchvision_import import _DynamoUtilsOnDemand
    stand_in = _DynamoUtilsOnDemand("torch._dynamo.utils")
    sys.modules["torch._dynamo.utils"] = stand_in
    probed = hasattr(stand_in, "__path__")
    still_in = sys.modules["torch._dynamo.utils"] is stand_in
    counters = stand_in.counters  # not what it stands in for: the real module is imported
    real = sys.modules["torch._dynamo.utils"]
    print(json.dumps({
        "probe_answered": probed,
        "stand_in_kept_after_probe": still_in,
        "real_in_sys_modules": real is not stand_in and "torch._dynamo" in sys.modules,
        "same_object_as_real": counters is real.counters,
    }))
    """
)


def test_the_stand_in_hands_over_to_the_real_module_for_anything_else():
    proc = subprocess.run([sys.executable, "-c", _HAND_OVER], capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["probe_answered"] is False and seen["stand_in_kept_after_probe"]  # probes import nothing
    assert seen["real_in_sys_modules"] and seen["same_object_as_real"]


def test_a_torchvision_imported_already_is_returned_as_it_is():
    import torchvision

    assert import_torchvision() is torchvision


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_the_deferred_function_answers_as_the_real_one(device):
    import torch._dynamo.utils as real

    assert _DynamoUtilsOnDemand("torch._dynamo.utils").is_compile_supported(device) == real.is_compile_supported(device)
