"""The driver's spill folder: where a run's rows wait for the commit, and what dead runs left.

A run streams its clip and video rows to Parquet files in a temporary folder, removed when
the run ends. A driver killed from outside (the OOM killer, SIGKILL, a lost node) cannot
remove it, and a big run's folder holds gigabytes: night after night they would fill the
disk. The folder's name carries the driver's process id and host, so the next run on the
same host can tell a dead run's folder from a running one's and remove it (the host: a /tmp
shared between containers must not make one container's live run look dead to another).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

_PREFIX = "vidbatch-spill-"
# vidbatch-spill-<run_id>-pid<pid>-<host key>-<random>; run ids are like 20261205T024424Z-f3aaa1
_NAME = re.compile(rf"^{re.escape(_PREFIX)}\d{{8}}T\d{{6}}Z-[0-9a-f]+-pid(?P<pid>\d+)-(?P<host>[0-9a-f]{{8}})-")


@dataclass(frozen=True)
class Swept:
    folders: int
    bytes: int


@contextmanager
def spill_folder(run_id: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=f"{_PREFIX}{run_id}-pid{os.getpid()}-{_host_key()}-") as folder:
        yield Path(folder)


@dataclass(frozen=True)
class SpillRoom:
    """The free space of the disk a run's spill folder is on.

    A night's rows wait there for the commit (gigabytes for a big run: ~6 KB a resnet50 clip). A
    disk that fills fails the spill's write, and a run that cannot spill cannot commit: the whole
    night is lost. Watched after every batch (one statvfs call), the run stops taking videos while
    there is room left to commit what is done.
    """

    folder: Path
    min_free_bytes: int

    def free_bytes(self) -> int:
        try:
            return shutil.disk_usage(self.folder).free
        except OSError:  # the folder removed under the run (a tmp cleaner): its writes say what is wrong
            return sys.maxsize

    def low(self) -> bool:
        return self.free_bytes() < self.min_free_bytes


def spill_space_said(folder: Path | str, free: int, min_free_mb: int) -> str:
    """What is wrong when the spill folder's disk runs low, and what to do about it."""
    return (
        f"the temporary folder {str(folder)!r} (where a run's rows wait for its commit) has {free / 2**20:,.1f} MB free, "
        f"under limits.spill_min_free_mb={min_free_mb}: free space there, point TMPDIR at a larger disk, or lower the limit"
    )


def remove_dead_runs_folders(root: Path | None = None) -> Swept:
    """Remove the spill folders of runs whose driver process is gone; a live run's are kept."""
    root = Path(root or tempfile.gettempdir())
    folders = size = 0
    try:
        entries = list(os.scandir(root))
    except OSError:
        return Swept(0, 0)
    for entry in entries:
        match = _NAME.match(entry.name)
        if not match or match["host"] != _host_key() or not entry.is_dir(follow_symlinks=False) or _alive(int(match["pid"])):
            continue
        size += folder_bytes(Path(entry.path))
        shutil.rmtree(entry.path, ignore_errors=True)
        folders += 1
    return Swept(folders, size)


def _host_key() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive, and not ours to judge
        return True
    return True


def folder_bytes(folder: Path) -> int:
    """The bytes of the files under a folder (a file removed while it is counted counts 0)."""
    total = 0
    for path in folder.rglob("*"):
        try:
            total += path.stat().st_size if path.is_file() else 0
        except OSError:
            continue
    return total
