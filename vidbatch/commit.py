"""Publish a run: the clips and videos Delta tables, and `_runs/<run_id>/summary.json`.

Each table changes in one Delta commit, so a reader sees a whole run or none of it.
The videos table is committed last: it is the run's record of completion.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from deltalake import CommitProperties, write_deltalake

from vidbatch.config import StorageConfig
from vidbatch.errors import JobError
from vidbatch.storage import delta_storage_options, filesystem, is_local, join_uri


def check_writable(output: str, run_id: str, storage: StorageConfig, started: dict[str, Any]) -> None:
    """Write `_runs/<run_id>/started.json` before any decoding: an unwritable output fails fast."""
    uri = join_uri(output, "_runs", run_id, "started.json")
    try:
        _write_json(uri, started, storage)
    except Exception as exc:
        raise JobError(
            f"output {output!r} cannot be written ({type(exc).__name__}: {str(exc)[:200]}); fix its permissions or path"
        ) from exc


def commit_tables(output: str, spill_dir: Path, run_id: str, storage: StorageConfig) -> dict[str, int]:
    """Each run replaces the current snapshot; earlier runs stay in the table history."""
    versions: dict[str, int] = {}
    for table in ("clips", "videos"):
        spilled = pq.ParquetFile(spill_dir / f"{table}.parquet")
        table_uri = join_uri(output, table)
        _write(table_uri, spilled, run_id, storage)
        versions[table] = _version(table_uri, storage)
    return versions


def _write(table_uri: str, spilled: pq.ParquetFile, run_id: str, storage: StorageConfig) -> None:
    import pyarrow as pa

    schema = spilled.schema_arrow
    reader = pa.RecordBatchReader.from_batches(schema, spilled.iter_batches(batch_size=1024))
    write_deltalake(
        table_uri,
        reader,
        mode="overwrite",
        schema_mode="overwrite",
        storage_options=delta_storage_options(table_uri, storage),
        commit_properties=CommitProperties(custom_metadata={"vidbatch.run_id": run_id}),
    )


def _version(table_uri: str, storage: StorageConfig) -> int:
    from deltalake import DeltaTable

    return int(DeltaTable(table_uri, storage_options=delta_storage_options(table_uri, storage)).version())


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
