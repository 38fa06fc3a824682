"""Tests for the synthetic media generator in tests/media.py."""

from __future__ import annotations

import re
from fractions import Fraction

import av
import media  # pytest puts tests/ (no __init__.py) on sys.path
import numpy as np
import pytest
from PIL import Image

# (suffix, default encoder, codec name the decoder reports)
FORMATS = [(".mp4", "libx264", "h264"), (".webm", "libvpx-vp9", "vp9"), (".avi", "mpeg4", "mpeg4")]


def model_crop(rgb: np.ndarray, short_side: int = 256, crop: int = 224) -> np.ndarray:
    """The production preprocessing: bilinear resize of the short side, centre crop."""
    image = Image.fromarray(rgb)
    scale = short_side / min(image.size)
    size = (int(image.width * scale), int(image.height * scale))
    image = image.resize(size, Image.Resampling.BILINEAR)
    left, top = round((image.width - crop) / 2), round((image.height - crop) / 2)
    return np.asarray(image.crop((left, top, left + crop, top + crop)))


def decode(path) -> list[av.VideoFrame]:
    with av.open(str(path)) as container:
        return list(container.decode(video=0))


@pytest.mark.parametrize(("suffix", "encoder", "decoded_codec"), FORMATS)
def test_index_survives_codec_and_preprocessing(tmp_path, suffix, encoder, decoded_codec):
    video = media.write_video(tmp_path / f"v{suffix}", num_frames=24, fps=12)

    assert video.codec == encoder
    # WebM/Matroska store milliseconds, hence the 1 ms tolerance.
    assert video.frame_pts_s == pytest.approx([i / 12 for i in range(24)], abs=1e-3)
    with av.open(str(video.path)) as container:
        assert container.streams.video[0].codec_context.name == decoded_codec
    frames = decode(video.path)
    assert len(frames) == video.num_frames == 24
    for position, frame in enumerate(frames):
        rgb = frame.to_ndarray(format="rgb24")
        assert rgb.shape == (240, 320, 3)
        assert media.read_frame_index(rgb) == position
        assert media.read_frame_index(model_crop(rgb)) == position


@pytest.mark.parametrize(("width", "height"), [(320, 240), (240, 320), (640, 360), (32, 32), (100, 64)])
def test_paint_and_read_round_trip_at_any_size(width, height):
    for index in (0, 1, 7, 1234, media.MAX_FRAMES - 1):
        rgb = media.paint_frame(index, width, height)
        assert rgb.shape == (height, width, 3)
        assert rgb.dtype == np.uint8
        assert media.read_frame_index(rgb) == index
        assert media.read_frame_index(model_crop(rgb)) == index


def test_frames_differ_outside_the_grid():
    # The embedding must see different pictures, not just different bits.
    first, second = (model_crop(media.paint_frame(i, 320, 240)).astype(int) for i in (0, 1))
    border = np.ones((224, 224), dtype=bool)
    border[40:184, 40:184] = False  # the grid lives in here
    assert np.abs(first - second)[border].mean() > 10


@pytest.mark.parametrize(
    "transform",
    [
        lambda a: np.rot90(a, 1),
        lambda a: np.rot90(a, 2),
        lambda a: np.rot90(a, 3),
        np.fliplr,
        np.flipud,
    ],
)
def test_read_refuses_pictures_that_are_not_upright(transform):
    rgb = np.ascontiguousarray(transform(media.paint_frame(5, 320, 240)))
    with pytest.raises(ValueError, match="not upright"):
        media.read_frame_index(rgb)


def test_read_refuses_a_picture_without_grid():
    with pytest.raises(ValueError, match="neither black nor white"):
        media.read_frame_index(np.full((240, 320, 3), 128, dtype=np.uint8))


@pytest.mark.parametrize("suffix", [".mp4", ".mov", ".webm", ".mkv"])
def test_variable_frame_rate_keeps_requested_pts(tmp_path, suffix):
    pts_s = [0.0, 0.033, 0.05, 0.2, 0.21, 0.75, 0.7515, 1.5, 3.25, 3.3]
    video = media.write_video(tmp_path / f"vfr{suffix}", num_frames=len(pts_s), pts_s=pts_s)

    assert video.frame_pts_s == pytest.approx(pts_s, abs=1e-3)
    frames = decode(video.path)
    assert [frame.time for frame in frames] == pytest.approx(pts_s, abs=1e-3)
    assert [media.read_frame_index(f.to_ndarray(format="rgb24")) for f in frames] == list(range(len(pts_s)))


def test_variable_frame_rate_may_start_late(tmp_path):
    video = media.write_video(tmp_path / "late.mp4", num_frames=3, pts_s=[0.5, 0.6, 1.0])
    assert video.frame_pts_s == pytest.approx([0.5, 0.6, 1.0], abs=1e-3)


@pytest.mark.parametrize(("suffix", "encoder", "_"), FORMATS)
def test_gop_puts_key_frames_exactly_at_multiples(tmp_path, suffix, encoder, _):
    video = media.write_video(tmp_path / f"gop{suffix}", num_frames=23, gop=5)

    assert video.keyframe_indices == (0, 5, 10, 15, 20)
    decoded = tuple(i for i, frame in enumerate(decode(video.path)) if frame.key_frame)
    assert decoded == video.keyframe_indices


