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


def run(output, spill, run_id, video_id, *, planned_at, clip_video_ids=(), storage=None):
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
        storage=storage or StorageConfig(),
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


def test_each_videos_version_names_the_clips_version_that_holds_its_clips(tmp_path):
    """The tables' version numbers drift apart (clips gets up to two commits a run, videos one), so
    clips at the videos version's number paired a run's videos with another run's clips. Each videos
    commit names its clips version: there, every ok row has exactly its own clips."""
    out = tmp_path / "out"
    run(out, tmp_path / "s1", "r1", "a", planned_at=None)  # a first run: both tables created
    run(out, tmp_path / "s2", "r2", "a", planned_at=0, clip_video_ids={"a"})  # a redone: its old clip removed after
    run(out, tmp_path / "s3", "r3", "b", planned_at=1)
    videos = DeltaTable(str(out / "videos"))
    pairs = {}
    for commit in videos.history():
        if commit.get("vidbatch.run_id"):
            pairs[commit["version"]] = int(commit["vidbatch.clips_version"])
    assert sorted(pairs) == [0, 1, 2] and pairs != {v: v for v in pairs}  # the numbers differ
    for version, clips_version in pairs.items():
        rows = DeltaTable(str(out / "videos"), version=version).to_pyarrow_table().to_pylist()
        clips = DeltaTable(str(out / "clips"), version=clips_version).to_pyarrow_table().to_pylist()
        for row in rows:
            own = [c for c in clips if (c["video_id"], c["run_id"]) == (row["video_id"], row["run_id"])]
            assert len(own) == row["num_clips"] == 1, (version, clips_version, row["video_id"])
    # `vidbatch history` shows the pair (its clips_v column)
    from vidbatch.history import format_runs, runs

    entries = runs(str(out), StorageConfig())
    assert {e["version"]: e["clips_version"] for e in entries} == pairs
    header, newest = format_runs(entries).splitlines()[:2]
    assert "clips_v" in header and newest.split()[2:4] == ["2", str(pairs[2])]


def test_the_state_a_run_plans_against_matches_the_tables_clip_for_clip(tmp_path):
    """load_prior counts clips in Arrow (a library has tens of millions); what it says is checked here
    against the tables row by row: whose clips are exactly theirs, which (video, run) pairs are
    leftovers of a dead run, which videos have any clip."""
    from deltalake import write_deltalake

    def videos(*rows):
        return pa.Table.from_pylist(
            [{"video_id": v, "run_id": r, "status": "ok", "num_clips": n} for v, r, n in rows], schema=VIDEOS
        )

    def clips(*pairs):
        rows = [{"video_id": v, "run_id": r, "clip_index": i} for i, (v, r) in enumerate(pairs)]
        return pa.Table.from_pylist(rows, schema=CLIPS)

    out = tmp_path / "out"
    write_deltalake(
        str(out / "videos"),
        videos(("whole", "r1", 2), ("short", "r1", 3), ("none", "r1", 0), ("lost", "r2", 1), ("nullrun", None, 0)),
    )
    write_deltalake(
        str(out / "clips"),
        clips(
            ("whole", "r1"), ("whole", "r1"),  # exactly its own
            ("short", "r1"), ("short", "r1"),  # one short of its 3
            ("whole", "r0"),  # an older run's clip of a video redone: a leftover
            ("orphan", "r9"),  # a video with no row at all: a leftover
            ("foreign", None),  # no run's (another tool's row): nothing a run could delete, so no leftover
        ),  # fmt: skip
    )
    state = load_prior(str(out), StorageConfig())
    assert {v: state.consistent.get(v, True) for v in state.videos} == {
        "whole": True, "short": False, "none": True, "lost": False, "nullrun": True,
    }  # fmt: skip
    assert state.stale_clips == {("whole", "r0"), ("orphan", "r9")}
    assert state.clip_video_ids == {"whole", "short", "orphan", "foreign"}
    assert state.videos["whole"].run_id == "r1" and state.videos["nullrun"].run_id is None


