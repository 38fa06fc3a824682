"""`vidbatch history` and `vidbatch vacuum`: the runs of an output, and the clean-up of old table versions."""

from __future__ import annotations

import json
import posixpath
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

from deltalake import DeltaTable

from vidbatch.commit import CLIPS_VERSION_KEY
from vidbatch.config import StorageConfig
from vidbatch.errors import JobError
from vidbatch.state import open_table
from vidbatch.storage import filesystem, is_local, join_uri, s3_endpoint
from vidbatch.storage_failures import explain_failure

# Files younger than this are never vacuumed: a running job's not-yet-committed files
# must survive. Runs longer than a week need a longer retention.
MIN_RETENTION_HOURS = 168

TABLES = ("clips", "videos")


def runs(output: str, storage: StorageConfig, *, last: int | None = None) -> list[dict[str, Any]]:
    """Every finished run of `output`, newest first (the newest `last` of them, when given).

    `last` bounds the reading too, so a library run every night for years lists its recent
    nights without reading every summary and commit: the newest `last` run folders (run ids
    start with their UTC start time) and the newest `last` commits of the log.

    A run that changed the tables is a commit of the videos table, whose metadata says what
    the run did. A run that changed nothing makes no commit (there is nothing to write), so
    its `_runs/<run_id>/summary.json` is its only trace: those runs are listed from there,
    with no table version (`version` and `committed_at` are None). So are committed runs whose
    commit Delta's log clean-up has dropped from the history; they keep their summary's version.
    """
    with _storage_errors(output, storage, "read"):
        table = open_table(output, "videos", storage)
        if table is None:
            raise JobError(f"{output!r} holds no videos table (no run has committed there); check the job's output")
        committed = _committed_runs(table, last)
        summaries = _summaries(output, storage, last)
        unfinished = _unfinished(output, storage, known={e["run_id"] for e in committed} | set(summaries), last=last)
    for entry in committed:
        # The commit records the wall time up to the commit; the run's summary (and what the run
        # printed) the whole run, commit included: the run's own figure is the one to show.
        summary = summaries.get(entry["run_id"]) or {}
        wall = summary.get("wall_time_s")
        if isinstance(wall, (int, float)):
            entry["wall_time_s"] = float(wall)
        if entry["clips_version"] is None:  # committed before commits named it: the summary's (after its tidy)
            entry["clips_version"] = (summary.get("table_versions") or {}).get("clips")
    ids = {entry["run_id"] for entry in committed}
    from_summaries = [_summary_entry(summary, run_id) for run_id, summary in summaries.items() if run_id not in ids]
    newest_first = sorted([*committed, *from_summaries, *unfinished], key=_time_and_run, reverse=True)
    return newest_first if last is None else newest_first[:last]


def changed_tables(summary: dict[str, Any]) -> bool:
    """Did this run commit? A run writes a videos row for each video it processed or refused
    (`videos`) and deletes or rewrites rows for its other changes; with none of them it makes
    no commit at all (pipeline.run_job: videos 0, every change 0 but `unchanged`), unless it created
    a table (`tables_created`: a first run over an empty manifest)."""
    changes = summary.get("changes") or {}
    if summary.get("tables_created"):
        return True
    return bool(summary.get("videos")) or any(count for kind, count in changes.items() if kind != "unchanged")


def _committed_runs(table: DeltaTable, last: int | None = None) -> list[dict[str, Any]]:
    entries = []
    for commit in _run_commits(table, last):
        run_id = commit.get("vidbatch.run_id")
        if not run_id:  # vacuum's own commits, or a commit some other tool made
            continue
        time = datetime.fromtimestamp(commit["timestamp"] / 1000, timezone.utc).isoformat(timespec="milliseconds")
        entries.append(
            {
                "run_id": run_id,
                "tidied_only": False,
                "time": time,
                "version": commit.get("version"),
                "clips_version": _int_or_none(commit.get(CLIPS_VERSION_KEY)),
                "committed_at": time,
                "statuses": _json(commit.get("vidbatch.statuses")),
                "changes": _json(commit.get("vidbatch.changes")),
                "clips": int(commit.get("vidbatch.clips") or 0),
                "wall_time_s": float(commit.get("vidbatch.wall_time_s") or 0.0),
                "model_id": commit.get("vidbatch.model_id"),
            }
        )
    return entries


def _run_commits(table: DeltaTable, last: int | None) -> list[dict[str, Any]]:
    """The newest `last` commits that runs made (all with None): other commits (vacuum's, an
    OPTIMIZE) are read past, so they never push a run out of the list."""
    if last is None:
        return table.history()
    limit = last
    while True:
        commits = table.history(limit=limit)
        runs = [commit for commit in commits if commit.get("vidbatch.run_id")]
        if len(runs) >= last or len(commits) < limit:
            return runs
        limit *= 4


