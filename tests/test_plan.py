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
    assert "the videos are short (mean " in text and "expect a longer run" in text
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