def test_a_table_s_check_constraints_hold_for_vidbatch_s_commits_too(tmp_path):
    """Before: the run's commits only added and removed files, so a row the table's CHECK constraint
    forbids was committed (deltalake's own writers refuse it)."""
    out = tmp_path / "out"
    run(out, tmp_path / "s1", "r1", "a", planned_at=None)
    for name in ("clips", "videos"):
        DeltaTable(str(out / name)).alter.add_constraint({"no_quarantine": "video_id <> 'quarantined'"})
    run(out, tmp_path / "s2", "r2", "b", planned_at=DeltaTable(str(out / "videos")).version())
    planned = DeltaTable(str(out / "videos")).version()
    with pytest.raises(JobError, match=r"committing to output .* failed \(.*failed validation check"):
        run(out, tmp_path / "s3", "r3", "quarantined", planned_at=planned)
    ids = DeltaTable(str(out / "videos")).to_pyarrow_table(columns=["video_id"]).column("video_id").to_pylist()
    assert sorted(ids) == ["a", "b"]


def test_a_table_with_a_change_data_feed_records_only_the_rows_that_changed(tmp_path):
    """Before: a file rewritten to drop one video's row listed every other row of the file as deleted
    and inserted again: a search index fed from the change data feed dropped unchanged videos."""
    out = tmp_path / "out"
    run(out, tmp_path / "s1", "r1", "a", planned_at=None)
    run(out, tmp_path / "s2", "r2", "b", planned_at=0)
    videos = DeltaTable(str(out / "videos"))
    videos.optimize.compact()  # a and b in one file
    videos.alter.set_table_properties({"delta.enableChangeDataFeed": "true"})
    planned = DeltaTable(str(out / "videos")).version()
    run(out, tmp_path / "s3", "r3", "a", planned_at=planned)  # a again: b is untouched
    changes = pa.table(DeltaTable(str(out / "videos")).load_cdf(starting_version=planned + 1).read_all())
    changed = {(row["video_id"], row["_change_type"]) for row in changes.select(["video_id", "_change_type"]).to_pylist()}
    assert {video_id for video_id, _ in changed} == {"a"}, changed


def test_an_append_only_output_is_refused_before_any_work(tmp_path):
    """Before: each night decoded everything, then failed at the commit (a Remove in an append-only
    table) with a promise that the next run would tidy up, which it could not: clips piled up."""
    out = tmp_path / "out"
    run(out, tmp_path / "s1", "r1", "a", planned_at=None)
    DeltaTable(str(out / "clips")).alter.set_table_properties({"delta.appendOnly": "true"})
    with pytest.raises(JobError, match=r"the clips table of output .* is append-only \(delta.appendOnly=true\)"):
        load_prior(str(out), StorageConfig())


def test_a_tables_own_target_file_size_sizes_the_files_a_commit_writes(tmp_path):
    """delta.targetFileSize, Delta's property that deltalake's compaction reads too, is how an operator
    trades a night's rewrite against the number of files without a job key: here 1 byte, a file per
    ~1 MB batch, where the default would have written the 2.8 MB kept of a rewritten file as one."""
    import numpy as np
    from deltalake import CommitProperties

    from vidbatch.delta_files import create

    rng = np.random.default_rng(1)
    ids = [f"v{i:03d}" for i in range(200)]
    out, spill = tmp_path / "out", tmp_path / "spill"
    spill.mkdir()
    for table, schema, per_video in (("clips", CLIPS, 2), ("videos", VIDEOS, 1)):
        pq.write_table(_rows(schema, [v for v in ids for _ in range(per_video)], "r1", rng), tmp_path / f"{table}.parquet")
        create(str(out / table), StorageConfig(), pq.ParquetFile(tmp_path / f"{table}.parquet"), CommitProperties())
    assert len(DeltaTable(str(out / "clips")).file_uris()) == 1
    DeltaTable(str(out / "clips")).alter.set_table_properties({"delta.targetFileSize": "1"})
    pq.write_table(_rows(CLIPS, ["v100"] * 2, "r2", rng), spill / "clips.parquet")
    pq.write_table(_rows(VIDEOS, ["v100"], "r2", rng), spill / "videos.parquet")
    planned = load_prior(str(out), StorageConfig()).videos_version

    commit_tables(str(out), spill, run_id="r2", replace_ids={"v100"}, storage=StorageConfig(), metadata={},
                  stale_clips=(), clip_video_ids=set(ids), videos_version=planned)  # fmt: skip

    assert len(DeltaTable(str(out / "clips")).file_uris()) > 2  # the kept 398 clips (~3 MB) in files of a batch each
    assert len(DeltaTable(str(out / "videos")).file_uris()) == 2  # no property: the default, one file and tonight's
    assert DeltaTable(str(out / "clips")).to_pyarrow_table().num_rows == 400


