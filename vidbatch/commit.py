"""Publish a run: the clips and videos Delta tables, and `_runs/<run_id>/summary.json`.

The videos table changes in one Delta commit per run: it is the run's record of completion.
Clip rows count only when their (video_id, run_id) is a videos row's, so the clips a run
adds before that commit, and the ones it replaces after it, are never seen by such a reader.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Iterator
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from deltalake import CommitProperties, DeltaTable

from vidbatch.config import StorageConfig
from vidbatch.delta_files import PreparedCommit, Rewritten, RowFilter, create, fits, plain_files, prepare
from vidbatch.errors import JobError
from vidbatch.parquet_stream import open_parquet, read_batches
from vidbatch.storage import delta_storage_options, filesystem, is_local, join_uri
from vidbatch.storage_failures import explain_failure
from vidbatch.uri_policy import redact_uris_in_record

_OP = "_vidbatch_op"  # source-only column telling the merge which rows are tombstones


def check_writable(output: str, run_id: str, storage: StorageConfig, started: dict[str, Any]) -> None:
    """Write `_runs/<run_id>/started.json` before any decoding: an unwritable output fails fast."""
    uri = join_uri(output, "_runs", run_id, "started.json")
    try:
        _write_json(uri, started, storage)
    except Exception as exc:
        raise JobError(
            f"output {output!r} cannot be written ({explain_failure(exc)}); fix its permissions or path"
        ) from exc


def commit_tables(
    output: str,
    spill_dir: Path,
    *,
    run_id: str,
    replace_ids: set[str],
    storage: StorageConfig,
    metadata: dict[str, str],
    stale_clips: Iterable[tuple[str, str]],
    clip_video_ids: AbstractSet[str],
    videos_version: int | None,
    refreshed_ids: Iterable[str] = (),
    void_clips: AbstractSet[str] = frozenset(),
) -> Committed:
    """Apply the run to both tables, in three steps (each one Delta commit, skipped when empty):

    1. clips: add this run's clips, and delete `stale_clips`, the (video_id, run_id) pairs no
       videos row refers to (left by a run that died between its commits). The clips of the
       videos being replaced stay: until step 2 lands they belong to the last complete run.
    2. videos: delete the rows of `replace_ids` (changed, retried, removed and refused videos)
       and add this run's rows, in one merge. The run is complete here.
    3. clips: delete the clips of `replace_ids` that this run did not write (of the videos in
       `clip_video_ids`, those with clip rows before the run: no other video has any to delete).

    `videos_version` is the version of the videos table the run planned against (None: there
    was none). If another run has committed since, nothing is committed and JobError says so:
    this run's decisions (what is new, what to delete) were made against a state that is gone,
    and committing them would leave that run's clips without a videos row.

    `refreshed_ids` are kept videos whose row is rewritten in step 2 with new carried-through
    manifest columns but the same run_id: their clips stay theirs and are not touched.

    `void_clips` are videos whose clips in the spill are not to be committed (they failed after
    some clips were spilled): left out as the spill is read.

    A crash at any point leaves every videos row with exactly its own clips; the leftovers
    of dead runs are stale pairs that the next run to complete deletes.

    When both tables exist (and the videos rows bring no new column), the files of all three
    steps are written before the first commit, and the commits land back to back
    (`_commit_prepared`, vidbatch.delta_files): a reader of the clips alone sees a replaced video's
    clips of two runs for milliseconds, not for the time of two merges. The stale pairs then go in
    step 3 (so runs that each die before it leave theirs until one completes).

    Returns the tables' versions after the run, and what its commits rewrote of each table.
    """
    clips_uri, videos_uri = join_uri(output, "clips"), join_uri(output, "videos")
    stale = sorted(set(stale_clips))
    clips_without = _of_videos(void_clips)
    clips_spilled = _spilled_rows(spill_dir / "clips.parquet")
    with _step_failure(output, _NOTHING_COMMITTED):  # the store down before the first commit: one line, no traceback
        if replace_ids or stale or clips_spilled or _spilled_rows(spill_dir / "videos.parquet"):
            _check_no_run_committed_since(output, videos_uri, videos_version, storage)
        tables = _prepared_tables(clips_uri, videos_uri, spill_dir / "videos.parquet", storage)
    commit = CommitProperties(custom_metadata={"vidbatch.run_id": run_id, **metadata})
    tidy = CommitProperties(custom_metadata={"vidbatch.run_id": run_id, "vidbatch.step": "superseded clips removed"})
    rewritten = {"clips": Rewritten(), "videos": Rewritten()}
    for _attempt in range(_PREPARE_ATTEMPTS):
        if tables is None:
            break
        try:
            rewritten = _commit_prepared(
                output,
                spill_dir,
                tables,
                run_id=run_id,
                storage=storage,
                replaced=replace_ids | set(refreshed_ids),
                had_clips={video_id for video_id in replace_ids if video_id in clip_video_ids},
                stale=stale,
                commits=(commit, tidy),
                clips_added=bool(clips_spilled),
                clips_without=clips_without,
            )
            return Committed(_versions(output, clips_uri, videos_uri, storage), rewritten)
        except _TablesMoved as moved:
            versions = f"{moved.table} table at version {moved.read_version} then, {moved.read_version + len(moved.commits)} now"
            _refuse_other_runs(output, moved.commits, during=f"writing its files ({versions})")
            # Maintenance (a compaction, z-order, a delete by hand) landed while this run wrote its files,
            # which were prepared against the files it replaced: prepare them again against it. The
            # files written for the first try are in no commit (vacuum removes them).
            with _step_failure(output, _NOTHING_COMMITTED):
                tables = _prepared_tables(clips_uri, videos_uri, spill_dir / "videos.parquet", storage)
    else:
        raise JobError(
            f"the tables of output {output!r} changed each time this run had written its files ({_PREPARE_ATTEMPTS} "
            "tries): another writer is busy with them; nothing of this run was committed. Run it again once that "
            "writer is done"
        )
    # The store can fail after a commit landed, before its answer arrives: a step that adds clips
    # cannot say for sure that none were committed.
    first = _CLIPS_MAYBE_COMMITTED if clips_spilled or stale else _NOTHING_COMMITTED
    with _step_failure(output, first):
        rewritten["clips"] += _apply(
            clips_uri,
            spill_dir / "clips.parquet",
            [_Tombstone(v, r, _DELETE_RUN) for v, r in stale],
            commit,
            storage,
            without=clips_without,
        )
    _fault_hook("after-clips-commit")
    replaced = sorted(replace_ids | set(refreshed_ids))
    left = (
        "this run's clips were committed but not its videos rows, so the output still holds the last complete run; "
        "the next run removes those clips and does this run's work again"
        if clips_spilled or stale
        else _NOTHING_COMMITTED
    )
    with _step_failure(output, left):
        paired = _naming_clips_version(commit, clips_uri, storage)
        tombstones = [_Tombstone(v, None, _DELETE_ALL) for v in replaced]
        rewritten["videos"] += _apply(videos_uri, spill_dir / "videos.parquet", tombstones, paired, storage)
    _fault_hook("after-videos-commit")
    had_clips = sorted(video_id for video_id in replace_ids if video_id in clip_video_ids)
    with _step_failure(output, "this run is committed; the clips it replaced are left and the next run removes them"):
        superseded = [_Tombstone(v, run_id, _DELETE_OTHER_RUNS) for v in had_clips]
        rewritten["clips"] += _apply(clips_uri, None, superseded, tidy, storage)
    return Committed(_versions(output, clips_uri, videos_uri, storage), rewritten)


@dataclass(frozen=True)
class Committed:
    """A run's commits: the tables' versions after them, and the data files they rewrote per table
    (copy-on-write: each old file that held a replaced row, written again without it)."""

    versions: dict[str, int]
    rewritten: dict[str, Rewritten]

    def summary(self) -> dict[str, dict[str, int]]:
        """summary.json's keys, each per table: what an operator watches grow night after night."""
        tables = sorted(self.rewritten)
        return {
            "rewritten_files": {name: self.rewritten[name].files for name in tables},
            "rewritten_bytes": {name: self.rewritten[name].bytes for name in tables},
            "rewritten_rows_kept": {name: self.rewritten[name].rows_kept for name in tables},
        }


