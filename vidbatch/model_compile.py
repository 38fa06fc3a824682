"""When the model runs compiled: torch.compile with the weights frozen into the graph.

`on` compiles before the first pass, on any device; `auto` (the default) and `off` do not.
Why `auto` does not compile: on CPUs the runner packs the convolution weights for oneDNN itself
(vidbatch.model_onednn), which is what a compile's `freezing` pass gains, without the compile's
cost. Measured on 2 Intel cores with AMX (2026-12-06), resnet50 bf16, 8 frames a pass: packed
143-160 frames/s, compiled 133-137, eager 72-95; a compile took 3-5 s with inductor's on-disk
cache warm and ~22 s cold, and needs a working C++ compiler. On GPUs the gain was not measured
here, so `auto` runs eager there; `on` is the way to try it.
"""

from __future__ import annotations

from typing import cast, get_args

import torch

from vidbatch.config import CompileMode


def validate_compile_mode(mode: str) -> CompileMode:
    if mode not in get_args(CompileMode):
        raise ValueError(f"compile mode {mode!r} is not one of {', '.join(get_args(CompileMode))}")
    return cast(CompileMode, mode)


def compile_due(mode: CompileMode) -> bool:
    """Should the model be compiled before its first pass? Only when asked (`on`): see the module doc."""
    return mode == "on"


def frozen_compile(backbone: torch.nn.Module) -> torch.nn.Module:
    """The backbone compiled with its weights frozen in. The compile itself happens at the first call.

    One static shape (the caller pads partial batches), so it compiles once. The weights must not
    change afterwards: freezing folds them into the graph as constants.
    """
    return cast(torch.nn.Module, torch.compile(backbone, dynamic=False, options={"freezing": True}))
