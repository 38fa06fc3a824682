"""The driver's environment (vidbatch.driver_env): Arrow's allocator, in a real interpreter."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from vidbatch.driver_env import ARROW_POOL_VARIABLE, set_driver_environment


def test_the_system_allocator_is_the_default_and_a_pool_already_named_is_kept():
    environ: dict[str, str] = {}
    set_driver_environment(environ)
    assert environ == {ARROW_POOL_VARIABLE: "system"}
    named = {ARROW_POOL_VARIABLE: "jemalloc"}
    set_driver_environment(named)
    assert named == {ARROW_POOL_VARIABLE: "jemalloc"}


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
