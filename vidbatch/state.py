"""Read what the output tables already say: the prior state of every video.

Only small columns are read (no embeddings), so this stays cheap for large tables. What refuses an
output that cannot be used (another tool's table, an append-only one, ...) is vidbatch.output_refusals;
the look at the source files that is compared with these tables, vidbatch.source_fingerprints.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable

from vidbatch.config import DECODE_REVISION, ModelConfig, StorageConfig
from vidbatch.errors import JobError
from vidbatch.incremental import PriorVideo
from vidbatch.output_refusals import refuse_append_only, refuse_bad_target_size, refuse_file_output, refuse_lacking
from vidbatch.schema import VIDEOS
from vidbatch.storage import delta_storage_options, filesystem, is_local, join_uri
from vidbatch.storage_failures import explain_failure

_VIDEO_COLUMNS = [
    "video_id", "uri", "source_fingerprint", "model_id", "sampling_id",
    "status", "error_type", "error_message", "run_id", "num_clips",
]  # fmt: skip


@dataclass(frozen=True)
class PriorState:
    videos: dict[str, PriorVideo]
    # False for the videos whose clips the clips table does not hold exactly as the videos row promises
    # (the rest are absent: consistent.get(video_id, True)).
    consistent: dict[str, bool]
    # (video_id, run_id) of clip rows no videos row refers to: a run died between its commits.
    stale_clips: frozenset[tuple[str, str]] = frozenset()
    clip_video_ids: frozenset[str] = frozenset()  # videos with any clip row
    videos_version: int | None = None  # the videos table's version this state was read at (None: no table)
    videos_schema: pa.Schema | None = None  # the videos table's columns and types (None: no table)
    clips_version: int | None = None  # the clips table's version this state was read at (None: no table)
    # Runs with ok rows whose started.json is gone or unreadable: their task/top_k/precision are unknown.
    unrecorded_runs: frozenset[str] = frozenset()
    # Runs with ok or decode_error rows whose started.json records a decode_revision below this vidbatch's,
    # or none (config.DECODE_REVISION): their rows were decoded before fixes this version has.
    older_decoding_runs: frozenset[str] = frozenset()


# Columns every table vidbatch writes has: a table without them is another tool's.
_OWN_COLUMNS = ("video_id", "run_id")


def open_table(output: str, name: str, storage: StorageConfig) -> DeltaTable | None:
    """The output's `name` table (None before the first commit); JobError when it is not vidbatch's."""
    refuse_file_output(output)
    uri = join_uri(output, name)
    options = delta_storage_options(uri, storage)
    if not DeltaTable.is_deltatable(uri, storage_options=options):
        if DeltaTable.is_deltatable(output, storage_options=delta_storage_options(output, storage)):
            parent, _, last = output.rstrip("/").rpartition("/")
            if last in ("videos", "clips") and parent and _is_vidbatch_table(output, storage):
                # `vidbatch history out/videos`: one of vidbatch's own tables, given for its output
                raise JobError(
                    f"{output!r} is vidbatch's {last} table itself; give the output folder that holds it: {parent!r}"
                )
            # vidbatch's tables would be folders inside another table, whose vacuum deletes files
            # its log does not name: every row written there would be lost at its next vacuum.
            raise JobError(
                f"output {output!r} is itself a Delta table (it has a _delta_log); vidbatch writes its own tables "
                f"inside the output ({name}/ and the others), where that table's vacuum would delete them: "
                "choose an output folder of its own"
            )
        return None
    table = DeltaTable(uri, storage_options=options)
    refuse_lacking(output, uri, table, _OWN_COLUMNS)
    return table


def _is_vidbatch_table(uri: str, storage: StorageConfig) -> bool:
    present = set(DeltaTable(uri, storage_options=delta_storage_options(uri, storage)).schema().to_arrow().names)
    return present.issuperset(_OWN_COLUMNS)


def load_prior(output: str, storage: StorageConfig) -> PriorState:
    """What the output's tables say now; JobError (before any work) when they cannot be read."""
    try:
        return _load_prior(output, storage)
    except JobError:
        raise
    except Exception as exc:  # a missing bucket, an unreachable endpoint, no credentials, ...
        advice = (
            "check the path and its permissions"
            if is_local(output)
            else "check that its bucket exists, storage.endpoint_url and the job's credentials"
        )
        if type(exc).__name__ == "DeltaProtocolError":  # readable, but with a feature deltalake cannot read
            advice = (
                "another tool turned on a Delta table feature the deltalake library cannot read or write (named "
                "above); turn it off there (e.g. deletion vectors: purge them and disable the feature) or give the "
                "job an output of its own"
            )
        raise JobError(f"output {output!r} cannot be read ({explain_failure(exc)}); {advice}") from exc


