"""torchvision, imported without importing torch._dynamo with it.

torchvision 0.29's `torchvision.ops.roi_align` imports `torch._dynamo.utils` at module level for
one function (`is_compile_supported`) that it calls only when deterministic algorithms are on;
importing that module imports all of torch._dynamo, which `import torchvision` then pays in every
process, for detection ops vidbatch never calls. (The same file wraps its compile in a
`lazy_compile` whose docstring says "This avoids eagerly importing dynamo"; the import at the top
undoes it.) vidbatch imports torchvision in the driver (the weights resolve before Ray starts)
and in every model actor. Measured on 2 AMD EPYC cores, after `import torch`: `import torchvision`
1.09-1.14 s of CPU and 375 MB of private memory (RssAnon), with this 0.11-0.14 s and 298 MB.

How: while torchvision is imported, sys.modules holds a stand-in for `torch._dynamo.utils`. Its
`is_compile_supported` imports the real module when it is called; any other name asked of it
imports the real module at once, so a torchvision that needs more of it gets all of it. The
stand-in leaves sys.modules as soon as the import ends, so torch.compile, and anything else,
imports the real torch._dynamo as usual.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

_DYNAMO_UTILS = "torch._dynamo.utils"


class _DynamoUtilsOnDemand(types.ModuleType):
    """Stands in for torch._dynamo.utils during torchvision's import."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # probes such as the import system's __path__: no such attribute, no import
            raise AttributeError(name)
        return getattr(_real_dynamo_utils(self), name)

    def is_compile_supported(self, device_type: Any) -> Any:
        return _real_dynamo_utils(self).is_compile_supported(device_type)


def _real_dynamo_utils(stand_in: types.ModuleType) -> types.ModuleType:
    if sys.modules.get(_DYNAMO_UTILS) is stand_in:
        del sys.modules[_DYNAMO_UTILS]  # needed now: the real module from here on
    return importlib.import_module(_DYNAMO_UTILS)


def import_torchvision() -> types.ModuleType:
    """`import torchvision`, without torch._dynamo when nothing has imported either yet.

    Called once, as this module is imported (Python's import lock keeps that to one thread).
    """
    if "torchvision" in sys.modules or _DYNAMO_UTILS in sys.modules or "torch._dynamo" in sys.modules:
        return importlib.import_module("torchvision")  # nothing to save: imported already
    importlib.import_module("torch")  # torch itself needs no stand-in: imported before it is in place
    stand_in = _DynamoUtilsOnDemand(_DYNAMO_UTILS)
    sys.modules[_DYNAMO_UTILS] = stand_in
    try:
        return importlib.import_module("torchvision")
    finally:
        if sys.modules.get(_DYNAMO_UTILS) is stand_in:
            del sys.modules[_DYNAMO_UTILS]


torchvision = import_torchvision()
# After the import above, which these rely on: they find torchvision in sys.modules.
from torchvision.models import ResNet, WeightsEnum, get_model_builder, get_model_weights  # noqa: E402
from torchvision.models.resnet import BasicBlock, Bottleneck  # noqa: E402

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "ResNet",
    "WeightsEnum",
    "get_model_builder",
    "get_model_weights",
    "import_torchvision",
    "torchvision",
]
