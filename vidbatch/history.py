"""`vidbatch history` and `vidbatch vacuum`: the runs as the table history records them."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from vidbatch.config import StorageConfig
from vidbatch.errors import JobError
from vidbatch.state import open_table

# Files younger than this are never vacuumed: a running job's not-yet-committed files
# must survive. Runs longer than a week need a longer retention.
MIN_RETENTION_HOURS = 168


def runs(output: str, storage: StorageConfig) -> list[dict[str, Any]]:
    """One entry per committed run, newest first, from the videos table's commit metadata."""
    table = open_table(output, "videos", storage)
    if table is None:
        raise JobError(f"{output!r} holds no videos table (no run has committed there)")
    entries = []
    for commit in table.history():
        run_id = commit.get("vidbatch.run_id")
        if not run_id:
            continue
        entries.append(
            {
                "run_id": run_id,
                "version": commit.get("version"),
                "committed_at": datetime.fromtimestamp(commit["timestamp"] / 1000, timezone.utc).isoformat(timespec="seconds"),
                "statuses": _json(commit.get("vidbatch.statuses")),
                "changes": _json(commit.get("vidbatch.changes")),
                "clips": int(commit.get("vidbatch.clips") or 0),
                "wall_time_s": float(commit.get("vidbatch.wall_time_s") or 0.0),
                "model_id": commit.get("vidbatch.model_id"),
            }
        )
    return entries


def format_runs(entries: list[dict[str, Any]]) -> str:
    lines = [
        f"{'committed_at':25} {'run_id':24} {'new':>5} {'chg':>5} {'rm':>5} {'same':>6} {'clips':>7} {'wall_s':>8}  statuses"
    ]
    for e in entries:
        c = e["changes"] or {}
        statuses = ", ".join(f"{k} {v}" for k, v in (e["statuses"] or {}).items()) or "-"
        lines.append(
            f"{e['committed_at']:25} {e['run_id']:24} {c.get('new', 0):>5} {c.get('changed', 0) + c.get('retried', 0):>5} "
            f"{c.get('removed', 0):>5} {c.get('unchanged', 0):>6} {e['clips']:>7} {e['wall_time_s']:>8.1f}  {statuses}"
        )
    return "\n".join(lines)


def vacuum(output: str, storage: StorageConfig, *, retention_hours: int, dry_run: bool) -> dict[str, list[str]]:
    """Delete data files no longer in the current snapshot and older than the retention.

    Safe while a run is going: its files are not referenced yet but are younger than
    the retention, so they stay.
    """
    if retention_hours < MIN_RETENTION_HOURS:
        raise JobError(
            f"--retention-hours={retention_hours} is below {MIN_RETENTION_HOURS}: files of a run still in progress could be "
            "deleted; older table versions also become unreadable"
        )
    removed: dict[str, list[str]] = {}
    for name in ("clips", "videos"):
        table = open_table(output, name, storage)
        if table is not None:
            removed[name] = table.vacuum(retention_hours=retention_hours, dry_run=dry_run, enforce_retention_duration=False)
    return removed


def _json(text: str | None) -> Any:
    return json.loads(text) if text else None
