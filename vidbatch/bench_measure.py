"""What each `vidbatch bench` measurement does, in its own fresh process.

`python -m vidbatch.bench_measure KIND` reads its payload (JSON) on stdin and prints its result
(JSON) as the last line of stdout. vidbatch.bench launches these and compares their figures;
a fresh interpreter per measurement keeps one's imports, caches and threads out of the next.

plain     the plain single-process script of DESIGN.md (no vidbatch code)
decode    decode-only bound: the decode stage on every video, one process per CPU
model     model-only bound: the model runner on all CPUs (or the GPU) for a fixed time
pipeline  `run_job` on a local Ray, then a tiny job (start-up excluded by the difference);
          the big run's clip arrivals at the driver also give its mid-run rate
memory    peak RSS of decoding one video
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from vidbatch import bench_stats
from vidbatch.driver_env import set_driver_allocator

if TYPE_CHECKING:
    from vidbatch.video_task import DecodeSettings

T = TypeVar("T")


def _worker_plain(p: dict[str, Any]) -> dict[str, Any]:
    """The plain single-process script of DESIGN.md, written as a person would: no vidbatch code."""
    import av
    import numpy as np
    import torch
    import torchvision
    from PIL import Image
    from torchvision import transforms

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = torchvision.models.get_model(p["arch"], weights=None)
    model.load_state_dict(torch.load(p["weights_file"], map_location="cpu", weights_only=True))
    fc = model.fc
    model.fc = torch.nn.Identity()
    model = model.eval().to(device)
    fc = fc.eval().to(device)
    tf = transforms.Compose(
        [
            transforms.Resize(p["resize"]),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
        ]
    )
    mode, fps, clip_len = p["mode"], p["fps"], p["clip_len_s"]

    def image(frame: Any) -> Any:
        return tf(Image.fromarray(frame.to_ndarray(format="rgb24")))

    started = time.monotonic()
    frames_total, video_seconds, clips_out = 0, 0.0, {}
    for video_id, path in zip(p["ids"], p["paths"], strict=True):
        samples: list[tuple[float, float, Any]] = []  # (target t, pts, tensor)
        with av.open(path) as container:
            stream = container.streams.video[0]
            k, prev, last_end = 0, None, 0.0
            for frame in container.decode(stream):  # every frame, PyAV's default settings
                t = float(frame.time)
                last_end = t + (float(frame.duration * frame.time_base) if frame.duration else 1 / 30)
                if mode == "keyframes":
                    if frame.key_frame:
                        samples.append((t, t, image(frame)))
                    continue
                while t > k / fps + 1e-6:  # the target k/fps has passed: the previous frame was on screen
                    if prev is not None:
                        samples.append((k / fps, prev[0], image(prev[1])))
                    k += 1
                prev = (t, frame)
            while mode != "keyframes" and prev is not None and k / fps < last_end:
                samples.append((k / fps, prev[0], image(prev[1])))
                k += 1
            video_seconds += last_end - float(stream.start_time * stream.time_base if stream.start_time else 0)
        batch = torch.stack([s[2] for s in samples])
        feats = []
        with torch.no_grad():
            for i in range(0, len(batch), 32):
                feats.append(model(batch[i : i + 32].to(device)).cpu())
        pooled = torch.cat(feats)
        with torch.no_grad():
            probs = torch.softmax(fc(pooled.to(device)), dim=1).cpu()
        groups: dict[int, list[int]] = {}
        for i, sample in enumerate(samples):
            groups.setdefault(math.floor(sample[0] / clip_len + 1e-9), []).append(i)
        for clip, rows in groups.items():
            mean = pooled[rows].mean(0)
            emb = (mean / mean.norm()).numpy()
            _ = probs[rows].mean(0)
            clips_out[f"{video_id}#{clip}"] = {"pts": [samples[r][1] for r in rows], "emb16": emb[:16].tolist()}
        frames_total += len(samples)
    done_at = time.time()
    wall = time.monotonic() - started
    return {
        "done_at": done_at,
        "frames": frames_total,
        "videos": len(p["paths"]),
        "video_seconds": video_seconds,
        "loop_wall_s": wall,
        "clips": len(clips_out),
        "check": clips_out if len(clips_out) <= 20000 else {},
        "torch_threads": torch.get_num_threads(),
        "_np": np.__version__,
    }


def _worker_decode(p: dict[str, Any]) -> dict[str, Any]:
    """vidbatch's decode stage alone: one process per CPU, each decoding whole videos in turn."""
    from concurrent.futures import ProcessPoolExecutor

    from vidbatch.config import parse_job

    job = parse_job(p["job"])
    procs = os.cpu_count() or 1
    uris = [(f"v{i}", u) for i, u in enumerate(_manifest_uris(job))]
    with ProcessPoolExecutor(max_workers=procs) as pool:
        list(pool.map(_decode_warmup, range(procs)))  # imports done before the clock starts
        started = time.monotonic()
        results = list(pool.map(_decode_one, [(vid, uri, p["job"], p["resize"]) for vid, uri in uris]))
        wall = time.monotonic() - started
    frames = sum(r[0] for r in results)
    clips = sum(r[1] for r in results)
    video_seconds = sum(r[2] for r in results)
    return {
        "wall_s": wall,
        "frames": frames,
        "clips": clips,
        "videos": len(uris),
        "video_seconds": video_seconds,
        "frames_per_s": frames / wall,
        "videos_per_s": len(uris) / wall,
        "video_s_per_s": video_seconds / wall,
        "processes": procs,
        "cpu_s": sum(r[3] for r in results),
    }


