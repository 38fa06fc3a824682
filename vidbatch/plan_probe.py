"""`vidbatch plan JOB.yaml`: a dry run that sizes the job before it runs.

It reads the manifest, probes a few videos (container metadata for more, a timed decode
for a handful), measures the model's rate on this machine, and reports:

* decode rate per CPU core and model rate (per GPU when there is one here, else per CPU
  core), in video-seconds per second for the job's sampling;
* the CPU:GPU ratio that keeps a GPU busy (or, CPU-only, how to split the cores);
* the estimated wall time for the whole manifest, here and on a cluster you describe
  (`--cpus/--gpus`).

Nothing is written and no weights are downloaded: the model rate does not depend on the
weights' values, so a random init of the same architecture is timed.
"""

from __future__ import annotations

import math
import os
import random
import resource
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from vidbatch.config import JobConfig, ModelConfig
from vidbatch.errors import JobError, VideoError

# The pipeline reaches this fraction of the stage bound once started (measured with
# `vidbatch bench`; see docs/performance.md); the estimate uses it, and says so.
PIPELINE_EFFICIENCY = 0.85
# Fixed cost of a run (Ray start, actors, commit): measured here by `vidbatch bench`.
DEFAULT_STARTUP_S = 20.0
# A GPU model rate cannot be measured on a machine without one. These are estimates for an
# H100 (bf16, channels_last, batch 64, frames already 224x224 uint8), in frames/s; see
# docs/performance.md for how they were derived. They are labelled as estimates in the output.
H100_FRAMES_PER_S_ESTIMATE = {
    "resnet18": 14000.0,
    "resnet34": 8000.0,
    "resnet50": 7000.0,
    "resnet101": 3700.0,
    "resnet152": 2600.0,
}


@dataclass
class VideoProbe:
    video_id: str
    uri: str
    status: str
    duration_s: float | None = None
    width: int | None = None
    height: int | None = None
    codec: str | None = None
    fps: float | None = None
    message: str | None = None


@dataclass
class DecodeProbe:
    video_id: str
    video_seconds: float
    cpu_s: float
    wall_s: float
    frames: int

    @property
    def video_s_per_cpu_s(self) -> float:
        return self.video_seconds / max(self.cpu_s, 1e-9)


@dataclass
class PlanReport:
    manifest_rows: int
    to_process: int
    refused: int
    duplicates: int
    probed: list[VideoProbe] = field(default_factory=list)
    decode_probes: list[DecodeProbe] = field(default_factory=list)
    mean_duration_s: float | None = None
    estimated_video_s: float | None = None
    frames_per_video_s: float | None = None
    decode_video_s_per_core: float | None = None
    model_device: str = "cpu"
    model_layout: str = "eager"  # ResNetRunner.layout: eager, onednn-packed or compiled
    model_frames_per_s: float | None = None  # on this machine: all CPU cores, or one GPU
    model_frames_per_s_per_core: float | None = None
    model_video_s_per_s: float | None = None
    gpu_model_frames_per_s: float | None = None
    gpu_rate_is_estimate: bool = False
    cores_per_gpu: float | None = None
    here_cpus: int = 1
    here_video_s_per_s: float | None = None
    here_wall_s: float | None = None
    cluster: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def estimated(self) -> bool:
        """Was a rate measured, so that the report holds an estimate of the run?"""
        return self.here_video_s_per_s is not None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "estimated": self.estimated}


# Below this mean length per-video costs the estimate leaves out weigh (see make_plan's note).
SHORT_VIDEO_S = 10.0


