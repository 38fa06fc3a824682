"""`vidbatch bench`: the pipeline side by side with a plain script and the stage bounds.

Every figure comes from one run on the same generated videos (see vidbatch.bench_workload),
and each measurement runs in its own fresh process so none inherits another's warm state:

(a) plain script: what a person writes first. PyAV with default settings decoding every
    frame, the sampled frames through torchvision's PIL transforms, the ResNet in fp32,
    one video at a time, in one process. Its own start-up (imports, model) is included.
(b) stage bounds on this machine, start-up excluded: decode-only (vidbatch's decode stage,
    one process per CPU) and model-only (vidbatch's model runner on all CPUs or the GPU,
    the pipeline's precision). Stage bound = 1 / (1/decode + 1/model): both stages share
    the machine, so at best their times add. Measured before (c) and again after it
    (`--no-bracket`: before only); the bounds are the mean of both, and how far each moved
    is reported, so a machine that slowed down or sped up during the round shows.
(c) the pipeline: `run_job` on a local Ray, in a fresh process, exactly as `vidbatch run`
    does it ("start-up included": process start, imports, Ray start, actors, commit).
    "Steady" excludes start-up: the same process then runs a tiny job (3 s videos, one per
    CPU so that it starts as many decode actors as the big job: the pipeline starts no more
    decoders than videos) and the steady rate is the marginal one over the runs' pipeline
    phases, (video_s(big) - video_s(tiny)) / (pipeline(big) - pipeline(tiny)), where a run's
    pipeline phase is its wall time less what came before its pipeline started (imports,
    weights, state, Ray's start: start-up, and paid mostly by the big run, which comes first).
    The marginal rate counts what the decoders do while the model actor starts as steady
    work, so it is slightly optimistic for a short run. "Mid-run" is the big run's rate
    between the moments 20% and 80% of its frames had reached the driver: every stage up and
    busy, no start-up and no drain, the rate a long run approaches.

Rates are sampled frames/s, videos/s and video-seconds per wall-second (the same number
as video-hours per wall-hour). `--repeat N` measures (a), (b), (c) N times per mode and
reports the median of each per-round ratio with its spread (vidbatch.bench_stats).
Benchmarks are not tests: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vidbatch.bench_cpu import against_bounds, format_account, format_against_bounds, format_rounds_against_bounds
from vidbatch.bench_stats import (
    DRIFT_WARN,
    bound_drift,
    bracketed,
    format_spread,
    judge_mid_run,
    round_ratios,
    stage_bound,
    summarize_rounds,
)
from vidbatch.bench_workload import Workload, WorkloadSpec, concatenate_copies, ensure_workload
from vidbatch.driver_env import set_driver_environment
from vidbatch.errors import JobError

DEFAULT_WORKDIR = Path(tempfile.gettempdir()) / "vidbatch-bench"


@dataclass
class BenchOptions:
    videos: int = 16
    seconds: float = 60.0
    arch: str = "resnet50"
    weights: str = "none"
    modes: tuple[str, ...] = ("fps", "keyframes")
    fps: float = 1.0
    clip_len_s: float = 4.0
    precision: str = "auto"
    workdir: Path = DEFAULT_WORKDIR
    json_path: Path | None = None
    overrides: list[str] = field(default_factory=list)
    plain: bool = True
    tiny_seconds: float = 3.0
    model_seconds: float = 8.0  # how long the model-only bound is timed
    repeat: int = 1  # rounds of (a), (b), (c) per mode; more than one reports medians and the spread
    bracket: bool = True  # (b) again after (c): the bounds are the mean of both, and their drift is reported


# --- the driver ----------------------------------------------------------------------------


# What the plain script (bench_measure._worker_plain) knows how to sample.
BENCH_MODES = ("fps", "keyframes")


def validate_options(opts: BenchOptions) -> None:
    """Refuse options the bench cannot measure, before minutes of workload generation.

    The jobs it would run are validated as `vidbatch run` validates a job file (arch, precision,
    fps, --set overrides), so a bad value is named the same way.
    """
    from vidbatch.config import parse_job

    if opts.videos < 1:
        raise JobError(f"--videos={opts.videos}: the workload needs at least one video")
    if not opts.seconds > 0:  # also NaN
        raise JobError(f"--seconds={opts.seconds:g}: give each video's length in seconds, more than 0 (e.g. 30)")
    if opts.repeat < 1:
        raise JobError(f"--repeat={opts.repeat}: give at least 1 round")
    unknown = [mode for mode in opts.modes if mode not in BENCH_MODES]
    if unknown or not opts.modes:
        raise JobError(f"--modes={','.join(opts.modes)!r}: give one or both of {', '.join(BENCH_MODES)}")
    for mode in opts.modes:
        parse_job(_job_raw(opts, mode, manifest=opts.workdir / "manifest.parquet", output=opts.workdir / f"out-{mode}"),
                  source=f"the bench's {mode} job")


def run_bench(opts: BenchOptions, say: Any = print) -> dict[str, Any]:
    validate_options(opts)
    opts.workdir.mkdir(parents=True, exist_ok=True)
    weights_file, resize = _prepare_weights(opts)  # unusable weights are refused before the workload is generated
    workload = ensure_workload(opts.workdir / "videos", WorkloadSpec(videos=opts.videos, seconds=opts.seconds), say=say)
    tiny = ensure_workload(opts.workdir / "videos", _tiny_spec(opts), say=say)
    say(
        f"workload: {len(workload.paths)} videos x {opts.seconds:g} s, 1280x720 H.264 30 fps, "
        f"{workload.bitrate_mbps:.2f} Mbit/s; model {opts.arch} ({opts.weights}), precision {opts.precision}; "
        f"{os.cpu_count()} CPUs"
    )
    report: dict[str, Any] = {
        "machine": _machine(),
        "workload": {
            **asdict(workload.spec),
            "bitrate_mbps": round(workload.bitrate_mbps, 3),
            "video_seconds": workload.video_seconds,
            "folder": str(workload.paths[0].parent),
        },
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(opts).items()},
        "modes": {},
    }
    for mode in opts.modes:
        rounds = []
        for n in range(1, opts.repeat + 1):
            say(f"--- {mode}" + (f", round {n} of {opts.repeat}" if opts.repeat > 1 else "") + " ---")
            rounds.append(_measure_round(opts, mode, workload, tiny, weights_file, resize, say))
        report["modes"][mode] = rounds[0] if len(rounds) == 1 else summarize_rounds(rounds)
        if len(rounds) > 1:
            say(format_spread(mode, report["modes"][mode]))
    report["table"] = format_table(report)
    path = opts.json_path or opts.workdir / f"bench-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps(report, indent=1, default=str))
    say(report["table"])
    say(f"results: {path}")
    report["json_path"] = str(path)
    return report


def _tiny_spec(opts: BenchOptions) -> WorkloadSpec:
    """The tiny job whose run is subtracted for the steady rate: the same fixed costs as the big one.

    The pipeline starts one decoder per CPU but never more than there are videos, so the tiny
    job has one short video per CPU (at most as many as the big job) to start the same actors.
    """
    return WorkloadSpec(videos=max(1, min(opts.videos, os.cpu_count() or 1)), seconds=opts.tiny_seconds)


def _measure_round(
    opts: BenchOptions, mode: str, workload: Workload, tiny: Workload, weights_file: Path, resize: int, say: Any
) -> dict[str, Any]:
    """(a), (b), (c) and, with `bracket`, (b) again: each in a fresh process."""
    result: dict[str, Any] = {}
    job = _job_dict(opts, mode, workload, opts.workdir / f"out-{mode}")
    if opts.plain:
        say("(a) plain script ...")
        result["plain"] = _subprocess("plain", {"paths": [str(p) for p in workload.paths], "ids": _ids(workload),
                                                "mode": mode, "fps": opts.fps,
                                                "clip_len_s": opts.clip_len_s, "arch": opts.arch,
                                                "weights_file": str(weights_file), "resize": resize})
        say(_line("plain script", result["plain"]))
    decode, model = _measure_bounds(opts, job, resize, say)
    say("(c) pipeline (fresh process, local Ray) ...")
    tiny_job = _job_dict(opts, mode, tiny, opts.workdir / f"out-{mode}-tiny")
    for out in (job["output"], tiny_job["output"]):
        shutil.rmtree(out, ignore_errors=True)  # a fresh table: run_job would skip videos it already has
    result["pipeline"] = _subprocess("pipeline", {"job": job, "tiny_job": tiny_job})
    if result.get("plain"):
        result["agreement"] = _agreement(result["plain"], result["pipeline"])
        say(f"  agreement plain vs pipeline: {result['agreement']}")
    for r in (result.get("plain"), result["pipeline"]):
        if r:
            r.pop("check", None)
    pipe = result["pipeline"]
    say(_line("pipeline, start-up incl.", pipe))
    say(_line("pipeline, steady", pipe["steady"]))
    if opts.bracket:
        after = _measure_bounds(opts, job, resize, say, when=", again after the pipeline")
        result["bound_drift"] = bound_drift((decode, model), after)
        say("  stage bounds before/after the pipeline: " + ", ".join(
            f"{name} {d['change']:+.0%}" for name, d in result["bound_drift"].items()))
        if max(abs(d["change"]) for d in result["bound_drift"].values()) > DRIFT_WARN:
            say(f"  NOTE: this machine's speed moved by more than {DRIFT_WARN:.0%} during the round; "
                "its ratios are less reliable than the others' (the bounds used are the mean of both)")
        decode, model = bracketed(decode, after[0]), bracketed(model, after[1])
    result["decode_bound"], result["model_bound"] = decode, model
    result["stage_bound"] = stage_bound(decode["video_s_per_s"], model["video_s_per_s"],
                                        frames_per_video_s=decode["frames"] / decode["video_seconds"],
                                        video_len_s=opts.seconds)
    say(_line("stage bound", result["stage_bound"]))
    if pipe.get("cpu"):
        say("  CPU of the pipeline run: " + format_account(pipe["cpu"]))
        pairs = against_bounds(pipe["cpu"], frames=pipe["frames"], decode_bound=decode, model_bound=model)
        result["cpu_against_bounds"] = pairs
        if pairs:
            say("  the stages' CPU against the bounds' for the same work (the pipeline's with its start-up): "
                + format_against_bounds(pairs))
    mid_run = pipe.get("mid_run")
    judge_mid_run(mid_run, stage_bound_frames_per_s=result["stage_bound"]["frames_per_s"])
    if mid_run and mid_run["steady"]:
        say(_line("pipeline, mid-run", mid_run))
    elif mid_run:
        say(f"  pipeline, mid-run: no steady phase ({mid_run['not_steady_because']}); no mid-run ratio this round")
    result["ratios"] = round_ratios(result)
    say("ratios: " + ", ".join(f"{k} {v:.2f}" for k, v in result["ratios"].items() if v is not None))
    return result


def _measure_bounds(
    opts: BenchOptions, job: dict[str, Any], resize: int, say: Any, *, when: str = ""
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(b): decode-only, then model-only (on the decode stage's frames per clip), each in a fresh process."""
    say(f"(b) decode-only bound{when} ...")
    decode = _subprocess("decode", {"job": job, "resize": resize})
    say(_line("decode only", decode))
    say(f"(b) model-only bound{when} ...")
    frames_per_clip = max(1, decode["frames"] / max(1, decode["clips"]))
    model = _subprocess("model", {"job": job, "frames_per_clip": frames_per_clip, "seconds": opts.model_seconds})
    per_video_s = decode["frames"] / decode["video_seconds"]
    model["video_s_per_s"] = model["frames_per_s"] / per_video_s
    model["videos_per_s"] = model["video_s_per_s"] / opts.seconds
    say(_line(f"model only{_layout_note(model, ' ({})')}", model))
    return decode, model