def _decode_warmup(_: int) -> None:
    import vidbatch.decode  # noqa: F401
    import vidbatch.video_task  # noqa: F401

    time.sleep(0.2)


def decode_settings(raw: dict[str, Any], resize_size: int) -> DecodeSettings:
    """The decode stage's settings for the bench's job: one FFmpeg thread, frames cut to 224x224."""
    from vidbatch.config import parse_job
    from vidbatch.preprocess import PreprocessSpec
    from vidbatch.video_task import DecodeSettings

    job = parse_job(raw)
    spec = PreprocessSpec(resize_size=resize_size, crop_size=224, resize=job.model.resize)  # as the pipeline's decoders
    return DecodeSettings(sampling=job.sampling, limits=job.limits, storage=job.storage, spec=spec, threads=1)


def _decode_one(args: tuple[str, str, dict[str, Any], int]) -> tuple[int, int, float, float]:
    import resource

    from vidbatch.video_task import decode_video

    video_id, uri, raw, resize = args
    settings = decode_settings(raw, resize)
    before = resource.getrusage(resource.RUSAGE_SELF)
    frames = clips = 0
    duration = 0.0
    for table in decode_video(video_id, uri, settings):
        row = table.drop_columns(["frames"]).to_pylist()[0]  # the counts only: no copy of the pixels
        if row["kind"] == "clip":
            frames += row["num_frames"]
            clips += 1
        else:
            if row["status"] != "ok":
                raise RuntimeError(f"{uri}: {row['status']} {row['error_message']}")
            duration = row["duration_s"]
    after = resource.getrusage(resource.RUSAGE_SELF)
    return frames, clips, duration, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def _manifest_uris(job: Any) -> list[str]:
    import pyarrow.parquet as pq

    return [str(u) for u in pq.read_table(job.manifest).column("uri").to_pylist()]


