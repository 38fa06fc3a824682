"""When the model runs compiled: torch.compile with the weights frozen into the graph.

Why: oneDNN's eager convolutions reorder every weight into their blocked layout on every call;
a frozen graph (inductor's `freezing`) does that once and fuses the bias, ReLU and residual adds
into the convolutions. Measured on 2 Intel cores with AMX (2026-12-06), resnet50, 8 frames a pass:
bf16 57-67 frames/s eager against 124-151 compiled; fp32 23.6 against 31.3. Outputs agree with
the eager model to bf16 (or fp32) rounding.

A compile costs time before the first compiled pass: on that machine 3-5 s for resnet50 when
inductor's on-disk cache holds it (the node compiled the same model before) and ~22 s when it
does not. A run of a few short videos would spend more on the compile than it saves, and the
model cannot know how much work is coming, so `auto` rents before it buys (the ski-rental rule):
it runs eager until its passes have taken about what a compile costs, then compiles. A long run
is then compiled for nearly all of its frames, and a short one never pays; neither spends more
than about twice the better choice's time.
"""

from __future__ import annotations

from typing import cast, get_args

import torch

from vidbatch.config import CompileMode

# auto: compile once the eager passes have taken this long; between a warm and a cold compile's cost.
COMPILE_AFTER_EAGER_S = 10.0


def validate_compile_mode(mode: str) -> CompileMode:
    if mode not in get_args(CompileMode):
        raise ValueError(f"compile mode {mode!r} is not one of {', '.join(get_args(CompileMode))}")
    return cast(CompileMode, mode)


def compile_due(mode: CompileMode, *, device_type: str, eager_s: float, after_s: float = COMPILE_AFTER_EAGER_S) -> bool:
    """Should a model that has run eager for `eager_s` seconds of passes be compiled now?

    `on` compiles before the first pass on any device. `auto` compiles on CPUs only, once the
    eager passes reach `after_s`: on GPUs the gain was not measured here, and eager is what
    runs there unless asked.
    """
    if mode == "on":
        return True
    if mode == "auto":
        return device_type == "cpu" and eager_s >= after_s
    return False


def frozen_compile(backbone: torch.nn.Module) -> torch.nn.Module:
    """The backbone compiled with its weights frozen in. The compile itself happens at the first call.

    One static shape (the caller pads partial batches), so it compiles once. The weights must not
    change afterwards: freezing folds them into the graph as constants.
    """
    return cast(torch.nn.Module, torch.compile(backbone, dynamic=False, options={"freezing": True}))
