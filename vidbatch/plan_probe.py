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
# The pipeline's efficiency varies with the host's load and the run (docs/performance.md, "`vidbatch plan
# JOB.yaml`": measured steady/bound 0.75-0.94 on this 2-core host): the range the report gives.
EFFICIENCY_RANGE = (0.70, 0.95)
# Fixed cost of a run (Ray start, actors, first outputs, commit) on an idle host: measured here by
# `vidbatch bench` (a keyframes run, nearly all start-up, takes ~15 s). On a busy host it is longer: at
# load 6-23 on 2 cores, `vidbatch run`s spent ~15-95 s before and around their work. The plan measures how
# busy the host is (contention: wall / CPU time of its single-threaded decode probes, 1.0 when a core is
# free) and stretches the start-up by it, up to STARTUP_STRETCH_MAX (docs/performance.md).
DEFAULT_STARTUP_S = 20.0
STARTUP_RANGE_S = (15.0, 30.0)
STARTUP_STRETCH_MAX = 1.5
# A video's fixed cost in the pipeline beyond its decode (its row's scheduling through Ray Data, the
# decode sandbox's hand-off, its rows in the commit), in core-seconds. The decode probe already holds the
# decoder's open. An upper figure: 40 x 2 s videos on 2 cores came out at ~6.5 videos/s once started
# (0.3 core-s a video, decode and model included), and the older "1 s videos ran 4x the estimate" was
# mostly start-up (docs/performance.md, "`vidbatch plan JOB.yaml`").
PER_VIDEO_CORE_S = 0.1
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
    # Added (keys above unchanged): the range the wall time can fall in, and the terms of the estimate.
    here_wall_s_low: float | None = None
    here_wall_s_high: float | None = None
    startup_s: float = DEFAULT_STARTUP_S
    cpu_contention: float | None = None  # wall / CPU time of the decode probes: 1.0 on a free core
    per_video_core_s: float = PER_VIDEO_CORE_S
    pipeline_efficiency: float = PIPELINE_EFFICIENCY
    per_video_wall_s: float | None = None  # here: the part of here_wall_s the videos' fixed cost takes
    decode_sizes: dict[str, float] = field(default_factory=dict)  # "WxH": video-s per core-second timed
    load_at_plan: float | None = None  # the 1-minute load average when the model was timed
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
        # The rates are per video-second; a video's fixed cost in the pipeline (its row's scheduling, the
        # sandbox's hand-off, the commit's row) is not in them: the estimate adds PER_VIDEO_CORE_S a video,
        # a figure measured on 2 cores, which weighs most here (docs/performance.md).
        report.notes.append(
            f"the videos are short (mean {report.mean_duration_s:.1f} s): each video's fixed cost in the pipeline "
            f"(~{PER_VIDEO_CORE_S:g} core-seconds, measured on 2 cores, not on this job) is a large part of the estimate; "
            "it is the least certain part"
        )
    bad = [p for p in report.probed if p.status != "ok"]
    if bad:
        report.notes.append(
            f"{len(bad)} of {len(report.probed)} probed videos would fail: " + ", ".join(sorted({p.status for p in bad}))
        )

    decodable = pick_decode_probes([p for p in report.probed if p.status == "ok"], probe_videos)
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
        report.frames_per_video_s = frames / max(video_s, 1e-9)
        report.cpu_contention = sum(p.wall_s for p in report.decode_probes) / max(cpu, 1e-9)
        by_size = _timed_by_size(report.probed, report.decode_probes)  # smallest frame size first
        report.decode_sizes = {size: video / max(cpu_s, 1e-9) for (_, size), (cpu_s, video) in by_size.items()}
        # Over the probed videos' sizes and durations, not only the timed ones' (a 480p + 1080p manifest)
        report.decode_video_s_per_core = decode_rate_for_mix(report.probed, report.decode_probes) or video_s / max(cpu, 1e-9)

    say(f"timing the model ({config.model.arch}, precision {config.model.precision}) on this machine ...")
    _time_model(report, config, model_seconds)
    _estimate(report, cluster_cpus=cluster_cpus, cluster_gpus=cluster_gpus)
    return report


def _size(probe: VideoProbe) -> str:
    return f"{probe.width}x{probe.height}"


def _pixels(probe: VideoProbe) -> int:
    return (probe.width or 0) * (probe.height or 0)