def _load_prior(output: str, storage: StorageConfig) -> PriorState:
    videos_table = open_table(output, "videos", storage)
    if videos_table is not None:
        refuse_lacking(output, join_uri(output, "videos"), videos_table, _VIDEO_COLUMNS)
    rows = videos_table.to_pyarrow_table(columns=_VIDEO_COLUMNS) if videos_table is not None else _empty(_VIDEO_COLUMNS)
    ok_runs = _runs_with(rows, "ok")
    # The runs of decode_error rows too: a newer decoding reads some files an older one failed on.
    records = run_records(output, storage, ok_runs | _runs_with(rows, "decode_error"))
    results = results_settings_of({run_id: record for run_id, record in records.items() if run_id in ok_runs})
    older = frozenset(run_id for run_id, record in records.items() if _decode_revision(record) < DECODE_REVISION)
    videos = _prior_videos(rows, results)
    keys = rows.select(["video_id", "run_id", "num_clips"])
    del rows
    clips_table = open_table(output, "clips", storage)
    for name, table in (("videos", videos_table), ("clips", clips_table)):
        refuse_append_only(output, name, table)
        refuse_bad_target_size(output, name, table)
    # Counted and compared in Arrow, not in Python objects per clip (a library has tens of millions).
    pairs = ["video_id", "run_id"]
    clips = clips_table.to_pyarrow_table(columns=pairs) if clips_table is not None else _empty(pairs)
    counted = clips.group_by(["video_id", "run_id"]).aggregate([([], "count_all")])
    del clips
    # A videos row counts only the clips of its own run; clips of any other run are leftovers
    # of a run that died between its commits, deleted by the next commit (not a reason to redo).
    own = keys.join(counted, keys=["video_id", "run_id"], join_type="left outer")
    differs = pc.not_equal(pc.fill_null(own.column("count_all"), 0), pc.fill_null(own.column("num_clips"), 0))
    consistent = dict.fromkeys(own.filter(differs).column("video_id").to_pylist(), False)  # the rest: True
    # (Clip rows without a run_id are no run's leftovers: vidbatch never writes them, and its deletes name a run.)
    leftovers = counted.join(keys, keys=["video_id", "run_id"], join_type="left anti").filter(pc.is_valid(pc.field("run_id")))
    stale = frozenset(zip(leftovers.column("video_id").to_pylist(), leftovers.column("run_id").to_pylist(), strict=True))
    has_clips = pc.is_in(keys.column("video_id"), value_set=counted.column("video_id")).to_pylist()
    with_clips = (
        frozenset(video_id for video_id, has in zip(videos, has_clips, strict=True) if has)  # the same string objects
        if len(videos) == len(has_clips)
        else frozenset(pc.unique(counted.column("video_id")).to_pylist())
    )
    rowless = counted.filter(pc.invert(pc.is_in(counted.column("video_id"), value_set=keys.column("video_id"))))
    with_clips |= set(pc.unique(rowless.column("video_id")).to_pylist())  # clips whose video has no row (few)
    return PriorState(
        videos,
        consistent,
        stale,
        with_clips,
        videos_version=videos_table.version() if videos_table is not None else None,
        videos_schema=pa.schema(videos_table.schema().to_arrow()) if videos_table is not None else None,
        clips_version=clips_table.version() if clips_table is not None else None,
        unrecorded_runs=frozenset(ok_runs - set(results)),
        older_decoding_runs=older,
    )


def _runs_with(rows: pa.Table, status: str) -> set[str]:
    """The runs that made the rows of this status."""
    return set(pc.unique(rows.filter(pc.equal(rows.column("status"), status)).column("run_id")).drop_null().to_pylist()) - {""}


def _empty(columns: list[str]) -> pa.Table:
    fields = {"num_clips": pa.int32()}
    return pa.table({name: pa.array([], fields.get(name, pa.string())) for name in columns})


def _prior_videos(rows: pa.Table, results: dict[str, dict[str, Any]]) -> dict[str, PriorVideo]:
    """A PriorVideo per videos row, read a batch at a time. The values most rows share (model_id,
    sampling_id, status, run_id, ...) are one string object each, not one per row: a million rows
    took ~3 KB each in the driver."""
    shared: dict[str, str] = {}

    def one_of(value: str | None) -> str | None:
        return None if value is None else shared.setdefault(value, value)

    videos: dict[str, PriorVideo] = {}
    for batch in rows.to_batches(max_chunksize=65_536):
        for row in batch.to_pylist():
            run_id = one_of(row["run_id"])
            videos[row["video_id"]] = PriorVideo(
                uri=row["uri"],
                fingerprint=row["source_fingerprint"],
                model_id=one_of(row["model_id"]),
                sampling_id=one_of(row["sampling_id"]),
                status=one_of(row["status"]) or "",
                error_type=one_of(row["error_type"]),
                run_id=run_id,
                num_clips=int(row["num_clips"] or 0),
                error_message=one_of(row["error_message"]),
                results=results.get(run_id) if run_id is not None else None,
            )
    return videos