def _layout_note(model: dict[str, Any], template: str) -> str:
    """Which model the bound ran (see ResNetRunner.layout), in `template`; nothing when eager."""
    layout = model.get("layout", "eager")
    return "" if layout == "eager" else template.format({"onednn-packed": "packed"}.get(layout, layout))


def format_table(report: dict[str, Any]) -> str:
    head = f"{'mode':10s} {'run':34s} {'wall s':>8s} {'frames/s':>9s} {'videos/s':>9s} {'video-h/wall-h':>15s}"
    lines = [head, "-" * len(head)]
    for mode, r in report["modes"].items():
        if r.get("rounds"):
            lines.append(f"{mode:10s} medians of {len(r['rounds'])} rounds (each ratio taken within its round)")
        rows = []
        if r.get("plain"):
            rows.append(("(a) plain script", r["plain"]))
        rows += [
            ("(b) decode only (bound)", r["decode_bound"]),
            (f"(b) model only (bound){_layout_note(r['model_bound'], ', {}')}", r["model_bound"]),
            ("(b) stage bound 1/(1/d+1/m)", r["stage_bound"]),
            ("(c) pipeline, start-up included", r["pipeline"]),
            ("(c) pipeline, steady (marginal)", r["pipeline"]["steady"]),
        ]
        if (r["pipeline"].get("mid_run") or {}).get("steady"):
            rows.append(("(c) pipeline, mid-run (20-80%)", r["pipeline"]["mid_run"]))
        for name, row in rows:
            wall = row.get("wall_s")
            lines.append(
                f"{mode:10s} {name:34s} {wall if wall is None else round(wall, 1)!s:>8s} {row.get('frames_per_s', 0):9.1f} "
                f"{row.get('videos_per_s', 0):9.3f} {row.get('video_s_per_s', 0):15.1f}"
            )
        for k, v in r["ratios"].items():
            if v is not None:
                lines.append(f"{mode:10s}   {k:40s} {v:6.2f}x")
        drifts = [x["bound_drift"] for x in r.get("rounds", [r]) if x.get("bound_drift")]
        if drifts:
            moved = ", ".join(
                f"{name} " + " ".join(f"{d[name]['change']:+.0%}" for d in drifts) for name in ("decode", "model")
            )
            lines.append(f"{mode:10s}   stage bounds after vs before the pipeline, per round: {moved}")
        cpu_ratios = format_rounds_against_bounds(r.get("rounds", [r]))
        if cpu_ratios:
            lines.append(f"{mode:10s}   the stages' CPU / the bounds' for the same work, per round: {cpu_ratios}")
    return "\n".join(lines)


