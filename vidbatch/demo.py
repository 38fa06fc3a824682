"""A small sample library generated locally with PyAV (no downloads), for the quick start.

Moving colour patterns in three codec/container pairs, plus rows that show how bad
input is reported: a file that is not a video, a missing file, a duplicated id.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vidbatch.errors import JobError

_VIDEOS = (
    ("h264_720p", "mp4", "libx264", (640, 360), 24, 12.0),
    ("vp9_clip", "webm", "libvpx-vp9", (480, 270), 25, 8.0),
    ("mpeg4_avi", "avi", "mpeg4", (320, 240), 30, 6.0),
    ("h264_short", "mp4", "libx264", (320, 180), 30, 2.5),
)


def write_demo_library(directory: str | Path) -> Path:
    """Write the sample videos and `manifest.parquet` into `directory` (made if missing); returns the manifest.

    A directory that cannot be made or written is refused (JobError) with its path.
    """
    root = Path(directory).resolve()
    if root.exists() and not root.is_dir():
        raise JobError(f"{str(root)!r} exists and is not a directory; give a directory for the demo library")
    try:
        return _write_library(root)
    except OSError as exc:  # a read-only place, /proc, a file in the path, a full disk, ...
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise JobError(f"cannot write the demo library to {str(root)!r} ({reason}); give a directory you can write to") from exc


def _write_library(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    ids, uris = [], []
    # Demo videos already there are kept as they are: their mtime is part of their fingerprint, so
    # a second `make demo` shows what a nightly run over an unchanged library does (no decoding).
    # A file under a demo name that is not that video (another file, a damaged copy) is replaced.
    # Each file is written under a scratch name first, so an interrupted run leaves no half file.
    for seed, (name, ext, codec, size, fps, seconds) in enumerate(_VIDEOS):
        path = root / f"{name}.{ext}"
        if not _is_demo_video(path, codec=codec, size=size):
            scratch = root / f".{name}.partial.{ext}"
            _write_pattern_video(scratch, codec=codec, size=size, fps=fps, seconds=seconds, seed=seed)
            scratch.replace(path)
        ids.append(name)
        uris.append(str(path))
    not_a_video = root / "notes.mp4"
    if not not_a_video.exists():
        not_a_video.write_bytes(b"this is a text file with a video extension\n" * 20)
    ids += ["not_a_video", "missing_file", "h264_720p"]
    uris += [str(not_a_video), str(root / "gone.mp4"), str(root / "h264_720p.mp4")]
    manifest = root / "manifest.parquet"
    pq.write_table(pa.table({"video_id": ids, "uri": uris}), manifest)
    return manifest


def _is_demo_video(path: Path, *, codec: str, size: tuple[int, int]) -> bool:
    """Does `path` hold a video written by this module: its codec and size, and a decodable first frame?"""
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            if (stream.codec_context.width, stream.codec_context.height) != size:
                return False
            if stream.codec_context.codec.id != av.codec.Codec(codec, "w").id:
                return False
            next(container.decode(stream))
            return True
    except (OSError, av.error.FFmpegError, IndexError, StopIteration, ValueError):
        return False


def _write_pattern_video(path: Path, *, codec: str, size: tuple[int, int], fps: int, seconds: float, seed: int) -> None:
    width, height = size
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, size=(3,))
    yy, xx = np.mgrid[0:height, 0:width]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        assert isinstance(stream, av.VideoStream)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(int(seconds * fps)):
            phase = i / fps
            frame = np.stack(
                [
                    (base[0] + xx * 255 / width + 40 * phase) % 255,
                    (base[1] + yy * 255 / height + 25 * phase) % 255,
                    (base[2] + (xx + yy) * 128 / (width + height) * (1 + np.sin(phase))) % 255,
                ],
                axis=-1,
            ).astype(np.uint8)
            box = int((i * 7) % max(1, width - 40))
            frame[height // 3 : height // 3 + 40, box : box + 40] = 255
            video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
            video_frame.pict_type = av.video.frame.PictureType.NONE
            for packet in stream.encode(video_frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
