"""Stopping a Ray started here with nothing of it left running.

ray.shutdown() stops the processes Ray started itself (the GCS, the raylet, ...); the raylet's
workers are meant to exit as it goes. One can hang on its way out instead: seen on this machine, a
model actor's worker deadlocked in Ray's own exit handler (CoreWorkerProcess::HandleAtExit, whose
pubsub publisher posts to the io_context it is shutting down), orphaned for good with its 1.1 GB.
A nightly job on one machine would gather one such process per unlucky night. So the processes
under the raylet are noted before the shutdown, given a few seconds to end, and killed after.

Linux only (/proc); elsewhere a stop is ray.shutdown() alone, as before.
"""

from __future__ import annotations

import os
import signal
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

# How long the workers get to end on their own after ray.shutdown(): they end within a second
# when nothing hangs.
GRACE_S = 5.0


@dataclass(frozen=True)
class _Process:
    pid: int
    started: int  # clock ticks after boot (/proc/<pid>/stat): tells a reused pid apart


def stop_local_ray(ray: Any, *, grace_s: float = GRACE_S) -> int:
    """ray.shutdown() of a Ray this process started, then a kill of the raylet's workers (and their
    children: the decode sandboxes) still running `grace_s` later. Returns how many were killed."""
    under_raylet = processes_under(_raylet_pids(ray))
    ray.shutdown()
    return end_leftovers(under_raylet, grace_s=grace_s)


def processes_under(pids: list[int]) -> list[_Process]:
    """Every process descended from `pids` (not themselves), as they are now."""
    children: dict[int, list[int]] = defaultdict(list)
    started: dict[int, int] = {}
    for pid in _all_pids():
        stat = _stat(pid)
        if stat is not None:
            parent, started[pid], _ = stat
            children[parent].append(pid)
    found: list[_Process] = []
    waiting = [child for pid in pids for child in children.get(pid, [])]
    while waiting:
        pid = waiting.pop()
        found.append(_Process(pid, started[pid]))
        waiting += children.get(pid, [])
    return found


def end_leftovers(processes: list[_Process], *, grace_s: float) -> int:
    """SIGKILL those of `processes` still running after `grace_s` (at once if all have ended)."""
    deadline = time.monotonic() + grace_s
    left = [p for p in processes if _running(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = [p for p in left if _running(p)]
    killed = 0
    for process in left:
        try:
            os.kill(process.pid, signal.SIGKILL)
            killed += 1
        except OSError:  # ended meanwhile
            pass
    return killed


def _raylet_pids(ray: Any) -> list[int]:
    """The raylet of the node this process runs (Ray keeps no public handle on it); none when unknown."""
    try:
        infos = ray._private.worker._global_node.all_processes.get("raylet", [])
        return [int(info.process.pid) for info in infos]
    except Exception:  # a private API: absent or changed means nothing is noted
        return []


def _all_pids() -> list[int]:
    try:
        return [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:  # no /proc (macOS): nothing to note
        return []


def _stat(pid: int) -> tuple[int, int, str] | None:
    """(parent pid, start time, state) of a process, None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            text = handle.read()
    except OSError:
        return None
    # The command name (in parentheses) may hold spaces and parentheses: the fields follow its last ')'.
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[1]), int(fields[19]), fields[0]


def _running(process: _Process) -> bool:
    stat = _stat(process.pid)
    return stat is not None and stat[1] == process.started and stat[2] != "Z"  # a zombie has ended