def test_a_target_file_size_that_is_no_number_of_bytes_is_refused_before_any_work(tmp_path):
    out = tmp_path / "out"
    run(out, tmp_path / "s1", "r1", "a", planned_at=None)
    DeltaTable(str(out / "videos")).alter.set_table_properties({"delta.targetFileSize": "64mb"})
    with pytest.raises(JobError, match=r"the videos table of output .* delta.targetFileSize is '64mb', not a number of bytes"):
        load_prior(str(out), StorageConfig())


def test_a_table_feature_deltalake_cannot_read_is_named_as_such_not_as_a_path_problem(tmp_path):
    """Deletion vectors turned on by another engine: the advice was 'check the path and its permissions'."""
    import json

    out = tmp_path / "out"
    run(out, tmp_path / "s1", "r1", "a", planned_at=None)
    log = out / "videos" / "_delta_log"
    next_commit = log / f"{DeltaTable(str(out / 'videos')).version() + 1:020d}.json"
    features = ["deletionVectors"]
    protocol = {"minReaderVersion": 3, "minWriterVersion": 7, "readerFeatures": features, "writerFeatures": features}
    next_commit.write_text(json.dumps({"protocol": protocol}) + "\n")  # as an engine that writes them leaves it
    with pytest.raises(JobError) as refused:
        load_prior(str(out), StorageConfig())
    message = str(refused.value)
    assert "deletionVectors" in message and "a Delta table feature the deltalake library cannot read" in message
    assert "permissions" not in message


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
    versions = run(out, tmp_path / "s3", "r3", "a", planned_at=prior.videos_version, clip_video_ids={"a", "b"}).versions
    options = s3.delta_options()
    videos = DeltaTable(f"{out}/videos", storage_options=options).to_pyarrow_table(columns=["video_id", "run_id"])
    clips = DeltaTable(f"{out}/clips", storage_options=options).to_pyarrow_table(columns=["video_id", "run_id"])
    assert sorted(zip(*videos.to_pydict().values(), strict=True)) == [("a", "r3"), ("b", "r2")]
    assert sorted(zip(*clips.to_pydict().values(), strict=True)) == [("a", "r3"), ("b", "r2")]  # a's r1 clip is gone
    assert versions == {"clips": 3, "videos": 2}  # clips: r1, r2, r3's added, then a's r1 clip removed


def test_a_store_that_is_down_at_the_commit_is_one_line_naming_what_is_left(s3, tmp_path, monkeypatch):
    """Before: the check for other runs' commits and the opening of the tables ran outside the commit
    steps' error handling, so an endpoint that went down at the end of a run was a traceback, exit 1."""
    from s3server import FaultProxy

    import vidbatch.storage

    monkeypatch.setattr(vidbatch.storage, "DELTA_RETRY", {"max_retries": "1", "retry_timeout": "2 seconds"})
    bucket = s3.new_bucket("goes-down")
    with FaultProxy(s3.endpoint) as proxy:
        storage = StorageConfig(endpoint_url=proxy.endpoint)
        run(f"s3://{bucket}/nightly", tmp_path / "s1", "r1", "a", planned_at=None, storage=storage)
        planned = load_prior(f"s3://{bucket}/nightly", storage).videos_version
    # the proxy is gone: every request to the endpoint is refused
    for out, planned_at in ((f"s3://{bucket}/nightly", planned), (f"s3://{bucket}/first", None)):
        with pytest.raises(JobError) as raised:
            run(out, tmp_path / f"s-{planned_at}", "r2", "b", planned_at=planned_at, storage=storage)
        said = str(raised.value)
        assert said.startswith(f"committing to output {out!r} failed (") and "\n" not in said, said
        assert said.endswith("nothing of this run was committed; run it again once the output can be written"), said
    videos = DeltaTable(f"s3://{bucket}/nightly/videos", storage_options=s3.delta_options())
    assert videos.version() == planned  # the last complete run, as it was


