"""Delta commits prepared ahead of time, so a run's commits land back to back.

A run changes two tables and Delta commits one table at a time. Between the commit that adds a
run's clips and the one that removes the clips they replace, the clips table holds both (the
videos table says which are current). With merges, that window lasted as long as the videos
merge and the clean-up merge took to compute: a second or more, where a crash leaves it open
until the next run. Here every data file of a commit is written first (new rows; each old file
that loses rows rewritten without them), and a commit is only the log entry that adds and
removes those files: the window is the time of two log writes.
"""

from __future__ import annotations

import bisect
import itertools
import json
import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from deltalake import CommitProperties, DeltaTable, Schema
from deltalake.transaction import AddAction, RemoveAction, create_table_with_add_actions

from vidbatch.config import StorageConfig
from vidbatch.delta_stats import FileStatistics
from vidbatch.parquet_stream import open_parquet, open_writer, read_batches
from vidbatch.storage import delta_storage_options, filesystem, is_local

# Which rows of a data file to drop: a boolean mask over the file's rows.
RowFilter = Callable[[pa.Table], pa.Array]

# A data file is closed and the next begun once it holds this much: a later run that drops a
# video's rows rewrites the files that hold it, not one file of a whole first run. 64 MB, not 256:
# a night that replaces K videos spread over a table rewrites about min(table, K x this) (each file
# holding one, whole), and a quarter of it cost readers nothing measurable (docs/performance.md,
# 2026-12-07 eighteenth session). A table's own delta.targetFileSize overrides it (table_target_bytes).
TARGET_FILE_BYTES = 64 * 1024 * 1024
# Delta's table property for the size of its data files; deltalake's compaction reads it too.
TARGET_SIZE_PROPERTY = "delta.targetFileSize"


@dataclass
class Rewritten:
    """What a commit rewrote to drop rows: the old data files that lost rows (removed, and written again
    without them), their bytes, and the rows they carried over unchanged into the new files. Copy-on-write:
    a night that replaces a few videos spread over the table rewrites most of it (docs/performance.md)."""

    files: int = 0
    bytes: int = 0
    rows_kept: int = 0

    def __iadd__(self, other: Rewritten) -> Rewritten:
        self.files += other.files
        self.bytes += other.bytes
        self.rows_kept += other.rows_kept
        return self


@dataclass
class PreparedCommit:
    """The add and remove actions of one commit, their data files already written."""

    table: DeltaTable
    actions: list[AddAction | RemoveAction] = field(default_factory=list)
    rewritten: Rewritten = field(default_factory=Rewritten)

    @property
    def empty(self) -> bool:
        return not self.actions

    def commit(self, properties: CommitProperties) -> None:
        if self.actions:
            self.table.create_write_transaction(
                self.actions, mode="append", schema=self.table.schema(), commit_properties=properties
            )


def prepare(
    table: DeltaTable,
    table_uri: str,
    storage: StorageConfig,
    *,
    add: pq.ParquetFile | None = None,
    drop: RowFilter | None = None,
    candidates: set[str] | frozenset[str] = frozenset(),
    add_without: RowFilter | None = None,
    target_file_bytes: int | None = None,
) -> PreparedCommit:
    """Write the files of a commit that adds `add`'s rows (but those `add_without` marks) and drops
    the rows `drop` marks, in files closed once they hold `target_file_bytes` (None: the table's own
    target, `table_target_bytes`).

    Only data files whose video_id range holds one of `candidates` are read for `drop` (the
    table's own file statistics say which).
    """
    fs, root = filesystem(table_uri, storage)
    prepared = PreparedCommit(table)
    if target_file_bytes is None:
        target_file_bytes = table_target_bytes(table)
    if drop is not None and candidates:
        for path, size in _files_holding(table, candidates):
            source = f"{root}/{unquote(path)}"
            # The key columns first (small): most candidate files lose nothing and are not rewritten.
            with fs.open(source, "rb") as handle:
                parquet = open_parquet(handle)
                keys = plain_table(parquet.read(columns=[n for n in _KEY_COLUMNS if n in parquet.schema_arrow.names]))
            if not pc.any(drop(keys)).as_py():
                continue
            prepared.actions.append(
                RemoveAction(path=path, data_change=True, deletion_timestamp=_now_ms(), size=size, partition_values={})
            )
            with fs.open(source, "rb") as handle:
                kept = _write(fs, root, _kept(open_parquet(handle), drop), target_file_bytes)
            prepared.actions += kept
            prepared.rewritten += Rewritten(files=1, bytes=size, rows_kept=sum(_rows(action) for action in kept))
    if add is not None:
        parts = _kept(add, add_without) if add_without is not None else _plain_parts(add)
        prepared.actions += _write(fs, root, parts, target_file_bytes)
    return prepared


