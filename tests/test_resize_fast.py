"""model.resize: fast: swscale resizes while converting from YUV. Checked against the exact recipe on
generated media: same upright crop (the painted index reads back), pixels a few levels off."""

from __future__ import annotations

import av
import media
import numpy as np
import pytest

from vidbatch.decode import model_input
from vidbatch.orientation import frame_orientation
from vidbatch.preprocess import PreprocessSpec, crop_resized


def _frames(path):
    with av.open(str(path)) as container:
        yield from container.decode(video=0)


@pytest.mark.parametrize(
    ("size", "rotation", "mirror", "resize_size"),
    [
        ((320, 240), 0, False, 256),
        ((1280, 720), 0, False, 232),
        ((240, 320), 90, False, 256),  # a phone's portrait clip: stored 320x240, shown 240x320
        ((320, 240), 270, True, 256),  # a front camera's: turned and mirrored
        ((160, 120), 0, False, 256),  # smaller than the model's size: scaled up
    ],
    ids=["320x240", "720p-232", "rotated-90", "rotated-270-mirrored", "upscaled"],
)
def test_fast_resize_gives_the_recipes_upright_crop_within_a_few_levels(tmp_path, size, rotation, mirror, resize_size):
    width, height = size
    video = media.write_video(
        tmp_path / "v.mp4", num_frames=6, fps=10, width=width, height=height, rotation=rotation, mirror=mirror
    )
    exact_spec = PreprocessSpec(resize_size=resize_size)
    fast_spec = PreprocessSpec(resize_size=resize_size, resize="fast")
    differences = []
    for index, frame in enumerate(_frames(video.path)):
        orientation = frame_orientation(frame)
        exact = model_input(frame, orientation, exact_spec)
        fast = model_input(frame, orientation, fast_spec)
        assert fast.shape == exact.shape == (224, 224, 3) and fast.dtype == np.uint8 and fast.flags.c_contiguous
        assert media.read_frame_index(fast) == index  # upright, unmirrored, the same crop
        differences.append(np.abs(fast.astype(np.int16) - exact.astype(np.int16)))
    level = np.concatenate([d.ravel() for d in differences])
    assert 0 < level.mean() < 4, level.mean()  # another filter (not the exact path by mistake), close to it
    assert np.percentile(level, 99) <= 24, np.percentile(level, 99)


def test_a_frame_not_resized_to_the_recipes_size_is_refused_by_the_crop():
    with pytest.raises(ValueError, match="resized to short side 256, got 320x240"):
        crop_resized(np.zeros((240, 320, 3), np.uint8), PreprocessSpec())
    assert crop_resized(np.zeros((256, 341, 3), np.uint8), PreprocessSpec()).shape == (224, 224, 3)


def test_the_decode_stage_resizes_as_the_job_says(tmp_path):
    """The stage's `resize` reaches the frames it sends on (the pipeline passes model.resize)."""
    import pyarrow as pa

    from vidbatch.config import LimitsConfig, SamplingConfig, StorageConfig
    from vidbatch.stages import DecodeStage

    video = media.write_video(tmp_path / "v.mp4", num_frames=20, fps=10, width=640, height=360)
    batch = pa.table({"video_id": ["v"], "uri": [str(video.path)]})

    def frames(resize: str) -> np.ndarray:
        stage = DecodeStage(
            sampling=SamplingConfig(mode="fps", fps=1.0, clip_len_s=2.0),
            limits=LimitsConfig(isolate_decode=False),
            storage=StorageConfig(),
            resize_size=256,
            crop_size=224,
            resize=resize,  # type: ignore[arg-type]
        )
        rows = [row for table in stage(batch) for row in table.to_pylist() if row.get("kind") == "clip"]
        assert rows, "no clip rows"
        return np.concatenate([np.frombuffer(row["frames"], np.uint8) for row in rows])

    exact, fast = frames("exact"), frames("fast")
    assert exact.shape == fast.shape
    level = np.abs(exact.astype(np.int16) - fast.astype(np.int16))
    assert 0 < level.mean() < 4
