"""Peak memory of a whole `vidbatch run`, per process role, for `vidbatch bench --memory-check`.

A one-hour video must process with the same peak memory as a one-minute video, in every
process, not only in the decoder. The run is launched as a person launches it (`vidbatch
run`, a local Ray) and every process it starts (Ray's workers are the raylet's children,
which is the driver's child) is sampled from /proc every 0.1 s. Per role, two figures:

* private: RssAnon, the process's own heap; this is what must not grow with a video's length;
* shared: RssShmem, pages of Ray's object store the process has touched. The store is
  allocated once per node (a fixed share of its memory) and its pages are reused, so this
  grows with how much of the store a run has touched, up to the store's size, not per video.

Linux only (/proc).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from vidbatch.process_roles import ORDER, process_tree, settled_role

_SAMPLE_S = 0.1


def pipeline_peak_memory(video: Path, *, mode: str, arch: str, workdir: Path) -> dict[str, dict[str, float]]:
    """Peak private and shared MB per role during `vidbatch run` of a job over this one video."""
    with tempfile.TemporaryDirectory(dir=workdir, prefix="memory-run-") as folder:
        root = Path(folder)
        pq.write_table(pa.table({"video_id": ["v"], "uri": [str(video)]}), root / "manifest.parquet")
        job = {
            "name": "memory-check",
            "manifest": str(root / "manifest.parquet"),
            "output": str(root / "out"),
            "sampling": {"mode": mode, "fps": 1.0, "clip_len_s": 4.0},
            "model": {"arch": arch, "weights": "none"},
            "resources": {"progress_interval_s": 3600},
        }
        (root / "job.json").write_text(json.dumps(job))  # JSON is YAML
        env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "vidbatch.cli", "run", str(root / "job.json")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
        )
        per_process: dict[int, dict[str, float]] = {}
        roles: dict[int, str] = {}
        while proc.poll() is None:
            for pid in process_tree(proc.pid):
                roles[pid] = settled_role(roles.get(pid), pid, driver=proc.pid)
                _record(per_process, pid, _memory_mb(pid))
            time.sleep(_SAMPLE_S)
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"the memory-check run failed ({proc.returncode}):\n{err.decode(errors='replace')[-3000:]}")
    peaks: dict[str, dict[str, float]] = {}
    for pid, memory in per_process.items():
        _record(peaks, roles[pid], memory)
    return peaks


def _memory_mb(pid: int) -> dict[str, float]:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    fields = {line.split(":")[0]: line.split()[1] for line in status.splitlines() if line.startswith(("RssAnon", "RssShmem"))}
    return {"private_mb": int(fields.get("RssAnon", 0)) / 1024, "shared_mb": int(fields.get("RssShmem", 0)) / 1024}


def _record(peaks: dict[Any, dict[str, float]], owner: Any, memory: dict[str, float]) -> None:
    peak = peaks.setdefault(owner, {"private_mb": 0.0, "shared_mb": 0.0})
    for kind, value in memory.items():
        peak[kind] = max(peak[kind], value)


def format_peaks(name: str, peaks: dict[str, Any]) -> list[str]:
    lines = []
    for role in (r for r in ORDER if r in peaks):
        private, shared = peaks[role]["private_mb"], peaks[role]["shared_mb"]
        lines.append(f"  {name:18s} {role:15s} private {private:7.1f} MB, shared (object store) {shared:6.1f} MB")
    return lines
