"""A Ray started here stops with nothing of it left running: a worker that hangs on its way out
(seen: a model actor deadlocked in Ray's exit handler, orphaned with its 1.1 GB after the suite)
is killed after a grace period, and so are the processes it started."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

from extended import extended

from vidbatch.ray_leftovers import end_leftovers, processes_under


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# A parent that starts a child ignoring SIGTERM, prints the child's pid and waits.
_PARENT = textwrap.dedent(
    """
    import signal, subprocess, sys, time
    child = subprocess.Popen([sys.executable, "-c",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
    print(child.pid, flush=True)
    time.sleep(600)
    """
)


def test_a_process_left_under_a_stopped_parent_is_killed_after_the_grace_and_one_that_ended_is_not():
    parent = subprocess.Popen([sys.executable, "-c", _PARENT], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        found = processes_under([parent.pid])
        assert [p.pid for p in found] == [child]
        parent.kill()  # as a raylet goes: its child stays, orphaned
        parent.wait()
        time.sleep(0.2)
        assert _alive(child)
        began = time.monotonic()
        assert end_leftovers(found, grace_s=0.5) == 1
        assert time.monotonic() - began >= 0.5  # it had its grace first
        deadline = time.monotonic() + 5
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(child)
        assert end_leftovers(found, grace_s=5.0) == 0  # nothing left: no wait, no kill
    finally:
        parent.kill()


# A local Ray whose actor leaves (exit_actor, as Ray Data ends an actor pool's actors) and hangs in its
# exit, as Ray's own exit handler was seen to: before the fix it outlived ray.shutdown() for good.
_RAY_SCRIPT = textwrap.dedent(
    """
    import json, os, time
    import ray
    from vidbatch.ray_leftovers import stop_local_ray

    ray.init(num_cpus=1, include_dashboard=False, logging_level="ERROR", log_to_driver=False)

    @ray.remote(num_cpus=0)
    class Stuck:
        def start(self):
            import atexit, os, time
            atexit.register(time.sleep, 600)  # the worker's exit hangs
            return os.getpid()

        def leave(self):
            ray.actor.exit_actor()

    actor = Stuck.remote()
    worker = ray.get(actor.start.remote())
    actor.leave.remote()
    time.sleep(3.0)  # the actor has left; its process hangs in its exit
    hanging = os.path.exists(f"/proc/{worker}")
    killed = stop_local_ray(ray, grace_s=2.0)
    print(json.dumps({"worker": worker, "hanging": hanging, "killed": killed}))
    """
)


@extended  # ~10 s (a Ray of its own); the kill after the grace is checked without Ray above
def test_a_local_ray_stops_with_no_worker_left_hanging_in_its_exit():
    done = subprocess.run([sys.executable, "-c", _RAY_SCRIPT], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    said = json.loads(done.stdout.strip().splitlines()[-1])
    deadline = time.monotonic() + 5
    while _alive(said["worker"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        assert said["hanging"], said  # the case: a worker still there when Ray is stopped
        assert not _alive(said["worker"]), said
        assert said["killed"] == 1, said
    finally:
        if _alive(said["worker"]):
            os.kill(said["worker"], signal.SIGKILL)