def create(
    table_uri: str,
    storage: StorageConfig,
    rows: pq.ParquetFile,
    properties: CommitProperties,
    *,
    without: RowFilter | None = None,
    target_file_bytes: int = TARGET_FILE_BYTES,
) -> None:
    """Create the table with `rows` (its schema, plain types) as its first commit, version 0.

    The files are streamed as in `prepare`: a first run over a library commits all of its clips at
    once, and deltalake's write_deltalake held about three times the rows it wrote (45,000 clips of
    2048 floats, 397 MB, in a fresh process: +1,287 MB at its peak and 5.0 s; this way +108 MB, its
    imports included, and 2.2 s). Refused if the table exists by then: another run created it.
    """
    fs, root = filesystem(table_uri, storage)
    if is_local(table_uri):
        os.makedirs(root, exist_ok=True)  # an object store has no folders to make
    create_table_with_add_actions(
        table_uri,
        Schema.from_arrow(plain_schema(rows.schema_arrow)),
        _write(fs, root, _kept(rows, without) if without is not None else _plain_parts(rows), target_file_bytes),
        mode="error",
        storage_options=delta_storage_options(table_uri, storage),
        commit_properties=properties,
    )


# The columns a RowFilter reads; the rest of a file is read only when the file is rewritten.
_KEY_COLUMNS = ("video_id", "run_id")


def _plain_parts(parquet: pq.ParquetFile) -> Iterator[pa.Table]:
    for batch in read_batches(parquet):
        yield plain_table(pa.Table.from_batches([batch]))


def _kept(parquet: pq.ParquetFile, drop: RowFilter) -> Iterator[pa.Table]:
    for rows in _plain_parts(parquet):
        # A row the filter cannot decide (a null in its keys) is kept: nothing is dropped by accident.
        yield rows.filter(pc.invert(pc.fill_null(drop(rows), False)))


def table_target_bytes(table: DeltaTable) -> int:
    """The size at which the table's data files are closed: its delta.targetFileSize (a number of
    bytes, as deltalake reads it), else TARGET_FILE_BYTES. ValueError naming the value otherwise."""
    value = (table.metadata().configuration or {}).get(TARGET_SIZE_PROPERTY)
    if value is None:
        return TARGET_FILE_BYTES
    size = int(value) if value.strip().isdigit() else 0
    if size < 1:
        raise ValueError(
            f"its table property {TARGET_SIZE_PROPERTY} is {value!r}, not a number of bytes: set it to one "
            f"(e.g. {64 * 2**20} for 64 MB) or unset it"
        )
    return size


def plain_files(table: DeltaTable) -> bool:
    """Whether the table's data files hold its rows as they are, so a file can be rewritten by reading
    it: no deletion vectors (rows deleted beside the file), no column mapping (other column names
    inside the files), no partitions (values in the paths). Tables vidbatch creates are such.

    And whether adding and removing files is all a commit has to do: a table given CHECK constraints
    (deltalake's merge checks every row against them) or a change data feed (its merge writes the
    rows that changed) is committed by merge, as Delta's own writers would."""
    protocol = table.protocol()
    features = set(protocol.reader_features or ()) | set(protocol.writer_features or ())
    metadata = table.metadata()
    configuration = metadata.configuration or {}
    mapping = configuration.get("delta.columnMapping.mode", "none")
    constrained = any(key.startswith("delta.constraints.") for key in configuration)
    change_feed = configuration.get("delta.enableChangeDataFeed", "false").lower() == "true"
    plain = "deletionVectors" not in features and mapping == "none" and not metadata.partition_columns
    return plain and not constrained and not change_feed


