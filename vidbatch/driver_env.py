"""What a vidbatch driver process sets up before anything imports Arrow: its allocators."""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import MutableMapping

ARROW_POOL_VARIABLE = "ARROW_DEFAULT_MEMORY_POOL"
# glibc reads this variable at the process's start; a user who sets it keeps their threshold.
MMAP_THRESHOLD_VARIABLE = "MALLOC_MMAP_THRESHOLD_"
_M_MMAP_THRESHOLD = -3  # mallopt's parameter number (glibc's malloc.h)
_MMAP_THRESHOLD_BYTES = 128 * 1024  # glibc's own starting threshold, kept from growing


def set_driver_environment(environ: MutableMapping[str, str] = os.environ) -> None:
    """Arrow allocates from the system allocator, unless the environment already names a pool.

    The driver's Arrow buffers (the batches it collects, the spill, the commit's files) came from
    Arrow's default, mimalloc, which keeps freed pages for a while: the driver's peak followed the
    number of clips a run wrote in a burst. Driver peak, 1-minute against 30-minute video (320x240,
    fps 1/s, resnet18, 4 pairs each): +30 to +48 MB with mimalloc, +8 to +13 MB with the system
    allocator. `pyarrow.set_memory_pool` once the driver runs was not enough (+28 to +38 MB): Arrow's
    own code allocates from the pool the variable names. Arrow reads it at its first allocation, so
    this runs before pyarrow is imported; a local Ray the driver starts passes it to its workers
    (the fps job's pipeline: 41.3-41.4 s with it against 41.8-43.3 s without, interleaved).
    """
    environ.setdefault(ARROW_POOL_VARIABLE, "system")
    # Ray's C++ logging installs failure signal handlers in the driver at ray.init, and ray.shutdown
    # uninstalls them by setting SIGSEGV, ..., and SIGTERM back to their default action: a SIGTERM in
    # the second or two of cli._leave's teardown (which ignores it: the outcome is decided) killed a
    # run that had committed (exit -15, a night reported as failed). Ray reads this when it is
    # imported. Native crashes still print Python's stacks (faulthandler, in the driver and in Ray's
    # workers, which inherit the variable from a local Ray).
    environ.setdefault(RAY_FAILURE_HANDLERS_OFF, "1")


RAY_FAILURE_HANDLERS_OFF = "RAY_DISABLE_FAILURE_SIGNAL_HANDLER"


def set_driver_allocator(environ: MutableMapping[str, str] = os.environ) -> bool:
    """Large blocks of this process's C heap are mapped on their own and unmapped when freed; True
    if that was set here (glibc only; elsewhere, or when the environment sets the threshold, False).

    glibc raises its threshold for mapping a block to the size of the largest mapped block freed so
    far (up to 32 MB), so after the first large batch the driver's ~1 MB Arrow buffers came from its
    heap, among small blocks that live on; the heap then kept growing with the clips a run drained.
    Driver peak of `vidbatch run`, 320x240, fps 1/s, resnet18 (private MB; 1 minute, 60 minutes,
    3 hours of video): 506.4, 504.9, 518.0 as glibc does it; 498.8, 494.4, 503.4 with the threshold
    fixed at glibc's starting 128 KB. The drain took as long (44.7 s for 60 minutes). Only the driver:
    the same setting in every Ray worker (set through the variable) made that drain 13% slower.
    """
    if MMAP_THRESHOLD_VARIABLE in environ or not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None)
    if not hasattr(libc, "gnu_get_libc_version"):  # musl's mallopt does nothing
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES))