def test_tombstones_delete_the_same_rows_from_files_written_directly_as_through_a_merge(tmp_path):
    """Steps of a commit now write their files directly wherever the table allows (`_apply`); the merge's
    predicate and the file filter must agree on every kind of tombstone, including rows without a run_id."""
    import shutil

    from deltalake import CommitProperties, write_deltalake

    from vidbatch.commit import _DELETE_ALL, _DELETE_OTHER_RUNS, _DELETE_RUN, _apply, _merge, _Tombstone

    rows = pa.table(
        {
            "video_id": ["a", "a", "b", "b", "b", "c", "c", "d", "e"],
            "run_id": ["r1", "r2", "r1", "r2", None, "r1", "r9", "r1", "r1"],
            "clip_index": pa.array(range(9), pa.int32()),
        }
    )
    tombstones = [
        _Tombstone("a", None, _DELETE_ALL),
        _Tombstone("b", "r2", _DELETE_OTHER_RUNS),
        _Tombstone("c", "r9", _DELETE_RUN),
        _Tombstone("d", "r7", _DELETE_RUN),
        _Tombstone("x", None, _DELETE_ALL),  # a video with no rows
    ]
    merged, direct = tmp_path / "merged", tmp_path / "direct"
    write_deltalake(str(merged), rows)
    shutil.copytree(merged, direct)
    _merge(DeltaTable(str(merged)), None, tombstones, CommitProperties())
    _apply(str(direct), None, tombstones, CommitProperties(), StorageConfig())

    def left(root):
        table = DeltaTable(str(root)).to_pyarrow_table(columns=["video_id", "run_id", "clip_index"])
        return sorted(zip(*table.to_pydict().values(), strict=True), key=lambda row: row[2])

    assert left(direct) == left(merged) == [("b", "r2", 3), ("c", "r1", 5), ("d", "r1", 7), ("e", "r1", 8)]
    operations = [entry["operation"] for entry in DeltaTable(str(direct)).history(limit=1)]
    assert operations != ["MERGE"]  # files written directly, not a merge


def _peak_private_growth_mb(action) -> float:
    """The most this process's private memory (RssAnon) grew while `action` ran, sampled every 2 ms."""
    import threading
    import time

    def private_mb() -> float:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("RssAnon")) / 1024

    before = private_mb()
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], private_mb())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        action()
    finally:
        done.set()
        sampler.join()
    return peak[0] - before


@pytest.mark.parametrize("case", ["first run", "videos rows with a new column"])
def test_committing_a_large_run_holds_no_more_memory_than_a_small_one(tmp_path, case):
    """A first run over a library commits all of its clips at once. write_deltalake (a first run's
    commit until 2026-12-06) and a merge (the clips of a run whose videos rows bring a new column)
    both grew the driver by about three times the clips they wrote (+1.25 GB for 400 MB of clips),
    and the spill was read with pyarrow's pre-buffering, which held it whole. Now a commit's memory
    is the same whatever its size: a run six times larger may use at most a quarter of the extra
    clips' size more (measured: +2-9 MB for 26 MB of clips, +3-4 MB for 154 MB; before, +123 and
    +587 MB)."""
    small_mb, small_grew = _commit_a_run(tmp_path / "small", videos=20, case=case)
    large_mb, large_grew = _commit_a_run(tmp_path / "large", videos=120, case=case)
    print(f"{case}: +{small_grew:.0f} MB for {small_mb:.0f} MB of clips, +{large_grew:.0f} MB for {large_mb:.0f} MB")
    assert large_mb > 5 * small_mb
    assert large_grew < small_grew + (large_mb - small_mb) / 4, (
        f"+{small_grew:.0f} MB committing {small_mb:.0f} MB of clips, +{large_grew:.0f} MB committing {large_mb:.0f} MB"
    )


