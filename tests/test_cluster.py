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
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import media
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from deltalake import DeltaTable
from extended import extended
from s3server import dead_port

from vidbatch import submit as submit_mod

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
        # A fresh temp dir per start: a replacement must not reuse the dead node's sockets.
        temp = f"{name}-{secrets.token_hex(2)}"
        self._spawn(name, [*self._common(temp, WORKER_IP, cpus), f"--address={HEAD_IP}:{self.gcs_port}"])

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
            dead = [name for name, proc in self.nodes.items() if proc.poll() is not None]
            # The fixture removes the root afterwards: the reason goes into the failure itself.
            assert not dead, f"ray start exited: {dead}; the end of its log:\n{self.log_tail(dead[0]) if dead else ''}"
            try:
                if self.alive_nodes() >= count:
                    return
            except Exception:
                pass
            time.sleep(1)
        raise AssertionError(f"cluster did not reach {count} nodes in {timeout_s}s; logs in {self.root}")

    def log_tail(self, name: str, lines: int = 30) -> str:
        log = self.root / f"{name}.log"
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else "(no log)"

    def kill(self, name: str) -> None:
        """SIGKILL a node's whole process group: raylet, workers, agents (a node lost)."""
        proc = self.nodes.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    def stop(self) -> None:
        for name in list(self.nodes):
            self.kill(name)

    def vidbatch(
        self, *args: str, timeout: float = JOB_TIMEOUT_S, token: bool = True, home: Path | None = None
    ) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        if token:
            env["RAY_AUTH_TOKEN"] = self.token  # passthrough: no RAY_AUTH_MODE, no ~/.ray/auth_token
        if home is not None:
            env["HOME"] = str(home)  # whose ~/.ray/auth_token a local head falls back to
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


def _started_cluster(root: Path, attempts: int = 2) -> LocalCluster:
    """A head and a worker. The ports are picked free and let go before `ray start` binds them, so
    another process (the other test worker's Ray, say) can take one in between and the node exits:
    such a start is tried again on fresh ports, once."""
    for attempt in range(1, attempts + 1):
        c = LocalCluster(root / f"try{attempt}")
        c.root.mkdir()
        try:
            c.start_head()
            c.start_worker()
            c.wait_for_nodes(2)
            return c
        except AssertionError:
            c.stop()
            if attempt == attempts:
                raise
    raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def cluster():
    root = Path(tempfile.mkdtemp(prefix="vbc-", dir="/tmp"))  # short: Unix socket paths live under it
    c = None
    try:
        c = _started_cluster(root)
        yield c
    finally:
        if c is not None:
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_a_bad_job_is_refused_before_submitting(cluster, tmp_path, seeded_weights):
    job = write_job(tmp_path, {"a": tmp_path / "a.mp4"}, seeded_weights)
    jobs_before = len(cluster.client().list_jobs())
    bad = cluster.vidbatch("submit", str(job), "--set", "model.arch=resnet51")
    assert bad.returncode == 2 and "model.arch='resnet51'" in bad.stderr
    bad_id = cluster.vidbatch("submit", str(job), "--id", "no spaces/please")
    assert bad_id.returncode == 2 and "--id" in bad_id.stderr
    assert len(cluster.client().list_jobs()) == jobs_before


@pytest.mark.slow
def test_without_the_token_the_cluster_refuses_and_says_how(cluster, tmp_path, seeded_weights):
    job = write_job(tmp_path, {"a": tmp_path / "a.mp4"}, seeded_weights)
    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    result = cluster.vidbatch("submit", str(job), token=False, home=home)
    assert result.returncode == 3, result.stderr
    assert "RAY_AUTH_TOKEN" in result.stderr and "Traceback" not in result.stderr

    (home / ".ray" / "auth_token").write_text("not-this-clusters-token")
    wrong = cluster.vidbatch("status", "anything", token=False, home=home)
    assert wrong.returncode == 3 and "token was refused" in wrong.stderr, wrong.stderr

    # A head on this machine: its ~/.ray/auth_token is used without any setting (as `ray start --head` wrote it).
    (home / ".ray" / "auth_token").write_text(cluster.token)
    right = cluster.vidbatch("status", "no-such-id", token=False, home=home)
    assert right.returncode == 1 and "no such submission" in right.stderr, right.stderr


