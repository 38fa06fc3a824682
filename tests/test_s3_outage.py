"""An object store that stops answering: the run stops early instead of failing every video after
its retries, commits what is done, and the next run retries the rest.

Real moto server behind the project's proxy; the proxy is stopped (connection refused) once the
run has planned, so every decoder's request finds nothing listening.
"""

from __future__ import annotations

from pathlib import Path

import media
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable
from s3server import FaultProxy

from vidbatch.config import parse_job
from vidbatch.errors import JobError
from vidbatch.pipeline import run_job
from vidbatch.summary_text import summary_text

pytest_plugins = ["conftest_s3"]

_VIDEOS = 5


def _job(tmp_path: Path, manifest: Path, endpoint: str, *, in_a_row: int = 2) -> dict:
    return {
        "name": "outage",
        "manifest": str(manifest),
        "output": str(tmp_path / "out"),
        "sampling": {"mode": "fps", "fps": 1.0, "clip_len_s": 2.0},
        "model": {"arch": "resnet18", "weights": "none", "task": "embed", "precision": "fp32"},
        "resources": {"progress_interval_s": 60},
        # one try per request, so that a refused connection fails a video in well under a second
        "storage": {"endpoint_url": endpoint, "max_attempts": 1},
        "limits": {"unreachable_in_a_row": in_a_row},
    }


def test_a_store_that_stops_answering_stops_the_run_and_the_next_run_retries_every_video(s3, ray_s3, tmp_path):
    bucket = s3.new_bucket("outage")
    video = media.write_video(tmp_path / "v.mp4", num_frames=30, fps=10, width=96, height=64).path
    ids = [f"v{i}" for i in range(_VIDEOS)]
    for video_id in ids:
        s3.client.upload_file(str(video), bucket, f"{video_id}.mp4")
    manifest = tmp_path / "manifest.parquet"
    pq.write_table(pa.table({"video_id": ids, "uri": [f"s3://{bucket}/{i}.mp4" for i in ids]}), manifest)

    proxy = FaultProxy(s3.endpoint).start()
    lines: list[str] = []

    def progress(line: str) -> None:
        lines.append(line)
        if "manifest rows" in line:  # planned: from here on the store is down
            proxy.stop()

    try:
        job = parse_job(_job(tmp_path, manifest, proxy.endpoint))
        result = run_job(job, progress=progress)
    finally:
        proxy.stop()

    assert result.summary["stopped_early"] == "unreachable", lines
    last_lines = summary_text(result.summary, "summary.json")  # what the terminal shows at the run's end
    assert "STOPPED EARLY: videos in a row found their object store or server not answering" in last_lines
    assert any("2 videos in a row could not be read" in line for line in lines), lines
    videos = DeltaTable(str(tmp_path / "out" / "videos")).to_pyarrow_table().to_pylist()
    assert sorted(row["video_id"] for row in videos) == ids  # nothing dropped: every row has its row
    assert {(row["status"], row["error_type"]) for row in videos} == {("timeout", "unreachable")}
    tried = [row for row in videos if "did not answer (EndpointConnectionError" in row["error_message"]]
    assert len(tried) >= 2, [row["error_message"] for row in videos]
    assert all("not done: the run stopped" in row["error_message"] for row in videos if row not in tried)
    # throughput counts the videos tried, not the rows written for the ones the stop cut off
    wall = result.summary["wall_time_s"]
    assert result.summary["throughput"]["videos_per_s"] == pytest.approx(len(tried) / wall, abs=2e-4)
    assert DeltaTable(str(tmp_path / "out" / "clips")).to_pyarrow_table().num_rows == 0
    version = DeltaTable(str(tmp_path / "out" / "videos")).version()

    # Still down: the next run's look at the files finds it so, and is refused before any work.
    with pytest.raises(JobError, match=r"2 files in a row could not be looked at: the object store did not answer"):
        run_job(parse_job(_job(tmp_path, manifest, proxy.endpoint)), progress=lambda line: None)
    assert DeltaTable(str(tmp_path / "out" / "videos")).version() == version


def test_a_store_down_on_a_small_night_keeps_every_good_row(s3, ray_s3, tmp_path):
    """Fewer videos than limits.unreachable_in_a_row, a store down when the night starts. Before: no
    stat answered, so every ok video counted as 'source changed', was decoded, failed, and its row
    became `timeout`: all embeddings of the output gone (exit 0)."""
    bucket = s3.new_bucket("night")
    video = media.write_video(tmp_path / "v.mp4", num_frames=20, fps=10, width=96, height=64).path
    ids = ["a", "b", "c"]
    for video_id in ids:
        s3.client.upload_file(str(video), bucket, f"{video_id}.mp4")
    manifest = tmp_path / "manifest.parquet"
    pq.write_table(pa.table({"video_id": ids, "uri": [f"s3://{bucket}/{i}.mp4" for i in ids]}), manifest)
    proxy = FaultProxy(s3.endpoint).start()
    try:
        first = run_job(parse_job(_job(tmp_path, manifest, proxy.endpoint, in_a_row=32)), progress=lambda line: None)
        assert first.summary["statuses"] == {"ok": 3}
    finally:
        proxy.stop()  # down from here on
    versions = {name: DeltaTable(str(tmp_path / "out" / name)).version() for name in ("clips", "videos")}

    said: list[str] = []
    night = run_job(parse_job(_job(tmp_path, manifest, proxy.endpoint, in_a_row=32)), progress=said.append)
    assert night.summary["changes"]["unchanged"] == 3 and night.summary["videos"] == 0, night.summary
    warning = "WARNING: 3 videos that were ok could not be looked at (their store did not answer"
    assert any(line.startswith(warning) for line in said), said
    assert {name: DeltaTable(str(tmp_path / "out" / name)).version() for name in ("clips", "videos")} == versions
    rows = DeltaTable(str(tmp_path / "out" / "videos")).to_pyarrow_table(columns=["status"]).column("status").to_pylist()
    assert rows == ["ok"] * 3

