"""The refusals of an output that cannot be used, said before any work (not at the commit after all of it).

A file where the output folder would be, a command's file that would land inside a table, a manifest
column retyped since the table took it, another tool's table, an append-only table, a target file
size that is no number. Apart from vidbatch.state (what the tables already say) so that what is
refused, and how it is said, can change without touching how the tables are read.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat
from collections.abc import Iterable

import pyarrow as pa
from deltalake import DeltaTable

from vidbatch.delta_files import table_target_bytes
from vidbatch.errors import JobError
from vidbatch.schema import text_leaves
from vidbatch.storage import is_local, join_uri, local_path
from vidbatch.uri_bucket import missing_bucket
from vidbatch.uri_policy import spelled_plainly


def refuse_file_output(output: str) -> None:
    """JobError when a local output, or a folder it would be made in, is a file; or an object store's names no bucket."""
    if (lacking := missing_bucket(output)) is not None:  # history, vacuum: deltalake said "Unable to recognise URL"
        raise JobError(f"output {output!r} {lacking}")
    if not is_local(output):
        return  # an object store has no files in the way: a key and a prefix of the same name coexist
    start = path = os.path.abspath(local_path(output))
    while True:
        try:
            in_the_way = not stat.S_ISDIR(os.stat(path).st_mode)
        except OSError as exc:  # nothing there (yet), or a link that leads nowhere
            if os.path.islink(path) and exc.errno in (errno.ELOOP, errno.ENOENT):
                where = "" if path == start else f" ({path!r} on its way)"
                why = (
                    "loops through symbolic links"
                    if exc.errno == errno.ELOOP
                    else f"is a symbolic link to {os.readlink(path)!r}, which does not exist"
                )
                raise JobError(f"output {output!r}{where} {why}; fix the link or choose another path") from None
            in_the_way = False
        if in_the_way:
            where = "is a file" if path == start else f"is inside {path!r}, which is a file"
            raise JobError(
                f"output {output!r} {where}; the output is a folder (vidbatch writes its videos and clips tables and _runs/ "
                "in it): choose another path"
            )
        parent = os.path.dirname(path)
        if parent == path:
            return
        path = parent


def refuse_inside_tables(destination: str, output: str, *, flag: str) -> None:
    """JobError when a file a command writes (`flag`) would land inside one of the output's tables:
    a table's vacuum deletes every file its log does not name, so it would be lost at the next one."""
    for name in ("videos", "clips"):
        folder = _comparable(join_uri(output, name))
        if _comparable(destination).startswith(folder + "/"):
            beside = join_uri(output, destination.rstrip("/").rpartition("/")[2])
            raise JobError(
                f"{flag} {destination!r} is inside the output's {name} table, whose vacuum deletes files its log does "
                f"not name: write it beside the tables (e.g. {beside!r}) or elsewhere"
            )


def _comparable(uri: str) -> str:
    """A uri as a place: links resolved, `.` and doubled slashes gone, s3a read as s3, schemes in lower case."""
    if is_local(uri):
        return os.path.realpath(local_path(uri))
    scheme, rest = spelled_plainly(uri)
    return f"{scheme}://{posixpath.normpath('/' + rest).lstrip('/')}"  # (erring towards a refusal: S3 keys are literal)


def refuse_retyped_columns(manifest: pa.Table, table: pa.Schema | None, output: str) -> None:
    """JobError when a carried-through manifest column no longer fits its type in the videos table.

    The table keeps a column's first type; the merge would cast today's values into it, which
    fails (string 'one' into int64: the run dies after decoding) or loses them silently (1.5 into
    int64 as 1). Found here, before any work, naming the column and both types.
    """
    if table is None:
        return
    for name in manifest.column_names:
        if name not in table.names:
            continue  # a new column: added to the table as it is
        before = table.field(name).type
        values = manifest.column(name)
        if values.type == before or values.null_count == len(values) or pa.types.is_null(before):
            continue  # a column that was all nulls so far (Delta's void) takes its first real type at the merge
        try:
            cast = values.cast(before, safe=True)
            round_trip = cast.cast(values.type, safe=True)
            same = values.equals(round_trip) and text_leaves(before) == text_leaves(values.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            same = False
        if not same:
            raise JobError(
                f"manifest column {name!r} is {values.type} now, but the output's videos table {output!r} holds it as "
                f"{before} (its first run's type), and its values do not fit that type unchanged; give the column "
                f"{before} values in the manifest, or rename it (a new column starts with its own type)"
            )


def refuse_lacking(output: str, uri: str, table: DeltaTable, columns: Iterable[str]) -> None:
    """JobError naming the columns of vidbatch's that the table lacks (another tool's table)."""
    present = set(table.schema().to_arrow().names)  # the log's schema: no data file is read
    lacking = [column for column in columns if column not in present]
    if lacking:
        raise JobError(
            f"output {output!r}: {uri!r} is a Delta table that vidbatch did not write (it has no {', '.join(lacking)} "
            f"column{'s' if len(lacking) > 1 else ''}); choose another output, or move that table away"
        )


def refuse_bad_target_size(output: str, name: str, table: DeltaTable | None) -> None:
    """JobError when a table's delta.targetFileSize (which sizes the files a commit writes) is no number of
    bytes: refused before any work, not at the commit after all of it."""
    if table is None:
        return
    try:
        table_target_bytes(table)
    except ValueError as exc:
        raise JobError(f"the {name} table of output {output!r} cannot be written: {exc}") from exc


def refuse_append_only(output: str, name: str, table: DeltaTable | None) -> None:
    """JobError when another tool made a table append-only: a run replaces the rows of changed
    videos, so its commit would fail after all its work, every night, leaving clips behind."""
    configuration = (table.metadata().configuration or {}) if table is not None else {}
    if configuration.get("delta.appendOnly", "false").lower() == "true":
        raise JobError(
            f"the {name} table of output {output!r} is append-only (delta.appendOnly=true), and a run replaces the rows "
            "of videos that changed; set delta.appendOnly to false (e.g. deltalake's "
            "DeltaTable(...).alter.set_table_properties) or give the job an output of its own"
        )