def _commit_a_run(root, *, videos: int, case: str) -> tuple[float, float]:
    """Commit a run of `videos` videos of 100 clips (2048 floats each) into a new output, after a first
    small run unless `case` is "first run"; the clips' MB and how much private memory grew meanwhile."""
    import numpy as np

    out, spill = root / "out", root / "spill"
    root.mkdir()
    planned = None
    if case != "first run":
        run(out, root / "s0", "r0", "old", planned_at=None)
        planned = load_prior(str(out), StorageConfig()).videos_version
    spill.mkdir()
    clips_per_video, width = 100, 2048
    rng = np.random.default_rng(0)
    offsets = pa.array(np.arange(0, (clips_per_video + 1) * width, width, dtype=np.int32))
    with pq.ParquetWriter(spill / "clips.parquet", CLIPS) as writer:
        for video in range(videos):
            values = pa.array(rng.standard_normal(clips_per_video * width).astype(np.float32))
            given = {
                "video_id": pa.array([f"v{video:03d}"] * clips_per_video),
                "clip_index": pa.array(range(clips_per_video), pa.int32()),
                "embedding": pa.ListArray.from_arrays(offsets, values),
                "run_id": pa.array(["r1"] * clips_per_video),
            }
            columns = [given.get(f.name, pa.nulls(clips_per_video, f.type)) for f in CLIPS]
            writer.write_table(pa.Table.from_arrays(columns, schema=CLIPS))
    schema = VIDEOS if case == "first run" else VIDEOS.append(pa.field("label", pa.string()))
    rows = [
        {"video_id": f"v{video:03d}", "run_id": "r1", "status": "ok", "num_clips": clips_per_video} for video in range(videos)
    ]
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), spill / "videos.parquet")

    def commit() -> None:
        commit_tables(str(out), spill, run_id="r1", replace_ids=set(), storage=StorageConfig(), metadata={},
                      stale_clips=(), clip_video_ids=(), videos_version=planned)  # fmt: skip

    grew = _peak_private_growth_mb(commit)
    committed = DeltaTable(str(out / "clips")).to_pyarrow_table(columns=["run_id"]).column("run_id")
    assert committed.to_pylist().count("r1") == clips_per_video * videos
    return (spill / "clips.parquet").stat().st_size / 1e6, grew


def test_clips_of_videos_that_failed_after_spilling_are_left_out_by_every_commit_path(tmp_path):
    """A video that failed after some of its clips were spilled (still in flight when a run stopped
    early) has no clips. The collector used to rewrite the whole spill without them, which needed the
    spill's size again on the disk a run stops for being nearly full; the commit now leaves them out
    as it reads the spill: when it creates the tables, when it writes files for them, and when a new
    manifest column makes the videos table a merge."""
    out = tmp_path / "out"
    version = None
    for number, extra in ((1, None), (2, None), (3, "genre")):
        spill = tmp_path / f"s{number}"
        spill.mkdir()
        run_id = f"r{number}"
        clips = [{"video_id": v, "run_id": run_id, "clip_index": i} for v in ("a", "b") for i in range(2)]
        pq.write_table(pa.Table.from_pylist(clips, schema=CLIPS), spill / "clips.parquet")
        videos = [
            {"video_id": "a", "run_id": run_id, "status": "ok", "num_clips": 2},
            {"video_id": "b", "run_id": run_id, "status": "timeout", "num_clips": 0},
        ]
        rows = pa.Table.from_pylist(videos, schema=VIDEOS)
        if extra:
            rows = rows.append_column(extra, pa.array(["x", "y"]))
        pq.write_table(rows, spill / "videos.parquet")
        commit_tables(
            str(out),
            spill,
            run_id=run_id,
            replace_ids={"a", "b"},
            storage=StorageConfig(),
            metadata={},
            stale_clips=(),
            clip_video_ids={"a"} if number > 1 else set(),
            videos_version=version,
            void_clips={"b"},
        )
        version = DeltaTable(str(out / "videos")).version()
        committed = DeltaTable(str(out / "clips")).to_pyarrow_table(columns=["video_id", "run_id", "clip_index"]).to_pylist()
        assert sorted((c["video_id"], c["run_id"], c["clip_index"]) for c in committed) == [("a", run_id, 0), ("a", run_id, 1)]


