"""Publish a run: the clips and videos Delta tables, and `_runs/<run_id>/summary.json`.

Each table changes in one Delta commit, so a reader sees a whole run or none of it.
The videos table is committed last: it is the run's record of completion.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import CommitProperties, DeltaTable, write_deltalake

from vidbatch.config import StorageConfig
from vidbatch.errors import JobError
from vidbatch.storage import delta_storage_options, filesystem, is_local, join_uri

_OP = "_vidbatch_op"  # source-only column telling the merge which rows are tombstones


def check_writable(output: str, run_id: str, storage: StorageConfig, started: dict[str, Any]) -> None:
    """Write `_runs/<run_id>/started.json` before any decoding: an unwritable output fails fast."""
    uri = join_uri(output, "_runs", run_id, "started.json")
    try:
        _write_json(uri, started, storage)
    except Exception as exc:
        raise JobError(
            f"output {output!r} cannot be written ({type(exc).__name__}: {str(exc)[:200]}); fix its permissions or path"
        ) from exc


def commit_tables(
    output: str,
    spill_dir: Path,
    *,
    run_id: str,
    replace_ids: set[str],
    storage: StorageConfig,
    metadata: dict[str, str],
) -> dict[str, int]:
    """Apply the run to both tables: in each, one commit deletes the rows of `replace_ids`
    (changed, retried and removed videos) and adds the run's new rows.

    clips is committed first, videos last: a run is complete when its videos commit
    lands. If the process dies in between, the next run finds clip rows whose run_id
    disagrees with the videos row and redoes those videos (see vidbatch.state).
    """
    versions: dict[str, int] = {}
    for table in ("clips", "videos"):
        spilled = pq.ParquetFile(spill_dir / f"{table}.parquet")
        table_uri = join_uri(output, table)
        options = delta_storage_options(table_uri, storage)
        commit = CommitProperties(custom_metadata={"vidbatch.run_id": run_id, **metadata})
        if not DeltaTable.is_deltatable(table_uri, storage_options=options):
            write_deltalake(table_uri, _rows(spilled), mode="append", storage_options=options, commit_properties=commit)
        elif spilled.metadata.num_rows or replace_ids:
            _merge(DeltaTable(table_uri, storage_options=options), spilled, replace_ids, commit)
        versions[table] = int(DeltaTable(table_uri, storage_options=options).version())
        _fault_hook(f"after-{table}-commit")
    return versions


def _fault_hook(point: str) -> None:
    """Test-only: VIDBATCH_FAULT=<point> kills the process there, as a crash would."""
    if os.environ.get("VIDBATCH_FAULT") == point:
        os._exit(137)


def _rows(spilled: pq.ParquetFile) -> pa.RecordBatchReader:
    return pa.RecordBatchReader.from_batches(spilled.schema_arrow, spilled.iter_batches(batch_size=1024))


def _merge(table: DeltaTable, spilled: pq.ParquetFile, replace_ids: set[str], commit: CommitProperties) -> None:
    """One merge = one commit: tombstones delete old rows, inserts never match anything."""
    schema = spilled.schema_arrow.append(pa.field(_OP, pa.string()))

    def batches() -> Iterator[pa.RecordBatch]:
        for batch in spilled.iter_batches(batch_size=1024):
            yield batch.append_column(_OP, pa.array(["insert"] * batch.num_rows, pa.string()))
        ids = sorted(replace_ids)
        for start in range(0, len(ids), 4096):
            chunk = ids[start : start + 4096]
            columns = {name: pa.nulls(len(chunk), schema.field(name).type) for name in schema.names}
            columns["video_id"] = pa.array(chunk, pa.string())
            columns[_OP] = pa.array(["delete"] * len(chunk), pa.string())
            yield pa.RecordBatch.from_pydict(columns, schema=schema)

    (
        table.merge(
            pa.RecordBatchReader.from_batches(schema, batches()),
            predicate=f"target.video_id = source.video_id AND source.{_OP} = 'delete'",
            source_alias="source",
            target_alias="target",
            merge_schema=True,
            commit_properties=commit,
        )
        .when_matched_delete()
        .when_not_matched_insert(
            updates={name: f'source."{name}"' for name in spilled.schema_arrow.names},
            predicate=f"source.{_OP} = 'insert'",
        )
        .execute()
    )


def write_summary(output: str, run_id: str, summary: dict[str, Any], storage: StorageConfig) -> str:
    uri = join_uri(output, "_runs", run_id, "summary.json")
    _write_json(uri, summary, storage)
    return uri


def _write_json(uri: str, payload: dict[str, Any], storage: StorageConfig) -> None:
    fs, path = filesystem(uri, storage)
    if is_local(uri):
        fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    # Object stores have no directories to make; s3fs's makedirs would even create a
    # missing bucket, turning a typo in `output` into a new bucket instead of an error.
    with fs.open(path, "w") as handle:
        json.dump(payload, handle, indent=2, default=str)
