"""The arithmetic of `vidbatch bench`: a round's bound and ratios, rounds summed up (pure functions; no timing here)."""

from __future__ import annotations

import math

import pytest

from vidbatch.bench_stats import (
    bound_drift,
    bracketed,
    format_spread,
    judge_mid_run,
    mid_run_rate,
    round_ratios,
    stage_bound,
    steady_wall,
    summarize_rounds,
)


def _round(plain: float, decode: float, model: float, pipe: float, steady: float, *, same: int = 4, diff: float = 1e-3):
    bound = 1 / (1 / decode + 1 / model)
    return {
        "plain": {"video_s_per_s": plain, "wall_s": 960 / plain, "frames_per_s": plain, "statuses": {"ok": 16}},
        "decode_bound": {"video_s_per_s": decode, "wall_s": 960 / decode},
        "model_bound": {"video_s_per_s": model, "wall_s": None},
        "stage_bound": {"video_s_per_s": bound, "limited_by": "decode" if decode < model else "model"},
        "pipeline": {"video_s_per_s": pipe, "wall_s": 960 / pipe, "steady": {"video_s_per_s": steady, "wall_s": 900 / steady},
                     "timings_s": {"ray_start_s": 5.0}},
        "agreement": {"clips_plain": 4, "clips_pipeline": 4, "clips_same_frames": same, "max_abs_embedding_diff_16d": diff},
        "ratios": {"pipeline/plain (start-up incl.)": pipe / plain, "pipeline steady/stage bound": steady / bound,
                   "pipeline steady/plain": None},
    }  # fmt: skip


def test_ratios_are_medians_of_the_per_round_ratios_with_their_spread():
    rounds = [_round(5.0, 30, 40, 12.0, 14.0), _round(6.0, 36, 40, 11.0, 15.0), _round(5.5, 31, 38, 13.0, 14.5)]
    summary = summarize_rounds(rounds)
    per_round = sorted(r["ratios"]["pipeline/plain (start-up incl.)"] for r in rounds)
    assert summary["ratios"]["pipeline/plain (start-up incl.)"] == pytest.approx(per_round[1])
    # Not the ratio of the medians: each round's ratio is taken side by side first.
    assert summary["ratios"]["pipeline/plain (start-up incl.)"] != pytest.approx(12.0 / 5.5)
    spread = summary["ratio_spread"]["pipeline steady/stage bound"]
    assert spread["min"] == min(spread["values"]) and spread["max"] == max(spread["values"])
    assert len(spread["values"]) == 3
    assert summary["ratios"]["pipeline steady/plain"] is None  # not measured in any round
    assert "pipeline steady/plain" not in summary["ratio_spread"]


def test_rates_are_medians_field_by_field_and_other_fields_come_from_the_first_round():
    rounds = [_round(5.0, 30, 40, 12.0, 14.0), _round(6.0, 36, 40, 11.0, 15.0), _round(5.5, 31, 38, 13.0, 14.5)]
    summary = summarize_rounds(rounds)
    assert summary["plain"]["video_s_per_s"] == 5.5
    assert summary["decode_bound"]["video_s_per_s"] == 31
    assert summary["pipeline"]["video_s_per_s"] == 12.0
    assert summary["pipeline"]["steady"]["video_s_per_s"] == 14.5
    assert summary["model_bound"]["wall_s"] is None  # not a number in every round: left as it was
    assert summary["plain"]["statuses"] == {"ok": 16}
    assert summary["stage_bound"]["limited_by"] == "decode"
    assert summary["rounds"] is rounds
    rounds[0]["plain"]["statuses"]["ok"] = 0
    assert summary["plain"]["statuses"] == {"ok": 16}  # a copy, not the first round's dict


def test_agreement_reports_the_worst_round():
    summary = summarize_rounds([_round(5, 30, 40, 12, 14, same=4, diff=1e-3), _round(5, 30, 40, 12, 14, same=3, diff=5e-4)])
    assert summary["agreement"]["clips_same_frames"] == 3
    assert summary["agreement"]["max_abs_embedding_diff_16d"] == 1e-3


