"""`vidbatch bench` runs end to end on a tiny workload (a smoke test: no timing is asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from extended import extended

pytestmark = pytest.mark.slow


def test_the_plain_script_and_the_decode_stage_sample_the_same_frames(tmp_path):
    """The default suite's case of the benchmark (the end-to-end run below is extended): the
    bench's own workload, weights and job, its plain script and its decode stage, in this process.
    A comparison of the two is only fair if both sample the same frames of the same video."""
    from vidbatch.bench import BenchOptions, _ids, _job_dict, _prepare_weights
    from vidbatch.bench_measure import _decode_one, _worker_plain, decode_settings
    from vidbatch.bench_workload import WorkloadSpec, ensure_workload
    from vidbatch.video_task import decode_video

    opts = BenchOptions(videos=1, seconds=3, arch="resnet18", modes=("fps",), workdir=tmp_path)
    workload = ensure_workload(tmp_path / "videos", WorkloadSpec(videos=1, seconds=3), say=lambda _: None)
    assert workload.video_seconds == pytest.approx(3.0, abs=0.05) and workload.bitrate_mbps > 0.5  # not a flat picture
    weights_file, resize = _prepare_weights(opts)
    job = _job_dict(opts, "fps", workload, tmp_path / "out")
    plain = _worker_plain({"paths": [str(p) for p in workload.paths], "ids": _ids(workload), "mode": "fps",
                           "fps": opts.fps, "clip_len_s": opts.clip_len_s, "arch": opts.arch,
                           "weights_file": str(weights_file), "resize": resize})  # fmt: skip
    assert plain["frames"] == 3 and plain["video_seconds"] == pytest.approx(3.0, abs=0.05)  # t = 0, 1, 2 s

    (video_id,) = _ids(workload)
    frames, clips, seconds, _cpu = _decode_one((video_id, str(workload.paths[0]), job, resize))
    assert (frames, clips) == (plain["frames"], plain["clips"]) and seconds == pytest.approx(plain["video_seconds"])
    stage_pts = {
        f"{video_id}#{row['clip_index']}": row["frame_pts_s"]
        for table in decode_video(video_id, str(workload.paths[0]), decode_settings(job, resize))
        for row in table.drop_columns(["frames"]).to_pylist()
        if row["kind"] == "clip"
    }
    assert stage_pts == {key: clip["pts"] for key, clip in plain["check"].items()}


@extended  # ~80 s on 2 cores (five fresh processes, a local Ray); the default case is the one above
def test_bench_runs_on_a_tiny_workload(tmp_path):
    """One round end to end (how rounds combine into medians is tested in test_bench_stats: a
    second round here cost the suite ~40 s for no path of its own)."""
    out = tmp_path / "bench.json"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run(
        [sys.executable, "-m", "vidbatch.cli", "bench", "--videos", "1", "--seconds", "3", "--arch", "resnet18",
         "--modes", "fps", "--workdir", str(tmp_path), "--json", str(out), "--model-seconds", "0.5"],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    fps = report["modes"]["fps"]
    assert fps["pipeline"]["statuses"] == {"ok": 1}
    assert fps["plain"]["frames"] == fps["pipeline"]["frames"] == 3  # t = 0, 1, 2 s
    # The plain script and the pipeline used the same frames, with the same fp32-or-bf16 model.
    assert fps["agreement"]["clips_same_frames"] == fps["agreement"]["clips_plain"] == 1
    assert fps["agreement"]["max_abs_embedding_diff_16d"] < 0.05
    for key in ("plain", "decode_bound", "model_bound", "stage_bound", "pipeline"):
        assert fps[key]["video_s_per_s"] > 0
    assert "pipeline/plain (start-up incl.)" in fps["ratios"]
    # 3 frames in one or two batches: too short for a mid-run rate, and said so rather than guessed.
    assert fps["pipeline"]["mid_run"] is None and fps["ratios"]["pipeline mid-run/stage bound"] is None
    assert "video-h/wall-h" in proc.stdout
    # The bounds were measured again after the pipeline; the round's bound is the mean of both.
    drift = fps["bound_drift"]
    assert fps["decode_bound"]["video_s_per_s"] == pytest.approx((drift["decode"]["before"] + drift["decode"]["after"]) / 2)
    assert fps["model_bound"]["video_s_per_s"] == pytest.approx((drift["model"]["before"] + drift["model"]["after"]) / 2)
    assert "stage bounds after vs before the pipeline" in proc.stdout
    # Where the pipeline run's CPU went, per role, beside what the bounds spent on the same work.
    cpu = fps["pipeline"]["cpu"]
    for role in ("driver", "decode actor", "decode sandbox", "model actor", "ray (other)"):
        assert cpu["cpu_s"][role] > 0, role
    assert cpu["wall_s"] <= fps["pipeline"]["run_job_wall_s"] + 1.0
    assert set(fps["cpu_against_bounds"]) == {"decoding", "model"}
    assert "CPU of the pipeline run" in proc.stdout and "the stages' CPU against the bounds'" in proc.stdout
    assert "the stages' CPU / the bounds' for the same work, per round: decoding" in proc.stdout  # the summary table


@extended  # the benchmark's memory check, run by hand with `vidbatch bench --memory-check`
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_the_memory_check_samples_every_process_of_a_whole_run(tmp_path):
    import media

    from vidbatch.bench_memory import format_peaks, pipeline_peak_memory

    video = media.write_video(tmp_path / "v.mp4", num_frames=30, fps=10).path
    peaks = pipeline_peak_memory(video, mode="fps", arch="resnet18", workdir=tmp_path)
    assert {"driver", "decode actor", "decode sandbox", "model actor"} <= set(peaks)
    assert all(p["private_mb"] > 20 for p in peaks.values() if p is not peaks.get("ray (other)"))
    assert peaks["model actor"]["private_mb"] > peaks["decode sandbox"]["private_mb"]  # torch and the model
    assert len(format_peaks("fps 3 s", peaks)) == len(peaks)
    assert not list(tmp_path.glob("memory-run-*"))  # its job and output are removed


def test_the_model_bound_checks_the_weights_off_the_thread_that_times_the_model(tmp_path, monkeypatch):
    # A weights file is checked with torch reductions; run on the main thread they leave an
    # OpenMP team there beside the runner's, libgomp throttles its spinning and the bound comes
    # out low in some runs (docs/performance.md, 2026-12-06). The check must run on a thread that ends.
    import threading

    import torch
    import torchvision

    import vidbatch.model_weights as model_weights
    from vidbatch.bench_measure import _worker_model

    weights_file = tmp_path / "w.pt"
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), weights_file)
    real = model_weights.resolve_weights
    threads_seen = []

    def recording(*args, **kwargs):
        threads_seen.append(threading.current_thread())
        return real(*args, **kwargs)

    monkeypatch.setattr(model_weights, "resolve_weights", recording)
    job = {"name": "b", "manifest": str(tmp_path / "m.parquet"), "output": str(tmp_path / "out"),
           "model": {"arch": "resnet18", "weights": str(weights_file), "precision": "fp32"}}
    result = _worker_model({"job": job, "frames_per_clip": 1, "seconds": 0.1})
    assert result["frames_per_s"] > 0
    assert len(threads_seen) == 1
    assert threads_seen[0] is not threading.main_thread()
    assert not threads_seen[0].is_alive()


def test_a_ray_worker_is_counted_under_the_actor_it_becomes():
    """Ray renames a worker (`ray::IDLE`) for its actor after the actor's imports have begun: the model
    actor's first ~550 MB used to be counted under Ray's other processes."""
    from vidbatch.process_roles import later_role

    assert later_role(None, "ray (other)") == "ray (other)"
    assert later_role("ray (other)", "model actor") == "model actor"
    assert later_role("model actor", "ray (other)") == "model actor"  # its /proc gone at the end
    assert later_role("driver", "driver") == "driver"


def test_the_pipeline_worker_times_the_frames_of_every_batch_the_collector_takes(tmp_path):
    import numpy as np
    from test_collect import batch, clip, collector, video

    from vidbatch.bench_measure import _clip_arrivals
    from vidbatch.collect import Collector

    rng = np.random.default_rng(0)
    (tmp_path / "timed").mkdir()
    (tmp_path / "untimed").mkdir()
    batches = [
        batch(clip("a", 0, rng), clip("a", 1, rng), clip("b", 0, rng, status="decode_error")),
        batch(video("a", 2)),
        batch(clip("b", 1, rng), video("b", 2)),
    ]
    plain_add = Collector.add_batch
    timed, untimed = collector(tmp_path / "timed", ["a", "b"]), collector(tmp_path / "untimed", ["a", "b"])
    with _clip_arrivals() as arrivals:
        for b in batches:
            timed.add_batch(b)
    assert Collector.add_batch is plain_add  # unwrapped after the run
    # The frames of each batch's ok clips, in order: a failed clip's and a video row's count nothing.
    assert [frames for _, frames in arrivals] == [8, 0, 4]
    assert [t for t, _ in arrivals] == sorted(t for t, _ in arrivals)
    for b in batches:
        untimed.add_batch(b)
    assert timed.close("lost") == untimed.close("lost")  # the collector took them as without the clock


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--videos", "0"], "--videos=0"),
        (["--seconds", "-1"], "--seconds=-1"),
        (["--repeat", "0"], "--repeat=0"),
        (["--modes", "fps,uniform"], "'fps,uniform'"),
        (["--arch", "resnet51"], "model.arch='resnet51'"),
        (["--fps", "0"], "sampling.fps"),
        (["--precision", "fp64"], "model.precision='fp64'"),
        (["--set", "resources.batch_frames=0"], "resources.batch_frames"),
    ],
)
def test_bad_options_are_refused_before_any_work(tmp_path, args, named):
    """Exit 2 with the bad value named, and no workload generated: a typo must not cost the
    minutes of encoding 16 videos first."""
    proc = subprocess.run(
        [sys.executable, "-m", "vidbatch.cli", "bench", *args, "--workdir", str(tmp_path / "work")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.startswith("vidbatch bench: ") and named in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "work").exists()
