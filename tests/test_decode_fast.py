"""The fast targeted decode (seek + skipping unneeded non-reference frames) returns exactly
the frames that decoding every packet returns: same targets, same pts, same pixels."""

from __future__ import annotations

import hashlib
from fractions import Fraction
from pathlib import Path

import av
import media
import numpy as np
import pytest

from vidbatch import decode, decode_targeted
from vidbatch.config import LimitsConfig, SamplingConfig

# Sparse (seeks), irregular, dense (skips non-reference frames), every frame; uniform at both ends.
# (fps 3 and uniform 5 sat between neighbours here and cost the suite ~12 s on 2 cores.)
SAMPLINGS = [
    SamplingConfig(mode="fps", fps=0.1),
    SamplingConfig(mode="fps", fps=0.37),
    SamplingConfig(mode="fps", fps=1.0),
    SamplingConfig(mode="fps", fps=30.0),
    SamplingConfig(mode="uniform", num_frames=1),
    SamplingConfig(mode="uniform", num_frames=40),
]


def samples(path: Path, sampling: SamplingConfig, *, fast: bool, threads: int = 1, stats: dict | None = None) -> list:
    with decode.open_video(str(path), limits=LimitsConfig(), threads=threads) as (container, stream, info):
        out = []
        for t, pts, frame in decode_targeted.targeted_samples(container, stream, info, sampling, None, fast=fast, stats=stats):
            pixels = frame.to_ndarray(format="rgb24")
            out.append((round(t, 9), round(pts, 9), hashlib.sha1(pixels.tobytes()).hexdigest()))
        return out


def write_x264(path: Path, num_frames: int, *, params: str, fps: int = 30, pts_s: list[float] | None = None) -> Path:
    """A painted-index H.264 file with explicit x264 parameters (B-frames, open GOP, slices...)."""
    clock = Fraction(1, 90000) if pts_s else Fraction(1, fps)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        stream.codec_context.time_base = clock
        if pts_s:
            stream.time_base = clock
        stream.options = {"x264-params": params}
        for i in range(num_frames):
            frame = av.VideoFrame.from_ndarray(media.paint_frame(i, 320, 240), format="rgb24")
            frame.pts = round(pts_s[i] / clock) if pts_s else i
            frame.time_base = clock
            frame.pict_type = av.video.frame.PictureType.NONE
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


