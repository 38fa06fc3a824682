"""The bench's CPU account: real processes read from /proc (no timing of vidbatch is asserted,
only that CPU a test process burns is found under its role, and only inside the window)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from vidbatch.bench_cpu import (
    CpuAccount,
    against_bounds,
    format_account,
    format_against_bounds,
    format_rounds_against_bounds,
)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

# Burns `seconds` of its own CPU, then sleeps so the sampler sees its final total. The last argument
# is only there to be in the command line: the marker a role is told by.
# It says "burnt" when its burning is done, so a test can wait for that on a loaded machine.
_BURN = (
    "import sys, time\nt = time.process_time()\nwhile time.process_time() - t < float(sys.argv[1]): pass\n"
    "print('burnt', flush=True)\ntime.sleep(0.6)"
)


def _burn(seconds: float, marker: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", _BURN, str(seconds), marker], stdout=subprocess.PIPE)


def _burn_here(seconds: float) -> None:
    started = time.process_time()
    while time.process_time() - started < seconds:
        pass


def test_each_process_cpu_is_counted_under_its_role_and_only_inside_the_window():
    before = _burn(0.8, "MapBatches(DecodeStage)")  # burns before the window, only sleeps inside it
    assert before.stdout is not None and before.stdout.readline() == b"burnt\n"  # however long a busy host takes
    with CpuAccount(interval_s=0.1) as account:
        children = [_burn(0.6, "MapBatches(ModelStage)"), _burn(0.4, "-m vidbatch.isolation")]
        _burn_here(0.3)
        for child in children:
            child.wait()
    before.wait()
    result = account.result()
    used = result["cpu_s"]
    assert used["model actor"] == pytest.approx(0.6, abs=0.15)
    assert used["decode sandbox"] == pytest.approx(0.4, abs=0.15)
    assert used["driver"] >= 0.25  # this process: the burn above, and the sampling thread
    # The decoder-named process burnt its CPU before the window: none of it counts.
    assert used.get("decode actor", 0.0) < 0.1
    assert result["run_cpu_s"] == pytest.approx(sum(used.values()), abs=0.02)
    # Every core-second of the window is somewhere: the run, idle, other programs, the hypervisor.
    accounted = result["run_cpu_s"] + result["idle_core_s"] + result["outside_run_core_s"] + result["stolen_core_s"]
    assert accounted == pytest.approx(result["wall_s"] * result["cpus"], rel=0.25)
    assert 0 < result["busy_cores"] <= result["cpus"]
    line = format_account(result)
    assert line.index("model actor") < line.index("decode sandbox")  # the biggest first
    assert f"x {result['cpus']} cores" in line and "idle" in line


def test_a_result_before_the_window_has_ended_is_refused():
    with CpuAccount(interval_s=0.1) as account, pytest.raises(RuntimeError, match="before the account has ended"):
        account.result()


@pytest.mark.parametrize("interval", [0, -1.0])
def test_a_sampling_interval_that_is_not_positive_is_refused_by_value(interval):
    with pytest.raises(ValueError, match=f"interval_s={interval!r}"):
        CpuAccount(interval_s=interval)


def test_the_stages_cpu_is_set_beside_the_bounds_cpu_for_the_same_work():
    account = {"cpu_s": {"driver": 7.0, "decode actor": 4.0, "decode sandbox": 54.0, "model actor": 52.5, "ray (other)": 10.0}}
    pairs = against_bounds(
        account, frames=960, decode_bound={"cpu_s": 50.0}, model_bound={"threads": 2, "frames_per_s": 42.0}
    )
    assert pairs["decoding"] == {"pipeline_cpu_s": 58.0, "bound_cpu_s": 50.0, "ratio": 1.16}
    assert pairs["model"] == {"pipeline_cpu_s": 52.5, "bound_cpu_s": 45.71, "ratio": pytest.approx(1.148, abs=1e-3)}
    assert format_against_bounds(pairs) == "decoding 58.0 vs 50.0 CPU-s (1.16x), model 52.5 vs 45.7 CPU-s (1.15x)"
    # A model on a GPU: its bound's CPU is not its threads' time, so there is no model pair.
    gpu = {"threads": 16, "frames_per_s": 5000.0, "device": "cuda"}
    assert set(against_bounds(account, frames=960, decode_bound={"cpu_s": 50.0}, model_bound=gpu)) == {"decoding"}
    # A bound without the figure needed (an older JSON, no model actor seen) gives no pair, not a guess.
    assert against_bounds(account, frames=960, decode_bound={}, model_bound={"frames_per_s": 42.0}) == {}
    assert "model" not in against_bounds(
        {"cpu_s": {"decode sandbox": 1.0}}, frames=3, decode_bound={"cpu_s": 1.0}, model_bound={"threads": 2, "frames_per_s": 4.0}
    )


def test_the_rounds_cpu_over_the_bounds_is_listed_round_by_round():
    def pairs(**ratios: float) -> dict[str, dict[str, float]]:
        return {stage: {"pipeline_cpu_s": 1.0, "bound_cpu_s": 1.0, "ratio": ratio} for stage, ratio in ratios.items()}

    rounds = [
        {"cpu_against_bounds": pairs(decoding=1.33, model=1.16)},
        {"cpu_against_bounds": pairs(decoding=1.05)},  # e.g. a model bound without its figures
    ]
    assert format_rounds_against_bounds(rounds) == "decoding 1.33 1.05, model 1.16 none"
    # Rounds from before the account (an older JSON) list nothing rather than a made-up figure.
    assert format_rounds_against_bounds([{}, {"cpu_against_bounds": {}}]) is None
