"""`vidbatch submit` against a real two-node Ray cluster started here with `ray start`.

The head and the worker run as `ray start --block` in their own process sessions, with
their own --temp-dir, free ports and node IPs in the loopback range. They are stopped by
killing those process groups, never with `ray stop` (which would kill every Ray process on
the machine, including the in-process Ray of other tests in the same pytest session), and
no `ray_current_cluster` file under /tmp/ray points at them, so a later `ray.init()` does
not connect to this cluster.

Token authentication is on with a token of this module's own (RAY_AUTH_TOKEN on the nodes),
so nothing here reads or writes ~/.ray/auth_token.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from deltalake import DeltaTable

pytestmark = pytest.mark.slow

VENV_BIN = Path(sys.executable).parent
HEAD_IP = "127.0.0.2"  # loopback range; Ray would turn 127.0.0.1 into the machine's outward address
WORKER_IP = "127.0.0.3"
START_TIMEOUT_S = 60
JOB_TIMEOUT_S = 150


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalCluster:
    """A head and worker nodes started with `ray start --block`, each in its own process group."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.token = secrets.token_hex(16)
        self.gcs_port = _free_port()
        self.dashboard_port = _free_port()
        self.address = f"http://127.0.0.1:{self.dashboard_port}"
        self.nodes: dict[str, subprocess.Popen] = {}
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("RAY_")},
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": self.token,
            "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "RAY_USAGE_STATS_ENABLED": "0",
        }

    def _common(self, name: str, ip: str, cpus: int) -> list[str]:
        return [
            str(VENV_BIN / "ray"),
            "start",
            "--block",
            f"--num-cpus={cpus}",
            "--num-gpus=0",
            f"--node-ip-address={ip}",
            f"--temp-dir={self.root / name}",
            f"--dashboard-agent-listen-port={_free_port()}",
            f"--dashboard-agent-grpc-port={_free_port()}",
            f"--metrics-export-port={_free_port()}",
            f"--runtime-env-agent-port={_free_port()}",
            f"--node-manager-port={_free_port()}",
            f"--object-manager-port={_free_port()}",
            "--min-worker-port=0",
            "--max-worker-port=0",
            "--object-store-memory=300000000",
        ]

    def _spawn(self, name: str, args: list[str]) -> None:
        log = open(self.root / f"{name}.log", "ab")  # noqa: SIM115 - kept open for the node's life
        self.nodes[name] = subprocess.Popen(
            args, env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )

    def start_head(self, cpus: int = 1) -> None:
        self._spawn(
            "head",
            [
                *self._common("head", HEAD_IP, cpus),
                "--head",
                f"--port={self.gcs_port}",
                "--include-dashboard=true",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={self.dashboard_port}",
                f"--ray-client-server-port={_free_port()}",
            ],
        )

    def start_worker(self, name: str = "worker", cpus: int = 1) -> None:
        self._spawn(name, [*self._common(name, WORKER_IP, cpus), f"--address={HEAD_IP}:{self.gcs_port}"])

    def alive_nodes(self) -> int:
        """Alive nodes as the Jobs API's head sees them (dashboard /nodes)."""
        import requests

        reply = requests.get(f"{self.address}/nodes?view=summary", headers={"Authorization": f"Bearer {self.token}"}, timeout=5)
        reply.raise_for_status()
        summary = reply.json()["data"]["summary"]
        return sum(1 for n in summary if n["raylet"]["state"] == "ALIVE")

    def wait_for_nodes(self, count: int, timeout_s: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for name, proc in self.nodes.items():
                if proc.poll() is not None and name != "gone":
                    pass
            try:
                if self.alive_nodes() >= count:
                    return
            except Exception:
                pass
            time.sleep(1)
        raise AssertionError(f"cluster did not reach {count} nodes in {timeout_s}s; logs in {self.root}")

    def kill(self, name: str) -> None:
        """SIGKILL a node's whole process group: raylet, workers, agents (a node lost)."""
        proc = self.nodes.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    def stop(self) -> None:
        for name in list(self.nodes):
            self.kill(name)

    def vidbatch(self, *args: str, timeout: float = JOB_TIMEOUT_S, token: bool = True) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        if token:
            env["RAY_AUTH_TOKEN"] = self.token  # passthrough: no RAY_AUTH_MODE, no ~/.ray/auth_token
        return subprocess.run(
            [str(VENV_BIN / "vidbatch"), *args, "--address", self.address],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def client(self):
        from ray.job_submission import JobSubmissionClient

        return JobSubmissionClient(self.address, headers={"Authorization": f"Bearer {self.token}"})


@pytest.fixture(scope="module")
def cluster():
    root = Path(tempfile.mkdtemp(prefix="vbc-", dir="/tmp"))  # short: Unix socket paths live under it
    c = LocalCluster(root)
    try:
        c.start_head()
        c.start_worker()
        c.wait_for_nodes(2)
        yield c
    finally:
        c.stop()
        shutil.rmtree(root, ignore_errors=True)


def write_job(tmp_path: Path, uris: dict[str, Path | str | None], weights: Path, **resources) -> Path:
    manifest = tmp_path / "manifest.parquet"
    pq.write_table(pa.table({"video_id": list(uris), "uri": [None if u is None else str(u) for u in uris.values()]}), manifest)
    job = {
        "name": "cluster-test",
        "manifest": str(manifest),
        "output": str(tmp_path / "out"),
        "sampling": {"mode": "fps", "fps": 1.0, "clip_len_s": 2.0},
        "model": {"arch": "resnet18", "weights": str(weights), "precision": "fp32", "top_k": 3},
        "resources": {"batch_clips": 2, "progress_interval_s": 1, **resources},
    }
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    return path


def versions(out: Path) -> dict[str, int]:
    return {t: DeltaTable(str(out / t)).version() for t in ("clips", "videos")}


def test_submit_wait_commits_on_a_two_node_cluster(cluster, tmp_path, library, seeded_weights):
    job = write_job(tmp_path, {name: v.path for name, v in library.items()} | {"missing": tmp_path / "nope.mp4"}, seeded_weights)
    result = cluster.vidbatch("submit", str(job), "--wait", "--id", "cluster-test-{date}")
    assert result.returncode == 0, result.stdout + result.stderr
    sid = result.stdout.strip().splitlines()[0]
    assert sid.startswith("cluster-test-20")
    assert "committed" in result.stdout  # the driver's own summary, followed from the cluster

    videos = DeltaTable(str(tmp_path / "out" / "videos")).to_pyarrow_table().to_pylist()
    status = {v["video_id"]: v["status"] for v in videos}
    assert status == {**{name: "ok" for name in library}, "missing": "not_found"}
    assert len({v["run_id"] for v in videos}) == 1
    clips = DeltaTable(str(tmp_path / "out" / "clips")).to_pyarrow_table()
    assert clips.num_rows == sum(v["num_clips"] for v in videos) > 0
    runs = list((tmp_path / "out" / "_runs").iterdir())
    assert len(runs) == 1 and json.loads((runs[0] / "summary.json").read_text())["videos"] == 7

    info = cluster.client().get_job_info(sid)
    assert str(info.status).endswith("SUCCEEDED")
    assert info.runtime_env["working_dir"].startswith("gcs://")  # the package and the job file were shipped
    assert "RAY_AUTH_TOKEN" not in json.dumps(info.runtime_env) and cluster.token not in json.dumps(info.runtime_env)

    # Same id again (a double trigger): reported, not run a second time.
    before = versions(tmp_path / "out")
    again = cluster.vidbatch("submit", str(job), "--wait", "--id", sid)
    assert again.returncode == 0, again.stderr
    assert "already exists" in again.stderr and "SUCCEEDED" in again.stderr
    assert versions(tmp_path / "out") == before
    assert len(list((tmp_path / "out" / "_runs").iterdir())) == 1

    shown = cluster.vidbatch("status", sid)
    assert shown.returncode == 0 and "SUCCEEDED" in shown.stdout
    log = cluster.vidbatch("logs", sid)
    assert log.returncode == 0 and "committed" in log.stdout


def test_a_bad_job_is_refused_before_submitting(cluster, tmp_path, seeded_weights):
    job = write_job(tmp_path, {"a": tmp_path / "a.mp4"}, seeded_weights)
    jobs_before = len(cluster.client().list_jobs())
    bad = cluster.vidbatch("submit", str(job), "--set", "model.arch=resnet51")
    assert bad.returncode == 2 and "model.arch='resnet51'" in bad.stderr
    bad_id = cluster.vidbatch("submit", str(job), "--id", "no spaces/please")
    assert bad_id.returncode == 2 and "--id" in bad_id.stderr
    assert len(cluster.client().list_jobs()) == jobs_before


def test_without_the_token_the_cluster_refuses_and_says_how(cluster, tmp_path, seeded_weights):
    job = write_job(tmp_path, {"a": tmp_path / "a.mp4"}, seeded_weights)
    result = cluster.vidbatch("submit", str(job), token=False)
    assert result.returncode == 3, result.stderr
    assert "RAY_AUTH_TOKEN" in result.stderr and "Traceback" not in result.stderr