_NOTHING_COMMITTED = "nothing of this run was committed; run it again once the output can be written"
_CLIPS_MAYBE_COMMITTED = (
    "its videos rows were not committed, so the output still holds the last complete run (clips this run may have "
    "added before the failure are removed by the next run); run it again once the output can be written"
)
# How often a run writes its files again when other writers' commits keep landing meanwhile.
_PREPARE_ATTEMPTS = 3


class _TablesMoved(Exception):
    """A table got commits after the snapshot a prepared commit was written against."""

    def __init__(self, table: str, read_version: int, commits: list[dict[str, Any]]) -> None:
        super().__init__(f"{table}: {len(commits)} commits since version {read_version}")
        self.table, self.read_version, self.commits = table, read_version, commits


def _versions(output: str, clips_uri: str, videos_uri: str, storage: StorageConfig) -> dict[str, int]:
    with _step_failure(output, "this run is committed, but its summary could not be written; the next run sees its rows"):
        return {
            name: int(DeltaTable(uri, storage_options=delta_storage_options(uri, storage)).version())
            for name, uri in (("clips", clips_uri), ("videos", videos_uri))
        }


def _prepared_tables(
    clips_uri: str, videos_uri: str, videos_spill: Path, storage: StorageConfig
) -> tuple[DeltaTable, DeltaTable] | None:
    """Both tables, when this run's commits can be prepared as files (delta_files); None when a table
    is still to be created or the videos rows bring new manifest columns (a merge evolves the schema)."""
    opened = []
    for uri in (clips_uri, videos_uri):
        options = delta_storage_options(uri, storage)
        if not DeltaTable.is_deltatable(uri, storage_options=options):
            return None
        opened.append(DeltaTable(uri, storage_options=options))
    clips, videos = opened
    if not (plain_files(clips) and plain_files(videos)):
        return None  # another tool turned on a feature whose files cannot be rewritten by reading them
    if videos_spill.is_file() and not fits(videos, open_parquet(videos_spill).schema_arrow):
        return None
    return clips, videos