def make_plan(
    config: JobConfig,
    *,
    probe_videos: int = 3,
    metadata_videos: int = 30,
    decode_budget_s: float = 8.0,
    cluster_cpus: int | None = None,
    cluster_gpus: int = 0,
    seed: int = 0,
    model_seconds: float = 5.0,
    say: Any = None,
) -> PlanReport:
    from vidbatch.manifest import plan as plan_rows
    from vidbatch.manifest import read_manifest

    say = say or (lambda _line: None)
    manifest = read_manifest(config.manifest, config.storage)
    rows = plan_rows(manifest, config.inputs)
    report = PlanReport(
        manifest_rows=rows.manifest_rows,
        to_process=rows.to_process.num_rows,
        refused=len(rows.refused),
        duplicates=rows.duplicates,
        here_cpus=os.cpu_count() or 1,
    )
    candidates = list(zip(rows.to_process.column("video_id").to_pylist(), rows.to_process.column("uri").to_pylist(), strict=True))
    if not candidates:
        report.notes.append(
            "the manifest has no rows"
            if not rows.manifest_rows
            else f"no video to process: of {rows.manifest_rows} rows, {len(rows.refused)} are refused and "
            f"{rows.duplicates} are duplicates (`vidbatch check` says why rows are refused)"
        )
        return report
    rng = random.Random(seed)
    sample = candidates if len(candidates) <= metadata_videos else rng.sample(candidates, metadata_videos)
    say(f"probing {len(sample)} of {len(candidates)} videos (metadata) ...")
    report.probed = [_probe_metadata(vid, uri, config) for vid, uri in sample]
    durations = [p.duration_s for p in report.probed if p.status == "ok" and p.duration_s]
    if durations:
        report.mean_duration_s = sum(durations) / len(durations)
        report.estimated_video_s = report.mean_duration_s * len(candidates) * len(durations) / len(report.probed)
    if report.mean_duration_s is not None and report.mean_duration_s < SHORT_VIDEO_S:
        # The rates are per video-second; a video's fixed cost in the pipeline (its row's scheduling,
        # the decoder's open, the commit's row) is not in them. Measured with 1 s videos on 2 cores:
        # ~0.14 core-s a video, and a real run 4x slower than the estimate.
        report.notes.append(
            f"the videos are short (mean {report.mean_duration_s:.1f} s): each also has a fixed cost in the pipeline "
            "that these rates leave out (~0.1-0.2 core-seconds a video measured on 2 cores), so expect a longer run"
        )
    bad = [p for p in report.probed if p.status != "ok"]
    if bad:
        report.notes.append(
            f"{len(bad)} of {len(report.probed)} probed videos would fail: " + ", ".join(sorted({p.status for p in bad}))
        )

    decodable = [p for p in report.probed if p.status == "ok"]
    to_time = min(probe_videos, len(decodable))
    say(f"timing decode + sampling on {to_time} videos (up to {decode_budget_s:g} s each, one core) ...")
    for probe in decodable:  # a video that opens but fails to decode gives its turn to the next
        if len(report.decode_probes) == probe_videos:
            break
        timed = _time_decode(probe, config, decode_budget_s)
        if timed is not None:
            report.decode_probes.append(timed)
    if report.decode_probes:
        cpu = sum(p.cpu_s for p in report.decode_probes)
        video_s = sum(p.video_seconds for p in report.decode_probes)
        frames = sum(p.frames for p in report.decode_probes)
        report.decode_video_s_per_core = video_s / max(cpu, 1e-9)
        report.frames_per_video_s = frames / max(video_s, 1e-9)

    say(f"timing the model ({config.model.arch}, precision {config.model.precision}) on this machine ...")
    _time_model(report, config, model_seconds)
    _estimate(report, cluster_cpus=cluster_cpus, cluster_gpus=cluster_gpus)
    return report


def _probe_metadata(video_id: str, uri: str, config: JobConfig) -> VideoProbe:
    from vidbatch.decode import open_video
    from vidbatch.storage import open_source, stat_video

    probe = VideoProbe(video_id=video_id, uri=uri, status="ok")
    try:
        _, fs, path = stat_video(uri, config.storage)
        with (
            open_source(fs, path, allowed_roots=config.inputs.allowed_roots) as source,
            open_video(source, limits=config.limits, threads=1) as (_, _, info),
        ):
            probe.duration_s, probe.width, probe.height = info.duration_s, info.width, info.height
            probe.codec, probe.fps = info.codec, info.fps
    except VideoError as exc:
        probe.status, probe.message = exc.status, exc.message
    except Exception as exc:  # a probe must not end the plan
        probe.status, probe.message = "unreadable", f"{type(exc).__name__}: {str(exc)[:160]}"
    return probe


def _time_decode(probe: VideoProbe, config: JobConfig, budget_s: float) -> DecodeProbe | None:
    """The job's own decode + sampling + preprocessing, single-threaded, for up to budget_s."""
    from vidbatch.decode import iter_clips, open_video
    from vidbatch.preprocess import PreprocessSpec
    from vidbatch.storage import open_source, stat_video

    spec = PreprocessSpec(resize_size=_resize_for(config.model), crop_size=224)
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.monotonic()
    covered, frames = 0.0, 0
    try:
        _, fs, path = stat_video(probe.uri, config.storage)
        with (
            open_source(fs, path, allowed_roots=config.inputs.allowed_roots) as source,
            open_video(source, limits=config.limits, threads=1) as (container, stream, info),
        ):
            covered = 0.0
            for clip in iter_clips(container, stream, info, sampling=config.sampling, spec=spec):
                frames += len(clip.frame_pts_s)
                covered = clip.end_s - info.start_s
                if time.monotonic() - started > budget_s:
                    break
            else:
                covered = info.duration_s
    except VideoError:
        return None
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    if covered <= 0:
        return None
    return DecodeProbe(probe.video_id, covered, cpu, time.monotonic() - started, frames)