def test_nan_ratios_are_not_measured_values():
    rounds = [_round(5, 30, 40, 12, 14), _round(5, 30, 40, 12, 14)]
    rounds[1]["ratios"]["pipeline steady/stage bound"] = math.nan
    summary = summarize_rounds(rounds)
    name = "pipeline steady/stage bound"
    assert summary["ratio_spread"][name]["values"] == [rounds[0]["ratios"][name]]
    assert summary["ratio_spread"][name]["per_round"] == [rounds[0]["ratios"][name], None]
    assert summary["ratios"][name] is None  # measured in one round of two: no median, not that round's value


def test_a_mid_run_ratio_of_some_rounds_gets_no_median_and_the_line_says_so():
    rounds = [_round(5.0, 30, 40, 12.0, 14.0), _round(6.0, 36, 40, 11.0, 15.0)]
    rounds[0]["pipeline"]["mid_run"] = {"video_s_per_s": 13.0, "frames_per_s": 13.0, "wall_s": 20.0, "steady": True}
    rounds[1]["pipeline"]["mid_run"] = {"video_s_per_s": 16.0, "frames_per_s": 16.0, "wall_s": 20.0, "steady": False}
    for r in rounds:
        r["ratios"] = round_ratios(r)
    summary = summarize_rounds(rounds)
    name = "pipeline mid-run/stage bound"
    assert summary["ratios"][name] is None and summary["pipeline"]["mid_run"] is None
    line = next(x for x in format_spread("fps", summary).splitlines() if name in x)
    assert "no median: in 1 of 2 rounds" in line and "median 0." not in line
    assert f"rounds: {rounds[0]['ratios'][name]:.2f} none" in line


def test_rounds_that_measured_different_things_are_refused():
    other = _round(5, 30, 40, 12, 14)
    del other["plain"]
    with pytest.raises(ValueError, match="different things"):
        summarize_rounds([_round(5, 30, 40, 12, 14), other])
    with pytest.raises(ValueError, match="no rounds"):
        summarize_rounds([])


def test_format_spread_names_the_median_and_every_round():
    summary = summarize_rounds([_round(5.0, 30, 40, pipe, 14.0) for pipe in (10.0, 12.5, 15.0)])
    text = format_spread("fps", summary)
    line = next(x for x in text.splitlines() if "pipeline/plain" in x)
    assert "median 2.50x" in line and "min 2.00" in line and "max 3.00" in line and "rounds: 2.00 2.50 3.00" in line


def _round_rates(*, plain: float | None, bound: float, pipe: float, steady: float) -> dict:
    result = {"stage_bound": {"video_s_per_s": bound}, "pipeline": {"video_s_per_s": pipe, "steady": {"video_s_per_s": steady}}}
    if plain is not None:
        result["plain"] = {"video_s_per_s": plain}
    return result


def test_the_ceiling_is_the_stage_bound_over_the_plain_script():
    ratios = round_ratios(_round_rates(plain=5.0, bound=11.0, pipe=9.0, steady=10.0))
    assert ratios["ceiling: stage bound/plain (no start-up)"] == pytest.approx(2.2)
    assert ratios["pipeline/plain (start-up incl.)"] == pytest.approx(1.8)
    assert ratios["pipeline steady/stage bound"] == pytest.approx(10.0 / 11.0)
    # The pipeline at the bound with no start-up would reach exactly the ceiling.
    at_bound = round_ratios(_round_rates(plain=5.0, bound=11.0, pipe=11.0, steady=11.0))
    assert at_bound["pipeline/plain (start-up incl.)"] == pytest.approx(at_bound["ceiling: stage bound/plain (no start-up)"])


def test_ratios_without_a_plain_script_or_a_steady_rate():
    ratios = round_ratios(_round_rates(plain=None, bound=11.0, pipe=9.0, steady=math.nan))
    assert ratios["ceiling: stage bound/plain (no start-up)"] is None
    assert ratios["pipeline/plain (start-up incl.)"] is None
    assert "pipeline steady/stage bound" not in ratios
    assert ratios["pipeline (start-up incl.)/stage bound"] == pytest.approx(9.0 / 11.0)