def _line(name: str, row: dict[str, Any]) -> str:
    wall = row.get("wall_s")
    wall_text = f"{wall:7.1f} s" if wall is not None else "        "
    return (
        f"  {name:28s} {wall_text}  {row.get('frames_per_s', 0):8.1f} frames/s  {row.get('videos_per_s', 0):7.3f} videos/s  "
        f"{row.get('video_s_per_s', 0):7.1f} video-s/s"
    )


def _prepare_weights(opts: BenchOptions) -> tuple[Path, int]:
    """The weights as a state_dict file both the plain script and the pipeline load; the resize the recipe asks for."""
    from vidbatch.config import ModelConfig, StorageConfig
    from vidbatch.model_weights import resolve_weights

    resolved = resolve_weights(ModelConfig(arch=opts.arch, weights=opts.weights), StorageConfig())  # type: ignore[arg-type]
    path = opts.workdir / f"weights-{resolved.model_id.replace(':', '_').replace('/', '_')[:80]}.pt"
    if not path.is_file():
        path.write_bytes(resolved.state_dict_bytes)
    return path, resolved.preprocess.resize_size


def _job_dict(opts: BenchOptions, mode: str, workload: Workload, output: Path) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    manifest = output.parent / f"{output.name}-manifest.parquet"
    ids = _ids(workload)
    pq.write_table(pa.table({"video_id": ids, "uri": [str(p) for p in workload.paths]}), manifest)
    return _job_raw(opts, mode, manifest=manifest, output=output)


