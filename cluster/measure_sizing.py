"""Measure the two numbers the sizing guide (cluster/README.md) is built from, on this machine.

1. Decode: video-seconds of 720p30 H.264 decoded and sampled per wall-second, on ONE core
   (one FFmpeg thread), through vidbatch's own decode path (PyAV, fps sampling, resize +
   centre crop to 224x224 uint8), for several sampling rates.
2. Model: frames/s of the ResNet on this CPU (fp32, batch 32, 224x224), for the archs asked.

    python cluster/measure_sizing.py --seconds 60 --fps 0.5 1 2 --arch resnet18 resnet50 --json out.json

Nothing is downloaded: the video is generated here and the weights are a seeded random init
(speed does not depend on the weight values). GPU model rates are NOT measured here; the
guide states which figures are estimates.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import tempfile
import time
from fractions import Fraction
from pathlib import Path


def write_720p_h264(path: Path, seconds: float, fps: int = 30, gop: int = 60) -> None:
    """A 1280x720 H.264 (yuv420p, x264 'fast', GOP 2 s) video with moving detail: a typical upload."""
    import av
    import numpy as np

    width, height = 1280, 720
    yy, xx = np.mgrid[0:height, 0:width]
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 64, size=(height, width), dtype=np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "fast", "crf": "23", "g": str(gop), "keyint_min": str(gop), "sc_threshold": "0"}
        stream.time_base = Fraction(1, fps)
        for i in range(int(seconds * fps)):
            shift = (i * 4) % width
            r = ((xx + shift) % 256).astype(np.uint8)
            g = ((yy + i) % 256).astype(np.uint8)
            b = np.roll(texture, shift, axis=1) + 96
            frame = av.VideoFrame.from_ndarray(np.dstack([r, g, b]), format="rgb24")
            frame.pts = i
            frame.pict_type = av.video.frame.PictureType.NONE
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def measure_decode(path: Path, fps: float, repeats: int = 2) -> dict[str, float]:
    from vidbatch.config import LimitsConfig, SamplingConfig
    from vidbatch.decode import iter_clips, open_video
    from vidbatch.preprocess import PreprocessSpec

    sampling = SamplingConfig(mode="fps", fps=fps, clip_len_s=4.0)
    best = float("inf")
    frames = 0
    duration = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        with open_video(str(path), limits=LimitsConfig(), threads=1) as (container, stream, info):
            frames = sum(
                len(clip.frame_pts_s) for clip in iter_clips(container, stream, info, sampling=sampling, spec=PreprocessSpec())
            )
            duration = info.duration_s
        best = min(best, time.perf_counter() - start)
    return {
        "sampling_fps": fps,
        "video_s": round(duration, 2),
        "wall_s": round(best, 3),
        "sampled_frames": frames,
        "video_s_per_core_s": round(duration / best, 2),
        "sampled_frames_per_core_s": round(frames / best, 2),
    }


def measure_model(arch: str, threads: int, batch: int = 32, batches: int = 4) -> dict[str, float]:
    import numpy as np
    import torch
    import torchvision

    from vidbatch.model import ResNetRunner
    from vidbatch.preprocess import PreprocessSpec

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    buffer = io.BytesIO()
    torch.save(torchvision.models.get_model(arch, weights=None).state_dict(), buffer)
    runner = ResNetRunner(
        arch=arch,
        state_dict_bytes=buffer.getvalue(),
        preprocess=PreprocessSpec(),
        precision="fp32",
        batch_frames=batch,
        device="cpu",
    )
    frames = np.random.default_rng(0).integers(0, 255, size=(batch, 224, 224, 3), dtype=np.uint8)
    runner(frames)  # warm-up
    start = time.perf_counter()
    for _ in range(batches):
        runner(frames)
    wall = time.perf_counter() - start
    return {"arch": arch, "torch_threads": threads, "batch": batch, "frames_per_s": round(batch * batches / wall, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the generated 720p video")
    parser.add_argument("--fps", type=float, nargs="+", default=[0.5, 1.0, 2.0], help="sampling rates to measure")
    parser.add_argument("--arch", nargs="+", default=["resnet18", "resnet50"])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, os.cpu_count() or 1])
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--video", type=Path, default=None, help="keep the generated video here (reused when it exists)")
    args = parser.parse_args()

    import av
    import torch

    results: dict[str, object] = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "torch": torch.__version__,
            "av": av.__version__,
        }
    }
    with tempfile.TemporaryDirectory() as tmp:
        video = args.video or Path(tmp) / "720p.mp4"
        if not video.exists():
            start = time.perf_counter()
            write_720p_h264(video, args.seconds)
            took = time.perf_counter() - start
            print(f"generated {args.seconds:g}s of 720p30 H.264 in {took:.1f}s ({video.stat().st_size / 1e6:.1f} MB)")
        decode = [measure_decode(video, fps) for fps in args.fps]
    for row in decode:
        print(
            f"decode 720p H.264, 1 core, fps={row['sampling_fps']:g}: {row['video_s_per_core_s']}x real time, "
            f"{row['sampled_frames_per_core_s']} sampled frames/s"
        )
    model = [measure_model(arch, t) for arch in args.arch for t in sorted(set(args.threads))]
    for row in model:
        print(f"model {row['arch']} fp32 CPU, {row['torch_threads']} threads: {row['frames_per_s']} frames/s")
    results["decode_720p_h264_one_core"] = decode
    results["model_cpu_fp32"] = model
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