def test_bounds_measured_before_and_after_are_averaged_and_their_drift_reported():
    decode_before = {"video_s_per_s": 40.0, "frames_per_s": 40.0, "wall_s": 24.0, "frames": 960, "cpu_s": 45.0}
    decode_after = {"video_s_per_s": 50.0, "frames_per_s": 50.0, "wall_s": 19.2, "frames": 960, "cpu_s": 40.0}
    model_before = {"video_s_per_s": 80.0, "frames_per_s": 80.0, "wall_s": None}
    model_after = {"video_s_per_s": 60.0, "frames_per_s": 60.0, "wall_s": None}
    drift = bound_drift((decode_before, model_before), (decode_after, model_after))
    assert drift["decode"]["change"] == pytest.approx(0.25)
    assert drift["model"]["change"] == pytest.approx(-0.25)
    decode = bracketed(decode_before, decode_after)
    assert decode["video_s_per_s"] == 45.0 and decode["wall_s"] == pytest.approx(21.6)
    assert decode["frames"] == 960  # the same work both times
    assert decode["cpu_s"] == 42.5  # what the same work cost, as the rates: the mean of both
    model = bracketed(model_before, model_after)
    assert model["video_s_per_s"] == 70.0 and model["wall_s"] is None
    bound = stage_bound(decode["video_s_per_s"], model["video_s_per_s"], frames_per_video_s=1.0, video_len_s=60.0)
    assert bound["video_s_per_s"] == pytest.approx(1 / (1 / 45 + 1 / 70))
    assert bound["videos_per_s"] == pytest.approx(bound["video_s_per_s"] / 60)
    assert bound["limited_by"] == "decode"


def test_steady_wall_takes_start_up_off_both_runs():
    # The big run: 5.7 s before its pipeline (first imports, weights, Ray's start), 43.9 s after.
    # The tiny run: 0.5 s before its pipeline (imports and Ray already there), 6.0 s after.
    # Steady: the big run's pipeline phase less the tiny run's (its actors' start and tiny work).
    wall = steady_wall(big_wall_s=49.6, big_before_pipeline_s=5.7, tiny_wall_s=6.5, tiny_before_pipeline_s=0.5)
    assert wall == pytest.approx((49.6 - 5.7) - (6.5 - 0.5))
    # Before-pipeline time of the tiny run is start-up too: it shortens what is subtracted.
    assert steady_wall(big_wall_s=49.6, big_before_pipeline_s=5.7, tiny_wall_s=6.5, tiny_before_pipeline_s=0.0) < wall


def test_steady_wall_is_never_zero_or_negative():
    assert steady_wall(big_wall_s=5.0, big_before_pipeline_s=4.0, tiny_wall_s=6.0, tiny_before_pipeline_s=0.5) == 1e-9


@pytest.mark.parametrize("bad", [-1.0, math.nan])
def test_steady_wall_names_a_bad_time(bad):
    with pytest.raises(ValueError, match="tiny_wall_s must be a time >= 0"):
        steady_wall(big_wall_s=49.6, big_before_pipeline_s=5.7, tiny_wall_s=bad, tiny_before_pipeline_s=0.5)


def _arrivals(rate_by_second: list[float], *, batch_s: float = 0.25) -> list[tuple[float, float]]:
    """A batch every `batch_s` seconds, frames at each second's rate."""
    out, t = [], 0.0
    for rate in rate_by_second:
        for _ in range(round(1 / batch_s)):
            t += batch_s
            out.append((t, rate * batch_s))
    return out


def test_mid_run_rate_of_an_even_run_is_its_rate():
    mid = mid_run_rate(_arrivals([24.0] * 40))
    assert mid is not None and mid["steady"]
    assert mid["frames_per_s"] == pytest.approx(24.0)
    assert mid["halves_frames_per_s"] == pytest.approx([24.0, 24.0])
    assert mid["frames"] == pytest.approx(0.6 * 960, abs=24.0 * 0.25)  # 20% to 80%, to a batch


def test_mid_run_rate_leaves_out_the_start_up_burst_and_the_drain():
    # The model starts late: its backlog arrives at 60 frames/s, then the pipeline's own 24,
    # then a slow drain. The marginal view would mix them; the middle is the pipeline's rate.
    run = [60.0] * 3 + [24.0] * 34 + [6.0] * 3
    mid = mid_run_rate(run_arrivals := _arrivals(run))
    assert mid is not None and mid["steady"] and mid["frames_per_s"] == pytest.approx(24.0)
    total = sum(f for _, f in run_arrivals)
    assert total / run_arrivals[-1][0] != pytest.approx(24.0, rel=0.05)  # the whole run's average is not