def _commit_prepared(
    output: str,
    spill_dir: Path,
    tables: tuple[DeltaTable, DeltaTable],
    *,
    run_id: str,
    storage: StorageConfig,
    replaced: set[str],
    had_clips: set[str],
    stale: list[tuple[str, str]],
    commits: tuple[CommitProperties, CommitProperties],
    clips_added: bool,
    clips_without: RowFilter | None = None,
) -> dict[str, Rewritten]:
    """The three steps of `commit_tables`, their files written first and their commits landed back to
    back; the old clips of replaced videos and the stale pairs go in the third commit. Returns what the
    commits that landed rewrote, per table."""
    clips_table, videos_table = tables
    clips_uri, videos_uri = join_uri(output, "clips"), join_uri(output, "videos")
    commit, tidy = commits
    superseded = [_Tombstone(video, run_id, _DELETE_OTHER_RUNS) for video in had_clips]
    superseded += [_Tombstone(video, run, _DELETE_RUN) for video, run in stale]

    with _step_failure(output, "nothing of this run was committed; run it again once the output can be written"):
        clips_spill = spill_dir / "clips.parquet"
        videos_spill = spill_dir / "videos.parquet"
        add_clips = prepare(
            clips_table,
            clips_uri,
            storage,
            add=open_parquet(clips_spill) if clips_spill.is_file() else None,
            add_without=clips_without,
        )

        def prepare_videos(table: DeltaTable) -> PreparedCommit:
            return prepare(
                table,
                videos_uri,
                storage,
                add=open_parquet(videos_spill) if videos_spill.is_file() else None,
                drop=_tombstoned([_Tombstone(video, None, _DELETE_ALL) for video in replaced]),
                candidates=replaced,
            )

        videos = prepare_videos(videos_table)
        tidy_clips = prepare(
            clips_table, clips_uri, storage, drop=_tombstoned(superseded), candidates={t.video_id for t in superseded}
        )
        _fault_hook("files-written")
        # Writing the files can take long (every file that holds a replaced video is rewritten), and the
        # commits below only add and remove files: a commit that landed meanwhile (a compaction rewrote
        # the same rows, another run) would be undone or doubled. Checked again here, milliseconds before.
        clips_read = clips_table.version()
        for name, uri, read in (("clips", clips_uri, clips_read), ("videos", videos_uri, videos_table.version())):
            if landed := _commits_since(uri, storage, read):
                raise _TablesMoved(name, read, landed)
        add_clips.commit(commit)
    _fault_hook("after-clips-commit")
    left = (
        "this run's clips were committed but not its videos rows, so the output still holds the last complete run; "
        "the next run removes those clips and does this run's work again"
        if clips_added
        else "nothing of this run was committed; run it again once the output can be written"
    )
    with _step_failure(output, left):
        # Checked again for the videos commit too: the clips commit's log write lies between.
        for _attempt in range(_PREPARE_ATTEMPTS):
            read = videos.table.version()
            if not (landed := _commits_since(videos_uri, storage, read)):
                break
            _refuse_other_runs(
                output, landed, during=f"committing (videos table at version {read} then, {read + len(landed)} now)", left=left
            )
            videos = prepare_videos(DeltaTable(videos_uri, storage_options=delta_storage_options(videos_uri, storage)))
        else:
            raise JobError(f"the videos table of output {output!r} kept changing while this run committed; {left}")
        videos.commit(_naming_clips_version(commit, clips_uri, storage))
    _fault_hook("after-videos-commit")
    rewritten = {"clips": Rewritten(), "videos": videos.rewritten}  # add_clips only adds files
    with _step_failure(output, "this run is committed; the clips it replaced are left and the next run removes them"):
        # Only this run's own clips commit may have landed since the tidy files were prepared.
        if len(_commits_since(clips_uri, storage, clips_read)) <= (0 if add_clips.empty else 1):
            tidy_clips.commit(tidy)
            rewritten["clips"] = tidy_clips.rewritten
    return rewritten


