"""Read the manifest and plan the run: which rows go to decoding, which are refused.

Every manifest row ends in exactly one of: a planned row (decoded later), a refused
row (status decided here), or a counted duplicate of an earlier video_id.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from vidbatch.config import InputPolicy, StorageConfig
from vidbatch.errors import JobError, Status
from vidbatch.schema import VIDEOS, text_leaves
from vidbatch.storage import filesystem, is_pipe_or_device, missing_filesystem, scheme_of
from vidbatch.storage_failures import explain_failure
from vidbatch.uri_policy import refusal_reason

REQUIRED = ("video_id", "uri")


@dataclass(frozen=True)
class Refusal:
    video_id: str
    uri: str | None
    status: Status
    message: str
    extra: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Plan:
    to_process: pa.Table  # video_id, uri: what the decode actors get
    extras_by_id: dict[str, dict[str, object]]  # carried through to the videos table by the driver
    refused: tuple[Refusal, ...]
    duplicates: int
    manifest_rows: int
    extra_columns: tuple[str, ...]
    extras: pa.Table  # the carried-through columns of every row that gets a videos row, with the manifest's types
    # The later rows of repeated ids, first few: (video_id, its first row, this row, this row's uri if it is
    # not the first row's uri, else None); and how many later rows name another uri than their id's first row.
    duplicate_examples: tuple[tuple[str, int, int, str | None], ...] = ()
    duplicates_elsewhere: int = 0

    @property
    def extra_schema(self) -> pa.Schema:
        return self.extras.schema


def _unreadable(fs: Any, path: str, exc: Exception) -> str:
    """Why the manifest is not Parquet. A folder is read as a dataset of Parquet files (as Spark
    writes a table), so a folder of anything else names the files that are not."""
    try:
        listed = fs.ls(path, detail=True) if fs.isdir(path) else []
    except Exception:  # only an explanation: the store's refusal to list is not the news
        listed = []
    # folders are not named: a partitioned table's (label=cat/) are read as folders of Parquet files
    files = [entry["name"] for entry in listed if entry.get("type") != "directory"]
    # pyarrow reads past names starting with '_' or '.' (Spark's _SUCCESS, .crc checksums): never the cause
    files = [name for name in files if not name.rsplit("/", 1)[-1].startswith(("_", "."))]
    others = sorted(name.rsplit("/", 1)[-1] for name in files if not name.endswith(".parquet"))
    if others:
        shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
        return (
            f"is a folder with files that are not Parquet ({shown}); give the manifest file itself, "
            "or a folder of Parquet files only"
        )
    return f"is not a readable Parquet file: {str(exc)[:300]}"


def _folder_schema(uri: str, dataset: pq.ParquetDataset) -> tuple[pa.Schema | None, dict[str, tuple[str, str]]]:
    """The columns of every Parquet file of a folder, each typed as the first file that has it holds it.

    pyarrow reads a folder with its first file's columns: a column that only later files hold (a
    table appended to after its writer added the column, Spark's mergeSchema) was dropped without a
    word, for every row. A column all nulls (no type) in the first file that has it takes the type of
    the first file with values. Files that disagree on whether a column holds text or numbers are
    refused: the folder is read with one type per column, and the other files' values are cast into
    it (3 in one part became '3' without a word). Other differences (int32 beside int64) are cast
    when the folder is read; the second value names the ones that are, for a cast that fails. The
    schema is None when it is the first file's (the folder is read as pyarrow found it).
    Each file's footer is read; no rows are.
    """
    fragments = list(dataset.fragments)
    # hive partition columns (date=2026-12-01/) come dictionary-encoded; read as plain values
    schema = pa.schema(
        [pa.field(f.name, f.type.value_type if pa.types.is_dictionary(f.type) else f.type) for f in dataset.schema]
    )
    first_file = {name: _file_name(fragments[0].path) for name in schema.names} if fragments else {}
    differing: dict[str, tuple[str, str]] = {}
    widened = False
    for fragment in fragments:
        for column in fragment.physical_schema:
            name = column.name
            if name not in schema.names:
                schema, first_file[name] = schema.append(column), _file_name(fragment.path)
                widened = True
                continue
            want, got = schema.field(name).type, column.type
            got = got.value_type if pa.types.is_dictionary(got) else got
            if want == got or pa.types.is_null(got):
                continue
            if pa.types.is_null(want):
                schema = schema.set(schema.get_field_index(name), pa.field(name, got))
                first_file[name], widened = _file_name(fragment.path), True
                continue
            if text_leaves(want) != text_leaves(got):
                raise JobError(
                    f"manifest {uri!r}: column {name!r} is {got} in {_file_name(fragment.path)} but {want} in "
                    f"{first_file[name]}, and the folder is read with its first file's types (the values would "
                    "be converted); write the column with one type in every file of the folder"
                )
            differing.setdefault(name, (f"{got} in {_file_name(fragment.path)}", f"{want} in {first_file[name]}"))
    return (schema if widened else None), differing


def _file_name(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def _read_delta_manifest(uri: str, storage: StorageConfig) -> pa.Table:
    """A Delta table given as the manifest (Spark, Databricks, DuckDB and polars write them): its current
    snapshot. Read as a folder of Parquet files it gave the rows of every file its log ever held, files
    an overwrite or a delete had removed included: deleted videos came back, and an id's row could be
    an old version's."""
    from deltalake import DeltaTable

    from vidbatch.storage import delta_storage_options

    try:
        return DeltaTable(uri, storage_options=delta_storage_options(uri, storage)).to_pyarrow_table()
    except Exception as exc:  # deltalake raises its own errors (a table feature it cannot read, a broken log)
        raise JobError(
            f"manifest {uri!r} is a Delta table (it has a _delta_log) that cannot be read ({str(exc)[:200]}); "
            "write the manifest as a Parquet file, or check the table with the tool that wrote it"
        ) from exc