def _job_raw(opts: BenchOptions, mode: str, *, manifest: Path, output: Path) -> dict[str, Any]:
    from vidbatch.config import _apply_override

    raw: dict[str, Any] = {
        "name": f"bench-{mode}",
        "manifest": str(manifest),
        "output": str(output),
        "sampling": {"mode": mode, "fps": opts.fps, "clip_len_s": opts.clip_len_s},
        "model": {"arch": opts.arch, "weights": opts.weights, "precision": opts.precision, "task": "both"},
        "resources": {"progress_interval_s": 3600},
    }
    for override in opts.overrides:
        _apply_override(raw, override)
    return raw


def _ids(workload: Workload) -> list[str]:
    return [f"v{i:03d}" for i in range(len(workload.paths))]


def _agreement(plain: dict[str, Any], pipe: dict[str, Any]) -> dict[str, Any]:
    """Do the plain script and the pipeline use the same frames and get the same embeddings?"""
    a, b = plain.get("check") or {}, pipe.get("check") or {}
    common = sorted(set(a) & set(b))
    same_pts = sum(1 for k in common if a[k]["pts"] == b[k]["pts"] or _close(a[k]["pts"], b[k]["pts"], 1e-6))
    diff = max((max(abs(x - y) for x, y in zip(a[k]["emb16"], b[k]["emb16"], strict=False)) for k in common if a[k]["emb16"]),
               default=None)
    return {"clips_plain": len(a), "clips_pipeline": len(b), "clips_same_frames": same_pts, "max_abs_embedding_diff_16d": diff}


