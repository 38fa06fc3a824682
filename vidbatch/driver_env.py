"""What a vidbatch driver process sets in its environment before anything imports Arrow."""

from __future__ import annotations

import os
from collections.abc import MutableMapping

ARROW_POOL_VARIABLE = "ARROW_DEFAULT_MEMORY_POOL"


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