def test_started_json_records_the_job_s_urls_without_credentials(tmp_path):
    """Guarantee 5: started.json recorded model.weights (and the manifest) as given, a presigned URL's signature with it."""
    import json

    from vidbatch.commit import check_writable

    started = {"run_id": "r1", "job": {"manifest": "https://u:pw-s3cr3t@h/m.parquet", "model": {"weights": "https://h/w.pt?sig=s3cr3t"}}}
    check_writable(str(tmp_path), "r1", StorageConfig(), started)
    written = (tmp_path / "_runs" / "r1" / "started.json").read_text()
    assert "s3cr3t" not in written
    assert json.loads(written)["job"] == {"manifest": "https://REDACTED@h/m.parquet", "model": {"weights": "https://h/w.pt?sig=REDACTED"}}


def _rows(schema: pa.Schema, video_ids: list[str], run_id: str, rng) -> pa.Table:
    """Rows of real width: 2048 random floats each (resnet50's embedding, which does not compress)."""
    import numpy as np

    n = len(video_ids)
    noise = rng.standard_normal(n * 2048).astype(np.float32)
    embedding = pa.ListArray.from_arrays(pa.array(np.arange(0, (n + 1) * 2048, 2048, dtype=np.int32)), pa.array(noise))
    columns = {"video_id": pa.array(video_ids), "run_id": pa.array([run_id] * n), "embedding": embedding}
    return pa.table({f.name: columns.get(f.name, pa.nulls(n, f.type)) for f in schema}, schema=schema)


def test_a_run_replacing_one_video_rewrites_exactly_the_files_that_hold_it_and_says_so(tmp_path):
    """The nightly cost an operator watches (summary.json's rewritten_*): copy-on-write rewrites each
    data file holding a replaced row, whole, and no other. Tables of several files (a small target size)."""
    import numpy as np
    from deltalake import CommitProperties

    from vidbatch.delta_files import Rewritten, create

    rng = np.random.default_rng(0)
    ids = [f"v{i:04d}" for i in range(200)]
    out, spill = tmp_path / "out", tmp_path / "spill"
    spill.mkdir()
    pq.write_table(_rows(CLIPS, [v for v in ids for _ in range(2)], "r1", rng), tmp_path / "clips.parquet")
    pq.write_table(_rows(VIDEOS, ids, "r1", rng), tmp_path / "videos.parquet")
    for table in ("clips", "videos"):  # ~3.2 and 1.6 MB read in batches of ~1 MB: a file per batch
        rows = pq.ParquetFile(tmp_path / f"{table}.parquet")
        create(str(out / table), StorageConfig(), rows, CommitProperties(), target_file_bytes=1)
    before = {table: _files(out / table) for table in ("clips", "videos")}
    pq.write_table(_rows(CLIPS, ["v0100"] * 2, "r2", rng), spill / "clips.parquet")
    pq.write_table(_rows(VIDEOS, ["v0100"], "r2", rng), spill / "videos.parquet")

    committed = commit_tables(str(out), spill, run_id="r2", replace_ids={"v0100"}, storage=StorageConfig(), metadata={},
                              stale_clips=(), clip_video_ids=set(ids), videos_version=0)  # fmt: skip

    for table, replaced_rows in (("clips", 2), ("videos", 1)):
        holding = [(size, rows) for size, rows, held in before[table].values() if "v0100" in held]
        assert len(before[table]) > 1 and 0 < len(holding) < len(before[table]), before[table]
        kept = sum(rows for _, rows in holding) - replaced_rows
        rewritten = Rewritten(files=len(holding), bytes=sum(size for size, _ in holding), rows_kept=kept)
        assert committed.rewritten[table] == rewritten, table
        assert set(before[table]) - set(_files(out / table)) == {p for p, f in before[table].items() if "v0100" in f[2]}
    summary = committed.summary()
    assert summary["rewritten_files"] == {t: committed.rewritten[t].files for t in ("clips", "videos")}
    assert summary["rewritten_bytes"]["clips"] > 500_000 and set(summary["rewritten_rows_kept"]) == {"clips", "videos"}
    assert DeltaTable(str(out / "clips")).to_pyarrow_table().num_rows == 400


def _files(table) -> dict[str, tuple[int, int, set[str]]]:
    """Each data file of the table: its size, its rows, the video_ids it holds (read from the file itself)."""
    files = pa.table(DeltaTable(str(table)).get_add_actions(flatten=True)).to_pylist()
    return {
        f["path"]: (f["size_bytes"], f["num_records"], set(pq.read_table(table / f["path"], columns=["video_id"])[0].to_pylist()))
        for f in files
    }