def read_manifest(uri: str, storage: StorageConfig) -> pa.Table:
    try:
        fs, path = filesystem(uri, storage)
        if not fs.exists(path):
            raise JobError(f"manifest {uri!r} does not exist")
        if is_pipe_or_device(fs.info(path)):
            raise JobError(f"manifest {uri!r} names a pipe or device, not a Parquet file")
        if fs.isdir(path) and fs.isdir(path.rstrip("/") + "/_delta_log"):
            return _read_delta_manifest(uri, storage)
        if fs.isdir(path):
            dataset = pq.ParquetDataset(path, filesystem=fs)
            if not dataset.fragments:  # else read as a table with no columns, named as missing ones
                raise JobError(
                    f"manifest {uri!r} is a folder with no Parquet files in it (or in its folders); give the manifest "
                    "file, or the folder a Parquet writer wrote"
                )
            schema, differing = _folder_schema(uri, dataset)
            try:
                if schema is None:
                    return dataset.read()  # as pq.read_table reads a folder, without listing it again
                return pq.ParquetDataset(path, filesystem=fs, schema=schema).read()
            except pa.ArrowInvalid as exc:
                if not differing:
                    raise
                said = "; ".join(f"{name!r} is {got} but {want}" for name, (got, want) in differing.items())
                raise JobError(
                    f"manifest {uri!r}: its files disagree on column types ({said}), and the folder is read with "
                    f"the first file's types, which cannot hold every value ({str(exc)[:160]}); write each column "
                    "with one type in every file of the folder"
                ) from exc
        return pq.read_table(path, filesystem=fs)
    except JobError:
        raise
    except PermissionError as exc:
        raise JobError(f"manifest {uri!r}: access denied") from exc
    except pa.ArrowInvalid as exc:
        raise JobError(f"manifest {uri!r} {_unreadable(fs, path, exc)}") from exc
    except pa.ArrowTypeError as exc:  # the data's own types, not the store: its credentials are not the news
        raise JobError(
            f"manifest {uri!r} cannot be read as one table ({str(exc)[:200]}); a folder's files must agree on their "
            "columns' types, and a column must not also be a folder name of a partitioned table (label=cat/)"
        ) from exc
    except Exception as exc:  # the store itself: endpoint unreachable, no bucket, no credentials, ...
        raise JobError(
            f"manifest {uri!r} cannot be read ({explain_failure(exc)}); "
            "check the uri, storage.endpoint_url and the job's credentials"
        ) from exc


