"""The lines `vidbatch run` prints at its end: what a person (or a nightly job's log) reads of the
summary.json the run wrote."""

from __future__ import annotations

from vidbatch.history import changed_tables
from vidbatch.run_summary import rewritten_line


def _headline(summary: dict) -> str:
    versions = summary.get("table_versions") or {}
    created = summary.get("tables_created") or []
    if created and not changed_tables({**summary, "tables_created": []}):  # an empty manifest's first run: it only made them
        at = ", ".join(f"{name} at version {versions[name]}" for name in created if name in versions)
        return (
            f"run {summary['run_id']} created the {' and '.join(created)} table{'s' if len(created) > 1 else ''}, "
            f"empty ({summary['model_id']}): the manifest had no video to process ({at})"
        )
    if changed_tables(summary):
        return f"run {summary['run_id']} committed ({summary['model_id']})"
    at = f" (videos still at version {versions['videos']})" if "videos" in versions else ""
    return (
        f"run {summary['run_id']} changed nothing ({summary['model_id']}): no video was new, changed, retried or "
        f"removed, so nothing was committed and the tables were left as they were{at}"
    )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _table_line(summary: dict) -> list[str]:
    statuses = summary.get("table_statuses")
    if statuses is None:
        return []
    parts = ", ".join(f"{status}: {count}" for status, count in statuses.items()) or "empty"
    return [f"  the videos table now: {_count(sum(statuses.values()), 'row')} ({parts})"]


def _refreshed(changes: dict) -> str:
    refreshed = changes.get("refreshed", 0)
    # not "of them": rows refused as before (not among the unchanged) are refreshed too
    return f"; {_count(refreshed, 'kept row')} with changed manifest columns rewritten, not decoded" if refreshed else ""


def summary_text(summary: dict, uri: str) -> str:
    statuses = ", ".join(f"{k}: {v}" for k, v in summary["statuses"].items()) or "none"
    changes = summary.get("changes") or {}
    lines = [
        _headline(summary),
        f"  videos written {summary['videos']} ({statuses}); duplicates skipped {summary['duplicate_ids']}",
        f"  new {changes.get('new', 0)}, changed {changes.get('changed', 0)}, retried {changes.get('retried', 0)}, "
        f"removed {changes.get('removed', 0)}, unchanged {changes.get('unchanged', 0)}{_refreshed(changes)}",
        f"  clips {summary['clips']}, frames {summary['frames']}, video hours {summary['video_hours']:.4f}"
        + (f"; the model ran in {' and '.join(summary['model_precision'])}" if summary.get("model_precision") else "")
        + ("; frames resized by swscale (model.resize: fast)" if summary.get("resize") == "fast" else ""),
        *_table_line(summary),
        *([f"  {rewrote}"] if (rewrote := rewritten_line(summary)) else []),
        f"  wall {summary['wall_time_s']:.1f}s, {summary['throughput']['videos_per_s']} videos/s, "
        f"{summary['throughput']['frames_per_s']} frames/s, "
        f"{summary['throughput']['video_hours_per_wall_hour']} video-hours/wall-hour",
        f"  summary: {uri}",
    ]
    if changes.get("leftovers_removed"):
        lines.insert(
            3,
            f"  removed the clips an interrupted run left behind (of {_count(changes['leftovers_removed'], 'video')}; "
            "no videos row referred to them: a run that died between its commits, or rows deleted by another tool)",
        )
    if summary.get("untrained_weights"):
        lines.insert(1, "  NOTE: untrained weights (seeded random init): embeddings and labels are not meaningful")
    if stopped := _STOPPED_EARLY.get(summary.get("stopped_early") or ""):
        # The last lines are what a nightly job's log shows: a run cut short must not read as a night's work.
        lines.insert(1, f"  STOPPED EARLY: {stopped}; the videos not done are timeout rows, and the next run retries them")
    return "\n".join(lines)


_STOPPED_EARLY = {
    "unreachable": "videos in a row found their object store or server not answering (limits.unreachable_in_a_row)",
    "no_progress": "no video finished for limits.no_progress_timeout_s",
    "time_limit": "the run reached limits.max_run_s",
    "spill_space": "the run's temporary folder ran low on space (limits.spill_min_free_mb; TMPDIR sets the folder)",
    "interrupted": "stopped by Ctrl-C (SIGINT); what was done is committed",
    "sigterm": "stopped by SIGTERM; what was done is committed",
}