def _naming_clips_version(commit: CommitProperties, clips_uri: str, storage: StorageConfig) -> CommitProperties:
    """The videos commit's properties with `vidbatch.clips_version`: the clips table's version now, after
    this run's clips landed and before the clips it replaced are removed. That version holds every clip
    this videos version's rows refer to (each by its (video_id, run_id)), so a reader can take the two
    tables as of one run; the tables' version numbers themselves drift apart (clips gets up to two
    commits a run, videos one)."""
    options = delta_storage_options(clips_uri, storage)
    if not DeltaTable.is_deltatable(clips_uri, storage_options=options):
        return commit  # no clip was ever written
    version = DeltaTable(clips_uri, storage_options=options).version()
    return CommitProperties(custom_metadata={**(commit.custom_metadata or {}), CLIPS_VERSION_KEY: str(version)})


# The videos commit's metadata key naming the clips table's version that goes with it.
CLIPS_VERSION_KEY = "vidbatch.clips_version"


def _commits_since(uri: str, storage: StorageConfig, version: int) -> list[dict[str, Any]]:
    """The commits of the table at `uri` after `version`, newest first (its history entries)."""
    table = DeltaTable(uri, storage_options=delta_storage_options(uri, storage))
    now = table.version()
    return table.history(limit=now - version) if now > version else []


_OVERLAP_NOTHING_COMMITTED = "nothing of this run was committed; run it again: it only redoes what is still needed"


def _refuse_other_runs(
    output: str, commits: list[dict[str, Any]], *, during: str, left: str = _OVERLAP_NOTHING_COMMITTED
) -> None:
    """JobError when one of `commits` (history entries) is another run's."""
    others = [commit["vidbatch.run_id"] for commit in commits if commit.get("vidbatch.run_id")]
    if others:
        raise JobError(
            f"another run ({others[0]}) committed to {output!r} while this one was {during}; {left}. Avoid overlapping "
            "runs of one output (e.g. a nightly schedule shorter than a run)."
        )


@contextlib.contextmanager
def _step_failure(output: str, left: str) -> Iterator[None]:
    """A commit step the store refused (the output made read-only or full mid-run, credentials that
    expired during a long run): one line naming the output, the cause and what is left, not a traceback."""
    try:
        yield
    except (JobError, _TablesMoved):
        raise
    except Exception as exc:  # deltalake's DeltaError/OSError, fsspec's errors: the store's answer
        raise JobError(f"committing to output {output!r} failed ({explain_failure(exc)}); {left}") from exc


def _spilled_rows(path: Path) -> int:
    return open_parquet(path).metadata.num_rows if path.is_file() else 0


