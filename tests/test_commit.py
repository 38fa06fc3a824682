"""commit_tables against real local Delta tables: overlapping runs of one output."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from vidbatch.commit import commit_tables
from vidbatch.config import StorageConfig
from vidbatch.errors import JobError
from vidbatch.schema import CLIPS, VIDEOS
from vidbatch.state import load_prior


def run(output, spill, run_id, video_id, *, planned_at, clip_video_ids=()):
    spill.mkdir(exist_ok=True)
    clip = {"video_id": video_id, "run_id": run_id, "clip_index": 0}
    pq.write_table(pa.Table.from_pylist([clip], schema=CLIPS), spill / "clips.parquet")
    pq.write_table(
        pa.Table.from_pylist([{"video_id": video_id, "run_id": run_id, "status": "ok", "num_clips": 1}], schema=VIDEOS),
        spill / "videos.parquet",
    )
    return commit_tables(
        str(output),
        spill,
        run_id=run_id,
        replace_ids={video_id},
        storage=StorageConfig(),
        metadata={},
        stale_clips=(),
        clip_video_ids=clip_video_ids,
        videos_version=planned_at,
    )


def test_a_run_that_planned_before_another_run_committed_commits_nothing(tmp_path):
    out = tmp_path / "out"
    run(out, tmp_path / "s1", "r1", "a", planned_at=None)
    planned = load_prior(str(out), StorageConfig()).videos_version  # two runs start from this state
    run(out, tmp_path / "s2", "r2", "b", planned_at=planned)
    before = {t: DeltaTable(str(out / t)).version() for t in ("clips", "videos")}
    with pytest.raises(JobError, match=r"another run \(r2\) committed .* nothing of this run was committed"):
        run(out, tmp_path / "s3", "r3", "c", planned_at=planned)
    assert {t: DeltaTable(str(out / t)).version() for t in ("clips", "videos")} == before  # not even its clips
    # a first run racing another first run: the table did not exist when it planned
    with pytest.raises(JobError, match="another run"):
        run(out, tmp_path / "s4", "r4", "d", planned_at=None)


def test_commits_without_a_run_such_as_compaction_do_not_stop_a_run(tmp_path):
    out = tmp_path / "out"
    run(out, tmp_path / "s1", "r1", "a", planned_at=None)
    run(out, tmp_path / "s2", "r2", "b", planned_at=0)
    planned = DeltaTable(str(out / "videos")).version()
    DeltaTable(str(out / "videos")).optimize.compact()  # a maintenance commit, no vidbatch.run_id
    assert DeltaTable(str(out / "videos")).version() > planned
    run(out, tmp_path / "s3", "r3", "c", planned_at=planned)
    ids = sorted(DeltaTable(str(out / "videos")).to_pyarrow_table(columns=["video_id"]).column("video_id").to_pylist())
    assert ids == ["a", "b", "c"]


def _immutable(*paths) -> bool:
    """chattr +i (root on ext4/xfs): the folder cannot be written even by root, as a read-only mount."""
    import subprocess

    return all(subprocess.run(["chattr", "+i", str(p)], capture_output=True).returncode == 0 for p in paths)


@pytest.mark.parametrize(
    ("frozen", "left"),
    [
        (("clips", "clips/_delta_log"), "nothing of this run was committed"),
        # Every commit's data files are written before the first commit lands: a table folder
        # that cannot take files stops the run with nothing committed.
        (("videos",), "nothing of this run was committed"),
        (("videos/_delta_log",), "clips were committed"),
    ],
    ids=["clips", "videos-files", "videos-log"],
)
def test_an_output_that_cannot_be_written_at_the_commit_is_one_line_naming_what_is_left(tmp_path, frozen, left):
    """Before: a DeltaError traceback (and a Rust panic) with exit code 1, saying nothing of the state left."""
    import subprocess

    out = tmp_path / "out"
    run(out, tmp_path / "s1", "r1", "a", planned_at=None)
    planned = load_prior(str(out), StorageConfig()).videos_version
    folders = [out / name for name in frozen]
    if not _immutable(*folders):
        pytest.skip("chattr +i is not available here (needs root and a file system that has it)")
    try:
        with pytest.raises(JobError) as raised:
            run(out, tmp_path / "s2", "r2", "b", planned_at=planned)
    finally:
        subprocess.run(["chattr", "-i", *map(str, folders)], check=True)
    said = str(raised.value)
    assert said.startswith(f"committing to output {str(out)!r} failed (") and left in said, said
    assert "\n" not in said and "permission denied by the file system" in said, said
    assert DeltaTable(str(out / "videos")).version() == planned  # the last complete run stays as it was


def test_a_summary_that_cannot_be_written_says_the_run_is_committed(tmp_path):
    from vidbatch.commit import write_summary

    out = tmp_path / "out"
    (out / "_runs").mkdir(parents=True)
    (out / "_runs" / "r1").write_text("a file where the run's folder goes")
    with pytest.raises(JobError) as raised:
        write_summary(str(out), "r1", {"table_versions": {"videos": 4}}, StorageConfig())
    said = str(raised.value)
    assert said.startswith(f"committing to output {str(out)!r} failed (") and "\n" not in said
    assert said.endswith("the run is committed (videos table version 4); only its summary is missing"), said


def test_a_refused_commit_of_a_run_without_clips_does_not_speak_of_clips(tmp_path):
    """A run that only removes or refreshes rows writes no clips: its failed videos commit left nothing."""
    import subprocess

    out = tmp_path / "out"
    run(out, tmp_path / "s1", "r1", "a", planned_at=None)
    planned = load_prior(str(out), StorageConfig()).videos_version
    spill = tmp_path / "s2"
    spill.mkdir()
    pq.write_table(CLIPS.empty_table(), spill / "clips.parquet")  # as a run's collector leaves them
    pq.write_table(VIDEOS.empty_table(), spill / "videos.parquet")
    folders = [out / "videos", out / "videos" / "_delta_log"]
    if not _immutable(*folders):
        pytest.skip("chattr +i is not available here (needs root and a file system that has it)")
    try:
        with pytest.raises(JobError) as raised:
            commit_tables(str(out), spill, run_id="r2", replace_ids={"a"}, storage=StorageConfig(), metadata={},
                          stale_clips=(), clip_video_ids=("a",), videos_version=planned)  # fmt: skip
    finally:
        subprocess.run(["chattr", "-i", *map(str, folders)], check=True)
    assert str(raised.value).endswith("nothing of this run was committed; run it again once the output can be written")


def test_a_prepared_nightly_commit_on_an_object_store_output(s3, tmp_path):
    """The second run's commits are prepared as files written through the object store (s3fs) and
    landed as log entries; read back through S3 with the deltalake library."""
    bucket = s3.new_bucket("commit")
    out = f"s3://{bucket}/out"
    run(out, tmp_path / "s1", "r1", "a", planned_at=None)
    run(out, tmp_path / "s2", "r2", "b", planned_at=load_prior(out, StorageConfig()).videos_version)
    prior = load_prior(out, StorageConfig())
    versions = run(out, tmp_path / "s3", "r3", "a", planned_at=prior.videos_version, clip_video_ids={"a", "b"})
    options = s3.delta_options()
    videos = DeltaTable(f"{out}/videos", storage_options=options).to_pyarrow_table(columns=["video_id", "run_id"])
    clips = DeltaTable(f"{out}/clips", storage_options=options).to_pyarrow_table(columns=["video_id", "run_id"])
    assert sorted(zip(*videos.to_pydict().values(), strict=True)) == [("a", "r3"), ("b", "r2")]
    assert sorted(zip(*clips.to_pydict().values(), strict=True)) == [("a", "r3"), ("b", "r2")]  # a's r1 clip is gone
    assert versions == {"clips": 3, "videos": 2}  # clips: r1, r2, r3's added, then a's r1 clip removed
