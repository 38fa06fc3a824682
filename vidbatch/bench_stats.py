"""The arithmetic of `vidbatch bench`: one round's stage bound and ratios, several rounds' medians.

A round's stage bound is 1/(1/decode + 1/model), each stage measured before and after the
pipeline (their mean, and how far they drifted). Its ratios are taken within the round.

On a small shared machine one round's figures move by up to 25% (other work, CPU frequency,
page cache), so one round's ratio can land on either side of a target. Each round measures
its plain script, stage bounds and pipeline side by side, so every ratio is taken within a
round first; the summary is then the median of those per-round ratios, reported with the
lowest and highest. Rates are summarised the same way, field by field.
"""

from __future__ import annotations

import copy
import statistics
from collections.abc import Sequence
from typing import Any

RATE_FIELDS = ("wall_s", "frames_per_s", "videos_per_s", "video_s_per_s")
MEASUREMENTS = ("plain", "decode_bound", "model_bound", "stage_bound", "pipeline")
# Above this change of a stage bound between before and after the pipeline, a round is flagged.
DRIFT_WARN = 0.10


def stage_bound(decode_vs: float, model_vs: float, *, frames_per_video_s: float, video_len_s: float) -> dict[str, Any]:
    """1 / (1/decode + 1/model): on one machine both stages share the cores, so at best their times add."""
    bound = 1.0 / (1.0 / decode_vs + 1.0 / model_vs)
    return {
        "video_s_per_s": bound,
        "frames_per_s": bound * frames_per_video_s,
        "videos_per_s": bound / video_len_s,
        "limited_by": "decode" if decode_vs < model_vs else "model",
    }


def steady_wall(*, big_wall_s: float, big_before_pipeline_s: float, tiny_wall_s: float, tiny_before_pipeline_s: float) -> float:
    """The wall time of the big run's extra work over the tiny run's, start-up excluded from both.

    Each run's time before its pipeline starts (imports, the weights, the previous runs' state,
    Ray's start: `timings_s.to_pipeline_s`) is start-up, and it differs between the two: the big
    run comes first in a fresh process and pays the first imports and Ray's start, the tiny run
    pays neither. Subtracting the tiny run's pipeline phase from the big run's then takes off
    what is start-up inside the pipeline (the actors' start), the same in both.
    """
    _validate_times(
        big_wall_s=big_wall_s,
        big_before_pipeline_s=big_before_pipeline_s,
        tiny_wall_s=tiny_wall_s,
        tiny_before_pipeline_s=tiny_before_pipeline_s,
    )
    return max((big_wall_s - big_before_pipeline_s) - (tiny_wall_s - tiny_before_pipeline_s), 1e-9)


# The mid-run window: from the moment this share of the run's frames had reached the driver to
# the moment this share had. Before it the model's backlog (decoded while it started) arrives
# in a burst; after it the last videos drain with fewer stages busy.
MID_RUN_WINDOW = (0.2, 0.8)
# The window's two halves may differ in rate by this much and still be one steady phase. A run
# whose backlog lasts into the window (a short one: keyframes of 16 minutes of video) has none.
MID_RUN_STEADY_TOLERANCE = 0.2
_MID_RUN_MIN_ARRIVALS = 2  # batches in each half of the window, for a rate rather than one batch's timing


def mid_run_rate(
    arrivals: Sequence[tuple[float, float]], *, window: tuple[float, float] = MID_RUN_WINDOW
) -> dict[str, Any] | None:
    """Frames per second between the arrivals at which the window's shares of all frames were reached.

    `arrivals`: (time in seconds, frames) of each batch the driver took, in arrival order. The
    rate counts the frames that arrived after the window's first moment up to its last, over
    the time between them: with every stage started and busy, the rate a long run approaches.
    Each half of the window is timed too; `steady` says whether they agree within
    MID_RUN_STEADY_TOLERANCE (if not, the window still holds the start-up's backlog or the
    drain, and its rate is not the pipeline's). None when the run is too short for a rate
    (fewer than `_MID_RUN_MIN_ARRIVALS` batches in a half, or no time between its ends).
    """
    low, high = _validate_window(window)
    times = [t for t, _ in arrivals]
    if any(b < a for a, b in zip(times, times[1:], strict=False)):
        raise ValueError("arrivals must be in time order")
    total = sum(frames for _, frames in arrivals)
    if total <= 0:
        return None
    marks = [_crossing(arrivals, share * total) for share in (low, (low + high) / 2, high)]
    halves = []
    for (t0, frames0, i0), (t1, frames1, i1) in zip(marks, marks[1:], strict=False):
        if i1 - i0 < _MID_RUN_MIN_ARRIVALS or t1 <= t0:
            return None
        halves.append((frames1 - frames0) / (t1 - t0))
    (start_t, start_frames, _), (end_t, end_frames, _) = marks[0], marks[-1]
    steady = max(halves) <= min(halves) * (1 + MID_RUN_STEADY_TOLERANCE)
    return {
        "wall_s": end_t - start_t,
        "frames": end_frames - start_frames,
        "frames_per_s": (end_frames - start_frames) / (end_t - start_t),
        "halves_frames_per_s": halves,
        "steady": steady,
        "not_steady_because": None if steady else (
            "the window's halves ran at " + " and ".join(f"{rate:.1f}" for rate in halves) + " frames/s"
        ),
    }