def pick_decode_probes(decodable: list[VideoProbe], wanted: int) -> list[VideoProbe]:
    """The order in which to time decodes: spread over the probed frame sizes, the smallest, the largest and
    between, then the rest (a video that fails to decode gives its turn to the next). Before, the manifest's
    first rows were timed: a manifest of 480p rows then 1080p rows was sized from 480p alone."""
    ranked = sorted(decodable, key=lambda p: (_pixels(p), p.video_id))
    if len(ranked) <= wanted:
        return ranked
    last = len(ranked) - 1
    picks = [last // 2 + last % 2] if wanted == 1 else sorted({round(i * last / (wanted - 1)) for i in range(wanted)})
    return [ranked[i] for i in picks] + [p for i, p in enumerate(ranked) if i not in picks]


def _timed_by_size(probed: list[VideoProbe], timed: list[DecodeProbe]) -> dict[tuple[int, str], tuple[float, float]]:
    """The timed decodes' (cpu_s, video_s), summed per frame size (pixels, "WxH"), the smallest first."""
    by_id = {p.video_id: p for p in probed}
    sums: dict[tuple[int, str], tuple[float, float]] = {}
    for t in timed:
        p = by_id.get(t.video_id)
        key = (_pixels(p), _size(p)) if p else (0, "?")
        cpu, video = sums.get(key, (0.0, 0.0))
        sums[key] = (cpu + t.cpu_s, video + t.video_seconds)
    return dict(sorted(sums.items()))


def decode_rate_for_mix(probed: list[VideoProbe], timed: list[DecodeProbe]) -> float | None:
    """Video-seconds per core-second over the probed videos: each probed video's duration at the decode cost
    timed on the video nearest it in frame size (pixels). None when nothing is timed or has a duration."""
    costs: dict[int, tuple[float, float]] = {}  # pixels -> (cpu_s, video_s): sizes of equal pixels pooled
    for (px, _), (cpu, video) in _timed_by_size(probed, timed).items():
        pooled = costs.get(px, (0.0, 0.0))
        costs[px] = (pooled[0] + cpu, pooled[1] + video)
    if not costs:
        return None
    per_video_s = {px: cpu / max(video, 1e-9) for px, (cpu, video) in costs.items()}
    total_cpu = total_video = 0.0
    for p in probed:
        if p.status != "ok" or not p.duration_s:
            continue
        px = _pixels(p)
        nearest = min(per_video_s, key=lambda k: (abs(math.log(max(k, 1) / max(px, 1))), k))
        total_cpu += p.duration_s * per_video_s[nearest]
        total_video += p.duration_s
    if total_video <= 0 or total_cpu <= 0:
        return None
    return total_video / total_cpu


def wall_time_s(
    video_s: float,
    videos: int,
    bound_video_s_per_s: float,
    *,
    cores: int,
    startup_s: float = DEFAULT_STARTUP_S,
    per_video_core_s: float = PER_VIDEO_CORE_S,
    efficiency: float = PIPELINE_EFFICIENCY,
) -> float:
    """A run's wall time: start-up, then the video at the stage bound's rate times the pipeline's efficiency,
    and each video's fixed cost (core-seconds) spread over the cores that pay it at the same efficiency."""
    return startup_s + (video_s / bound_video_s_per_s + videos * per_video_core_s / max(cores, 1)) / efficiency


def startup_range_s(contention: float | None) -> tuple[float, float, float]:
    """(low, estimate, high) start-up seconds. contention (wall / CPU time of a single-threaded probe) says how
    busy the host was: the estimate and the high end are stretched by it (the estimate at most
    STARTUP_STRETCH_MAX times, the high end as much as measured); the low end is an idle host's."""
    stretch = max(1.0, contention or 1.0)
    return (
        STARTUP_RANGE_S[0],
        DEFAULT_STARTUP_S * min(stretch, STARTUP_STRETCH_MAX),
        STARTUP_RANGE_S[1] * stretch,
    )


def wall_time_range_s(
    video_s: float, videos: int, bound_video_s_per_s: float, *, cores: int, contention: float | None = None
) -> tuple[float, float, float]:
    """(low, estimate, high): the estimate, and the same with the start-up and efficiency at the ends of their
    measured ranges (what the plan cannot know: the host's other load, a run's co-scheduling)."""
    s_low, s_mid, s_high = startup_range_s(contention)
    low = wall_time_s(video_s, videos, bound_video_s_per_s, cores=cores, startup_s=s_low, efficiency=EFFICIENCY_RANGE[1])
    mid = wall_time_s(video_s, videos, bound_video_s_per_s, cores=cores, startup_s=s_mid)
    high = wall_time_s(video_s, videos, bound_video_s_per_s, cores=cores, startup_s=s_high, efficiency=EFFICIENCY_RANGE[0])
    return low, mid, high


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

    spec = PreprocessSpec(resize_size=_resize_for(config.model), crop_size=224, resize=config.model.resize)
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
    report.load_at_plan = _load_average()
    if report.load_at_plan is not None and report.load_at_plan > cores:
        # The model's rate is timed by the clock with every core, so other work on the machine lowers it; the
        # decode rate is CPU time, which it does not. Measured on a 2-core host at load 8-20: the model rate of
        # the same job moved 2x between plans, and runs took 1.3-1.6x the estimate of a 20 s start-up.
        report.notes.append(
            f"the machine is busy (load average {report.load_at_plan:.1f} on {cores} CPUs): the model rate was "
            "timed against that load and the run will share the CPUs too; the estimate holds only if the load stays as it is"
        )
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


def _load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


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
        fixed_cores = cores  # a video's fixed cost is paid on any core
        report.notes.append(
            f"CPU-only here: give the model {100 * (1 / m_core) / (1 / d + 1 / m_core):.0f}% of the cores "
            f"and decoding the rest (resources.model_actors / decode_actors)"
        )
    else:
        here = min(d * max(1, cores - 1), report.model_frames_per_s / fpv)
        fixed_cores = max(1, cores - 1)  # on the decode cores
    report.here_video_s_per_s = here * PIPELINE_EFFICIENCY
    videos = report.to_process
    if report.estimated_video_s:
        low, mid, high = wall_time_range_s(
            report.estimated_video_s, videos, here, cores=fixed_cores, contention=report.cpu_contention
        )
        report.startup_s = startup_range_s(report.cpu_contention)[1]
        report.here_wall_s, report.here_wall_s_low, report.here_wall_s_high = mid, low, high
        report.per_video_wall_s = videos * PER_VIDEO_CORE_S / fixed_cores / PIPELINE_EFFICIENCY
    if report.gpu_model_frames_per_s:
        report.cores_per_gpu = report.gpu_model_frames_per_s / fpv / d
    if cluster_cpus:
        if cluster_gpus and report.gpu_model_frames_per_s:
            decode_cores = max(1, cluster_cpus - cluster_gpus)  # a core per model actor feeds its GPU
            decode_rate = d * decode_cores
            model_rate = cluster_gpus * report.gpu_model_frames_per_s / fpv
            bound = min(decode_rate, model_rate)
            limited = "decode (add CPUs)" if decode_rate < model_rate else "the GPUs"
        else:
            m_core = (report.model_frames_per_s_per_core or report.model_frames_per_s / cores) / fpv
            bound = cluster_cpus / (1.0 / d + 1.0 / m_core)
            decode_cores = cluster_cpus
            limited = "CPU (decode and model share it)"
        rate = bound * PIPELINE_EFFICIENCY
        report.cluster = {
            "cpus": cluster_cpus,
            "gpus": cluster_gpus,
            "video_s_per_s": rate,
            "limited_by": limited,
            "wall_s": None,
        }
        if report.estimated_video_s:
            # A cluster's start-up (Ray's start on many nodes, actors' imports) is not measured here: the same range.
            low, mid, high = wall_time_range_s(report.estimated_video_s, videos, bound, cores=decode_cores)
            report.cluster.update(wall_s=mid, wall_s_low=low, wall_s_high=high)


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
            + (
                f"; whole manifest about {_duration(report.here_wall_s)}{_range(report.here_wall_s_low, report.here_wall_s_high)}"
                if report.here_wall_s
                else ""
            )
        )
    if report.cluster:
        c = report.cluster
        lines.append(
            f"cluster ({c['cpus']} CPUs, {c['gpus']} GPUs): about {c['video_s_per_s']:.0f} video-s/s, "
            f"limited by {c['limited_by']}"
            + (
                f"; whole manifest about {_duration(c['wall_s'])}{_range(c.get('wall_s_low'), c.get('wall_s_high'))}"
                if c.get("wall_s")
                else ""
            )
        )
    if report.estimated:
        lo, _, hi = startup_range_s(report.cpu_contention)
        fixed = f"{report.to_process} videos x ~{PER_VIDEO_CORE_S:g} core-s of per-video cost"
        if report.per_video_wall_s:
            fixed += f" (~{_duration(report.per_video_wall_s)} of the estimate)"
        lines.append(
            f"(estimates assume the pipeline reaches {PIPELINE_EFFICIENCY:.0%} of the stage bound and "
            f"~{report.startup_s:.0f} s of start-up, plus {fixed}; the range is {EFFICIENCY_RANGE[0]:.0%}-"
            f"{EFFICIENCY_RANGE[1]:.0%} of the bound and {_duration(lo)}-{_duration(hi)} of start-up. "
            "Other load on the machine is not foreseen: the rates are measured as the machine is now; "
            "measure with `vidbatch bench`)"
        )
    lines.extend(f"note: {n}" for n in report.notes)
    return "\n".join(lines)


def _range(low: float | None, high: float | None) -> str:
    return f" (range {_duration(low)} to {_duration(high)})" if low is not None and high is not None else ""


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 10:
        return f"{seconds:.1f} s"
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
