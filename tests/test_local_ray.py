"""The Ray a run starts for itself: no idle workers started or kept; a cluster joined keeps its settings."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from extended import extended

from vidbatch import ray_session


class _RayInit:
    """Records ray.init's calls; refuses a system config the way ray.init does when it joins a cluster."""

    def __init__(self, *, joins_a_cluster: bool = False, error: str | None = None) -> None:
        self.calls: list[dict] = []
        self.joins_a_cluster = joins_a_cluster
        self.error = error

    def init(self, **kwargs):
        self.calls.append(kwargs)
        if self.error:
            raise ValueError(self.error)
        if self.joins_a_cluster and kwargs.get("_system_config"):
            raise ValueError("When connecting to an existing cluster, _system_config must not be provided.")


def test_a_ray_started_here_gets_the_local_settings():
    ray = _RayInit()
    ray_session._init_ray(ray, address=None, include_dashboard=False)
    (call,) = ray.calls
    assert call["_system_config"] == {"prestart_worker_first_driver": False, "num_workers_soft_limit": 0}
    assert call["address"] is None and call["include_dashboard"] is False and call["log_to_driver"] is True


def test_a_cluster_on_this_host_is_joined_with_its_own_settings():
    ray = _RayInit(joins_a_cluster=True)
    ray_session._init_ray(ray, address=None, include_dashboard=False)
    assert [("_system_config" in call) for call in ray.calls] == [True, False]


def test_a_cluster_at_an_address_is_never_given_settings():
    ray = _RayInit()
    ray_session._init_ray(ray, address="ray://head:10001", include_dashboard=None)
    (call,) = ray.calls
    assert "_system_config" not in call and call["address"] == "ray://head:10001"


def test_another_refusal_of_ray_init_is_not_swallowed():
    ray = _RayInit(error="When connecting to an existing cluster, num_cpus and num_gpus must not be provided.")
    with pytest.raises(ValueError, match="num_cpus"):
        ray_session._init_ray(ray, address=None, include_dashboard=False)
    assert [("_system_config" in call) for call in ray.calls] == [True, False]  # tried once as Ray comes


_COUNT_IDLE = textwrap.dedent(
    """
    import os, sys, time
    import ray
    from vidbatch import ray_session

    def idle_workers():
        # Ray's pooled workers, under this process: the raylet is its child.
        children = {}
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                stat = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
                cmd = open(f"/proc/{pid}/cmdline", "rb").read()
            except OSError:
                continue
            children.setdefault(int(stat[1]), []).append((int(pid), cmd))
        found, todo = 0, [os.getpid()]
        while todo:
            for pid, cmd in children.get(todo.pop(), []):
                found += cmd.startswith(b"ray::IDLE")
                todo.append(pid)
        return found

    def settled(start):
        start()
        time.sleep(4)  # a prestarted worker is up (its title set) within a second or two here
        count = idle_workers()
        ray.shutdown()
        return count

    plain = settled(lambda: ray.init(include_dashboard=False, logging_level="WARNING", num_cpus=2))
    ours = settled(lambda: ray_session.ensure_ray(None))
    print(plain, ours)
    """
)


# ~24 s (two Rays started and watched): extended, so the default suite stays inside its 10 minutes. The
# settings that keep no idle workers are checked in the default suite by
# test_a_ray_started_here_gets_the_local_settings; this shows that Ray honours them.
@pytest.mark.slow
@extended
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_local_ray_keeps_no_idle_workers_where_a_plain_one_does():
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run(
        [sys.executable, "-c", _COUNT_IDLE], capture_output=True, text=True, env=env, timeout=180, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    plain, ours = (int(n) for n in proc.stdout.split()[-2:])
    assert plain >= 1  # the control: Ray as it comes prestarts workers and keeps them idle
    assert ours == 0


_TERMINATED_WHILE_LEAVING = textwrap.dedent(
    """
    import signal, sys
    from vidbatch import cli
    from vidbatch.driver_env import set_driver_environment

    set_driver_environment()  # as cli.entry does, before Ray is imported
    from vidbatch import ray_session

    ray_session.ensure_ray(None)  # the local Ray a run starts
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # as cli._leave's first step: the outcome is decided
    print("leaving", flush=True)
    cli._leave(0)  # ray.shutdown(), then exit 0
    """
)


@pytest.mark.slow
def test_a_sigterm_while_a_finished_run_stops_its_ray_does_not_change_its_exit_status():
    """ray.shutdown set SIGTERM back to its default action a quarter of a second in (Ray's C++ logging
    uninstalls its failure signal handlers), so a SIGTERM in the rest of the teardown killed a run
    that had committed: exit -15 instead of 0."""
    import signal
    import time

    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_DISABLE_FAILURE_SIGNAL_HANDLER")}
    proc = subprocess.Popen(
        [sys.executable, "-c", _TERMINATED_WHILE_LEAVING], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "leaving", proc.stderr
    deadline = time.monotonic() + 60
    sent = 0
    while proc.poll() is None and time.monotonic() < deadline:
        proc.send_signal(signal.SIGTERM)  # a stop that keeps coming while Ray shuts down
        sent += 1
        time.sleep(0.02)
    _, err = proc.communicate(timeout=60)
    assert sent >= 10  # the teardown took a while, and was hit all along
    assert proc.returncode == 0, err[-2000:]


def test_a_cluster_that_refuses_the_driver_is_one_line_naming_the_token(monkeypatch):
    """ray.init against a cluster with token authentication, without the token: a ConnectionError after
    Ray's retries. The run says where it could not connect and how to give the token (the whole path,
    on a real cluster, is test_cluster's extended test_run_against_the_cluster_without_its_token...)."""
    import ray

    from vidbatch.errors import JobError

    def refused(ray_module, *, address, include_dashboard):
        raise ConnectionError("Failed to connect to GCS at 10.0.0.5:6379: InvalidAuthToken\nmore of Ray's text")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray_session, "refuse_unreachable", lambda address: None)
    monkeypatch.setattr(ray_session, "_init_ray", refused)
    with pytest.raises(JobError) as refusal:
        ray_session.ensure_ray("10.0.0.5:6379")
    said = str(refusal.value)
    assert said.startswith("could not connect to the Ray cluster at 10.0.0.5:6379 (Failed to connect to GCS at 10.0.0.5"), said
    assert "RAY_AUTH_TOKEN" in said and "more of Ray's text" not in said