def test_without_gop_not_every_frame_is_a_key_frame(tmp_path):
    # Guards the pict_type reset: frames from from_ndarray would otherwise
    # all be encoded as key frames.
    video = media.write_video(tmp_path / "plain.mp4", num_frames=20)
    assert video.keyframe_indices == (0,)


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotation_reads_upright_through_display_matrix(tmp_path, rotation):
    video = media.write_video(tmp_path / "rot.mp4", num_frames=4, rotation=rotation)

    assert (video.width, video.height, video.rotation) == (320, 240, rotation)
    for position, frame in enumerate(decode(video.path)):
        assert frame.rotation % 360 == rotation
        stored = frame.to_ndarray(format="rgb24")
        assert stored.shape == ((320, 240, 3) if rotation in (90, 270) else (240, 320, 3))
        with pytest.raises(ValueError, match="not upright"):
            media.read_frame_index(stored)
        # The documented formula, spelled out rather than via upright_rgb.
        upright = np.rot90(stored, k=frame.rotation // 90)
        assert upright.shape == (240, 320, 3)
        assert media.read_frame_index(upright) == position
        assert media.read_frame_index(model_crop(np.ascontiguousarray(upright))) == position
        assert np.array_equal(media.upright_rgb(frame), upright)


def test_unrotated_file_reports_rotation_zero(tmp_path):
    video = media.write_video(tmp_path / "flat.mp4", num_frames=2)
    assert {frame.rotation for frame in decode(video.path)} == {0}


def test_fraction_fps_and_other_codec(tmp_path):
    video = media.write_video(tmp_path / "ntsc.mkv", num_frames=6, fps=Fraction(30000, 1001), codec="libvpx-vp9")
    assert video.fps == Fraction(30000, 1001)
    assert video.codec == "libvpx-vp9"
    assert video.frame_pts_s == pytest.approx([i * 1001 / 30000 for i in range(6)], abs=1e-3)


def test_generated_video_is_frozen(tmp_path):
    video = media.write_video(tmp_path / "f.mp4", num_frames=1)
    with pytest.raises(AttributeError):
        video.width = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("name", "kwargs", "bad"),
    [
        ("v.flv", {}, "'.flv'"),
        ("v.mp4", {"num_frames": 0}, "0"),
        ("v.mp4", {"num_frames": 5000}, "5000"),
        ("v.mp4", {"fps": -3}, "-3"),
        ("v.mp4", {"fps": float("nan")}, "nan"),
        ("v.mp4", {"width": 321}, "321"),
        ("v.mp4", {"height": 16}, "16"),
        ("v.mp4", {"codec": "no-such-encoder"}, "'no-such-encoder'"),
        ("v.mp4", {"codec": "aac"}, "'aac'"),
        ("v.avi", {"pix_fmt": "yuv444p"}, "'yuv444p'"),
        ("v.mp4", {"rotation": 45}, "45"),
        ("v.webm", {"rotation": 90}, "'.webm'"),
        ("v.mp4", {"gop": 0}, "0"),
        ("v.avi", {"pts_s": [0.0, 0.1, 0.2]}, "'.avi'"),
        ("v.mp4", {"pts_s": [0.0, 0.1]}, "2 entries"),
        ("v.mp4", {"pts_s": [0.0, 0.2, 0.1]}, "(0.0, 0.2, 0.1)"),
        ("v.mp4", {"pts_s": [-1.0, 0.2, 0.3]}, "-1.0"),
    ],
)
def test_validation_names_the_bad_value(tmp_path, name, kwargs, bad):
    kwargs = {"num_frames": 3, **kwargs}
    with pytest.raises(ValueError, match=re.escape(bad)):
        media.write_video(tmp_path / name, **kwargs)
    assert not (tmp_path / name).exists()


def test_write_video_arguments_are_keyword_only(tmp_path):
    with pytest.raises(TypeError):
        media.write_video(tmp_path / "v.mp4", 3)  # type: ignore[call-arg]


def test_audio_only_file_has_no_video_stream(tmp_path):
    path = media.write_audio_only(tmp_path / "a.m4a", duration_s=0.5)
    with av.open(str(path)) as container:
        assert len(container.streams.audio) == 1
        assert len(container.streams.video) == 0
        assert container.streams.audio[0].codec_context.name == "aac"


def test_garbage_is_deterministic_and_undecodable(tmp_path):
    first = media.write_garbage(tmp_path / "g1.mp4", 2048, seed=3)
    second = media.write_garbage(tmp_path / "g2.mp4", 2048, seed=3)
    assert first.read_bytes() == second.read_bytes()
    assert len(first.read_bytes()) == 2048
    with pytest.raises(av.FFmpegError):
        av.open(str(first)).close()
    with pytest.raises(ValueError, match="-1"):
        media.write_garbage(tmp_path / "g3.mp4", -1)
