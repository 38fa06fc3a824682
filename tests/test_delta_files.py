"""Prepared Delta commits (vidbatch.delta_files) on real tables, read back with the deltalake library."""

from __future__ import annotations

import itertools
import json
import os
import time

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from deltalake import CommitProperties, DeltaTable, write_deltalake

from vidbatch.config import StorageConfig
from vidbatch.delta_files import create, fits, prepare
from vidbatch.history import vacuum
from vidbatch.parquet_stream import open_parquet


def _table(root) -> DeltaTable:
    write_deltalake(str(root), pa.table({"video_id": ["a", "b"], "run_id": ["r1", "r1"], "n": [1, 2]}))
    write_deltalake(str(root), pa.table({"video_id": ["m", "n"], "run_id": ["r1", "r1"], "n": [3, 4]}), mode="append")
    return DeltaTable(str(root))


def _ids(*video_ids: str):
    return lambda rows: pc.is_in(rows.column("video_id"), value_set=pa.array(video_ids))


def _rows(root) -> list[tuple]:
    table = DeltaTable(str(root)).to_pyarrow_table()
    return sorted(zip(*(table.column(name).to_pylist() for name in ("video_id", "run_id", "n")), strict=True))


def test_a_prepared_commit_drops_and_adds_rows_in_one_commit_touching_only_files_that_hold_them(tmp_path):
    root = tmp_path / "videos"
    table = _table(root)
    before = {path for path in pa.table(table.get_add_actions(flatten=True)).column("path").to_pylist()}
    new_rows = tmp_path / "new.parquet"
    pq.write_table(pa.table({"video_id": ["b", "z"], "run_id": ["r2", "r2"], "n": [20, 26]}), new_rows)
    prepared = prepare(
        table,
        str(root),
        StorageConfig(),
        add=pq.ParquetFile(new_rows),
        drop=_ids("b"),
        candidates={"b"},
    )
    assert DeltaTable(str(root)).version() == 1  # files written, nothing committed yet
    assert _rows(root) == [("a", "r1", 1), ("b", "r1", 2), ("m", "r1", 3), ("n", "r1", 4)]
    prepared.commit(CommitProperties(custom_metadata={"vidbatch.run_id": "r2"}))

    after = DeltaTable(str(root))
    assert after.version() == 2
    assert _rows(root) == [("a", "r1", 1), ("b", "r2", 20), ("m", "r1", 3), ("n", "r1", 4), ("z", "r2", 26)]
    files = pa.table(after.get_add_actions(flatten=True)).to_pylist()
    paths = {f["path"] for f in files}
    assert len(before - paths) == 1  # the a/b file was rewritten; the m/n file (stats m..n) was not read
    assert any(f["min.video_id"] == "m" for f in files)
    added = [f for f in files if f["path"] not in before]
    assert sorted(f["num_records"] for f in added) == [1, 2]  # a alone; b and z
    assert after.history(limit=1)[0]["vidbatch.run_id"] == "r2"


def test_dropping_every_row_of_a_file_removes_it_and_writes_nothing_empty(tmp_path):
    root = tmp_path / "clips"
    table = _table(root)
    prepared = prepare(table, str(root), StorageConfig(), drop=_ids("m", "n"), candidates={"m", "n"})
    assert len(prepared.actions) == 1 and type(prepared.actions[0]).__name__ == "RemoveAction"
    prepared.commit(CommitProperties())
    assert _rows(root) == [("a", "r1", 1), ("b", "r1", 2)]
    nothing = prepare(DeltaTable(str(root)), str(root), StorageConfig(), drop=_ids("q"), candidates={"q"})
    assert nothing.empty
    version = DeltaTable(str(root)).version()
    nothing.commit(CommitProperties())
    assert DeltaTable(str(root)).version() == version  # an empty commit is not made


def test_file_statistics_leave_out_what_json_cannot_hold(tmp_path):
    root = tmp_path / "t"
    write_deltalake(str(root), pa.table({"video_id": ["a"], "x": [1.0]}))
    rows = tmp_path / "r.parquet"
    pq.write_table(pa.table({"video_id": ["b", "c"], "x": [float("inf"), 2.0]}), rows)
    prepare(DeltaTable(str(root)), str(root), StorageConfig(), add=pq.ParquetFile(rows)).commit(CommitProperties())
    files = pa.table(DeltaTable(str(root)).get_add_actions(flatten=True)).to_pylist()
    added = next(f for f in files if f["num_records"] == 2)
    assert added["min.video_id"] == "b" and added["max.video_id"] == "c"
    assert DeltaTable(str(root)).to_pyarrow_table().num_rows == 3


