"""The summary.json of a run: what it did, how fast, with which weights and library versions."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from vidbatch import __version__
from vidbatch.collect import Tally
from vidbatch.config import JobConfig


def build_summary(
    config: JobConfig,
    run_id: str,
    weights: Any,
    plan: Any,
    tally: Tally,
    wall: float,
    versions: dict[str, int],
    *,
    decoded: int,
) -> dict[str, Any]:
    import av
    import ray
    import torch

    hours = tally.video_seconds / 3600.0
    return {
        "run_id": run_id,
        "job": config.name,
        "finished_at": utc_now_iso(),
        "model_id": weights.model_id,
        "untrained_weights": weights.untrained,
        "weights_note": "seeded random init: embeddings and labels are NOT meaningful" if weights.untrained else weights.note,
        "weights_sha256": weights.sha256,
        "sampling_id": config.sampling.sampling_id(),
        "resize": config.model.resize,  # the rows do not say how their frames were resized; the summary does
        "manifest_rows": plan.manifest_rows,
        "duplicate_ids": plan.duplicates,
        "videos": tally.videos,
        "statuses": dict(sorted(tally.statuses.items())),
        "clips": tally.clips,
        "frames": tally.frames,
        "video_hours": round(hours, 6),
        "wall_time_s": round(wall, 3),
        "throughput": {
            "videos_per_s": round(decoded / wall, 4) if wall else None,  # decoded, as the progress line counts
            "frames_per_s": round(tally.frames / wall, 3) if wall else None,
            "video_hours_per_wall_hour": round(hours / (wall / 3600.0), 3) if wall else None,
        },
        "table_versions": versions,
        "versions": {
            "vidbatch": __version__,
            "torch": torch.__version__,
            "ray": ray.__version__,
            "av": av.__version__,
            "model_id": weights.model_id,
        },
    }


def utc_now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")  # orders runs of one second (history)


def rewritten_line(summary: dict[str, Any]) -> str | None:
    """What the run's commits rewrote (summary.json's rewritten_*): each old data file that held a
    replaced or removed row was written again without it. None when nothing was (new videos only add files)."""
    files, sizes, kept = (summary.get(key) or {} for key in ("rewritten_files", "rewritten_bytes", "rewritten_rows_kept"))
    if not any(files.values()):
        return None
    tables = "; ".join(f"{name} {count}, {size_said(sizes.get(name, 0))}" for name, count in sorted(files.items()) if count)
    total = sum(files.values())
    return (
        f"the commit rewrote {total} data file{'s' if total != 1 else ''} ({tables}), carrying "
        f"{sum(kept.values()):,} unchanged rows over to replace the changed and removed videos' rows"
    )


def size_said(n: int) -> str:
    """A byte count as the run's lines say it: MB, or kB below 0.1 MB (a small run's few kB read as 0.0 MB)."""
    return f"{n / 1e6:,.1f} MB" if n >= 100_000 else f"{max(1, round(n / 1e3))} kB"
