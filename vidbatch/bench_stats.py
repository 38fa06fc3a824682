"""Several rounds of `vidbatch bench` summed up: medians, with the spread beside them.

On a small shared machine one round's figures move by up to 25% (other work, CPU frequency,
page cache), so one round's ratio can land on either side of a target. Each round measures
its plain script, stage bounds and pipeline side by side, so every ratio is taken within a
round first; the summary is then the median of those per-round ratios, reported with the
lowest and highest. Rates are summarised the same way, field by field.
"""

from __future__ import annotations

import copy
import statistics
from typing import Any

RATE_FIELDS = ("wall_s", "frames_per_s", "videos_per_s", "video_s_per_s")
MEASUREMENTS = ("plain", "decode_bound", "model_bound", "stage_bound", "pipeline")


def summarize_rounds(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One mode's rounds -> the same shape as one round (medians), plus `ratio_spread` and `rounds`."""
    _validate_rounds(rounds)
    first = rounds[0]
    summary: dict[str, Any] = {}
    for key in MEASUREMENTS:
        if key in first:
            summary[key] = _median_rates([r[key] for r in rounds])
    if "pipeline" in summary:
        summary["pipeline"]["steady"] = _median_rates([r["pipeline"]["steady"] for r in rounds])
    if "stage_bound" in summary:
        decode = _median([r["decode_bound"]["video_s_per_s"] for r in rounds])
        model = _median([r["model_bound"]["video_s_per_s"] for r in rounds])
        summary["stage_bound"]["limited_by"] = "decode" if decode < model else "model"
    agreements = [r["agreement"] for r in rounds if "agreement" in r]
    if agreements:
        summary["agreement"] = {  # the worst round's: a mismatch in any round must show
            **agreements[0],
            "clips_same_frames": min(a["clips_same_frames"] for a in agreements),
            "max_abs_embedding_diff_16d": max(a["max_abs_embedding_diff_16d"] for a in agreements),
        }
    summary["ratios"], summary["ratio_spread"] = _ratio_medians([r["ratios"] for r in rounds])
    summary["rounds"] = rounds
    return summary


def format_spread(mode: str, summary: dict[str, Any]) -> str:
    """One line per ratio: the median and the per-round values it came from."""
    lines = []
    for name, spread in summary["ratio_spread"].items():
        values = " ".join(f"{v:.2f}" for v in spread["values"])
        lines.append(
            f"{mode:10s} {name:40s} median {summary['ratios'][name]:.2f}x "
            f"(min {spread['min']:.2f}, max {spread['max']:.2f}; rounds: {values})"
        )
    return "\n".join(lines)


def _validate_rounds(rounds: list[dict[str, Any]]) -> None:
    if not rounds:
        raise ValueError("no rounds to summarise")
    keys = [sorted(k for k in r if k in MEASUREMENTS) for r in rounds]
    if any(k != keys[0] for k in keys):
        raise ValueError(f"rounds measured different things: {keys}")


def _median_rates(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out = copy.deepcopy(rows[0])  # non-rate fields (statuses, devices, timings) as in the first round
    for name in RATE_FIELDS:
        values = [row.get(name) for row in rows]
        if all(isinstance(v, (int, float)) for v in values):
            out[name] = _median(values)
    return out


def _ratio_medians(per_round: list[dict[str, float | None]]) -> tuple[dict[str, float | None], dict[str, Any]]:
    medians: dict[str, float | None] = {}
    spread: dict[str, Any] = {}
    for name in per_round[0]:
        values = [r.get(name) for r in per_round]
        known = [v for v in values if isinstance(v, (int, float)) and v == v]  # None and nan are "not measured"
        medians[name] = _median(known) if known else None
        if known:
            spread[name] = {"min": min(known), "max": max(known), "values": known}
    return medians, spread


def _median(values: list[Any]) -> float:
    return float(statistics.median(values))