def test_rows_with_a_column_the_table_lacks_do_not_fit(tmp_path):
    table = _table(tmp_path / "t")
    assert fits(table, pa.schema([("video_id", pa.string()), ("n", pa.int64())]))
    assert not fits(table, pa.schema([("video_id", pa.string()), ("label", pa.string())]))


def test_vacuum_deletes_files_no_commit_named_once_they_are_older_than_the_retention(tmp_path):
    """A run killed after writing its files and before committing them leaves files no log entry
    names; plain Delta vacuum never lists them (helper-20)."""
    out = tmp_path / "out"
    for name in ("clips", "videos"):
        write_deltalake(str(out / name), pa.table({"video_id": ["a"], "run_id": ["r1"]}))
    old, fresh = out / "videos" / "part-00000-old-c000.zstd.parquet", out / "videos" / "part-00000-new-c000.zstd.parquet"
    for path in (old, fresh):
        pq.write_table(pa.table({"video_id": ["x"], "run_id": ["dead"]}), path)
    long_ago = time.time() - 400 * 3600
    os.utime(old, (long_ago, long_ago))
    assert vacuum(str(out), StorageConfig(), retention_hours=168, dry_run=True) == {"clips": [], "videos": [old.name]}
    assert vacuum(str(out), StorageConfig(), retention_hours=168, dry_run=False)["videos"] == [old.name]
    assert not old.exists() and fresh.exists()  # a file younger than the retention may be a running run's
    assert DeltaTable(str(out / "videos")).to_pyarrow_table().num_rows == 1
    json.dumps(DeltaTable(str(out / "videos")).history())  # the log stays readable


def test_files_written_by_a_deltalake_merge_are_rewritten_too(tmp_path):
    """delta-rs writes (and reads back) strings as string_view, which Arrow's is_in does not take."""
    root = tmp_path / "t"
    table = _table(root)
    source = pa.table({"video_id": ["c"], "run_id": ["r2"], "n": [7]})
    table.merge(
        source, predicate="t.video_id = s.video_id", source_alias="s", target_alias="t"
    ).when_not_matched_insert_all().execute()
    prepared = prepare(DeltaTable(str(root)), str(root), StorageConfig(), drop=_ids("c", "a"), candidates={"a", "c"})
    prepared.commit(CommitProperties())
    assert _rows(root) == [("b", "r1", 2), ("m", "r1", 3), ("n", "r1", 4)]


def test_tables_whose_files_cannot_be_rewritten_by_reading_them_are_told_apart(tmp_path):
    from vidbatch.delta_files import plain_files

    assert plain_files(_table(tmp_path / "plain"))
    write_deltalake(str(tmp_path / "mapped"), pa.table({"video_id": ["a"]}), configuration={"delta.columnMapping.mode": "name"})
    assert not plain_files(DeltaTable(str(tmp_path / "mapped")))
    write_deltalake(str(tmp_path / "parted"), pa.table({"video_id": ["a"], "day": ["x"]}), partition_by=["day"])
    assert not plain_files(DeltaTable(str(tmp_path / "parted")))


def test_a_table_created_from_streamed_files_holds_every_row_with_its_schema_and_statistics(tmp_path):
    """A first run's tables: created from files vidbatch writes (not write_deltalake, which held about
    three times the rows it wrote), in one commit at version 0, with the rows' own types and Delta's
    file statistics. A carried column of a type Delta stores with a feature (a timestamp without a
    zone) gets the protocol it needs, as write_deltalake gave it."""
    from datetime import datetime

    rows = tmp_path / "rows.parquet"
    stamps = pa.array([datetime(2026, 1, 1), None, datetime(2026, 1, 3)], pa.timestamp("us"))
    pq.write_table(
        pa.table({"video_id": ["b", "a", "c"], "run_id": ["r1"] * 3, "n": [2, 1, 3], "seen": stamps, "note": pa.nulls(3)}), rows
    )
    root = tmp_path / "videos"
    create(str(root), StorageConfig(), open_parquet(rows), CommitProperties(custom_metadata={"vidbatch.run_id": "r1"}))

    table = DeltaTable(str(root))
    assert table.version() == 0
    assert _rows(root) == [("a", "r1", 1), ("b", "r1", 2), ("c", "r1", 3)]
    assert table.to_pyarrow_table().column("seen").to_pylist()[0] == datetime(2026, 1, 1)
    fresh = tmp_path / "fresh"
    write_deltalake(str(fresh), pq.read_table(rows))  # what the first run used before
    assert table.schema().to_json() == DeltaTable(str(fresh)).schema().to_json()
    assert table.protocol() == DeltaTable(str(fresh)).protocol()
    assert table.history(limit=1)[0]["vidbatch.run_id"] == "r1"
    (added,) = pa.table(table.get_add_actions(flatten=True)).to_pylist()
    assert (added["num_records"], added["min.video_id"], added["max.video_id"], added["max.n"]) == (3, "a", "c", 3)