def judge_mid_run(mid_run: dict[str, Any] | None, *, stage_bound_frames_per_s: float) -> None:
    """A mid-run rate above the stage bound is no steady phase: only frames decoded before the
    model was up (a backlog) arrive faster than both stages can run. Marks it so, in place.

    Two halves of a window that lies wholly in the backlog agree with each other (a short
    keyframes run: its key frames are decoded while the model actor starts, then all arrive
    within ~2 s), so the halves alone cannot tell.
    """
    if mid_run is None or not mid_run["steady"] or mid_run["frames_per_s"] <= stage_bound_frames_per_s:
        return
    mid_run["steady"] = False
    mid_run["not_steady_because"] = (
        f"its {mid_run['frames_per_s']:.1f} frames/s exceed the stage bound's {stage_bound_frames_per_s:.1f}: "
        "frames decoded while the model started"
    )


def _crossing(arrivals: Sequence[tuple[float, float]], frames: float) -> tuple[float, float, int]:
    """(time, frames so far, index) of the first arrival by which `frames` had arrived."""
    taken = 0.0
    for index, (t, batch) in enumerate(arrivals):
        taken += batch
        if taken >= frames:
            return t, taken, index
    raise ValueError(f"only {taken} frames arrived, not {frames}")


def _validate_window(window: tuple[float, float]) -> tuple[float, float]:
    low, high = window
    if not 0 <= low < high <= 1:
        raise ValueError(f"window must be two shares 0 <= low < high <= 1, got {window!r}")
    return low, high


def _validate_times(**times: float) -> None:
    for name, value in times.items():
        if not value >= 0:  # also refuses NaN
            raise ValueError(f"{name} must be a time >= 0, got {value!r}")


def bound_drift(before: tuple[dict[str, Any], dict[str, Any]], after: tuple[dict[str, Any], dict[str, Any]]) -> dict[str, Any]:
    """How much each stage bound moved between its measurements before and after the pipeline."""
    return {
        name: {"before": b["video_s_per_s"], "after": a["video_s_per_s"], "change": a["video_s_per_s"] / b["video_s_per_s"] - 1}
        for name, b, a in (("decode", before[0], after[0]), ("model", before[1], after[1]))
    }


def bracketed(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """A bound measured before and after the pipeline: the mean of each rate (the pipeline ran in
    between), and of the CPU it spent, which the bench sets beside the pipeline's (bench_cpu)."""
    out = dict(before)
    for name in (*RATE_FIELDS, "cpu_s"):
        a, b = before.get(name), after.get(name)
        if isinstance(a, (int, float)) and isinstance(b, (int, float)):
            out[name] = (a + b) / 2
    return out


def round_ratios(result: dict[str, Any]) -> dict[str, float | None]:
    """The ratios of one round, each taken between measurements of that round.

    `ceiling` is what pipeline/plain would be if the pipeline ran at the stage bound from its
    first second (no start-up at all): a target above it cannot be met on this machine by
    scheduling; only faster stages (or a faster machine) can raise it.
    """
    pipe = result["pipeline"]
    plain = result.get("plain")
    bound = result["stage_bound"]["video_s_per_s"]
    ratios: dict[str, float | None] = {
        "pipeline/plain (start-up incl.)": pipe["video_s_per_s"] / plain["video_s_per_s"] if plain else None,
        "ceiling: stage bound/plain (no start-up)": bound / plain["video_s_per_s"] if plain else None,
    }
    if pipe["steady"]["video_s_per_s"] == pipe["steady"]["video_s_per_s"]:  # not nan: a steady rate exists
        ratios["pipeline steady/plain"] = pipe["steady"]["video_s_per_s"] / plain["video_s_per_s"] if plain else None
        ratios["pipeline steady/stage bound"] = pipe["steady"]["video_s_per_s"] / bound
    mid_run = pipe.get("mid_run")
    steady_mid_run = mid_run is not None and mid_run.get("steady", False)
    ratios["pipeline mid-run/stage bound"] = mid_run["video_s_per_s"] / bound if steady_mid_run else None
    ratios["pipeline (start-up incl.)/stage bound"] = pipe["video_s_per_s"] / bound
    return ratios


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
        mid_runs = [r["pipeline"].get("mid_run") for r in rounds]
        every_round_steady = all(m is not None and m.get("steady") for m in mid_runs)
        summary["pipeline"]["mid_run"] = _median_rates(mid_runs) if every_round_steady else None  # type: ignore[arg-type]
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
        values = " ".join("none" if v is None else f"{v:.2f}" for v in spread["per_round"])
        median = summary["ratios"][name]
        if median is None:  # not in every round: a median of the others would read as every round's
            head = f"no median: in {spread['measured_in']} of {len(spread['per_round'])} rounds"
        else:
            head = f"median {median:.2f}x"
        lines.append(f"{mode:10s} {name:40s} {head} (min {spread['min']:.2f}, max {spread['max']:.2f}; rounds: {values})")
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
        measured = [v if isinstance(v, (int, float)) and v == v else None for v in values]  # None and nan: not measured
        known = [v for v in measured if v is not None]
        # A median only of rounds that all have the ratio: one of some rounds (a mid-run rate where
        # another round had no steady phase) would be reported as if it were every round's.
        medians[name] = _median(known) if known and len(known) == len(values) else None
        if known:
            spread[name] = {
                "min": min(known),
                "max": max(known),
                "values": known,
                "per_round": measured,
                "measured_in": len(known),
            }
    return medians, spread


def _median(values: list[Any]) -> float:
    return float(statistics.median(values))