def _close(x: list[float], y: list[float], tol: float) -> bool:
    return len(x) == len(y) and all(abs(i - j) <= tol for i, j in zip(x, y, strict=True))


def _machine() -> dict[str, Any]:
    info: dict[str, Any] = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}
    try:
        from vidbatch.model import _CPU_BF16_FLAGS

        lines = Path("/proc/cpuinfo").read_text().splitlines()
        flags = set(next(line for line in lines if line.startswith("flags")).split())
        info["cpu_bf16"] = bool(_CPU_BF16_FLAGS & flags)
        info["cpu_amx"] = "amx_bf16" in flags
        model = next(line for line in lines if line.startswith("model name"))
        info["cpu_model"] = model.split(":", 1)[1].strip()
    except (OSError, StopIteration):
        pass
    try:
        import av
        import ray
        import torch

        info["versions"] = {"torch": torch.__version__, "av": av.__version__, "ray": ray.__version__}
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        pass
    info["load_average_at_start"] = os.getloadavg()
    return info


def _subprocess(kind: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter; its wall time includes the interpreter's start."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)  # the benchmark runs on this machine
    if kind != "plain":  # vidbatch's own stages run in the environment `vidbatch run` gives its local Ray
        set_driver_environment(env)
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    payload = {**payload, "launched_at": time.time()}
    proc = subprocess.run(
        [sys.executable, "-m", "vidbatch.bench_measure", kind],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    wall = time.monotonic() - started
    if proc.returncode != 0:
        raise RuntimeError(f"bench worker {kind!r} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_wall_s"] = wall
    result["load_average_before"] = load_before
    if kind in ("plain", "pipeline"):
        # Start-up included: from launching the process to the end of the measured run, as a
        # person running it would wait for it (the pipeline's extra tiny run comes after).
        measured = result["wall_s"] = result["done_at"] - payload["launched_at"]
        for key in ("frames", "videos", "video_seconds"):
            result.setdefault(key, 0)
        result["frames_per_s"] = result["frames"] / measured
        result["videos_per_s"] = result["videos"] / measured
        result["video_s_per_s"] = result["video_seconds"] / measured
    return result


def memory_check(opts: BenchOptions, minutes_long: int = 60, say: Any = print) -> dict[str, Any]:
    """Peak memory for a one-minute video and a `minutes_long`-minute one (copies of it): the decode
    stage alone, then whole runs per process role (vidbatch.bench_memory)."""
    short = ensure_workload(opts.workdir / "videos", WorkloadSpec(videos=1, seconds=60), say=say).paths[0]
    long = short.parent / f"long-{minutes_long}min.mp4"
    if not long.is_file():
        say(f"writing a {minutes_long}-minute video by concatenation (no re-encoding) ...")
        concatenate_copies(short, long, minutes_long)
    out: dict[str, Any] = {}
    for mode in ("fps", "keyframes"):
        for name, path in (("1 min", short), (f"{minutes_long} min", long)):
            r = _subprocess("memory", {"path": str(path), "mode": mode})
            out[f"{mode} {name}"] = r
            say(f"  decode peak RSS {mode:9s} {name:7s}: {r['peak_rss_mb']:7.1f} MB ({r['rows']} rows, {r['wall_s']:.1f} s)")
    if sys.platform.startswith("linux"):
        from vidbatch.bench_memory import format_peaks, pipeline_peak_memory

        say("whole runs (`vidbatch run`, local Ray), peak memory per process role:")
        for mode in ("fps", "keyframes"):
            for name, path in (("1 min", short), (f"{minutes_long} min", long)):
                peaks = pipeline_peak_memory(path, mode=mode, arch=opts.arch, workdir=opts.workdir)
                out[f"pipeline {mode} {name}"] = peaks
                for line in format_peaks(f"{mode} {name}", peaks):
                    say(line)
    return out


# --- command line ---------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--videos", type=int, default=16, help="videos in the generated workload (default 16)")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each video (default 60)")
    parser.add_argument("--arch", default="resnet50", help="resnet18 ... resnet152 (default resnet50)")
    parser.add_argument(
        "--weights",
        default="none",
        help="none (seeded random init, no download; default), a torchvision weights name or a file",
    )
    parser.add_argument("--modes", default="fps,keyframes", help="sampling modes to measure (default fps,keyframes)")
    parser.add_argument("--fps", type=float, default=1.0, help="sampling.fps for the fps mode (default 1)")
    parser.add_argument("--precision", default="auto", help="model.precision for the pipeline and the model bound")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR, help=f"videos and outputs (default {DEFAULT_WORKDIR})")
    parser.add_argument("--json", dest="json_path", type=Path, default=None, help="write the results here (default: in workdir)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a key of the pipeline's job, e.g. resources.batch_frames=16")
    parser.add_argument("--no-plain", dest="plain", action="store_false", help="skip the plain script (a)")
    parser.add_argument("--repeat", type=int, default=1, metavar="N",
                        help="measure each mode N times, interleaved (a, b, c, a, b, c, ...), and report medians "
                             "with the spread (default 1)")
    parser.add_argument("--no-bracket", dest="bracket", action="store_false",
                        help="measure the stage bounds only before the pipeline, not again after it")
    parser.add_argument("--model-seconds", type=float, default=8.0, help=argparse.SUPPRESS)
    parser.add_argument("--memory-check", action="store_true",
                        help="instead: peak decode memory of a 1-minute vs a 60-minute video")


def main_from_args(args: argparse.Namespace) -> int:
    opts = BenchOptions(
        videos=args.videos,
        seconds=args.seconds,
        arch=args.arch,
        weights=args.weights,
        modes=tuple(m.strip() for m in args.modes.split(",") if m.strip()),
        fps=args.fps,
        precision=args.precision,
        workdir=args.workdir,
        json_path=args.json_path,
        overrides=list(args.overrides),
        plain=args.plain,
        model_seconds=args.model_seconds,
        repeat=args.repeat,
        bracket=args.bracket,
    )
    try:
        validate_options(opts)
    except JobError as exc:
        print(f"vidbatch bench: {exc}", file=sys.stderr)
        return 2
    if args.memory_check:
        result = memory_check(opts)
        path = opts.json_path or opts.workdir / f"memory-{time.strftime('%Y%m%dT%H%M%S')}.json"
        path.write_text(json.dumps(result, indent=1))
        print(f"results: {path}")
        return 0
    run_bench(opts)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m vidbatch.bench")
    add_arguments(parser)
    sys.exit(main_from_args(parser.parse_args()))
