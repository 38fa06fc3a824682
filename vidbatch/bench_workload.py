"""The benchmark's own workload: 720p H.264 videos generated with PyAV, no downloads.

The picture is a natural-looking texture (smoothed noise, several scales) panned and
zoomed slowly, with a few moving blocks, so the encoder spends a realistic bitrate on
it (about 2 Mbit/s at 720p30 with libx264's defaults, like a typical web upload)
instead of the near-zero bitrate of a flat test pattern, which would flatter the decoder.

Encoding: libx264 preset `veryfast` (to keep generation short), CRF 23, x264's default
GOP (keyint 250, scene-cut detection, 3 B-frames with pyramid), yuv420p, MP4.
Generated files are cached by their parameters: a second `vidbatch bench` reuses them.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

GENERATOR_VERSION = 1


@dataclass(frozen=True)
class WorkloadSpec:
    videos: int = 16
    seconds: float = 60.0
    width: int = 1280
    height: int = 720
    fps: int = 30
    crf: int = 23
    preset: str = "veryfast"

    def key(self) -> str:
        return f"h264-{self.width}x{self.height}-{self.fps}fps-{self.seconds:g}s-crf{self.crf}-{self.preset}-v{GENERATOR_VERSION}"


@dataclass(frozen=True)
class Workload:
    spec: WorkloadSpec
    paths: tuple[Path, ...]
    bytes_total: int
    video_seconds: float

    @property
    def bitrate_mbps(self) -> float:
        return self.bytes_total * 8 / max(self.video_seconds, 1e-9) / 1e6


def ensure_workload(root: Path, spec: WorkloadSpec, *, workers: int | None = None, say=print) -> Workload:
    """Generate (or reuse) `spec.videos` videos under root/<spec key>/."""
    folder = root / spec.key()
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"video_{i:03d}.mp4" for i in range(spec.videos)]
    missing = [p for p in paths if not _complete(p)]
    if missing:
        say(f"generating {len(missing)} of {spec.videos} videos ({spec.width}x{spec.height} H.264 {spec.fps} fps, "
            f"{spec.seconds:g} s each) in {folder} ...")
        workers = workers or max(1, os.cpu_count() or 1)
        with ProcessPoolExecutor(max_workers=min(workers, len(missing))) as pool:
            list(pool.map(_write_one, [(str(p), spec, int(p.stem.split("_")[1])) for p in missing]))
    total = sum(p.stat().st_size for p in paths)
    return Workload(spec=spec, paths=tuple(paths), bytes_total=total, video_seconds=spec.videos * spec.seconds)


def _complete(path: Path) -> bool:
    return path.is_file() and path.with_suffix(".done").is_file()


def _write_one(args: tuple[str, WorkloadSpec, int]) -> None:
    path, spec, seed = args
    write_h264(Path(path), spec, seed=seed)
    Path(path).with_suffix(".done").write_text(json.dumps(asdict(spec)))


def _texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Smoothed multi-scale noise in [0, 255], like foliage or gravel seen from afar."""
    acc = np.zeros((height, width), np.float32)
    for cell, weight in ((64, 0.3), (8, 0.3), (2, 0.4)):
        coarse = rng.random((height // cell + 2, width // cell + 2), dtype=np.float32)
        up = np.kron(coarse, np.ones((cell, cell), np.float32))[:height, :width]
        # a box blur of half a cell softens the blocks into blobs
        k = max(1, cell // 2)
        csum = np.cumsum(np.cumsum(np.pad(up, ((k, 0), (k, 0))), axis=0), axis=1)
        blurred = (csum[k:, k:] - csum[:-k, k:] - csum[k:, :-k] + csum[:-k, :-k]) / (k * k)
        acc[: blurred.shape[0], : blurred.shape[1]] += weight * blurred
    acc -= acc.min()
    acc *= 235.0 / max(float(acc.max()), 1e-6)
    return (acc + 10).astype(np.uint8)


def write_h264(path: Path, spec: WorkloadSpec, *, seed: int = 0) -> None:
    import av

    w, h = spec.width, spec.height
    rng = np.random.default_rng(seed)
    margin_y, margin_x = h // 2, w // 2
    luma = _texture(rng, h + 2 * margin_y, w + 2 * margin_x)
    cb = _texture(rng, (h + 2 * margin_y) // 2, (w + 2 * margin_x) // 2) // 2 + 64
    cr = _texture(rng, (h + 2 * margin_y) // 2, (w + 2 * margin_x) // 2) // 2 + 64
    frames = round(spec.seconds * spec.fps)
    phase = rng.random(4) * 6.28
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=spec.fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.codec_context.time_base = Fraction(1, spec.fps)
        stream.options = {"crf": str(spec.crf), "preset": spec.preset, "threads": "1"}
        yuv = np.empty((h * 3 // 2, w), np.uint8)
        for i in range(frames):
            # slow pan along a Lissajous path: every frame moves, some faster than others
            y = int(margin_y + (margin_y - 2) * np.sin(i / 53 + phase[0])) & ~1
            x = int(margin_x + (margin_x - 2) * np.sin(i / 71 + phase[1])) & ~1
            yuv[:h] = luma[y : y + h, x : x + w]
            # a few bright blocks crossing the picture
            for b in range(3):
                bx = int((i * (3 + b) + b * 400 + phase[2] * 100) % (w - 64))
                by = int((h / 4) * (1 + b) + 40 * np.sin(i / 23 + b)) % (h - 64)
                yuv[by : by + 64, bx : bx + 64] = 235 - 60 * b
            u = yuv[h : h + h // 4].reshape(h // 2, w // 2)
            v = yuv[h + h // 4 :].reshape(h // 2, w // 2)
            u[:] = cb[y // 2 : y // 2 + h // 2, x // 2 : x // 2 + w // 2]
            v[:] = cr[y // 2 : y // 2 + h // 2, x // 2 : x // 2 + w // 2]
            frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
            frame.pts = i
            frame.time_base = Fraction(1, spec.fps)
            frame.pict_type = av.video.frame.PictureType.NONE  # let the encoder choose key frames
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def concatenate_copies(source: Path, target: Path, copies: int) -> Path:
    """A long video made of `copies` back-to-back copies of `source`, without re-encoding.

    Each copy starts on a key frame, so the result decodes like one long upload; used to
    check that peak memory does not grow with a video's length.
    """
    import av

    with av.open(str(source)) as src:
        in_stream = src.streams.video[0]
        packets = []
        for packet in src.demux(in_stream):
            if packet.dts is None or packet.pts is None:
                continue
            packets.append((packet.pts, packet.dts, packet.duration or 0, packet.is_keyframe, bytes(packet)))
        span = max(p[0] + p[2] for p in packets) - min(p[0] for p in packets)
        time_base = in_stream.time_base
        assert time_base is not None
        with av.open(str(target), mode="w") as dst:
            out_stream = dst.add_stream_from_template(in_stream)
            for copy in range(copies):
                shift = copy * span
                for pts, dts, duration, key, data in packets:
                    out = av.Packet(data)
                    out.pts, out.dts, out.duration = pts + shift, dts + shift, duration
                    out.is_keyframe = key
                    out.time_base = time_base
                    out.stream = out_stream
                    dst.mux(out)
    return target