# ~23 s (Ray's own retries before it gives up on the token): extended, so the default suite stays inside
# its 10 minutes. Cheaper cases in the default suite: the message, in test_local_ray's
# test_a_cluster_that_refuses_the_driver_is_one_line_naming_the_token, and the Jobs API's refusal above.
@extended
def test_run_against_the_cluster_without_its_token_says_how_and_leaves_nothing(cluster, tmp_path, library, seeded_weights):
    """Before: ~20 s of Ray's InvalidAuthToken warnings, then a ConnectionError traceback (exit 1),
    and the run's started.json left in the output."""
    job = write_job(tmp_path, {"h264": library["h264"].path}, seeded_weights)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")} | {"HOME": str(tmp_path / "home")}
    result = subprocess.run(
        [str(VENV_BIN / "vidbatch"), "run", str(job), "--address", f"{HEAD_IP}:{cluster.gcs_port}"],
        env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"vidbatch: could not connect to the Ray cluster at {HEAD_IP}:{cluster.gcs_port}"), last
    assert "RAY_AUTH_TOKEN" in last and "Traceback" not in result.stderr
    assert not list((tmp_path / "out").glob("_runs/*/started.json"))  # refused before any work: nothing left


@pytest.mark.slow
def test_timeout_stops_the_job_and_nothing_is_committed(cluster, tmp_path, library, seeded_weights):
    job = write_job(tmp_path, {name: v.path for name, v in library.items()}, seeded_weights)
    sid = f"timeout-{secrets.token_hex(3)}"
    started = time.monotonic()
    result = cluster.vidbatch("submit", str(job), "--wait", "--timeout", "5", "--id", sid)
    assert result.returncode == 1, result.stdout + result.stderr
    assert time.monotonic() - started < 60
    assert "stopping it" in result.stderr and "STOPPED" in result.stderr
    assert not (tmp_path / "out" / "videos" / "_delta_log").exists()  # a stopped run commits nothing

    shown = cluster.vidbatch("status", sid)
    assert shown.returncode == 0 and "STOPPED" in shown.stdout
    again = cluster.vidbatch("stop", sid)
    assert again.returncode == 0 and "was not running" in again.stdout
    unknown = cluster.vidbatch("status", "no-such-submission")
    assert unknown.returncode == 1 and "no such submission" in unknown.stderr


# ~60 s on 2 cores: extended, so the default suite stays inside its 10 minutes. The stop itself is
# in the default suite: test_incremental's test_a_stop_signal_midway_commits_what_is_done...[sigterm].
@pytest.mark.slow
@extended
def test_vidbatch_stop_gives_the_run_time_to_commit_what_it_has_done(cluster, tmp_path, seeded_weights):
    """Ray's job stop sends SIGTERM and kills the driver 3 s later unless the job's env_vars say
    otherwise: too short for a commit. Stopped midway, the finished video is committed."""
    # Two long videos (~150 clips each) on one decoder: the stop comes as the first finishes, with the
    # second far from done, whichever order they are handed out in (a short one's row could wait
    # behind a long one's clips and finish right after it, before the stop arrived).
    videos = {name: media.write_video(tmp_path / f"{name}.mp4", num_frames=3000, fps=10).path for name in ("a", "b")}
    job = write_job(tmp_path, videos, seeded_weights, batch_clips=1, decode_actors=1)
    sid = f"stop-{secrets.token_hex(3)}"
    submitted = cluster.vidbatch("submit", str(job), "--id", sid)
    assert submitted.returncode == 0, submitted.stderr
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while "videos 1/2" not in (log := cluster.vidbatch("logs", sid).stdout):
        assert time.monotonic() < deadline and "videos 2/2" not in log, log
        time.sleep(0.5)
    stopped = cluster.vidbatch("stop", sid)
    assert stopped.returncode == 0 and "stop requested" in stopped.stdout, stopped.stdout + stopped.stderr
    followed = cluster.vidbatch("logs", sid, "--follow")
    assert "STOPPED" in followed.stderr + followed.stdout, followed.stdout + followed.stderr
    assert "STOPPED EARLY: stopped by SIGTERM; what was done is committed" in followed.stdout, followed.stdout
    rows = DeltaTable(str(tmp_path / "out" / "videos")).to_pyarrow_table().to_pylist()
    assert sorted((v["status"], v["error_type"]) for v in rows) == [("ok", None), ("timeout", "sigterm")]