def fits(table: DeltaTable, rows: pa.Schema) -> bool:
    """Whether rows of this schema can be added as files to the table as it is: no new column and
    no column of another type (a merge evolves the table's schema for those)."""
    columns = {f.name: plain_type(f.type) for f in pa.schema(table.schema().to_arrow())}
    return all(columns.get(f.name) == plain_type(f.type) for f in rows)


def plain_type(kind: pa.DataType) -> pa.DataType:
    """The type without Arrow's view and large variants, which Parquet and Delta store alike
    (delta-rs reads strings back as string_view, which some compute kernels do not take)."""
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind):
        return pa.string()
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_binary_view(kind):
        return pa.binary()
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_list_view(kind) or pa.types.is_large_list_view(kind):
        return pa.list_(pa.field(kind.value_field.name, plain_type(kind.value_type), kind.value_field.nullable))
    if pa.types.is_struct(kind):
        return pa.struct([pa.field(f.name, plain_type(f.type), f.nullable) for f in kind])
    return kind


def plain_schema(schema: pa.Schema) -> pa.Schema:
    return pa.schema([pa.field(f.name, plain_type(f.type), f.nullable, f.metadata) for f in schema])


def plain_table(rows: pa.Table) -> pa.Table:
    schema = plain_schema(rows.schema)
    return rows if schema == rows.schema else rows.cast(schema)


def _files_holding(table: DeltaTable, candidates: set[str] | frozenset[str]) -> list[tuple[str, int]]:
    files = pa.table(table.get_add_actions(flatten=True))
    names = set(files.column_names)
    low = files.column("min.video_id").to_pylist() if "min.video_id" in names else [None] * files.num_rows
    high = files.column("max.video_id").to_pylist() if "max.video_id" in names else [None] * files.num_rows
    ordered = sorted(candidates)
    held = []
    for path, size, first, last in zip(
        files.column("path").to_pylist(), files.column("size_bytes").to_pylist(), low, high, strict=True
    ):
        if first is None or last is None or _any_between(ordered, first, last):
            held.append((path, int(size)))
    return held


def _any_between(ordered: list[str], low: str, high: str) -> bool:
    at = bisect.bisect_left(ordered, low)
    return at < len(ordered) and ordered[at] <= high


def _write(fs: Any, root: str, parts: Iterable[pa.Table], target_file_bytes: int) -> list[AddAction]:
    """New data files of the rows in `parts` (streamed), each closed once it holds `target_file_bytes`,
    with their statistics; none when there are no rows."""
    pending = (part for part in parts if part.num_rows)
    # One generator: each file takes parts from it until it is full, and the next file starts with
    # the part after, so no file is ever opened for no rows.
    return [_write_file(fs, root, first, pending, target_file_bytes) for first in pending]


def _write_file(fs: Any, root: str, first: pa.Table, rest: Iterator[pa.Table], target_file_bytes: int) -> AddAction:
    """One new data file of `first` and the next tables of `rest`, until it holds `target_file_bytes`."""
    name = f"part-00000-{uuid.uuid4()}-c000.zstd.parquet"
    ranges = FileStatistics()
    with fs.open(f"{root}/{name}", "wb") as handle:
        with open_writer(handle, first.schema, compression="zstd") as writer:
            for part in itertools.chain([first], rest):
                writer.write_table(part)
                ranges.add(part)
                if handle.tell() >= target_file_bytes:
                    break
        size = handle.tell()
    return AddAction(
        path=name, size=size, partition_values={}, modification_time=_now_ms(), data_change=True, stats=ranges.stats()
    )


def _rows(action: AddAction) -> int:
    return int(json.loads(action.stats or "{}").get("numRecords", 0))


def _now_ms() -> int:
    return int(time.time() * 1000)