def _worker_model(p: dict[str, Any]) -> dict[str, Any]:
    """vidbatch's model runner alone, on all CPUs (or the GPU), at the pipeline's precision and batch sizes.

    The model the pipeline's actor runs (`layout`: eager, packed for oneDNN, or compiled under
    resources.model_compile: on); a compile is start-up, outside the timed passes.
    """
    import numpy as np

    from vidbatch.config import parse_job
    from vidbatch.model import ResNetRunner
    from vidbatch.model_weights import resolve_weights

    job = parse_job(p["job"])
    weights = _resolved_off_main_thread(resolve_weights, job.model, job.storage)
    runner = ResNetRunner(
        compile=job.resources.model_compile,
        threads=os.cpu_count() or 1,
        arch=weights.arch,
        state_dict_bytes=weights.state_dict_bytes,
        preprocess=weights.preprocess,
        precision=job.model.precision,
        batch_frames=job.resources.batch_frames,
    )
    per_batch = max(1, round(job.resources.batch_clips * p["frames_per_clip"]))
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(per_batch, 224, 224, 3), dtype=np.uint8)
    runner(frames)  # warm-up: oneDNN primitives, allocations (a compile, if any, happened when it was built)
    done, started = 0, time.monotonic()
    while time.monotonic() - started < p.get("seconds", 8.0) or done < 4 * per_batch:
        runner(frames)
        done += per_batch
    wall = time.monotonic() - started
    return {
        "wall_s": None,
        "frames_per_s": done / wall,
        "frames_timed": done,
        "batch": per_batch,
        "device": str(runner.device),
        "dtype": str(runner.dtype),
        "layout": runner.layout,
        "compile_s": runner.compile_s,
        "threads": os.cpu_count(),
    }


def _resolved_off_main_thread(resolve: Callable[..., T], *args: Any) -> T:
    """resolve(*args) on a thread that ends before the runner is built.

    Checking a weights file runs torch reductions (the NaN/Inf check), and GNU OpenMP keeps a
    team of worker threads for every thread that has run a parallel region. A team left on the
    main thread beside the runner's own puts more OpenMP threads than cores in the process, and
    libgomp may then throttle its spinning. Measured on 2 cores (Intel, AMX), resnet50 bf16,
    `--weights FILE`: in the first runs of 2026-12-06 40-74 frames/s with 1.6 cores busy against
    83-102 frames/s with 1.99 when the check ran on a thread that has ended; an hour later both
    gave 69-90 frames/s, so the effect is intermittent, but when it shows the bound comes out
    low and flatters every ratio. The pipeline's model actor never runs torch on its main
    thread (the driver checks the weights), so it is not affected.
    """
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="vidbatch-weights") as pool:
        return pool.submit(resolve, *args).result()


def _worker_pipeline(p: dict[str, Any]) -> dict[str, Any]:
    from vidbatch.bench_cpu import CpuAccount
    from vidbatch.config import parse_job
    from vidbatch.pipeline import run_job

    job = parse_job(p["job"])
    quiet = lambda _line: None  # noqa: E731
    t0 = time.monotonic()
    with _clip_arrivals() as arrivals, CpuAccount() as cpu:
        big = run_job(job, progress=quiet)
    big_wall = time.monotonic() - t0
    done_at = time.time()
    tiny_job = parse_job(p["tiny_job"])
    t1 = time.monotonic()
    tiny = run_job(tiny_job, progress=quiet)
    tiny_wall = time.monotonic() - t1
    s, ts = big.summary, tiny.summary
    video_s, tiny_s = s["video_hours"] * 3600, ts["video_hours"] * 3600
    steady_wall = bench_stats.steady_wall(
        big_wall_s=big_wall,
        big_before_pipeline_s=s["timings_s"].get("to_pipeline_s") or 0.0,
        tiny_wall_s=tiny_wall,
        tiny_before_pipeline_s=ts["timings_s"].get("to_pipeline_s") or 0.0,
    )
    steady_vs = (video_s - tiny_s) / steady_wall
    if video_s <= tiny_s * 1.5:  # the workload is no bigger than the tiny run: no marginal rate
        steady_vs = float("nan")
    clips = _read_check(job.output)
    mid_run: dict[str, Any] | None = bench_stats.mid_run_rate(arrivals)
    if mid_run is not None and s["frames"] and s["videos"]:
        # The window counts frames; the workload's videos are alike, so video-seconds follow.
        video_s_per_frame = video_s / s["frames"]
        mid_run["video_s_per_s"] = mid_run["frames_per_s"] * video_s_per_frame
        mid_run["videos_per_s"] = mid_run["video_s_per_s"] / (video_s / s["videos"])
        mid_run["window"] = list(bench_stats.MID_RUN_WINDOW)
    arrived, curve = 0, []
    for t, frames in arrivals:  # kept so that any window's rate can be taken again from the JSON
        arrived += frames
        curve.append([round(t - t0, 3), arrived])
    return {
        "done_at": done_at,
        "frames": s["frames"],
        "videos": s["videos"],
        "video_seconds": video_s,
        "statuses": s["statuses"],
        "timings_s": s["timings_s"],  # ray_start_s among them: inside run_job, after the weights
        "run_job_wall_s": big_wall,
        "tiny_run_job_wall_s": tiny_wall,
        "tiny_timings_s": ts["timings_s"],
        "steady": {
            "wall_s": steady_wall,
            "video_s_per_s": steady_vs,
            "frames_per_s": (s["frames"] - ts["frames"]) / steady_wall,
            "videos_per_s": (s["videos"] - ts["videos"]) / steady_wall,
        },
        "mid_run": mid_run,
        "arrivals": curve,  # [seconds since the big run began, frames arrived so far], per batch
        "cpu": cpu.result(),  # the big run's CPU per process role (vidbatch.bench_cpu)
        "clips": s["clips"],
        "model_id": s["model_id"],
        "check": clips,
    }