def _summaries(output: str, storage: StorageConfig, last: int | None = None) -> dict[str, dict[str, Any]]:
    """Every finished run's summary.json, by run_id (a run without one did not finish); with
    `last`, those of the newest `last` run ids."""
    fs, runs_root = filesystem(join_uri(output, "_runs"), storage)
    fs.invalidate_cache(runs_root)  # s3fs keeps listings: a long-lived process must see new runs
    paths = fs.glob(posixpath.join(runs_root, "*", "summary.json"))
    if last is not None:
        paths = sorted(paths, key=_run_id_of, reverse=True)[:last]
    if not paths:
        return {}
    contents = fs.cat(paths)  # one request per file, concurrently on object stores
    summaries = {}
    for path in paths:
        try:
            summary = json.loads(contents[path])
        except ValueError:  # cut short by a crash while it was written: that run did not finish
            continue
        if isinstance(summary, dict):
            summaries[_run_id_of(path)] = summary
    return summaries


def _unfinished(output: str, storage: StorageConfig, *, known: set[str], last: int | None) -> list[dict[str, Any]]:
    """Runs that started (their started.json) and neither committed nor wrote a summary: stopped,
    killed, refused at their commit (another run committed meanwhile, the store failed), or still
    running. Without them a night that failed left no line in `history`."""
    fs, runs_root = filesystem(join_uri(output, "_runs"), storage)
    paths = {_run_id_of(path): path for path in fs.glob(posixpath.join(runs_root, "*", "started.json"))}
    ids = sorted((run_id for run_id in paths if run_id not in known), reverse=True)[:last]
    if not ids:
        return []
    contents = fs.cat([paths[run_id] for run_id in ids], on_error="omit")
    entries = []
    for run_id in ids:
        try:
            started = json.loads(contents.get(paths[run_id], b"{}"))
        except ValueError:
            started = {}
        started = started if isinstance(started, dict) else {}
        entries.append(
            _entry(run_id, unfinished=True, time=started.get("started_at"), model_id=started.get("model_id"))
        )
    return entries


def _entry(run_id: str, **known: Any) -> dict[str, Any]:
    """A history entry: what is `known` of the run, the rest as for a run that wrote nothing."""
    return {
        "run_id": run_id,
        "tidied_only": False,
        "time": None,
        "version": None,
        "clips_version": None,
        "committed_at": None,
        "statuses": None,
        "changes": None,
        "clips": 0,
        "wall_time_s": 0.0,
        "model_id": None,
        **known,
    }


def _run_id_of(summary_path: str) -> str:
    return posixpath.basename(posixpath.dirname(summary_path))


def tidied_only(summary: dict[str, Any]) -> bool:
    """A run whose only change was removing the clips a killed run left: it committed to the clips
    table alone, so the videos table's version it reports is another run's."""
    changes = summary.get("changes") or {}
    others = any(count for kind, count in changes.items() if kind not in ("unchanged", "leftovers_removed"))
    return bool(changes.get("leftovers_removed")) and not summary.get("videos") and not others


def _summary_entry(summary: dict[str, Any], run_id: str) -> dict[str, Any]:
    # A summary that changed the tables has no commit left in the log (expired and cleaned up):
    # the version its run left the videos table at still says which commit it was.
    tidy = tidied_only(summary)
    versions = summary.get("table_versions") or {}
    version = versions.get("videos") if changed_tables(summary) and not tidy else None
    return {
        "tidied_only": tidy,
        "run_id": summary.get("run_id") or run_id,
        "time": summary.get("finished_at"),
        "version": version,
        "clips_version": versions.get("clips") if version is not None else None,
        "committed_at": None,
        "statuses": summary.get("statuses"),
        "changes": summary.get("changes"),
        "clips": int(summary.get("clips") or 0),
        "wall_time_s": float(summary.get("wall_time_s") or 0.0),
        "model_id": summary.get("model_id"),
    }


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _time_and_run(entry: dict[str, Any]) -> tuple[datetime, str]:
    """Commit times and summaries' finished_at have milliseconds (older summaries whole seconds:
    within a second the run_id, which starts with the run's start time, breaks the tie)."""
    try:
        time = datetime.fromisoformat(entry["time"])
    except (TypeError, ValueError):  # a summary without its time: listed last rather than not at all
        time = datetime.min.replace(tzinfo=timezone.utc)
    return time, entry["run_id"]


def format_runs(entries: list[dict[str, Any]]) -> str:
    """One line per run. `version` is the videos table's version the run committed, `clips_v` the clips
    table's version that goes with it (the two numbers drift apart); `chg` counts changed files only;
    `retry` the failures redone (e.g. --retry-failed); `upd` the kept rows rewritten, not decoded, for
    changed manifest columns (a relabelling night's only change)."""
    lines = [
        f"{'time (UTC)':29} {'run_id':24} {'version':>10} {'clips_v':>7} {'new':>5} {'chg':>5} {'retry':>5} {'rm':>5} "
        f"{'same':>6} {'upd':>5} {'clips':>7} {'wall_s':>8}  statuses"
    ]
    for e in entries:
        c = e["changes"] or {}
        statuses = ", ".join(f"{k} {v}" for k, v in (e["statuses"] or {}).items()) or "-"
        version = str(e["version"]) if e["version"] is not None else "tidy" if e.get("tidied_only") else "no change"
        if e.get("unfinished"):
            version = "unfinished"
            statuses = "did not finish (no summary): stopped, killed, refused at its commit, or still running"
        if e.get("tidied_only"):
            count = c.get("leftovers_removed", 0)
            statuses = f"removed the clips of {count} video{'' if count == 1 else 's'} killed runs left"
        lines.append(
            f"{e['time'] or '?':29} {e['run_id']:24} {version:>10} {_or_dash(e.get('clips_version')):>7} "
            f"{c.get('new', 0):>5} {c.get('changed', 0):>5} "
            f"{c.get('retried', 0):>5} {c.get('removed', 0):>5} {c.get('unchanged', 0):>6} {c.get('refreshed', 0):>5} "
            f"{e['clips']:>7} "
            f"{e['wall_time_s']:>8.1f}  {statuses}"
        )
    return "\n".join(lines)