def test_creating_a_table_that_another_run_created_meanwhile_is_refused(tmp_path):
    rows = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"video_id": ["a"], "run_id": ["r2"], "n": [1]}), rows)
    root = tmp_path / "videos"
    _table(root)
    with pytest.raises(Exception, match="(?i)exist"):
        create(str(root), StorageConfig(), open_parquet(rows), CommitProperties())
    assert _rows(root) == [("a", "r1", 1), ("b", "r1", 2), ("m", "r1", 3), ("n", "r1", 4)]


def test_a_table_created_from_no_rows_has_the_schema_and_no_file(tmp_path):
    rows = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"video_id": pa.array([], pa.string()), "n": pa.array([], pa.int32())}), rows)
    root = tmp_path / "clips"
    create(str(root), StorageConfig(), open_parquet(rows), CommitProperties())
    table = DeltaTable(str(root))
    assert (table.version(), table.to_pyarrow_table().num_rows, table.file_uris()) == (0, 0, [])
    assert pa.schema(table.schema().to_arrow()).field("n").type == pa.int32()
    assert [name for name in os.listdir(root) if name.endswith(".parquet")] == []


def test_rows_are_written_in_files_of_the_target_size_each_with_its_own_statistics(tmp_path, monkeypatch):
    """A first run over a library writes GBs of clips: one file each would make a later run that drops one
    video's clips rewrite all of them."""
    import numpy as np

    import vidbatch.parquet_stream as parquet_stream

    monkeypatch.setattr(parquet_stream, "BATCH_BYTES", 15_000)  # ~100 rows
    ids = [f"v{i:04d}" for i in range(1000)]
    noise = np.random.default_rng(0).standard_normal(1000 * 32).astype(np.float32)  # incompressible, ~128 KB
    payload = pa.ListArray.from_arrays(pa.array(np.arange(0, 1001 * 32, 32, dtype=np.int32)), pa.array(noise))
    rows = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"video_id": ids, "run_id": ["r1"] * 1000, "n": range(1000), "x": payload}), rows, row_group_size=100)
    root = tmp_path / "clips"
    create(str(root), StorageConfig(), open_parquet(rows), CommitProperties(), target_file_bytes=30_000)

    files = pa.table(DeltaTable(str(root)).get_add_actions(flatten=True)).to_pylist()
    assert len(files) > 2
    assert sum(f["num_records"] for f in files) == 1000
    assert all(f["size_bytes"] < 30_000 + 20_000 for f in files)  # closed after the batch that passed the target
    spans = sorted((f["min.video_id"], f["max.video_id"]) for f in files)
    assert all(earlier[1] < later[0] for earlier, later in zip(spans, spans[1:], strict=False))  # in order, no overlap
    assert sorted(DeltaTable(str(root)).to_pyarrow_table().column("video_id").to_pylist()) == ids
    assert len([name for name in os.listdir(root) if name.endswith(".parquet")]) == len(files)  # none empty or left over


def _file_stats(root) -> list[dict]:
    return pa.table(DeltaTable(str(root)).get_add_actions(flatten=True)).to_pylist()