@pytest.fixture(scope="module")
def fast_library(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fast")
    rng = np.random.default_rng(7)
    vfr = [0.0, *np.cumsum(rng.uniform(0.01, 0.12, 199)).tolist()]
    return {
        "gop6": media.write_video(root / "gop6.mp4", num_frames=200, fps=10, gop=6).path,
        "gop12_30fps": write_x264(root / "gop12.mp4", 300, params="keyint=12:min-keyint=12:scenecut=0:bframes=3"),
        "long_gop": write_x264(root / "long.mp4", 300, params="keyint=250:bframes=3:b-pyramid=normal"),
        "no_pyramid": write_x264(root / "nopyr.mp4", 240, params="keyint=7:min-keyint=7:scenecut=0:b-pyramid=none"),
        "open_gop": write_x264(root / "open.mp4", 240, params="keyint=20:min-keyint=20:scenecut=0:open-gop=1"),
        "slices_5b": write_x264(root / "slices.mp4", 240, params="keyint=25:slices=4:bframes=5:b-adapt=2"),
        "no_bframes": write_x264(root / "nob.mp4", 150, params="keyint=15:bframes=0"),
        "vfr_gop10": write_x264(root / "vfr.mp4", 200, params="keyint=10:min-keyint=10:scenecut=0", pts_s=vfr),
        "vfr_gop5": media.write_video(
            root / "vfr5.mp4", num_frames=120, pts_s=[i * 0.1 + (0.04 if i % 3 == 0 and i else 0) for i in range(120)], gop=5
        ).path,
        "mkv_gop9": write_x264(root / "gop9.mkv", 200, params="keyint=9:min-keyint=9:scenecut=0"),
        "vp9_gop8": media.write_video(root / "vp9.webm", num_frames=100, fps=15, gop=8).path,
    }


@pytest.mark.parametrize("name", ["gop6", "gop12_30fps", "long_gop", "no_pyramid", "open_gop", "slices_5b", "no_bframes",
                                  "vfr_gop10", "vfr_gop5", "mkv_gop9", "vp9_gop8"])  # fmt: skip
def test_fast_path_returns_the_frames_of_decoding_through(fast_library, name):
    path = fast_library[name]
    for sampling in SAMPLINGS:
        reference = samples(path, sampling, fast=False)
        assert reference, (name, sampling)
        for threads in (1, 0):  # single-threaded and FFmpeg's frame threading
            assert samples(path, sampling, fast=True, threads=threads) == reference, (name, sampling, threads)


def test_sparse_targets_seek_and_dense_targets_skip(fast_library):
    path = fast_library["gop12_30fps"]  # 10 s, key frame every 0.4 s, B-frames
    sparse: dict = {}
    samples(path, SamplingConfig(mode="fps", fps=0.37), fast=True, stats=sparse)
    assert sparse["seeks"] >= 2
    assert sparse["decoded_frames"] < 300 // 3
    dense: dict = {}
    samples(path, SamplingConfig(mode="fps", fps=1.0), fast=True, stats=dense)
    assert dense["skipped_packets"] > 0
    assert dense["decoded_frames"] < 300


def test_painted_indices_are_the_frames_on_screen(fast_library):
    """Independent of the reference path: the pixels say which frame came out."""
    path = fast_library["vfr_gop5"]
    with av.open(str(path)) as container:
        all_pts = [float(f.time) for f in container.decode(video=0)]
    sampling = SamplingConfig(mode="fps", fps=0.7)
    with decode.open_video(str(path), limits=LimitsConfig()) as (container, stream, info):
        got = [(t, p, media.read_frame_index(frame.to_ndarray(format="rgb24")))
               for t, p, frame in decode_targeted.targeted_samples(container, stream, info, sampling, None)]  # fmt: skip
    assert len(got) == 9  # t = 0, 1/0.7, ... below 12 s
    for t, p, index in got:
        expected = max(i for i, q in enumerate(all_pts) if q <= t + 1e-6)
        assert index == expected and p == pytest.approx(all_pts[expected], abs=1e-6)


def test_a_seek_that_lands_badly_falls_back_to_decoding_through(fast_library, monkeypatch):
    path = fast_library["gop6"]
    sampling = SamplingConfig(mode="fps", fps=0.25)
    reference = samples(path, sampling, fast=False)
    real_seek = decode_targeted._TargetedReader._seek
    calls = {"n": 0}

    def flaky(self, ticks):
        calls["n"] += 1
        if calls["n"] % 2:
            self.container.seek(0, stream=self.stream, backward=True, any_frame=False)  # lands at the start
            return None
        return real_seek(self, ticks)

    monkeypatch.setattr(decode_targeted._TargetedReader, "_seek", flaky)
    assert samples(path, sampling, fast=True) == reference
    assert calls["n"] >= 1


def test_a_seek_landing_behind_the_reader_is_still_exact(fast_library, monkeypatch):
    path = fast_library["gop12_30fps"]
    sampling = SamplingConfig(mode="uniform", num_frames=6)
    reference = samples(path, sampling, fast=False)
    real_seek = decode_targeted._TargetedReader._seek

    def behind(self, ticks):
        return real_seek(self, max(0, ticks - round(2.0 / self.tb)))  # two seconds too early

    monkeypatch.setattr(decode_targeted._TargetedReader, "_seek", behind)
    assert samples(path, sampling, fast=True) == reference


def test_clips_through_the_public_api_are_unchanged(fast_library):
    from vidbatch.preprocess import PreprocessSpec

    path = fast_library["gop12_30fps"]
    sampling = SamplingConfig(mode="fps", fps=0.5, clip_len_s=4.0)
    with decode.open_video(str(path), limits=LimitsConfig()) as (container, stream, info):
        clips = list(decode.iter_clips(container, stream, info, sampling=sampling, spec=PreprocessSpec()))
    reference = samples(path, sampling, fast=False)
    assert [p for c in clips for p in c.frame_pts_s] == pytest.approx([r[1] for r in reference], abs=1e-9)
    assert [c.index for c in clips] == [0, 1, 2]