def _resize_for(model: ModelConfig) -> int:
    # torchvision's recipe: 232 for resnet50 IMAGENET1K_V2, else 256; the rate barely depends on it.
    return 232 if model.arch == "resnet50" and model.weights.upper().endswith(("V2", "DEFAULT")) else 256


def _time_model(report: PlanReport, config: JobConfig, seconds: float) -> None:
    import numpy as np

    from vidbatch.model import ResNetRunner
    from vidbatch.model_weights import resolve_weights

    random_init = resolve_weights(ModelConfig(arch=config.model.arch, weights="none"), config.storage)
    if config.model.weights.lower() != "none":
        report.notes.append(
            f"model.weights ({config.model.weights}) is not read: a random init of {config.model.arch} is timed, "
            "as fast as any weights; `vidbatch check` reads and checks the weights"
        )
    cores = os.cpu_count() or 1
    runner = ResNetRunner(
        threads=cores,
        arch=config.model.arch,
        state_dict_bytes=random_init.state_dict_bytes,
        preprocess=random_init.preprocess,
        precision=config.model.precision,
        batch_frames=config.resources.batch_frames,
        compile=config.resources.model_compile,
    )
    report.model_device = str(runner.device)
    report.model_layout = runner.layout
    batch = np.random.default_rng(0).integers(0, 256, size=(max(8, config.resources.batch_frames), 224, 224, 3), dtype=np.uint8)
    runner(batch)  # warm-up (a compile, if any, happened when the runner was built)
    if runner.compile_s is not None:
        report.notes.append(
            f"the model rate is compiled (torch.compile took {runner.compile_s:.0f} s here, once per model actor; "
            "resources.model_compile)"
        )
    done, started = 0, time.monotonic()
    while time.monotonic() - started < seconds or done < 2 * len(batch):
        runner(batch)
        done += len(batch)
    rate = done / (time.monotonic() - started)
    report.model_frames_per_s = rate
    if runner.device.type == "cuda":
        report.gpu_model_frames_per_s = rate
    else:
        report.model_frames_per_s_per_core = rate / cores
        report.gpu_model_frames_per_s = H100_FRAMES_PER_S_ESTIMATE.get(config.model.arch)
        report.gpu_rate_is_estimate = True
        if config.model.precision == "fp32":
            report.notes.append(
                "model.precision is fp32: on a GPU the model runs slower than the bf16 estimate, so fewer decode "
                "cores than suggested keep one busy"
            )
    if report.frames_per_video_s:
        report.model_video_s_per_s = rate / report.frames_per_video_s


def _estimate(report: PlanReport, *, cluster_cpus: int | None, cluster_gpus: int) -> None:
    d = report.decode_video_s_per_core
    fpv = report.frames_per_video_s
    if not d or not fpv or not report.model_frames_per_s:
        missing = "decode" if not d or not fpv else "model"
        why = " (no probed video could be decoded)" if missing == "decode" else ""
        report.notes.append(f"no {missing} rate could be measured{why}, so there is no estimate")
        return
    cores = report.here_cpus
    if report.model_device == "cpu":
        # Both stages share the cores: per video-second, decode costs 1/d core-s and the model fpv/m core-s.
        m_core = report.model_frames_per_s / cores / fpv
        here = cores / (1.0 / d + 1.0 / m_core)
        report.notes.append(
            f"CPU-only here: give the model {100 * (1 / m_core) / (1 / d + 1 / m_core):.0f}% of the cores "
            f"and decoding the rest (resources.model_actors / decode_actors)"
        )
    else:
        here = min(d * max(1, cores - 1), report.model_frames_per_s / fpv)
    report.here_video_s_per_s = here * PIPELINE_EFFICIENCY
    if report.estimated_video_s:
        report.here_wall_s = DEFAULT_STARTUP_S + report.estimated_video_s / report.here_video_s_per_s
    if report.gpu_model_frames_per_s:
        report.cores_per_gpu = report.gpu_model_frames_per_s / fpv / d
    if cluster_cpus:
        if cluster_gpus and report.gpu_model_frames_per_s:
            decode_rate = d * max(1, cluster_cpus - cluster_gpus)  # a core per model actor feeds its GPU
            model_rate = cluster_gpus * report.gpu_model_frames_per_s / fpv
            bound = min(decode_rate, model_rate)
            limited = "decode (add CPUs)" if decode_rate < model_rate else "the GPUs"
        else:
            m_core = (report.model_frames_per_s_per_core or report.model_frames_per_s / cores) / fpv
            bound = cluster_cpus / (1.0 / d + 1.0 / m_core)
            limited = "CPU (decode and model share it)"
        rate = bound * PIPELINE_EFFICIENCY
        report.cluster = {
            "cpus": cluster_cpus,
            "gpus": cluster_gpus,
            "video_s_per_s": rate,
            "limited_by": limited,
            "wall_s": (DEFAULT_STARTUP_S + report.estimated_video_s / rate) if report.estimated_video_s else None,
        }