def plan(manifest: pa.Table, policy: InputPolicy) -> Plan:
    manifest = _decoded(manifest)
    _validate_columns(manifest)
    manifest = _storable(manifest)
    extras = tuple(name for name in manifest.column_names if name not in REQUIRED)
    ids = manifest.column("video_id").to_pylist()
    uris = manifest.column("uri").to_pylist()
    first_row: dict[str, int] = {}
    duplicate_examples: list[tuple[str, int, int, str | None]] = []
    elsewhere_examples: list[tuple[str, int, int, str | None]] = []
    duplicates_elsewhere = 0
    # Ids for rows without one must never be a real id of this manifest: a clash would give that
    # video two rows now and drop its row at the next run's merge.
    taken = {str(v) for v in ids if v is not None and str(v).strip() != ""}
    keep_rows: list[int] = []
    written_rows: list[int] = []  # rows that get a videos row: kept or refused, not duplicates
    refused: list[Refusal] = []
    duplicates = 0
    extra_rows = manifest.select(list(extras)).to_pylist() if extras else [{} for _ in ids]
    for row, (video_id, uri) in enumerate(zip(ids, uris, strict=True)):
        if video_id is None or str(video_id).strip() == "":
            video_id = _stand_in_id(row, taken)
            taken.add(video_id)
            written_rows.append(row)
            refused.append(
                Refusal(video_id, uri, "invalid_uri", f"row {row} has no video_id; give it a unique id", extra_rows[row])
            )
            continue
        video_id = str(video_id)
        if video_id in first_row:
            duplicates += 1  # the first row wins; DESIGN: counted, no row of its own
            kept = first_row[video_id]
            if uri != uris[kept]:  # which file the id's row holds depends on the rows' order: said by name
                duplicates_elsewhere += 1
                if len(elsewhere_examples) < 3:
                    elsewhere_examples.append((video_id, kept, row, uri))
            elif len(duplicate_examples) < 3:
                duplicate_examples.append((video_id, kept, row, None))
            continue
        first_row[video_id] = row
        written_rows.append(row)
        reason = refusal_reason(uri, policy) or missing_filesystem(scheme_of(uri))
        if reason is not None:
            refused.append(Refusal(video_id, uri, "invalid_uri", reason, extra_rows[row]))
            continue
        keep_rows.append(row)
    to_process = pa.table(
        {
            "video_id": pa.array([str(ids[row]) for row in keep_rows], pa.string()),
            "uri": pa.array([uris[row] for row in keep_rows], pa.string()),
        }
    )
    return Plan(
        to_process=to_process,
        extras_by_id={str(ids[row]): extra_rows[row] for row in keep_rows} if extras else {},
        refused=tuple(refused),
        duplicates=duplicates,
        manifest_rows=manifest.num_rows,
        extra_columns=extras,
        extras=manifest.select(list(extras)).take(pa.array(written_rows, pa.int64())),  # typed: [] would be null-typed
        duplicate_examples=tuple((elsewhere_examples + duplicate_examples)[:3]),
        duplicates_elsewhere=duplicates_elsewhere,
    )


def _stand_in_id(row: int, taken: set[str]) -> str:
    """The id of a row that has none: `__manifest_row_<row>`, made unique against `taken`."""
    candidate, n = f"__manifest_row_{row}", 1
    while candidate in taken:
        n += 1
        candidate = f"__manifest_row_{row}~{n}"
    return candidate