def _or_dash(value: int | None) -> str:
    return "-" if value is None else str(value)


def vacuum(output: str, storage: StorageConfig, *, retention_hours: int, dry_run: bool) -> dict[str, list[str]]:
    """Delete data files no longer in the current snapshot (or never committed) and older than the retention.

    Returns, per table, the files deleted (or, with dry_run, that would be), relative to
    the table's root. Safe while a run is going: its files are not referenced yet but are
    younger than the retention, so they stay.
    """
    if retention_hours < MIN_RETENTION_HOURS:
        raise JobError(
            f"--retention-hours={retention_hours} is below {MIN_RETENTION_HOURS}: files of a run still in progress could be "
            "deleted; older table versions also become unreadable"
        )
    with _storage_errors(output, storage, "vacuumed"):
        tables = {name: table for name in TABLES if (table := open_table(output, name, storage)) is not None}
        if not tables:
            raise JobError(f"{output!r} holds no clips or videos table (no run has committed there); check the job's output")
        return {
            name: _vacuum_table(table, join_uri(output, name), storage, retention_hours=retention_hours, dry_run=dry_run)
            for name, table in tables.items()
        }


def _vacuum_table(table: DeltaTable, uri: str, storage: StorageConfig, *, retention_hours: int, dry_run: bool) -> list[str]:
    """The files of this table that vacuum deletes (or would), counting only files that still exist.

    Delta keeps a removed file's tombstone in the log after vacuum has deleted the file, and
    vacuum lists the tombstone again every time: without the check, each repeated vacuum
    would claim to delete the same files again.
    """
    present = _file_names(uri, storage)
    candidates = _existing(_delta_vacuum(table, retention_hours, dry_run=True), present)
    if dry_run or not candidates:  # nothing to delete: no vacuum commits to add to the table's log
        return candidates
    return _existing(_delta_vacuum(table, retention_hours, dry_run=False), present)


def _delta_vacuum(table: DeltaTable, retention_hours: int, *, dry_run: bool) -> list[str]:
    # The retention was checked against MIN_RETENTION_HOURS, which may differ from the table's own setting.
    # full: also files no commit ever named (a run killed after writing its files, before committing
    # them), once they are older than the retention, as a running run's files never are.
    return table.vacuum(retention_hours=retention_hours, dry_run=dry_run, enforce_retention_duration=False, full=True)


def _file_names(uri: str, storage: StorageConfig) -> set[str]:
    """The names of the files at the table's root.

    vidbatch's tables are not partitioned, so every data file sits at the root under a
    unique (uuid) name: the name identifies a file whatever form of path deltalake reports
    (relative for a dry run, absolute otherwise), and it is the path relative to the table.
    """
    fs, root = filesystem(uri, storage)
    fs.invalidate_cache(root)  # s3fs keeps listings: the files a moment ago may be gone
    return {posixpath.basename(path) for path in fs.ls(root, detail=False)}


def _existing(listed: list[str], present: set[str]) -> list[str]:
    return sorted(name for name in map(posixpath.basename, listed) if name in present)


@contextmanager
def _storage_errors(output: str, storage: StorageConfig, verb: str) -> Iterator[None]:
    """A failure of the store becomes one line naming the output and what to check, not a traceback."""
    try:
        yield
    except JobError:
        raise
    except Exception as exc:  # deltalake's OSError, s3fs's ClientError, FileNotFoundError, ...
        raise JobError(f"output {output!r} cannot be {verb} ({explain_failure(exc)}); {_what_to_check(output, storage)}") from exc


def _what_to_check(output: str, storage: StorageConfig) -> str:
    if is_local(output):
        return "check the path and its permissions"
    endpoint = s3_endpoint(storage)
    where = f"the endpoint {_without_secrets(endpoint)}" if endpoint else "the endpoint (none set, so AWS's own)"
    return (
        f"check that the bucket exists, {where} (--endpoint-url or AWS_ENDPOINT_URL), "
        "--region, and the credentials in the environment"
    )


def _without_secrets(url: str) -> str:
    """scheme://host:port only: an endpoint URL could carry user info or a query."""
    parts = urlsplit(url)
    if not parts.scheme or not parts.hostname:
        return repr(url)
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # a port that is not a number: the host is what to look at
        port = ""
    return f"{parts.scheme}://{parts.hostname}{port}"


def _json(text: str | None) -> Any:
    return json.loads(text) if text else None
