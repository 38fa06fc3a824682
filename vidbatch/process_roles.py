"""Which part of a run a process is, read from /proc: for the bench's accounts of memory and CPU.

A local run's processes all descend from its driver: Ray's daemons are the driver's children,
Ray's workers the raylet's, and each decode sandbox its decode actor's. Linux only (/proc).
"""

from __future__ import annotations

import os
from pathlib import Path

# A marker in a process's command line (Ray renames a worker for the actor it hosts) -> its role.
_ROLES = (
    ("MapBatches(DecodeStage)", "decode actor"),
    ("MapBatches(ModelStage)", "model actor"),
    ("vidbatch.isolation", "decode sandbox"),
)
OTHER = "ray (other)"
ORDER = ("driver", "decode actor", "decode sandbox", "model actor", OTHER)


def later_role(before: str | None, now: str) -> str:
    """A process's role once more of it is known. Ray starts a worker as `ray::IDLE` and renames it
    for the actor it becomes, after the actor's imports have begun: the model actor's first ~550 MB
    were counted under Ray's other processes. A process keeps the first role other than that."""
    return now if before is None or before == OTHER else before


def settled_role(known: str | None, pid: int, *, driver: int) -> str:
    """pid's role given what was `known` of it before (None: first seen). Its command line is read
    only while the role is still unknown or Ray's "other": `later_role` keeps any other role anyway."""
    if known is not None and known != OTHER:
        return known
    return later_role(known, role_of(pid, driver=driver))


def process_tree(root: int) -> dict[int, list[str]]:
    """root and every process descended from it, each with its /proc/PID/stat fields after the
    command name (proc(5)'s field 3 onwards: the command name may hold spaces and parentheses)."""
    stats: dict[int, list[str]] = {}
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rfind(")") + 2 :].split()
            stats[int(entry)] = fields
            children.setdefault(int(fields[1]), []).append(int(entry))
    found: dict[int, list[str]] = {}
    todo = [root]
    while todo:
        pid = todo.pop()
        if pid in stats:  # a root that has ended has no tree
            found[pid] = stats[pid]
        todo += children.get(pid, [])
    return found


def role_of(pid: int, *, driver: int) -> str:
    if pid == driver:
        return "driver"
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return OTHER
    return next((role for marker, role in _ROLES if marker in command), OTHER)