def test_a_run_whose_backlog_lasts_into_the_window_has_no_steady_phase():
    # Keyframes of a short workload: most frames were decoded while the model started, so the
    # model's catching up (90 frames/s) fills the window's first half, and the pipeline's own
    # rate (20) its second: their mean is no rate of the pipeline's.
    mid = mid_run_rate(_arrivals([90.0] * 5 + [20.0] * 10))
    assert mid is not None and not mid["steady"]
    assert mid["not_steady_because"].startswith("the window's halves ran at ")
    first, second = mid["halves_frames_per_s"]
    assert first > 1.2 * second
    r = _round_rates(plain=5.0, bound=11.0, pipe=9.0, steady=10.0)
    r["pipeline"]["mid_run"] = {**mid, "video_s_per_s": 60.0}
    assert round_ratios(r)["pipeline mid-run/stage bound"] is None  # not reported as a ratio


def test_mid_run_rate_needs_batches_inside_its_window():
    assert mid_run_rate([(1.0, 6.0)]) is None  # one batch: all frames at once
    assert mid_run_rate([(1.0, 2.0), (2.0, 2.0), (3.0, 2.0)]) is None  # too few in between for a rate
    assert mid_run_rate([]) is None
    assert mid_run_rate([(1.0, 0.0), (2.0, 0.0)]) is None  # no frames (every video failed)


@pytest.mark.parametrize("window", [(0.8, 0.2), (-0.1, 0.5), (0.2, 1.5), (0.5, 0.5)])
def test_mid_run_rate_names_a_bad_window(window):
    with pytest.raises(ValueError, match=r"window must be two shares 0 <= low < high <= 1, got"):
        mid_run_rate(_arrivals([24.0] * 10), window=window)


def test_mid_run_rate_refuses_arrivals_out_of_order():
    with pytest.raises(ValueError, match="time order"):
        mid_run_rate([(2.0, 1.0), (1.0, 1.0)] + _arrivals([24.0] * 10))


def test_the_mid_run_ratio_is_reported_and_summarised_when_every_round_has_one():
    rounds = [_round(5.0, 30, 40, 12.0, 14.0), _round(6.0, 36, 40, 11.0, 15.0), _round(5.5, 31, 38, 13.0, 14.5)]
    for r, mid in zip(rounds, (13.0, 14.0, 13.5), strict=True):
        r["pipeline"]["mid_run"] = {"video_s_per_s": mid, "frames_per_s": mid, "wall_s": 20.0, "steady": True}
        r["ratios"] = round_ratios(r)
        assert r["ratios"]["pipeline mid-run/stage bound"] == pytest.approx(mid / r["stage_bound"]["video_s_per_s"])
    summary = summarize_rounds(rounds)
    assert summary["pipeline"]["mid_run"]["video_s_per_s"] == 13.5
    per_round = sorted(r["ratios"]["pipeline mid-run/stage bound"] for r in rounds)
    assert summary["ratios"]["pipeline mid-run/stage bound"] == pytest.approx(per_round[1])
    rounds[1]["pipeline"]["mid_run"]["steady"] = False  # a round without a steady phase: no median of the others'
    assert summarize_rounds(rounds)["pipeline"]["mid_run"] is None
    rounds[1]["pipeline"]["mid_run"] = None  # a round too short for one: the same
    assert summarize_rounds(rounds)["pipeline"]["mid_run"] is None


def test_a_round_without_a_mid_run_rate_says_so():
    ratios = round_ratios(_round_rates(plain=5.0, bound=11.0, pipe=9.0, steady=10.0))
    assert ratios["pipeline mid-run/stage bound"] is None


def test_a_window_wholly_in_the_backlog_is_no_steady_phase_either():
    # Every key frame decoded while the model started, then all arriving in 2 s at the model's
    # pace: both halves agree, but no pipeline runs faster than its stage bound.
    mid = mid_run_rate(_arrivals([64.0] * 2))
    assert mid is not None and mid["steady"] and mid["frames_per_s"] == pytest.approx(64.0)
    judge_mid_run(mid, stage_bound_frames_per_s=31.7)
    assert not mid["steady"] and "exceed the stage bound's 31.7" in mid["not_steady_because"]


def test_a_mid_run_rate_below_the_stage_bound_stays_steady():
    mid = mid_run_rate(_arrivals([25.0] * 40))
    judge_mid_run(mid, stage_bound_frames_per_s=30.0)
    assert mid["steady"] and mid["not_steady_because"] is None
    judge_mid_run(None, stage_bound_frames_per_s=30.0)  # a run too short for one: nothing to judge