@pytest.mark.slow
@pytest.mark.parametrize(
    "replaced",
    [
        # ~50-80 s each on 2 cores: in the extended suite only, so the default suite stays inside
        # its 10 minutes. Lost actors in the default suite: test_bad_inputs'
        # test_actor_killed_mid_run_still_gives_every_row; a run nothing can finish:
        # test_incremental's stuck-run watchdog test.
        pytest.param(True, id="node-replaced", marks=extended),
        pytest.param(False, id="node-not-replaced", marks=extended),
    ],
)
def test_a_worker_node_killed_mid_run_never_hangs(cluster, tmp_path, seeded_weights, replaced):
    """The worker dies mid-run. Replaced (as KubeRay or the autoscaler do) or not, the run ends
    within a bound: committed with one row per video, or failed cleanly with nothing committed."""
    # 20 videos of 4 s: enough that the worker dies with most of them still to do (in the suite's
    # budget: 24 of 8 s cost ~70 s, the head finishing alone what the worker left).
    videos = {f"v{i:02d}": media.write_video(tmp_path / f"v{i:02d}.mp4", num_frames=40, fps=10).path for i in range(20)}
    job = write_job(tmp_path, videos, seeded_weights)
    sid = f"kill-{secrets.token_hex(3)}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")} | {"RAY_AUTH_TOKEN": cluster.token}
    # The driver's own watchdog (limits.no_progress_timeout_s) ends a run nothing can finish;
    # --timeout is the submitter's backstop above it.
    argv = ["submit", str(job), "--set", "limits.no_progress_timeout_s=25", "--wait", "--timeout", "150", "--id", sid]
    waiting = subprocess.Popen(
        [str(VENV_BIN / "vidbatch"), *argv, "--address", cluster.address],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        if "worker" not in cluster.nodes:
            cluster.start_worker("worker")
            cluster.wait_for_nodes(2)
        client = cluster.client()
        deadline = time.monotonic() + 150
        done = 0
        while time.monotonic() < deadline and done < 2:
            time.sleep(1)
            try:
                progress = re.findall(rf"videos (\d+)/{len(videos)}", client.get_job_logs(sid))
            except RuntimeError:  # not registered yet
                continue
            done = int(progress[-1]) if progress else 0
            assert waiting.poll() is None, waiting.communicate()
        assert done >= 2, "the run never got going"
        cluster.kill("worker")
        if replaced:
            cluster.start_worker("worker")
        out, err = waiting.communicate(timeout=200)  # bounded: a hang fails here
    finally:
        if waiting.poll() is None:
            waiting.kill()
    print(f"worker killed at {done}/{len(videos)} videos, replaced={replaced}: submit --wait exit {waiting.returncode}")  # -rP
    if waiting.returncode == 0:
        rows = DeltaTable(str(tmp_path / "out" / "videos")).to_pyarrow_table().to_pylist()
        assert sorted(r["video_id"] for r in rows) == sorted(videos)  # one row each: retried work not doubled
        statuses = {r["status"] for r in rows}
        # "timeout": videos the watchdog gave up on (their rows say so; the next run retries them).
        assert statuses <= {"ok", "timeout"} and "ok" in statuses, statuses
        clips = DeltaTable(str(tmp_path / "out" / "clips")).to_pyarrow_table().to_pylist()
        assert len(clips) == len({(c["video_id"], c["clip_index"]) for c in clips}) == sum(r["num_clips"] for r in rows)
    else:  # a clean failure: the job ended, said so, and committed nothing
        print(out[-3000:], err[-1500:])
        assert waiting.returncode == 1, out + err
        assert "FAILED" in err or "STOPPED" in err
        assert not (tmp_path / "out" / "videos" / "_delta_log").exists()


# --- no cluster needed ---------------------------------------------------------


def test_ids_expand_and_are_checked():
    from datetime import datetime, timezone

    when = datetime(2026, 11, 22, 23, 59, tzinfo=timezone.utc)
    assert submit_mod.expand_id("{name}-{date}", "nightly-tagging", when) == "nightly-tagging-2026-11-22"
    assert submit_mod.expand_id(None, "x") is None
    for bad in ("a b", "../x", "{user}", "-x", "x" * 129):
        with pytest.raises(submit_mod.JobError):
            submit_mod.expand_id(bad, "x", when)


def test_relative_local_paths_become_absolute_overrides(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "job.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "n",
                "manifest": "lib/manifest.parquet",
                "output": "s3://bucket/out",
                "model": {"weights": "w/r18.pt", "arch": "resnet18", "categories": "w/classes.txt"},
                "inputs": {"allowed_roots": ["lib"]},
            }
        )
    )
    staging = tmp_path / "staging"
    staging.mkdir()
    overrides = ["sampling.fps=2", "model.weights=w/other.pt"]  # a relative path given with --set too
    sub = submit_mod.build_submission(tmp_path / "job.yaml", overrides, staging, run_flags=["--allow-empty"])
    assert sub.entrypoint.startswith("python -m vidbatch.cli run job/job.yaml --set sampling.fps=2")
    assert sub.entrypoint.endswith(" --allow-empty")  # submit's run flags reach the run on the cluster
    args = shlex.split(sub.entrypoint)
    assert f"manifest={tmp_path}/lib/manifest.parquet" in args
    assert args.index(f"model.weights={tmp_path}/w/other.pt") > args.index("model.weights=w/other.pt")  # the last wins
    assert sub.job.model.weights == f"{tmp_path}/w/other.pt"
    assert f"model.categories={tmp_path}/w/classes.txt" in args
    assert f"inputs.allowed_roots=['{tmp_path}/lib']" in args
    assert "output=" not in sub.entrypoint  # not local: left alone
    assert sub.job.manifest == f"{tmp_path}/lib/manifest.parquet"
    assert (staging / "vidbatch" / "cli.py").is_file() and (staging / "job" / "job.yaml").is_file()
    assert not list(staging.rglob("__pycache__"))
    assert sub.runtime_env["working_dir"] == str(staging)
    assert sub.runtime_env["env_vars"] == {"PYTHONUNBUFFERED": "1", "RAY_JOB_STOP_WAIT_TIME_S": "300"}  # never credentials


