"""`vidbatch plan`: a dry run that probes the manifest and estimates the run (no timing asserted)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from vidbatch.config import parse_job
from vidbatch.plan_probe import format_report, make_plan


def test_plan_probes_and_estimates_without_writing(tmp_path, library):
    manifest = tmp_path / "manifest.parquet"
    rows = {"h264": library["h264"].path, "gop": library["gop"].path, "missing": tmp_path / "nope.mp4"}
    pq.write_table(pa.table({"video_id": list(rows), "uri": [str(p) for p in rows.values()]}), manifest)
    job = parse_job(
        {
            "name": "plan",
            "manifest": str(manifest),
            "output": str(tmp_path / "out"),
            "sampling": {"mode": "fps", "fps": 1.0},
            "model": {"arch": "resnet18", "weights": "IMAGENET1K_V1"},  # never downloaded: the plan times a random init
        }
    )
    report = make_plan(job, probe_videos=2, metadata_videos=10, cluster_cpus=16, cluster_gpus=1, model_seconds=0.2)
    assert report.manifest_rows == 3 and report.to_process == 3
    assert {p.status for p in report.probed} == {"ok", "not_found"}
    assert report.decode_video_s_per_core and report.decode_video_s_per_core > 0
    assert report.frames_per_video_s and 0.9 < report.frames_per_video_s < 1.1  # fps 1.0
    assert report.model_frames_per_s and report.model_frames_per_s > 0
    assert report.cores_per_gpu and report.cluster["wall_s"] > 0
    text = format_report(report)
    assert "CPU:GPU" in text and "estimate" in text and "not_found" in text
    assert "(estimated H100 in bf16, not measured here:" in text  # which precision the GPU figure is
    assert "the estimate is for all of them, as a first run; `vidbatch check` says what a run would decode now" in text
    assert report.model_layout == "onednn-packed"  # the model a CPU model actor runs
    assert "model on this machine (cpu, onednn-packed):" in text
    assert not (tmp_path / "out").exists()  # a dry run
    # seconds-long videos: the per-video cost the rates leave out is said (1 s videos ran 4x the estimate)
    assert report.mean_duration_s is not None and report.mean_duration_s < 10
    assert "the videos are short (mean " in text and "is a large part of the estimate" in text
    # the per-video fixed cost is in the estimate now, not only in a note, and the wall time is a range
    assert report.per_video_wall_s and report.per_video_wall_s > 0
    assert report.here_wall_s_low < report.here_wall_s < report.here_wall_s_high
    assert report.cluster["wall_s_low"] < report.cluster["wall_s"] < report.cluster["wall_s_high"]
    assert "whole manifest about " in text and "(range " in text and "core-s of per-video cost" in text
    assert report.load_at_plan is not None and report.cpu_contention and report.cpu_contention > 0
    assert report.startup_s >= 20.0
    keys = set(report.to_dict())
    assert {"here_wall_s", "here_video_s_per_s", "decode_video_s_per_core", "cluster", "estimated"} <= keys  # kept
    assert {"here_wall_s_low", "here_wall_s_high", "startup_s", "per_video_core_s", "decode_sizes"} <= keys  # added
    assert "model.weights (IMAGENET1K_V1) is not read: a random init of resnet18 is timed" in text  # check reads them


def test_cluster_sizes_that_make_no_sense_are_refused_naming_them():
    # Before: `--cpus -4 --gpus 1` printed an estimate for "-4 CPUs", and --gpus without --cpus was ignored.
    import pytest

    from vidbatch.errors import JobError
    from vidbatch.plan_probe import check_args

    for cpus, gpus, says in [
        (-4, 1, "--cpus -4"),
        (0, 0, "--cpus 0"),
        (None, 2, "--gpus 2 needs --cpus"),
        (4, -1, "--gpus -1"),
        (1, 1, "--cpus 1 --gpus 1"),
    ]:
        with pytest.raises(JobError, match=says):
            check_args(3, 30, cpus, gpus)
    check_args(3, 30, 16, 1)
    check_args(3, 30, None, 0)


def test_a_plan_with_nothing_to_measure_says_why_and_exits_2(tmp_path, capsys):
    """Before: exit 0 with the estimate-assumptions line, and 'every row is refused' for an empty manifest."""
    import yaml

    from vidbatch.cli import main

    def plan_of(rows: dict[str, str]) -> tuple[int, str, str]:
        table = pa.table({"video_id": pa.array(list(rows), pa.string()), "uri": pa.array(list(rows.values()), pa.string())})
        pq.write_table(table, tmp_path / "manifest.parquet")
        job = tmp_path / "job.yaml"
        raw = {"name": "p", "manifest": str(tmp_path / "manifest.parquet"), "output": str(tmp_path / "out")}
        job.write_text(yaml.safe_dump({**raw, "model": {"arch": "resnet18", "weights": "none"}}))
        code = main(["plan", str(job), "--probe", "1", "--metadata", "2"])
        out, err = capsys.readouterr()
        return code, out, err

    code, out, err = plan_of({})
    assert code == 2 and "vidbatch: no estimate: the manifest has no rows" in err
    assert "estimates assume" not in out
    code, out, err = plan_of({"web": "http://host/a.mp4", "a": str(tmp_path / "a.mp4")})
    assert code == 2 and "no decode rate could be measured (no probed video could be decoded)" in err, err
    assert "not_found" in out and "estimates assume" not in out
    code, out, err = plan_of({"web": "http://host/a.mp4"})
    assert code == 2 and "of 1 rows, 1 are refused and 0 are duplicates" in err, err


def test_a_video_that_opens_but_does_not_decode_gives_its_turn_to_the_next(tmp_path, library):
    """Before: `--probe 1` timed only the first video that opened; when its frames were damaged,
    the plan had no decode rate although a good video was next in line."""
    good = library["h264"].path
    data = bytearray(good.read_bytes())
    start, moov = data.find(b"mdat") + 4, data.find(b"moov")
    end = moov if moov > start else len(data)
    data[start:end] = bytes(end - start)  # the header is intact, every frame is zeros
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(bytes(data))
    manifest = tmp_path / "manifest.parquet"
    pq.write_table(pa.table({"video_id": ["a-damaged", "b-good"], "uri": [str(damaged), str(good)]}), manifest)
    model = {"arch": "resnet18", "weights": "none"}
    job = parse_job({"name": "p", "manifest": str(manifest), "output": str(tmp_path / "out"), "model": model})
    report = make_plan(job, probe_videos=1, metadata_videos=2, model_seconds=0.2)
    assert [p.status for p in report.probed] == ["ok", "ok"]  # both open: the damage shows only when decoding
    assert [p.video_id for p in report.decode_probes] == ["b-good"]
    assert report.decode_video_s_per_core and report.decode_video_s_per_core > 0


def _probe(video_id: str, width: int, height: int, duration_s: float = 30.0):
    from vidbatch.plan_probe import VideoProbe

    return VideoProbe(video_id, f"/v/{video_id}.mp4", "ok", duration_s, width, height, "h264", 30.0)


def test_the_wall_time_adds_a_fixed_cost_per_video_and_gives_a_range():
    """Before: start-up + video_s / (bound x 0.85), whatever the number of videos: 40 x 2 s videos were
    estimated as one 80 s video, and the run took ~3x the estimate (docs/performance.md)."""
    from vidbatch.plan_probe import (
        DEFAULT_STARTUP_S,
        EFFICIENCY_RANGE,
        PER_VIDEO_CORE_S,
        PIPELINE_EFFICIENCY,
        STARTUP_RANGE_S,
        STARTUP_STRETCH_MAX,
        startup_range_s,
        wall_time_range_s,
        wall_time_s,
    )

    got = wall_time_s(240.0, 8, 10.0, cores=2, startup_s=20.0, per_video_core_s=0.5, efficiency=0.8)
    assert abs(got - (20.0 + (240.0 / 10.0 + 8 * 0.5 / 2) / 0.8)) < 1e-9
    # the same video-seconds in more videos take longer; with no per-video cost they would not
    assert wall_time_s(240.0, 120, 10.0, cores=2) > wall_time_s(240.0, 8, 10.0, cores=2)
    assert wall_time_s(240.0, 120, 10.0, cores=2, per_video_core_s=0.0) == wall_time_s(
        240.0, 8, 10.0, cores=2, per_video_core_s=0.0
    )
    # the per-video cost is spread over the cores that pay it
    assert wall_time_s(0.0, 100, 10.0, cores=4, startup_s=0.0, efficiency=1.0) == 100 * PER_VIDEO_CORE_S / 4
    low, mid, high = wall_time_range_s(240.0, 8, 10.0, cores=2)
    assert low < mid < high
    assert mid == wall_time_s(240.0, 8, 10.0, cores=2, startup_s=DEFAULT_STARTUP_S, efficiency=PIPELINE_EFFICIENCY)
    assert low == wall_time_s(240.0, 8, 10.0, cores=2, startup_s=STARTUP_RANGE_S[0], efficiency=EFFICIENCY_RANGE[1])
    assert high == wall_time_s(240.0, 8, 10.0, cores=2, startup_s=STARTUP_RANGE_S[1], efficiency=EFFICIENCY_RANGE[0])
    assert STARTUP_RANGE_S[0] <= DEFAULT_STARTUP_S <= STARTUP_RANGE_S[1]
    # a busy host (the plan's single-threaded probe got half a core, a quarter) stretches the start-up
    assert (
        startup_range_s(None)
        == startup_range_s(1.0)
        == startup_range_s(0.9)
        == (STARTUP_RANGE_S[0], DEFAULT_STARTUP_S, STARTUP_RANGE_S[1])
    )
    assert startup_range_s(1.5) == (STARTUP_RANGE_S[0], 1.5 * DEFAULT_STARTUP_S, 1.5 * STARTUP_RANGE_S[1])
    assert startup_range_s(4.0) == (STARTUP_RANGE_S[0], STARTUP_STRETCH_MAX * DEFAULT_STARTUP_S, 4.0 * STARTUP_RANGE_S[1])
    busy = wall_time_range_s(240.0, 8, 10.0, cores=2, contention=3.0)
    assert busy[0] == low and busy[1] > mid and busy[2] > high
    assert EFFICIENCY_RANGE[0] <= PIPELINE_EFFICIENCY <= EFFICIENCY_RANGE[1]


def test_decode_probes_spread_over_frame_sizes_and_the_rate_weighs_each_size_by_its_duration():
    """Before: the first rows of the manifest were timed; 480p rows then 1080p rows gave 480p's rate."""
    from vidbatch.plan_probe import DecodeProbe, decode_rate_for_mix, pick_decode_probes

    probed = [_probe(f"sd{i}", 854, 480) for i in range(4)] + [_probe(f"hd{i}", 1920, 1080) for i in range(4)]
    order = pick_decode_probes(probed, 3)
    assert {p.height for p in order[:3]} == {480, 1080}  # both sizes among the timed
    assert len(order) == len(probed)  # the rest follow, for a video that fails to decode
    assert pick_decode_probes(probed, 1)[0].video_id == "hd0"  # the middle one
    assert pick_decode_probes(probed[:2], 3) == probed[:2]

    timed = [DecodeProbe("sd0", 30.0, 1.0, 1.0, 30), DecodeProbe("hd3", 30.0, 4.0, 4.0, 30)]
    # 4 x 30 s at 1/30 core-s a video-second + 4 x 30 s at 4/30: 240 video-s for 20 core-s
    assert abs(decode_rate_for_mix(probed, timed) - 240.0 / 20.0) < 1e-9
    # a manifest of 480p only, timed on 480p: that rate, whatever else was timed
    assert abs(decode_rate_for_mix(probed[:4], timed) - 30.0) < 1e-9
    # a size not timed takes the cost of the timed size nearest in pixels (by ratio)
    sizes_only = [_probe("sd0", 854, 480, 0.0), _probe("hd3", 1920, 1080, 0.0)]  # no duration: not weighed
    assert abs(decode_rate_for_mix([*sizes_only, _probe("x", 1600, 900)], timed) - 7.5) < 1e-9
    assert abs(decode_rate_for_mix([*sizes_only, _probe("y", 640, 360)], timed) - 30.0) < 1e-9
    assert decode_rate_for_mix(probed, []) is None


def test_a_manifest_of_small_then_large_videos_times_both_sizes(tmp_path, library):
    """Before: `--probe 2` timed the manifest's first two rows, both 320x240, and sized 352x288 rows by them."""
    rows = {f"a{i}": library["h264"].path for i in range(4)} | {"z-vp9": library["vp9"].path}
    manifest = tmp_path / "manifest.parquet"
    pq.write_table(pa.table({"video_id": list(rows), "uri": [str(p) for p in rows.values()]}), manifest)
    model = {"arch": "resnet18", "weights": "none"}
    job = parse_job({"name": "p", "manifest": str(manifest), "output": str(tmp_path / "out"), "model": model})
    report = make_plan(job, probe_videos=2, metadata_videos=10, model_seconds=0.2)
    assert "z-vp9" in [p.video_id for p in report.decode_probes]
    assert set(report.decode_sizes) == {"320x240", "352x288"}
    assert report.here_wall_s is not None