def _check_no_run_committed_since(output: str, videos_uri: str, planned_at: int | None, storage: StorageConfig) -> None:
    """JobError if a run committed to the videos table after version `planned_at`.

    Commits of other tools (vacuum's, an OPTIMIZE) carry no run_id and change no rows a run
    planned against: they do not count, so vacuum stays safe while a run is going.
    """
    options = delta_storage_options(videos_uri, storage)
    if not DeltaTable.is_deltatable(videos_uri, storage_options=options):
        return
    table = DeltaTable(videos_uri, storage_options=options)
    now = table.version()
    if planned_at is not None and now == planned_at:
        return
    since = table.history(limit=now - planned_at) if planned_at is not None else table.history()
    started_at = "none" if planned_at is None else planned_at
    _refuse_other_runs(output, since, during=f"running (videos table at version {started_at} when this run started, {now} now)")


# What a tombstone deletes among the target rows of its video_id.
_DELETE_ALL = "delete"  # every row
_DELETE_RUN = "delete_run"  # the rows written by its run_id
_DELETE_OTHER_RUNS = "delete_other_runs"  # the rows not written by its run_id


@dataclass(frozen=True)
class _Tombstone:
    video_id: str
    run_id: str | None
    op: str


def _apply(
    table_uri: str,
    spilled_path: Path | None,
    tombstones: list[_Tombstone],
    commit: CommitProperties,
    storage: StorageConfig,
    *,
    without: RowFilter | None = None,
) -> Rewritten:
    """One commit: insert the spilled rows and delete what the tombstones name (nothing to do: no commit).
    Returns the data files it rewrote.

    The rows' files are written streamed (vidbatch.delta_files) whenever the table's files can be
    written directly: a first run's tables are created that way, and the later steps add and rewrite
    files. A merge is left for rows that bring a new column or type (it evolves the schema) and for
    tables another tool gave features whose files cannot be rewritten by reading them.
    """
    options = delta_storage_options(table_uri, storage)
    spilled = open_parquet(spilled_path) if spilled_path is not None else None
    if not DeltaTable.is_deltatable(table_uri, storage_options=options):
        if spilled is not None:  # the first run: nothing to delete yet
            create(table_uri, storage, spilled, commit, without=without)
        return Rewritten()
    if (spilled is None or not spilled.metadata.num_rows) and not tombstones:
        return Rewritten()
    table = DeltaTable(table_uri, storage_options=options)
    if plain_files(table) and (spilled is None or fits(table, spilled.schema_arrow)):
        candidates = {tombstone.video_id for tombstone in tombstones}
        prepared = prepare(
            table, table_uri, storage, add=spilled, drop=_tombstoned(tombstones), candidates=candidates, add_without=without
        )
        prepared.commit(commit)
        return prepared.rewritten
    return _merge(table, spilled, tombstones, commit, without=without)


def _of_videos(video_ids: AbstractSet[str]) -> RowFilter | None:
    """The rows of these videos, as a filter over a spill's or a data file's rows (None: no videos)."""
    if not video_ids:
        return None
    wanted = pa.array(sorted(video_ids), pa.string())
    return lambda rows: pc.is_in(rows.column("video_id"), value_set=wanted)


def _tombstoned(tombstones: list[_Tombstone]) -> RowFilter:
    """The rows the tombstones delete, as a filter over a data file's rows: the merge's predicate
    (`_merge`), for files written directly."""
    whole = _strings(t.video_id for t in tombstones if t.op == _DELETE_ALL)
    of_run = _strings(f"{t.video_id}\0{t.run_id}" for t in tombstones if t.op == _DELETE_RUN)
    others_of = _strings(t.video_id for t in tombstones if t.op == _DELETE_OTHER_RUNS)
    kept_runs = _strings(f"{t.video_id}\0{t.run_id}" for t in tombstones if t.op == _DELETE_OTHER_RUNS)

    def marks(rows: pa.Table) -> pa.Array:
        video = rows.column("video_id")
        key = pc.binary_join_element_wise(video, pc.fill_null(rows.column("run_id"), ""), "\0")
        other_run = pc.and_(pc.is_in(video, value_set=others_of), pc.invert(pc.is_in(key, value_set=kept_runs)))
        return pc.or_(pc.or_(pc.is_in(video, value_set=whole), pc.is_in(key, value_set=of_run)), other_run)

    return marks


def _strings(values: Iterable[str]) -> pa.Array:
    return pa.array(sorted(set(values)), pa.string())


