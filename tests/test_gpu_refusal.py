"""resources.model_gpus the machine or cluster lacks: refused before any work, nothing left in the output."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from vidbatch import pipeline
from vidbatch.config import ResourcesConfig, parse_job
from vidbatch.errors import JobError
from vidbatch.preflight import gpus_missing_here, local_gpus


def _job_file(tmp_path):
    # A row to decode (no earlier run, so nothing is stat'ed before Ray would start): the run
    # gets as far as it can before deciding where the model runs.
    pq.write_table(pa.table({"video_id": ["a"], "uri": [str(tmp_path / "a.mp4")]}), tmp_path / "manifest.parquet")
    raw = {
        "name": "gpu",
        "manifest": str(tmp_path / "manifest.parquet"),
        "output": str(tmp_path / "out"),
        "model": {"arch": "resnet18", "weights": "none"},
    }
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(raw))
    return raw


@pytest.fixture
def no_gpus_here(monkeypatch):
    """This machine as a local Ray would see it with no GPU, even on a machine that has some."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.delenv("RAY_OVERRIDE_RESOURCES", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    # A Ray temp folder of its own: a cluster `ray start`ed on this host (its address in
    # /tmp/ray/ray_current_cluster) would be joined by ray.init() instead of a local Ray.
    ray_tmp = tempfile.mkdtemp(prefix="vbgpu")  # short: Ray's socket paths must fit 107 bytes
    monkeypatch.setenv("RAY_TMPDIR", ray_tmp)
    if "ray" in sys.modules:  # the suite's own Ray (ray_local) must not make this process look connected
        monkeypatch.setattr(sys.modules["ray"], "is_initialized", lambda: False)
    yield
    shutil.rmtree(ray_tmp, ignore_errors=True)


def test_vidbatch_run_refuses_gpus_this_machine_lacks_before_anything_is_written(tmp_path, no_gpus_here):
    _job_file(tmp_path)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "vidbatch.cli", "run", "job.yaml", "--set", "resources.model_gpus=1"],
        cwd=tmp_path,
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 2, done.stderr
    assert not (tmp_path / "out").exists()  # no _runs/<run_id>/started.json: the output is untouched
    assert "vidbatch: resources.model_gpus=1 but this machine has 0 GPUs" in done.stderr, done.stderr
    assert "resources.model_gpus: 0" in done.stderr  # what to do instead
    assert "Token authentication" not in done.stderr  # refused before Ray was started
    assert elapsed < 60, elapsed


def test_gpus_a_cluster_lacks_are_refused_once_connected_and_leave_no_started_json(tmp_path, monkeypatch):
    """With an address the GPUs are only known after connecting; the refusal then takes back its started.json."""
    raw = _job_file(tmp_path)
    (tmp_path / "out" / "_runs" / "earlier").mkdir(parents=True)  # another run's folder stays

    import ray

    # Connected to a cluster without GPUs and without an autoscaler (no Ray is started here).
    asked = []
    monkeypatch.setattr(pipeline, "ensure_ray", lambda address: asked.append(address) or ray)
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 4.0})
    monkeypatch.setattr(pipeline, "_autoscaler_max_resources", dict)
    job = parse_job({**raw, "resources": {"model_gpus": 1}})
    with pytest.raises(JobError, match=r"resources.model_gpus=1(\.0)? but the cluster has 0 GPUs"):
        pipeline.run_job(job, address="ray://head:10001", progress=lambda _: None)
    assert asked == ["ray://head:10001"]  # the up-front check left a cluster's GPUs to the cluster
    assert sorted(p.name for p in (tmp_path / "out" / "_runs").iterdir()) == ["earlier"]
    # alone, the refused run leaves no _runs folder at all
    shutil.rmtree(tmp_path / "out" / "_runs" / "earlier")
    with pytest.raises(JobError, match="resources.model_gpus=1"):
        pipeline.run_job(job, address="ray://head:10001", progress=lambda _: None)
    assert list((tmp_path / "out").iterdir()) == []


def test_the_local_gpu_count_is_ray_s(monkeypatch, no_gpus_here):
    assert local_gpus() == 0
    wants_one = ResourcesConfig(model_gpus=1)
    assert "resources.model_gpus=1 but this machine has 0 GPUs" in (gpus_missing_here(wants_one, address=None) or "")
    assert gpus_missing_here(wants_one, address="ray://head:10001") is None  # a cluster: known once connected
    assert gpus_missing_here(ResourcesConfig(model_gpus=0), address=None) is None
    assert gpus_missing_here(ResourcesConfig(), address=None) is None  # default: 1 when there are GPUs, else 0
    monkeypatch.setenv("RAY_ADDRESS", "head:6379")
    assert gpus_missing_here(wants_one, address=None) is None
    monkeypatch.delenv("RAY_ADDRESS")
    monkeypatch.setenv("RAY_OVERRIDE_RESOURCES", '{"GPU": 2}')  # what Ray itself would then offer
    assert local_gpus() == 2 and gpus_missing_here(wants_one, address=None) is None
