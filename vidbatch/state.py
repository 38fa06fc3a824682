"""Read what the output tables already say: the prior state of every video.

Only small columns are read (no embeddings), so this stays cheap for large tables. What refuses an
output that cannot be used (another tool's table, an append-only one, ...) is vidbatch.output_refusals.
"""

from __future__ import annotations

import json
import posixpath
import threading
from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable

from vidbatch.config import DECODE_REVISION, ModelConfig, StorageConfig
from vidbatch.errors import UNREACHABLE, JobError, VideoError
from vidbatch.incremental import PERMANENT, PriorVideo, settled_failure
from vidbatch.listing import listed_infos
from vidbatch.output_refusals import refuse_append_only, refuse_bad_target_size, refuse_file_output, refuse_lacking
from vidbatch.schema import VIDEOS
from vidbatch.storage import (
    delta_storage_options,
    filesystem,
    is_local,
    join_uri,
    source_fingerprint,
    stat_video,
)
from vidbatch.storage_failures import explain_failure

_Row = TypeVar("_Row")
_Answer = TypeVar("_Answer")

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
    # Runs with ok rows whose started.json records a decode_revision below this vidbatch's, or none
    # (config.DECODE_REVISION): their rows were decoded before fixes this version has.
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
    ok_runs = set(pc.unique(rows.filter(pc.equal(rows.column("status"), "ok")).column("run_id")).drop_null().to_pylist()) - {""}
    records = run_records(output, storage, ok_runs)
    results = results_settings_of(records)
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
                task=model["task"], top_k=model["top_k"], precision=model["precision"]
            ).results_settings()
        except (ValueError, KeyError, TypeError):  # written by another tool: unknown
            continue
    return settings


def _decode_revision(record: dict[str, Any]) -> int:
    """The decode_revision a run recorded; 0 for a run from before it was recorded."""
    value = record.get("decode_revision", 0)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


_PROGRESS_FLOOR_S = 0.1  # however small resources.progress_interval_s is set


def fingerprints(
    rows: Iterable[tuple[str, str]],
    storage: StorageConfig,
    *,
    threads: int = 32,
    settled: dict[str, VideoError] | None = None,
    unreachable_in_a_row: int | None = None,
    progress: Callable[[int], None] | None = None,
    progress_every_s: float = 10.0,
    listable: Collection[str] = (),
) -> dict[str, str | None]:
    """Stat every candidate (in parallel: object stores answer HEADs slowly but concurrently).

    Candidates in `listable` (videos whose last result was ok) may be answered by their folder's
    listing instead, where many share a folder on an object store (vidbatch.listing).

    `progress` (if given) is called with the number of candidates looked at so far, every
    `progress_every_s` while the stats go on: a million files on S3 take many minutes.

    `settled` (if given) receives the error of each video the stat proved missing or denied:
    its row is known without decoding. When `unreachable_in_a_row` stats in a row found the store
    not answering at all, the rest are not tried and the run is refused: a store that is down
    would cost every file its retries (~40 s on S3) and then a decode that fails the same way.
    """
    lock = threading.Lock()
    in_a_row = 0  # stats in a row whose store did not answer
    said = ""  # the last such stat's message
    gave_up = threading.Event()
    done = 0

    def count(unreachable: VideoError | None, *, files: int = 1) -> None:
        nonlocal in_a_row, said, done
        with lock:
            in_a_row = in_a_row + 1 if unreachable is not None else 0
            said = unreachable.message if unreachable is not None else said
            if unreachable_in_a_row is not None and in_a_row >= unreachable_in_a_row:
                gave_up.set()
            done += files

    # Said on a clock, not as files are answered: a folder's listing (pages of files not wanted) and
    # a store's retries answer nothing for a while, and the log must not look stalled meanwhile.
    finished = threading.Event()
    reported = False
    failed: list[BaseException] = []  # what `progress` raised on the clock's thread, raised here

    def report(say: Callable[[int], None]) -> None:
        nonlocal reported
        while not finished.wait(max(progress_every_s, _PROGRESS_FLOOR_S)):
            with lock:
                looked = done
            try:
                say(looked)
            except BaseException as exc:  # a closed pipe, say: the caller's to handle
                failed.append(exc)
                return
            reported = True

    def one(row: tuple[str, str]) -> tuple[str, str | None]:
        video_id, uri = row
        if gave_up.is_set():
            return video_id, None
        if video_id in listed:  # counted as its folder's listing found it
            return video_id, source_fingerprint(listed[video_id])
        try:
            info, _, _ = stat_video(uri, storage)
        except VideoError as exc:  # still gone, denied, a pipe, a path too long: a settled answer, like a fingerprint
            count(exc if exc.error_type == UNREACHABLE else None)
            if exc.status not in PERMANENT:
                return video_id, None
            if settled is not None:
                settled[video_id] = exc
            return video_id, settled_failure(exc.status)
        except Exception:  # a throttled or failed HEAD: unknown, so the video is decoded again
            count(None)
            return video_id, None
        count(None)
        return video_id, source_fingerprint(info)

    rows = list(rows)
    wanted = set(listable)
    listed: dict[str, dict[str, Any]] = {}
    ticker = None
    if progress is not None:
        ticker = threading.Thread(target=report, args=(progress,), name="vidbatch-planning-progress", daemon=True)
        ticker.start()
    try:
        if wanted:
            listed = listed_infos(
                ((video_id, uri) for video_id, uri in rows if video_id in wanted),
                storage,
                on_found=lambda files: count(None, files=files),
            )
        with ThreadPoolExecutor(max_workers=threads) as pool:
            found = dict(_in_order(pool, one, rows, in_flight=threads * _IN_FLIGHT_PER_THREAD))
    finally:  # an error or a Ctrl-C in the listing or the stats stops the clock too
        finished.set()
        if ticker is not None:
            ticker.join()
    if failed:
        raise failed[0]
    if reported and progress is not None:
        progress(done)  # the last word: all looked at
    if gave_up.is_set():
        raise JobError(
            f"{unreachable_in_a_row} files in a row could not be looked at: {said.split(';')[0]} "
            f"(limits.unreachable_in_a_row={unreachable_in_a_row}). Nothing was run or changed; check the store "
            "(and storage.endpoint_url), then run again"
        )
    return found


# Stats handed to the pool ahead of the ones answered: enough to keep every thread busy.
_IN_FLIGHT_PER_THREAD = 4


def _in_order(
    pool: ThreadPoolExecutor, work: Callable[[_Row], _Answer], rows: Iterable[_Row], *, in_flight: int
) -> Iterator[_Answer]:
    """pool.map, with at most `in_flight` rows handed to the pool at a time. pool.map submits every
    row before the first answer is taken: a Future (with its lock and condition) per file of the
    manifest, ~1.6 KB each, held at once: a million files took ~1.6 GB of the driver's memory."""
    pending: deque[Future[_Answer]] = deque()
    try:
        for row in rows:
            pending.append(pool.submit(work, row))
            if len(pending) >= in_flight:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:  # an error or a Ctrl-C: the rows not started are not stat'ed
        for future in pending:
            future.cancel()


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