def _decoded(manifest: pa.Table) -> pa.Table:
    """Dictionary-encoded columns (pandas' category dtype, some writers' default) as plain values, and
    Arrow's view types (string_view, binary_view, list_view: pyarrow keeps them in the Parquet file's
    Arrow schema, and some readers and writers make them) as their plain types, at any depth: pyarrow's
    kernels (take, for one) have none for views, so such a column was a traceback."""
    for index, column_field in enumerate(manifest.schema):
        wanted = column_field.type.value_type if pa.types.is_dictionary(column_field.type) else column_field.type
        wanted = _without_views(wanted)
        if wanted != column_field.type:
            plain = manifest.column(index).cast(wanted)
            manifest = manifest.set_column(index, pa.field(column_field.name, plain.type, column_field.nullable), plain)
    return manifest


def _without_views(kind: pa.DataType) -> pa.DataType:
    """`kind` with Arrow's view types made their plain ones (string_view as string), at any depth."""
    if pa.types.is_string_view(kind):
        return pa.string()
    if pa.types.is_binary_view(kind):
        return pa.binary()
    if pa.types.is_list_view(kind) or pa.types.is_large_list_view(kind):
        inner = kind.value_field
        field = pa.field(inner.name, _without_views(inner.type), inner.nullable)
        return pa.list_(field) if pa.types.is_list_view(kind) else pa.large_list(field)
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        inner = kind.value_field
        plain = _without_views(inner.type)
        if plain == inner.type:
            return kind
        field = pa.field(inner.name, plain, inner.nullable)
        if pa.types.is_fixed_size_list(kind):
            return pa.list_(field, kind.list_size)
        return pa.list_(field) if pa.types.is_list(kind) else pa.large_list(field)
    if pa.types.is_map(kind):
        key, item = _without_views(kind.key_type), _without_views(kind.item_type)
        return kind if (key, item) == (kind.key_type, kind.item_type) else pa.map_(key, item)
    if pa.types.is_struct(kind):
        fields = [pa.field(f.name, _without_views(f.type), f.nullable, f.metadata) for f in kind]
        return kind if all(f.type == g.type for f, g in zip(fields, kind, strict=True)) else pa.struct(fields)
    if pa.types.is_dictionary(kind):
        return _without_views(kind.value_type)
    return kind


def _storable(manifest: pa.Table) -> pa.Table:
    """The carried-through columns as types the Delta videos table holds without loss.

    Delta has no unsigned integers: deltalake writes uint8 as a signed byte and fails on 200, after
    all the decoding. Unsigned columns are widened to the next signed type (uint64 to int64 where
    the values fit). A time zone is written as UTC, the same instants. Types Delta cannot hold at
    all (durations, times of day, float16, ...) are refused here, before any work, naming the column.
    """
    from deltalake import Schema  # deltalake's own Arrow -> Delta mapping decides what it can hold

    for index, column_field in enumerate(manifest.schema):
        if column_field.name in REQUIRED:
            continue
        wanted = _storable_type(column_field.type)
        if wanted != column_field.type:
            try:
                # Unsafe only to cut nanoseconds; where unsigned integers are widened the cast stays safe,
                # so a uint64 above int64's largest is refused, never wrapped.
                safe = _has_unsigned(column_field.type)
                values = manifest.column(index).cast(wanted, safe=safe)
            except pa.ArrowInvalid as exc:
                raise JobError(
                    f"manifest column {column_field.name!r} is {column_field.type} with values above {wanted}'s "
                    f"largest ({str(exc)[:120]}); Delta tables have no unsigned integers: write it as strings"
                ) from exc
            manifest = manifest.set_column(index, pa.field(column_field.name, wanted, column_field.nullable), values)
        try:
            Schema.from_arrow(pa.schema([manifest.schema.field(index)]))
        except Exception as exc:  # deltalake raises a bare Exception naming the Rust type
            raise JobError(
                f"manifest column {column_field.name!r} is {column_field.type}, a type the videos table (Delta) cannot "
                "hold; convert it (e.g. a duration to int64 seconds, a time of day to a string) or leave it out"
            ) from exc
    return manifest