def format_report(report: PlanReport) -> str:
    lines = [
        f"manifest: {report.manifest_rows} rows, {report.to_process} to process, {report.refused} refused, "
        f"{report.duplicates} duplicates (the estimate is for all of them, as a first run; `vidbatch check` "
        "says what a run would decode now)",
    ]
    ok = [p for p in report.probed if p.status == "ok"]
    if ok:
        codecs = sorted({f"{p.codec} {p.width}x{p.height}" for p in ok})
        lines.append(f"probed {len(report.probed)} videos: {', '.join(codecs[:6])}{' ...' if len(codecs) > 6 else ''}")
    if report.mean_duration_s is not None and report.estimated_video_s is not None:
        lines.append(
            f"  mean duration {report.mean_duration_s:.1f} s -> about {report.estimated_video_s / 3600:.2f} hours of video "
            f"in the manifest (estimated from the probe)"
        )
    if report.decode_video_s_per_core:
        lines.append(
            f"decode + sampling + preprocessing: {report.decode_video_s_per_core:.1f} video-s/s per core "
            f"({report.frames_per_video_s:.2f} sampled frames per video-second)"
        )
    if report.model_frames_per_s:
        where = report.model_device if report.model_layout == "eager" else f"{report.model_device}, {report.model_layout}"
        lines.append(
            f"model on this machine ({where}): {report.model_frames_per_s:.1f} frames/s"
            + (f" = {report.model_video_s_per_s:.1f} video-s/s" if report.model_video_s_per_s else "")
        )
    if report.cores_per_gpu is not None and report.gpu_model_frames_per_s:
        label = "estimated H100 in bf16, not measured here" if report.gpu_rate_is_estimate else "this GPU, measured"
        lines.append(
            f"suggested CPU:GPU ratio: {math.ceil(report.cores_per_gpu)} decode cores per GPU "
            f"({label}: {report.gpu_model_frames_per_s:.0f} frames/s)"
        )
    if report.here_video_s_per_s:
        lines.append(
            f"here ({report.here_cpus} CPUs{'' if report.model_device == 'cpu' else ' + GPU'}): about "
            f"{report.here_video_s_per_s:.1f} video-s/s (= video-hours per wall-hour)"
            + (f"; whole manifest about {_duration(report.here_wall_s)}" if report.here_wall_s else "")
        )
    if report.cluster:
        c = report.cluster
        lines.append(
            f"cluster ({c['cpus']} CPUs, {c['gpus']} GPUs): about {c['video_s_per_s']:.0f} video-s/s, "
            f"limited by {c['limited_by']}" + (f"; whole manifest about {_duration(c['wall_s'])}" if c.get("wall_s") else "")
        )
    if report.estimated:
        lines.append(
            f"(estimates assume the pipeline reaches {PIPELINE_EFFICIENCY:.0%} of the stage bound and "
            f"~{DEFAULT_STARTUP_S:.0f} s of start-up; measure with `vidbatch bench`)"
        )
    lines.extend(f"note: {n}" for n in report.notes)
    return "\n".join(lines)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def check_args(probe_videos: int, metadata_videos: int, cluster_cpus: int | None = None, cluster_gpus: int = 0) -> None:
    if probe_videos < 1 or metadata_videos < 1:
        raise JobError("--probe and --metadata must be at least 1")
    if cluster_cpus is not None and cluster_cpus < 1:
        raise JobError(f"--cpus {cluster_cpus}: a cluster needs at least 1 CPU")
    if cluster_gpus < 0:
        raise JobError(f"--gpus {cluster_gpus}: cannot be negative")
    if cluster_gpus and cluster_cpus is None:
        raise JobError(f"--gpus {cluster_gpus} needs --cpus (the cluster's CPUs) to estimate a cluster")
    if cluster_gpus and cluster_cpus is not None and cluster_cpus <= cluster_gpus:
        raise JobError(
            f"--cpus {cluster_cpus} --gpus {cluster_gpus}: each GPU's model actor takes a CPU, which leaves none "
            "to decode; give more CPUs than GPUs"
        )
