"""The whole job with the manifest, the videos, the weights and the output in buckets of a real
S3 server, on a real local Ray; tables read back through S3 with the deltalake library.

Two runs over the same library:
- `env_run`: the endpoint comes from AWS_ENDPOINT_URL (the job file has no storage section);
- `proxy_run`: the job file's storage.endpoint_url names a fault-injecting proxy in front of
  the same server (the Ray workers' AWS_ENDPOINT_URL still names the server itself, so only
  the job-file setting can route their requests through the proxy), which throttles and
  drops some requests.
The credentials are canaries (tests/conftest_s3.py); no copy may turn up anywhere.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import media
import numpy as np
import pytest
import torch
import torchvision
from deltalake import DeltaTable
from s3server import deny_everyone

from vidbatch.config import StorageConfig, parse_job
from vidbatch.manifest_build import build_manifest
from vidbatch.pipeline import RunResult, run_job

pytest_plugins = ["conftest_s3"]

# key under library/ -> (local file name, frames at 10 fps)
_VIDEOS = {
    "cats/a.mp4": ("a.mp4", 30),  # 3 s -> samples at 0,1,2 s -> clips [0,2) [2,3)
    "b.webm": ("b.webm", 20),  # 2 s -> 0,1 s -> one clip
    "dogs/c.mkv": ("c.mkv", 40),  # 4 s -> 0..3 s -> two clips
    "gone.mp4": ("a.mp4", 30),  # deleted after the manifest is built
    "private/denied.mp4": ("a.mp4", 30),  # denied by bucket policy
    "odd/what?.mp4": ("a.mp4", 30),  # '?' is part of an S3 key: read and written as given
}
_EXPECTED_STATUS = {
    "cats/a.mp4": "ok",
    "b.webm": "ok",
    "dogs/c.mkv": "ok",
    "gone.mp4": "not_found",
    "private/denied.mp4": "access_denied",
    "odd/what?.mp4": "ok",
}
_EXPECTED_CLIPS = {"cats/a.mp4": 2, "b.webm": 1, "dogs/c.mkv": 2, "odd/what?.mp4": 2}


@dataclass(frozen=True)
class Library:
    media_bucket: str
    out_bucket: str
    manifest: str
    weights_uri: str
    weights_sha256: str


@dataclass
class Run:
    result: RunResult
    output: str
    pickled: list[bytes]


@pytest.fixture(scope="module")
def library(s3, tmp_path_factory) -> Library:
    tmp = tmp_path_factory.mktemp("library")
    media_bucket, out_bucket = s3.new_bucket("media"), s3.new_bucket("results")
    files: dict[str, Path] = {}
    for key, (name, frames) in _VIDEOS.items():
        if name not in files:
            files[name] = media.write_video(tmp / name, num_frames=frames, fps=10).path
        s3.client.upload_file(str(files[name]), media_bucket, f"library/{key}")
    s3.client.put_object(Bucket=media_bucket, Key="library/notes.txt", Body=b"not a video")

    torch.manual_seed(7)
    buffer = io.BytesIO()
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), buffer)
    s3.client.put_object(Bucket=media_bucket, Key="models/r18-seeded.pt", Body=buffer.getvalue())

    manifest = f"s3://{media_bucket}/manifests/library.parquet"
    result = build_manifest(f"s3://{media_bucket}/library/", manifest, StorageConfig())
    assert (result.videos, result.skipped) == (6, 1)
    s3.client.delete_object(Bucket=media_bucket, Key="library/gone.mp4")
    deny_everyone(s3.client, media_bucket, ["library/private/denied.mp4"])
    return Library(
        media_bucket,
        out_bucket,
        manifest,
        f"s3://{media_bucket}/models/r18-seeded.pt",
        hashlib.sha256(buffer.getvalue()).hexdigest(),
    )


def _job(library: Library, output: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": "s3-e2e",
        "manifest": library.manifest,
        "output": output,
        "sampling": {"mode": "fps", "fps": 1.0, "clip_len_s": 2.0},
        "model": {"arch": "resnet18", "weights": library.weights_uri, "task": "both", "top_k": 3, "precision": "fp32"},
        "resources": {"batch_clips": 4, "progress_interval_s": 60},
        **extra,
    }


def _run(job: dict[str, Any]) -> Run:
    """run_job, recording every payload Ray pickles on the driver (actor classes, constructor args, tasks)."""
    import ray.cloudpickle

    pickled: list[bytes] = []
    real_dumps = ray.cloudpickle.dumps

    def recording_dumps(obj: Any, *args: Any, **kwargs: Any) -> bytes:
        data = real_dumps(obj, *args, **kwargs)
        pickled.append(bytes(data))
        return data

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ray.cloudpickle, "dumps", recording_dumps)
        result = run_job(parse_job(job), progress=lambda line: None)
    return Run(result, job["output"], pickled)


@pytest.fixture(scope="module")
def env_run(ray_s3, library) -> Run:
    return _run(_job(library, f"s3://{library.out_bucket}/env/resnet18"))


@pytest.fixture(scope="module")
def proxy_run(ray_s3, library, fault_proxy, env_run) -> tuple[Run, dict[str, Any]]:
    fault_proxy.reset()
    fault_proxy.add_fault("slowdown", path_contains="manifests/library.parquet", method="GET", times=1)
    fault_proxy.add_fault("slowdown", path_contains="models/r18-seeded.pt", method="GET", times=1)
    fault_proxy.add_fault("slowdown", path_contains="library/cats/a.mp4", method="HEAD", times=2)
    fault_proxy.add_fault("reset", path_contains="library/dogs/c.mkv", method="GET", times=1)
    fault_proxy.add_fault("truncate", path_contains="library/b.webm", method="GET", times=1)
    job = _job(library, f"s3://{library.out_bucket}/proxy/resnet18", storage={"endpoint_url": fault_proxy.endpoint})
    run = _run(job)
    return run, fault_proxy.stats()


def _table(s3, uri: str) -> list[dict[str, Any]]:
    return DeltaTable(uri, storage_options=s3.delta_options()).to_pyarrow_table().to_pylist()


def test_whole_job_on_s3_with_endpoint_from_environment(s3, library, env_run):
    videos = {row["video_id"]: row for row in _table(s3, env_run.output + "/videos")}
    assert {vid: row["status"] for vid, row in videos.items()} == _EXPECTED_STATUS
    model_id = f"resnet18:sha256-{library.weights_sha256}"
    for vid, row in videos.items():
        assert row["uri"] == f"s3://{library.media_bucket}/library/{vid}"
        assert row["run_id"] == env_run.result.run_id and row["model_id"] == model_id
        if row["status"] == "ok":
            assert row["num_clips"] == _EXPECTED_CLIPS[vid] and row["width"] == 320 and row["height"] == 240
            assert row["source_fingerprint"].startswith("etag=")
            assert np.linalg.norm(row["embedding"]) == pytest.approx(1.0, abs=1e-5)
    assert "deleted" in videos["gone.mp4"]["error_message"]
    assert "access" in videos["private/denied.mp4"]["error_message"]

    clips = _table(s3, env_run.output + "/clips")
    counts: dict[str, int] = {}
    for clip in clips:
        counts[clip["video_id"]] = counts.get(clip["video_id"], 0) + 1
        assert len(clip["embedding"]) == 512 and len(clip["labels"]) == 3
        assert clip["model_id"] == model_id
    assert counts == _EXPECTED_CLIPS

    key = f"env/resnet18/_runs/{env_run.result.run_id}/summary.json"
    summary = json.loads(s3.client.get_object(Bucket=library.out_bucket, Key=key)["Body"].read())
    assert summary["statuses"] == {"access_denied": 1, "not_found": 1, "ok": 4}
    assert summary["weights_sha256"] == library.weights_sha256 and summary["clips"] == 7
    assert env_run.result.summary_uri == f"{env_run.output}/_runs/{env_run.result.run_id}/summary.json"


def test_no_credential_in_outputs_summary_logs_or_pickled_payloads(s3, library, env_run, ray_s3):
    secrets = (s3.secret_access_key.encode(), s3.access_key_id.encode())
    # Every object the run wrote (Delta logs, Parquet files, started.json, summary.json), raw bytes ...
    objects = s3.client.list_objects_v2(Bucket=library.out_bucket, Prefix="env/")["Contents"]
    assert len(objects) >= 6
    for obj in objects:
        body = s3.client.get_object(Bucket=library.out_bucket, Key=obj["Key"])["Body"].read()
        assert not any(secret in body for secret in secrets), obj["Key"]
    # ... and every decoded value of both tables (Parquet pages may be compressed).
    for table in ("videos", "clips"):
        text = json.dumps(_table(s3, f"{env_run.output}/{table}"), default=str)
        assert s3.secret_access_key not in text and s3.access_key_id not in text
    assert s3.secret_access_key not in json.dumps(env_run.result.summary)

    # The Ray session directory: every worker's, raylet's and GCS's log and any spilled files.
    session_dir = Path(ray_s3._private.worker._global_node.get_session_dir_path())
    scanned = 0
    for path in session_dir.rglob("*"):
        if path.is_file() and not path.is_symlink() and not path.is_socket():
            data = path.read_bytes()
            scanned += 1
            assert not any(secret in data for secret in secrets), path
    assert scanned > 10  # the logs were there to be read

    # What the driver shipped to the actors: real payloads (the stages and their settings), no secret.
    assert any(b"DecodeStage" in p for p in env_run.pickled) and any(b"StorageConfig" in p for p in env_run.pickled)
    assert not any(secret in p for p in env_run.pickled for secret in secrets)
    # Nothing rides in runtime_env either.
    runtime_env = json.dumps(ray_s3.get_runtime_context().runtime_env)
    assert "AWS" not in runtime_env and s3.secret_access_key not in runtime_env


def test_job_file_endpoint_retries_and_weights_fetched_once(s3, library, env_run, proxy_run):
    run, stats = proxy_run
    videos = {row["video_id"]: row for row in _table(s3, run.output + "/videos")}
    assert {vid: row["status"] for vid, row in videos.items()} == _EXPECTED_STATUS
    assert stats["faults"] == 6 and all(rule["times"] == 0 for rule in stats["rules"])  # every fault was met and survived

    requests = stats["requests"]
    # The decode actors reached the store through the job file's endpoint (the proxy) ...
    heads = {unquote(r["path"].split("/library/", 1)[1]) for r in requests if r["method"] == "HEAD" and "/library/" in r["path"]}
    assert heads == set(_VIDEOS)  # every manifest row was looked at, through the proxy
    video_gets = [r for r in requests if r["method"] == "GET" and "/library/" in r["path"] and r["status"] in (200, 206)]
    read = {unquote(r["path"].split("/library/", 1)[1]) for r in video_gets}
    assert read == {"cats/a.mp4", "b.webm", "dogs/c.mkv", "odd/what?.mp4"}
    assert all(r["range"] for r in video_gets)  # ranged reads only
    # ... and the weights were read once, by the driver (not once per actor).
    weight_gets = [r for r in requests if r["method"] == "GET" and r["path"].endswith("/r18-seeded.pt") and r["status"] == 200]
    assert len(weight_gets) == 1

    # Retries change nothing in the results.
    def embeddings(output: str) -> dict[tuple[str, int], list[float]]:
        return {(c["video_id"], c["clip_index"]): c["embedding"] for c in _table(s3, output + "/clips")}

    first, second = embeddings(env_run.output), embeddings(run.output)
    assert first.keys() == second.keys()
    for key in first:
        np.testing.assert_allclose(first[key], second[key], atol=1e-6)