def _has_unsigned(kind: pa.DataType) -> bool:
    if kind in _WIDER_SIGNED:
        return True
    return any(_has_unsigned(kind.field(i).type) for i in range(kind.num_fields))


_WIDER_SIGNED = {pa.uint8(): pa.int16(), pa.uint16(): pa.int32(), pa.uint32(): pa.int64(), pa.uint64(): pa.int64()}


def _storable_type(kind: pa.DataType) -> pa.DataType:
    """`kind` with unsigned integers widened and time zones made UTC, at any depth; else `kind` itself."""
    if kind in _WIDER_SIGNED:
        return _WIDER_SIGNED[kind]
    if pa.types.is_timestamp(kind) and (kind.unit == "ns" or (kind.tz is not None and kind.tz != "UTC")):
        # Delta keeps microseconds: nanoseconds are cut here, the same way every night (deltalake
        # would cut them at the write, and the next night's manifest would no longer match the table).
        return pa.timestamp("us" if kind.unit == "ns" else kind.unit, tz="UTC" if kind.tz is not None else None)
    if pa.types.is_map(kind):
        key, item = _storable_type(kind.key_type), _storable_type(kind.item_type)
        return kind if (key, item) == (kind.key_type, kind.item_type) else pa.map_(key, item)
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        inner = _storable_type(kind.value_type)
        return kind if inner == kind.value_type else pa.list_(inner)
    if pa.types.is_struct(kind):
        fields = [pa.field(f.name, _storable_type(f.type), f.nullable) for f in kind]
        return kind if all(f.type == g.type for f, g in zip(fields, kind, strict=True)) else pa.struct(fields)
    return kind


def _validate_columns(manifest: pa.Table) -> None:
    missing = [name for name in REQUIRED if name not in manifest.column_names]
    if missing:
        raise JobError(
            f"manifest lacks column(s) {', '.join(missing)}; it has {', '.join(manifest.column_names) or 'no columns'}"
        )
    # Delta column names are case-insensitive: 'Status' is the videos table's 'status', and 'x'
    # beside 'X' is one column twice; either fails the commit after all the decoding.
    own = {name.lower() for name in VIDEOS.names}
    clashes = [name for name in manifest.column_names if name.lower() in own and name not in REQUIRED]
    if clashes:
        raise JobError(
            f"manifest column(s) {', '.join(clashes)} clash with output columns of the videos table "
            "(Delta column names ignore case); rename them"
        )
    seen: dict[str, str] = {}
    for name in manifest.column_names:
        if name.lower() in seen:
            raise JobError(
                f"manifest columns {seen[name.lower()]!r} and {name!r} differ only in case, and Delta column names "
                "ignore case; rename one of them"
            )
        seen[name.lower()] = name
    if not pa.types.is_string(manifest.schema.field("uri").type) and not pa.types.is_large_string(
        manifest.schema.field("uri").type
    ):
        raise JobError(f"manifest column 'uri' must be strings, got {manifest.schema.field('uri').type}")
    id_type = manifest.schema.field("video_id").type
    if not (pa.types.is_string(id_type) or pa.types.is_large_string(id_type) or pa.types.is_integer(id_type)):
        # A float id becomes '1.0' where yesterday's integer was '1' (pandas turns an integer column
        # with a null into floats): every video would get a new key and be redone, the old rows removed.
        raise JobError(
            f"manifest column 'video_id' must be strings (or integers, taken as their digits), got {id_type}; "
            "write the ids as strings"
        )