def test_file_statistics_cover_timestamps_dates_booleans_decimals_and_struct_fields(tmp_path):
    """The videos table's processed_at and a manifest's carried columns: readers skip files by their
    ranges, which write_deltalake's files had. Read back with deltalake's own parser, typed."""
    from datetime import date, datetime, timezone
    from decimal import Decimal

    utc = timezone.utc
    rows = pa.table(
        {
            "video_id": ["b", "a", "c"],
            "processed_at": pa.array(
                [datetime(2026, 1, 2, 3, 4, 5, 678901, utc), datetime(2025, 1, 1, tzinfo=utc), None], pa.timestamp("us", "UTC")
            ),
            "seen": pa.array([datetime(2026, 1, 1), None, datetime(2024, 2, 29, 12)], pa.timestamp("us")),
            "day": pa.array([date(2026, 1, 1), date(1999, 12, 31), None]),
            "ok": [True, None, True],
            "price": pa.array([Decimal("1.25"), Decimal("-3.10"), None], pa.decimal128(5, 2)),
            "meta": [{"n": 1, "tag": "x"}, None, {"n": 7, "tag": None}],
            "blob": [b"1", None, b"2"],
        }
    )
    pq.write_table(rows, tmp_path / "rows.parquet")
    create(str(tmp_path / "t"), StorageConfig(), open_parquet(tmp_path / "rows.parquet"), CommitProperties())
    (stats,) = _file_stats(tmp_path / "t")

    assert stats["min.processed_at"] == datetime(2025, 1, 1, tzinfo=utc)
    # milliseconds are the statistics' precision: the upper bound is rounded up, never below a row
    assert stats["max.processed_at"] == datetime(2026, 1, 2, 3, 4, 5, 679000, utc)
    assert (stats["min.seen"], stats["max.seen"]) == (datetime(2024, 2, 29, 12), datetime(2026, 1, 1))
    assert (stats["min.day"], stats["max.day"], stats["null_count.day"]) == (date(1999, 12, 31), date(2026, 1, 1), 1)
    assert (stats["min.ok"], stats["max.ok"], stats["null_count.ok"]) == (True, True, 1)
    assert (stats["min.price"], stats["max.price"]) == (Decimal("-3.10"), Decimal("1.25"))
    assert (stats["min.meta.n"], stats["max.meta.n"], stats["max.meta.tag"]) == (1, 7, "x")
    assert (stats["null_count.meta.n"], stats["null_count.meta.tag"]) == (1, 2)  # the null struct counts in its fields
    assert stats["null_count.processed_at"] == 1 and stats.get("min.blob") is None
    # A checkpoint parses every file's statistics into typed columns: they must take that form too.
    DeltaTable(str(tmp_path / "t")).create_checkpoint()
    assert any(name.endswith(".checkpoint.parquet") for name in os.listdir(tmp_path / "t" / "_delta_log"))
    assert _file_stats(tmp_path / "t") == [stats]


def test_readers_skip_files_by_their_ranges_and_lose_no_row_at_a_bound(tmp_path, monkeypatch):
    """Two files of one first run. A filter on a timestamp finer than milliseconds, or on a string
    longer than the statistics keep, selects only the file that holds it, and finds the row: a bound
    cut below the row's value would have skipped it."""
    from datetime import datetime, timedelta, timezone

    import pyarrow.dataset as ds

    import vidbatch.parquet_stream as parquet_stream

    monkeypatch.setattr(parquet_stream, "BATCH_BYTES", 2_000)
    start = datetime(2026, 12, 6, tzinfo=timezone.utc)
    stamps = [start + timedelta(milliseconds=10 * i, microseconds=567) for i in range(200)]
    uris = [f"s3://library/{i:04d}/{'deep/' * 20}clip.mp4" for i in range(200)]  # ~120 characters
    ids = [f"v{i:04d}" for i in range(200)]
    pq.write_table(
        pa.table({"video_id": ids, "uri": uris, "processed_at": pa.array(stamps, pa.timestamp("us", "UTC"))}),
        tmp_path / "rows.parquet",
        row_group_size=50,
    )
    create(
        str(tmp_path / "t"), StorageConfig(), open_parquet(tmp_path / "rows.parquet"), CommitProperties(), target_file_bytes=1
    )  # a file per batch
    files = sorted(_file_stats(tmp_path / "t"), key=lambda f: f["min.video_id"])
    assert len(files) >= 3
    assert all(len(f["max.uri"]) < 100 for f in files)  # cut, as delta-rs cuts them

    dataset = DeltaTable(str(tmp_path / "t")).to_pyarrow_dataset()
    ends = itertools.accumulate(f["num_records"] for f in files)
    for last in ends:  # the last row of each file is at its upper bounds
        index = last - 1
        at_stamp = ds.field("processed_at") >= pa.scalar(stamps[index], pa.timestamp("us", "UTC"))
        assert dataset.to_table(filter=at_stamp).num_rows == 200 - index
        assert len(list(dataset.get_fragments(filter=at_stamp))) == len(files) - files.index(_holding(files, index))
        same_uri = ds.field("uri") == uris[index]
        assert len(list(dataset.get_fragments(filter=same_uri))) == 1
        assert dataset.to_table(filter=same_uri).column("video_id").to_pylist() == [f"v{index:04d}"]


def _holding(files: list[dict], index: int) -> dict:
    return next(f for f in files if f["min.video_id"] <= f"v{index:04d}" <= f["max.video_id"])
