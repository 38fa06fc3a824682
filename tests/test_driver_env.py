"""The driver's allocators (vidbatch.driver_env): Arrow's pool and glibc's threshold, in real interpreters."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from vidbatch.driver_env import (
    ARROW_POOL_VARIABLE,
    MMAP_THRESHOLD_VARIABLE,
    RAY_FAILURE_HANDLERS_OFF,
    set_driver_allocator,
    set_driver_environment,
)


def test_the_system_allocator_is_the_default_and_a_pool_already_named_is_kept():
    environ: dict[str, str] = {}
    set_driver_environment(environ)
    assert environ == {ARROW_POOL_VARIABLE: "system", RAY_FAILURE_HANDLERS_OFF: "1"}
    named = {ARROW_POOL_VARIABLE: "jemalloc", RAY_FAILURE_HANDLERS_OFF: "0"}
    set_driver_environment(named)
    assert named == {ARROW_POOL_VARIABLE: "jemalloc", RAY_FAILURE_HANDLERS_OFF: "0"}  # what the environment says is kept


# The console script's main() replaced by one that reports the pool Arrow allocates from: what every
# command, `vidbatch run` among them, finds once the entry point has set the driver's environment.
_REPORT_POOL = (
    "import vidbatch.cli as cli\n"
    "def report():\n"
    "    import pyarrow as pa\n"
    "    print(pa.default_memory_pool().backend_name, flush=True)\n"
    "    return 0\n"
    "cli.main = report\n"
    "cli.entry()\n"
)


@pytest.mark.parametrize(("given", "expected"), [(None, "system"), ("mimalloc", "mimalloc")])
def test_the_vidbatch_command_allocates_arrow_memory_from_the_pool_its_environment_names(given, expected):
    env = {key: value for key, value in os.environ.items() if key != ARROW_POOL_VARIABLE}
    if given is not None:
        env[ARROW_POOL_VARIABLE] = given
    done = subprocess.run([sys.executable, "-c", _REPORT_POOL], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [expected]


# Frees a 4 MB block (glibc maps it on its own), then asks for 1 MB: whether that block was mapped on
# its own (mallinfo2's count of mapped blocks) or came from the heap, where small blocks that live on
# around it keep the heap's pages.
_PROBE_LARGE_BLOCK = """
import ctypes

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

def probe():
    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    libc.mallinfo2.restype = MallInfo2
    libc.free(libc.malloc(4 << 20))
    before = libc.mallinfo2().hblks
    block = libc.malloc(1 << 20)
    mapped = libc.mallinfo2().hblks > before
    libc.free(block)
    print("mapped" if mapped else "heap", flush=True)
"""

_glibc = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc"), reason="glibc's allocator"
)


def _interpreter(code: str, *args: str) -> list[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("MALLOC_")}
    done = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


@_glibc
def test_a_run_driver_maps_large_blocks_on_their_own_where_glibc_would_take_them_from_its_heap(tmp_path):
    """The driver of `vidbatch run`: with glibc's threshold left to grow, a 1 MB block comes from the
    heap once a 4 MB one was freed (what the control shows); the driver's threshold stays fixed."""
    assert _interpreter(_PROBE_LARGE_BLOCK + "probe()\n") == ["heap"]  # glibc as it is
    fixed = "from vidbatch.driver_env import set_driver_allocator\nprint(set_driver_allocator())\nprobe()\n"
    assert _interpreter(_PROBE_LARGE_BLOCK + fixed) == ["True", "mapped"]
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"name": "j", "manifest": str(tmp_path / "m.parquet"), "output": str(tmp_path / "out")}))
    # `vidbatch run` up to the run itself, which reports the allocator it finds and ends the process
    through_run = _PROBE_LARGE_BLOCK + (
        "import os, sys\n"
        "import vidbatch.cli as cli, vidbatch.pipeline as pipeline\n"
        "def report(*args, **kwargs):\n"
        "    probe()\n"
        "    os._exit(0)\n"
        "pipeline.run_job = report\n"
        "sys.argv = ['vidbatch', 'run', sys.argv[1]]\n"
        "cli.entry()\n"
    )
    assert _interpreter(through_run, str(job)) == ["mapped"]


def test_a_threshold_the_environment_sets_is_left_to_glibc():
    assert set_driver_allocator({MMAP_THRESHOLD_VARIABLE: "1048576"}) is False
