"""Where a run's CPU time goes, per process role, for `vidbatch bench`.

The ratios say how far the pipeline is from its stage bound; this says where the difference
went. While a run is inside `CpuAccount`, a daemon thread samples the process tree under the
driver (this process) from /proc every `interval_s`: each process's user + system CPU time,
and the machine's idle time. The account is the CPU each role used inside the window, the
cores that sat idle, the busy time of processes outside the run (another program on a shared
host), and on a virtual machine the time its hypervisor took.

Limits, all small against a minute-long run: a process that ends between two samples loses
the CPU it used since the last one (at most `interval_s` each); the sampling thread itself
(~1% of a core at 0.5 s) counts under the driver. Linux only (/proc).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from vidbatch.process_roles import ORDER, process_tree, settled_role

_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


@dataclass
class _Process:
    role: str
    first_cpu_s: float  # when first seen; 0 for a process started inside the window
    last_cpu_s: float


class CpuAccount:
    """CPU seconds per role of the process tree under `root` (default: this process), sampled
    on a daemon thread from `__enter__` to `__exit__`; `result()` once it has ended."""

    def __init__(self, *, root: int | None = None, interval_s: float = 0.5) -> None:
        _validate_interval(interval_s)
        self.root = root if root is not None else os.getpid()
        self.interval_s = interval_s
        self.processes: dict[tuple[int, int], _Process] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample_until_stopped, name="vidbatch-cpu-account", daemon=True)
        self._started = self._ended = 0.0
        self._machine_start = self._machine_end = (0.0, 0.0, 0.0)

    def __enter__(self) -> CpuAccount:
        self._started, self._machine_start = time.monotonic(), _machine_times_s()
        self._sample(first=True)
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()
        self._sample(first=False)
        self._ended, self._machine_end = time.monotonic(), _machine_times_s()

    def result(self) -> dict[str, Any]:
        """wall_s, cpus, cpu_s per role (in ORDER), run_cpu_s (their sum), idle_core_s,
        outside_run_core_s, stolen_core_s, and busy_cores (the run's CPU over the wall time)."""
        if not self._ended:
            raise RuntimeError("CpuAccount.result() before the account has ended")
        wall = self._ended - self._started
        by_role: dict[str, float] = {}
        for process in self.processes.values():
            by_role[process.role] = by_role.get(process.role, 0.0) + process.last_cpu_s - process.first_cpu_s
        busy, idle, stolen = (end - start for start, end in zip(self._machine_start, self._machine_end, strict=True))
        run_total = sum(by_role.values())
        return {
            "wall_s": round(wall, 3),
            "cpus": os.cpu_count(),
            "cpu_s": {role: round(by_role[role], 2) for role in ORDER if role in by_role},
            "run_cpu_s": round(run_total, 2),
            "idle_core_s": round(idle, 2),
            # Busy time of the machine not in the run's processes: another program, the kernel's own threads.
            "outside_run_core_s": round(max(0.0, busy - run_total), 2),
            "stolen_core_s": round(stolen, 2),
            "busy_cores": round(run_total / wall, 3) if wall > 0 else None,
        }

    def _sample_until_stopped(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample(first=False)

    def _sample(self, *, first: bool) -> None:
        for pid, fields in process_tree(self.root).items():
            # proc(5): utime and stime are fields 14 and 15, starttime field 22 (1-based); `fields` starts at 3.
            key = (pid, int(fields[19]))  # a pid reused by a new process is a new process
            cpu_s = (int(fields[11]) + int(fields[12])) / _TICKS_PER_S
            seen = self.processes.get(key)
            if seen is None:
                role = settled_role(None, pid, driver=self.root)
                self.processes[key] = _Process(role=role, first_cpu_s=cpu_s if first else 0.0, last_cpu_s=cpu_s)
                continue
            seen.role = settled_role(seen.role, pid, driver=self.root)  # Ray renames a worker for its actor after it starts
            seen.last_cpu_s = max(seen.last_cpu_s, cpu_s)


def format_account(account: dict[str, Any]) -> str:
    """One line: the window's core-seconds and where they went, biggest first."""
    cpus = account.get("cpus") or 0
    parts = sorted(account["cpu_s"].items(), key=lambda item: -item[1])
    parts += [("idle", account["idle_core_s"]), ("outside the run", account["outside_run_core_s"])]
    if account.get("stolen_core_s"):
        parts.append(("stolen by the hypervisor", account["stolen_core_s"]))
    spent = ", ".join(f"{name} {seconds:.1f}" for name, seconds in parts)
    return f"{account['wall_s']:.1f} s x {cpus} cores = {account['wall_s'] * cpus:.1f} core-s: {spent}"


def against_bounds(
    account: dict[str, Any], *, frames: int, decode_bound: dict[str, Any], model_bound: dict[str, Any]
) -> dict[str, dict[str, float]]:
    """The CPU the pipeline's stages used beside what the stage bounds spent on the same work.

    decoding: the decode actors and their sandboxes against the decode bound's CPU for the same
    videos. model: the model actor against the model bound's rate for the run's frames, with all
    its threads busy (the bound runs alone, its OpenMP threads spinning); a CPU model only. The pipeline's side
    includes each process's start (imports, the model's build), which the bounds leave out.
    """
    used = account["cpu_s"]
    out: dict[str, dict[str, float]] = {}
    decoding = used.get("decode sandbox", 0.0) + used.get("decode actor", 0.0)
    if decoding and decode_bound.get("cpu_s"):
        out["decoding"] = _pair(decoding, float(decode_bound["cpu_s"]))
    threads, rate = model_bound.get("threads"), model_bound.get("frames_per_s")
    on_cpu = model_bound.get("device", "cpu") == "cpu"  # on a GPU the bound's CPU is not its threads' time
    if used.get("model actor") and on_cpu and threads and rate and frames:
        out["model"] = _pair(used["model actor"], frames * threads / rate)
    return out


def format_against_bounds(pairs: dict[str, dict[str, float]]) -> str:
    return ", ".join(
        f"{name} {pair['pipeline_cpu_s']:.1f} vs {pair['bound_cpu_s']:.1f} CPU-s ({pair['ratio']:.2f}x)"
        for name, pair in pairs.items()
    )


def format_rounds_against_bounds(rounds: list[dict[str, Any]]) -> str | None:
    """Each stage's CPU over its bound's, round by round ("decoding 1.33 1.05, model 1.16 1.07"):
    beside the medians of `--repeat`, it says whether a slow round paid more CPU for the same work.
    None when no round has the figures; a round without one shows "none"."""
    pairs = [r.get("cpu_against_bounds") or {} for r in rounds]
    stages = [stage for stage in ("decoding", "model") if any(stage in p for p in pairs)]
    if not stages:
        return None
    return ", ".join(
        f"{stage} " + " ".join(f"{p[stage]['ratio']:.2f}" if stage in p else "none" for p in pairs) for stage in stages
    )


def _pair(pipeline_cpu_s: float, bound_cpu_s: float) -> dict[str, float]:
    ratio = pipeline_cpu_s / bound_cpu_s
    return {"pipeline_cpu_s": round(pipeline_cpu_s, 2), "bound_cpu_s": round(bound_cpu_s, 2), "ratio": round(ratio, 3)}


def _validate_interval(interval_s: float) -> None:
    if not interval_s > 0:
        raise ValueError(f"interval_s={interval_s!r}: the sampling interval must be a positive number of seconds")


def _machine_times_s() -> tuple[float, float, float]:
    """The machine's (busy, idle, stolen) core-seconds since boot, all CPUs: /proc/stat's first line.
    Busy is user, nice, system, irq and softirq (guest time is inside user); idle counts iowait;
    stolen is the time a virtual machine's CPUs were ready to run but the hypervisor ran others."""
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = values
    return (user + nice + system + irq + softirq) / _TICKS_PER_S, (idle + iowait) / _TICKS_PER_S, steal / _TICKS_PER_S