def run_results_settings(output: str, storage: StorageConfig, run_ids: set[str]) -> dict[str, dict[str, Any]]:
    """The model settings beyond model_id (task, top_k, precision) each run ran with, from the
    job it recorded in `_runs/<run_id>/started.json` before it started.

    One small read per run that still has rows, concurrently on object stores. A run whose
    record is gone or unreadable is left out: its rows are then not redone for these settings
    (redoing a whole library on a guess would be worse).
    """
    return results_settings_of(run_records(output, storage, run_ids))


def run_records(output: str, storage: StorageConfig, run_ids: set[str]) -> dict[str, dict[str, Any]]:
    """Each run's `_runs/<run_id>/started.json`, read; a run whose record is gone or unreadable is left out."""
    if not run_ids:
        return {}
    fs, runs_root = filesystem(join_uri(output, "_runs"), storage)
    paths = {posixpath.join(runs_root, run_id, "started.json"): run_id for run_id in sorted(run_ids)}
    contents = fs.cat(list(paths), on_error="omit")
    records = {}
    for path, text in contents.items():
        try:
            record = json.loads(text)
        except ValueError:  # cut short
            continue
        if isinstance(record, dict):
            records[paths[path]] = record
    return records


def results_settings_of(records: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    settings = {}
    for run_id, record in records.items():
        try:
            model = record["job"]["model"]
            settings[run_id] = ModelConfig(
                # a run from before `resize` existed resized exactly
                task=model["task"], top_k=model["top_k"], precision=model["precision"], resize=model.get("resize", "exact")
            ).results_settings()
        except (ValueError, KeyError, TypeError):  # written by another tool: unknown
            continue
    return settings


def _decode_revision(record: dict[str, Any]) -> int:
    """The decode_revision a run recorded; 0 for a run from before it was recorded."""
    value = record.get("decode_revision", 0)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def refreshed_rows(
    output: str,
    storage: StorageConfig,
    *,
    kept: set[str],
    extras_by_id: dict[str, dict[str, object]],
    extra_columns: tuple[str, ...],
) -> list[dict[str, Any]]:
    """The videos rows of `kept` whose carried-through manifest columns changed, with today's values.

    A video that is not decoded again keeps its row (its results, run_id and processed_at), but
    the columns the manifest carries through (a training `label`, a title) are the manifest's:
    a relabelled video must not keep its old label until its file changes. Columns the table
    has from earlier manifests and today's manifest lacks become null. Rows that are the same
    are not returned, so an unchanged library rewrites nothing.
    """
    table = open_table(output, "videos", storage)
    if table is None or not kept:
        return []
    dataset = table.to_pyarrow_dataset()
    earlier = tuple(name for name in dataset.schema.names if name not in VIDEOS.names)
    compared = tuple(dict.fromkeys((*earlier, *extra_columns)))
    if not compared:
        return []
    small = table.to_pyarrow_table(columns=["video_id", *earlier])  # no embeddings: cheap for any table
    prior = small.filter(pc.is_in(small.column("video_id"), value_set=pa.array(sorted(kept), pa.string()))).to_pylist()
    changed = {
        row["video_id"]
        for row in prior
        if any(not _same(row.get(name), extras_by_id.get(row["video_id"], {}).get(name)) for name in compared)
    }
    rows = _rows_of(dataset, changed) if changed else []
    for row in rows:
        row.update({name: extras_by_id.get(row["video_id"], {}).get(name) for name in extra_columns})
    return rows


def _rows_of(dataset: Any, video_ids: set[str]) -> list[dict[str, Any]]:
    """The full videos rows of `video_ids`, reading whole rows only from the files that hold them.

    File by file rather than with a dataset filter: files written by deltalake's merge store
    strings as string_view, and pyarrow's statistics pruning cannot compare those to a string.
    """
    wanted = pa.array(sorted(video_ids), pa.string())
    rows: list[dict[str, Any]] = []
    for fragment in dataset.get_fragments():
        ids = fragment.to_table(schema=dataset.schema, columns=["video_id"]).column("video_id")
        mask = pc.is_in(ids, value_set=wanted)
        if pc.any(mask).as_py():
            rows += fragment.to_table(schema=dataset.schema, columns=VIDEOS.names).filter(mask).to_pylist()
    return rows


def _same(a: object, b: object) -> bool:
    # NaN is "the same value" here: a float column holding NaN must not rewrite its row every night.
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return True
    return a == b