@contextmanager
def _clip_arrivals() -> Iterator[list[tuple[float, int]]]:
    """(monotonic time, frames of its ok clips) of every batch the driver's collector takes while inside.

    The bench's own measurement: the collector class is wrapped in this process for the run,
    not changed, so what `vidbatch run` does is what is timed (counting a batch's frames is a
    few Arrow compute calls on columns of a few dozen rows, tens of microseconds a batch).
    """
    import pyarrow.compute as pc

    from vidbatch.collect import Collector

    arrivals: list[tuple[float, int]] = []
    take = Collector.add_batch

    def timed(self: Collector, batch: Any) -> None:
        ok_clips = pc.and_(pc.equal(batch.column("kind"), "clip"), pc.equal(batch.column("status"), "ok"))
        frames = pc.sum(pc.if_else(ok_clips, pc.list_value_length(batch.column("frame_pts_s")), 0)).as_py()
        arrivals.append((time.monotonic(), int(frames or 0)))
        take(self, batch)

    Collector.add_batch = timed  # type: ignore[method-assign]
    try:
        yield arrivals
    finally:
        Collector.add_batch = take  # type: ignore[method-assign]


def _read_check(output: str) -> dict[str, Any]:
    from deltalake import DeltaTable

    columns = ["video_id", "clip_index", "frame_pts_s", "embedding"]
    table = DeltaTable(str(Path(output) / "clips")).to_pyarrow_table(columns=columns)
    return {
        f"{r['video_id']}#{r['clip_index']}": {"pts": r["frame_pts_s"], "emb16": (r["embedding"] or [])[:16]}
        for r in table.to_pylist()
    }


def _worker_memory(p: dict[str, Any]) -> dict[str, Any]:
    """Peak RSS of the decode stage on one video (this process only decodes that one video)."""
    import resource

    from vidbatch.config import LimitsConfig, SamplingConfig, StorageConfig
    from vidbatch.preprocess import PreprocessSpec
    from vidbatch.video_task import DecodeSettings, decode_video

    settings = DecodeSettings(
        sampling=SamplingConfig(mode=p["mode"], fps=1.0, clip_len_s=4.0),
        limits=LimitsConfig(),
        storage=StorageConfig(),
        spec=PreprocessSpec(),
        threads=p.get("threads", 0),
    )
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    clips = 0
    started = time.monotonic()
    for table in decode_video("v", p["path"], settings):
        clips += table.num_rows
    return {
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_before_mb": before / 1024,
        "rows": clips,
        "wall_s": time.monotonic() - started,
    }


_WORKERS = {
    "plain": _worker_plain,
    "decode": _worker_decode,
    "model": _worker_model,
    "pipeline": _worker_pipeline,
    "memory": _worker_memory,
}


def _worker_main() -> None:
    kind = sys.argv[1]
    if kind == "pipeline":  # the driver's allocator, as under `vidbatch run` (not in the bounds' torch)
        set_driver_allocator()
    payload = json.loads(sys.stdin.read())
    result = _WORKERS[kind](payload)
    print(json.dumps(result, default=str))


if __name__ == "__main__":
    _worker_main()