def test_bad_job_is_refused_before_any_connection(tmp_path, monkeypatch):
    (tmp_path / "job.yaml").write_text("name: n\nmanifest: m.parquet\noutput: o\nmodel: {arch: resnet51}\n")

    def no_connection(address):
        raise AssertionError("must not connect")

    monkeypatch.setattr(submit_mod, "connect", no_connection)
    with pytest.raises(submit_mod.JobError, match="model.arch='resnet51'"):
        submit_mod.submit(str(tmp_path / "job.yaml"), [], "http://127.0.0.1:1")


def test_the_address_given_is_the_one_used_whatever_ray_address_says(monkeypatch):
    """Ray's client takes RAY_ADDRESS over the address it is given: --address went unused, and the
    token chosen for it went to the other host (cluster audit)."""
    import http.server
    import threading

    import ray

    seen: list[tuple[str, str | None]] = []

    class Head(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            seen.append((self.path, self.headers.get("Authorization")))
            body = json.dumps({"version": "4", "ray_version": ray.__version__, "ray_commit": "x"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Head)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with socket.socket() as closed:
            closed.bind(("127.0.0.1", 0))
            elsewhere = f"http://127.0.0.1:{closed.getsockname()[1]}"
        monkeypatch.setenv("RAY_ADDRESS", elsewhere)
        monkeypatch.setenv("RAY_API_SERVER_ADDRESS", elsewhere)
        monkeypatch.setenv("RAY_AUTH_TOKEN", "for-this-head")
        submit_mod.connect(f"http://127.0.0.1:{server.server_address[1]}")
        # The given head was asked (with a token: ours, or Ray's own where an earlier test in this
        # process turned Ray's token mode on), and nothing went to the other address (it is closed).
        assert seen and all(path == "/api/version" and token for path, token in seen), seen
        assert os.environ["RAY_ADDRESS"] == elsewhere  # set aside for the client only
    finally:
        server.shutdown()


def test_token_comes_from_the_environment_as_a_header(tmp_path):
    assert submit_mod.auth_headers({}) == {}
    assert submit_mod.auth_headers({"RAY_AUTH_TOKEN": "abc"}) == {"Authorization": "Bearer abc"}
    token_file = tmp_path / "token"
    token_file.write_text("xyz\n")
    assert submit_mod.auth_headers({"RAY_AUTH_TOKEN_PATH": str(token_file)}) == {"Authorization": "Bearer xyz"}
    # With RAY_AUTH_MODE=token Ray's client adds the header itself.
    assert submit_mod.auth_headers({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "abc"}) == {}
    # ~/.ray/auth_token only for a head on this machine, never sent elsewhere.
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("local\n")
    local = {"Authorization": "Bearer local"}
    assert submit_mod.auth_headers({}, address="http://127.0.0.1:8265", home=tmp_path) == local
    assert submit_mod.auth_headers({}, address="localhost:8265", home=tmp_path) == local
    assert submit_mod.auth_headers({}, address="http://ray-head.example.com:8265", home=tmp_path) == {}
    assert submit_mod.auth_headers({"RAY_AUTH_MODE": "disabled"}, address="http://127.0.0.1:8265", home=tmp_path) == {}


class FakeClient:
    """Just enough of JobSubmissionClient for follow(): a job that runs until stopped."""

    def __init__(self, statuses: list[str], exit_code: int | None = None) -> None:
        self.statuses = statuses
        self.exit_code = exit_code
        self.stopped = False

    async def tail_job_logs(self, sid):
        yield "line 1\n"

    def get_job_logs(self, sid):
        return "line 1\n" + ("committing 1 videos rows\nrun r1: STOPPED EARLY\n" if self.stopped else "")

    def get_job_info(self, sid):
        from types import SimpleNamespace

        status = "STOPPED" if self.stopped else (self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0])
        return SimpleNamespace(status=status, message="m", driver_exit_code=self.exit_code if status == "FAILED" else None)

    def stop_job(self, sid):
        self.stopped = True
        return True


class UnreachableClient(FakeClient):
    """A cluster that went away while being followed (the head killed)."""

    _address = "http://head:8265"

    async def tail_job_logs(self, sid):
        raise ConnectionError("Failed to connect to Ray at address: http://head:8265")
        yield  # an async generator, as the real one

    def get_job_info(self, sid):
        raise ConnectionError("Failed to connect to Ray at address: http://head:8265")


def test_a_cluster_lost_while_following_is_named():
    """Before: 'cannot reach the Ray Jobs API at : ...', the address left out."""
    import io

    out, err = io.StringIO(), io.StringIO()
    assert submit_mod.follow(UnreachableClient(["RUNNING"]), "s", out, err, sleep=lambda s: None) == submit_mod.EXIT_CLUSTER
    said = err.getvalue()
    assert "cannot reach the Ray Jobs API at http://head:8265: is the head running" in said, said
    assert " at :" not in said
    assert submit_mod._explain(ConnectionError("connection refused")).startswith("cannot reach the Ray Jobs API: is")


def test_a_timeout_without_wait_is_refused_not_ignored(tmp_path, capsys):
    """submit --timeout without --wait returned at once, and the job it was meant to bound ran on."""
    from vidbatch.cli import main

    (tmp_path / "job.yaml").write_text("name: x\n")
    assert main(["submit", str(tmp_path / "job.yaml"), "--timeout", "60", "--address", "http://127.0.0.1:1"]) == 2
    assert "--timeout works with --wait" in capsys.readouterr().err


def test_follow_exit_codes_and_timeout():
    import io

    out, err = io.StringIO(), io.StringIO()
    assert submit_mod.follow(FakeClient(["RUNNING", "SUCCEEDED"]), "s", out, err, sleep=lambda s: None) == 0
    assert out.getvalue() == "line 1\n"
    assert submit_mod.follow(FakeClient(["FAILED"], exit_code=2), "s", out, err, sleep=lambda s: None) == 2
    assert submit_mod.follow(FakeClient(["FAILED"]), "s", out, err, sleep=lambda s: None) == 1
    clock = iter(range(0, 1000, 10))
    stuck = FakeClient(["RUNNING"])
    code = submit_mod.follow(stuck, "s", out, err, timeout_s=25, clock=lambda: next(clock), sleep=lambda s: None)
    assert code == 1 and stuck.stopped and "stopping it" in err.getvalue()


class SlowLogClient(FakeClient):
    """A job whose log stream outlives --timeout: the tail is cut short, then the job is stopped."""

    async def tail_job_logs(self, sid):
        import asyncio

        yield "line 1\n"
        await asyncio.sleep(60)


def test_a_job_stopped_by_timeout_still_shows_what_its_run_said_after_the_stop():
    """submit --wait --timeout stopped following the log when it stopped the job: the run's commit and
    summary lines (it commits what it has done) were only in `vidbatch logs`."""
    import io

    out, err = io.StringIO(), io.StringIO()
    stuck = SlowLogClient(["RUNNING"])
    clock = iter(range(0, 1000, 10))
    code = submit_mod.follow(stuck, "s", out, err, timeout_s=0.2, clock=lambda: next(clock), sleep=lambda s: None)
    assert code == 1 and stuck.stopped
    assert out.getvalue() == "line 1\ncommitting 1 videos rows\nrun r1: STOPPED EARLY\n"  # each line once


def test_without_address_ray_reads_its_own_address_forms(monkeypatch):
    """Without --address, RAY_ADDRESS may be Ray's form (`auto`, a GCS HEAD:6379, as `vidbatch run`
    reads it): Ray's client must see it to find the dashboard. Only a given --address sets it aside."""
    import ray.job_submission

    seen: list[str | None] = []
    def client(address, headers):
        seen.append(os.environ.get("RAY_ADDRESS"))

    monkeypatch.setattr(ray.job_submission, "JobSubmissionClient", client)
    monkeypatch.setenv("RAY_ADDRESS", "auto")
    submit_mod.connect(None)
    submit_mod.connect("http://127.0.0.1:8265")
    assert seen == ["auto", None] and os.environ["RAY_ADDRESS"] == "auto"


@pytest.mark.parametrize("state", ["RUNNING", "SUCCEEDED", "FAILED", "STOPPED"])
def test_status_exits_0_whatever_the_state_and_says_it_first(monkeypatch, state):
    """As `ray job status`: the query worked. A script reads the state from the first line (cluster/README.md);
    `logs --follow` and `submit --wait` exit by the job's result."""
    import io
    from types import SimpleNamespace

    info = SimpleNamespace(status=state, message="", entrypoint="python -m vidbatch.cli run job/j.yaml",
                           start_time=None, end_time=None, driver_exit_code=None)  # fmt: skip
    monkeypatch.setattr(submit_mod, "connect", lambda address: SimpleNamespace(get_job_info=lambda sid: info))
    out, err = io.StringIO(), io.StringIO()
    assert submit_mod.status("nightly-1", "http://head:8265", out=out, err=err) == submit_mod.EXIT_OK
    assert out.getvalue().splitlines()[0] == f"nightly-1: {state}" and err.getvalue() == ""


def test_a_dashboard_address_with_a_password_is_said_without_it():
    """A dashboard behind an authenticating proxy, given as http://user:password@head:8265: a cluster that
    could not be reached was said with the password ('cannot reach the Ray Jobs API at http://ops:pw@...')."""
    import io

    address = f"http://ops:pw-CANARY@127.0.0.1:{dead_port()}"  # nothing listens there
    out, err = io.StringIO(), io.StringIO()
    assert submit_mod.status("raysubmit_x", address, out=out, err=err) == submit_mod.EXIT_CLUSTER
    assert "pw-CANARY" not in out.getvalue() + err.getvalue()
    assert "cannot reach the Ray Jobs API at http://REDACTED@127.0.0.1:" in err.getvalue(), err.getvalue()