def _fault_hook(point: str) -> None:
    """Test-only: VIDBATCH_FAULT=<point> kills the process there, as a crash would;
    VIDBATCH_FAULT=sigint:<point> sends it Ctrl-C's signal there."""
    fault = os.environ.get("VIDBATCH_FAULT")
    if fault == point:
        os._exit(137)
    if fault == f"sigint:{point}":
        import signal

        os.kill(os.getpid(), signal.SIGINT)


def _merge(
    table: DeltaTable,
    spilled: pq.ParquetFile | None,
    tombstones: list[_Tombstone],
    commit: CommitProperties,
    *,
    without: RowFilter | None = None,
) -> Rewritten:
    """One merge = one commit: tombstones delete old rows, inserts never match anything. Returns the
    files it rewrote: the files of the table before it that it removed (its metrics give no bytes).

    Each target row matches at most one tombstone (one per video_id, or per (video_id, run_id)).
    """
    before = _file_sizes(table)
    schema = table.schema().to_arrow() if spilled is None else spilled.schema_arrow
    schema = pa.schema(schema).append(pa.field(_OP, pa.string()))
    names = [name for name in schema.names if name != _OP]

    def batches() -> Iterator[pa.RecordBatch]:
        if spilled is not None:
            for batch in read_batches(spilled):
                if without is not None:
                    batch = batch.filter(pc.invert(pc.fill_null(without(pa.Table.from_batches([batch])), False)))
                yield batch.append_column(_OP, pa.array(["insert"] * batch.num_rows, pa.string()))
        for start in range(0, len(tombstones), 4096):
            chunk = tombstones[start : start + 4096]
            columns = {name: pa.nulls(len(chunk), schema.field(name).type) for name in schema.names}
            columns["video_id"] = pa.array([t.video_id for t in chunk], pa.string())
            columns["run_id"] = pa.array([t.run_id for t in chunk], pa.string())
            columns[_OP] = pa.array([t.op for t in chunk], pa.string())
            yield pa.RecordBatch.from_pydict(columns, schema=schema)

    deletes = (
        f"source.{_OP} = '{_DELETE_ALL}'"
        f" OR (source.{_OP} = '{_DELETE_RUN}' AND target.run_id = source.run_id)"
        f" OR (source.{_OP} = '{_DELETE_OTHER_RUNS}' AND (target.run_id IS NULL OR target.run_id <> source.run_id))"
    )
    metrics = (
        table.merge(
            pa.RecordBatchReader.from_batches(schema, batches()),
            predicate=f"target.video_id = source.video_id AND ({deletes})",
            source_alias="source",
            target_alias="target",
            merge_schema=True,
            commit_properties=commit,
        )
        .when_matched_delete()
        .when_not_matched_insert(
            updates={name: f'source."{name}"' for name in names},
            predicate=f"source.{_OP} = 'insert'",
        )
        .execute()
    )
    table.update_incremental()
    removed = set(before) - set(_file_sizes(table))
    return Rewritten(
        files=len(removed), bytes=sum(before[path] for path in removed), rows_kept=int(metrics.get("num_target_rows_copied", 0))
    )


def _file_sizes(table: DeltaTable) -> dict[str, int]:
    files = pa.table(table.get_add_actions(flatten=True))
    return dict(zip(files.column("path").to_pylist(), files.column("size_bytes").to_pylist(), strict=True))


def write_summary(output: str, run_id: str, summary: dict[str, Any], storage: StorageConfig) -> str:
    uri = join_uri(output, "_runs", run_id, "summary.json")
    version = summary.get("table_versions", {}).get("videos")
    with _step_failure(output, f"the run is committed (videos table version {version}); only its summary is missing"):
        _write_json(uri, summary, storage)
    return uri


def _write_json(uri: str, payload: dict[str, Any], storage: StorageConfig) -> None:
    fs, path = filesystem(uri, storage)
    if is_local(uri):
        fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    # Object stores have no directories to make; s3fs's makedirs would even create a
    # missing bucket, turning a typo in `output` into a new bucket instead of an error.
    with fs.open(path, "w") as handle:
        # The job's manifest, weights and output are recorded as given: no signature or password with them.
        json.dump(redact_uris_in_record(payload), handle, indent=2, default=str)
