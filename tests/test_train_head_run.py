"""Custom tags end to end: a real run (local Ray, PyAV, seeded weights) over a labelled library,
then `vidbatch train-head` on its tables and `vidbatch tag` with the head."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from deltalake import DeltaTable
from test_cli_tools import run_cli

from vidbatch.config import parse_job
from vidbatch.pipeline import run_job

pytestmark = pytest.mark.slow

SIZE = 96
FRAMES = 6  # 3 s at 2 fps


def _pattern(kind: str, frame: int, rng: np.random.Generator) -> np.ndarray:
    """Three looks a linear probe on any reasonable features tells apart, each with its own noise and motion."""
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    shift = frame * 3 + int(rng.integers(0, 20))
    if kind == "stripes":
        plane = ((y + shift) // 8 % 2) * 200 + 30
        image = np.stack([plane, plane, plane], axis=-1)
    elif kind == "checker":
        plane = (((x + shift) // 12 + y // 12) % 2) * 180 + 40
        image = np.stack([plane, 255 - plane, plane // 2], axis=-1)
    else:  # "sky": a smooth blue gradient
        image = np.stack([x * 0 + 40, y + 60, x * 0 + 230], axis=-1)
    noise = rng.normal(0, 12, size=image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8)


def _write(path: Path, kind: str, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=2)
        stream.width = stream.height = SIZE
        stream.pix_fmt = "yuv420p"
        for index in range(FRAMES):
            frame = av.VideoFrame.from_ndarray(_pattern(kind, index, rng), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


@pytest.fixture(scope="module")
def labelled_output(tmp_path_factory, seeded_weights, ray_local) -> Path:
    folder = tmp_path_factory.mktemp("labelled")
    rows = []
    for kind in ("stripes", "checker", "sky"):
        for i in range(5):
            rows.append(
                {"video_id": f"{kind}{i}", "uri": str(_write(folder / f"{kind}{i}.avi", kind, seed=len(rows))), "label": kind}
            )
    rows.append({"video_id": "unlabelled", "uri": str(_write(folder / "unlabelled.avi", "checker", seed=99)), "label": None})
    rows.append({"video_id": "missing", "uri": str(folder / "missing.avi"), "label": "sky"})
    pq.write_table(pa.Table.from_pylist(rows), folder / "manifest.parquet")
    raw = {
        "name": "tags",
        "manifest": str(folder / "manifest.parquet"),
        "output": str(folder / "out"),
        "sampling": {"mode": "fps", "fps": 1.0, "clip_len_s": 1.0},
        "model": {"arch": "resnet18", "weights": str(seeded_weights), "task": "embed", "precision": "fp32"},
        "resources": {"batch_clips": 8, "progress_interval_s": 60},
    }
    (folder / "job.yaml").write_text(yaml.safe_dump(raw))
    result = run_job(parse_job(raw), progress=lambda _: None)
    assert result.summary["statuses"] == {"ok": 16, "not_found": 1}
    return folder / "out"


def test_a_head_on_a_runs_embeddings_tells_the_labels_of_held_out_videos_apart(labelled_output, tmp_path, capsys):
    head = tmp_path / "head.json"
    code, out, err = run_cli(capsys, "train-head", str(labelled_output), "--label-column", "label", "-o", str(head))
    assert code == 0, err
    saved = json.loads(head.read_text())
    assert saved["model_id"].startswith("resnet18:") and saved["untrained_backbone"] is False
    assert saved["split"]["test_videos"] == 3  # one of each label's five
    # Which snapshot it learned from, to the table version.
    videos_version = DeltaTable(str(labelled_output / "videos")).version()
    assert saved["trained_on"] == {"output": str(labelled_output), "videos_version": videos_version, "clips_version": None}
    assert f"read from videos version {videos_version}\n" in out
    assert "left out: videos not ok (no embedding) 1, ok videos with no label 1" in out
    evaluation = saved["evaluation"]
    # Three looks this different are told apart by a probe on seeded (untrained) ResNet features;
    # the majority-class baseline on the same three videos is 1/3.
    assert evaluation["accuracy"] == 1.0 and evaluation["majority_accuracy"] == pytest.approx(1 / 3)
    assert evaluation["macro"]["f1"] == 1.0

    tags = tmp_path / "tags.parquet"
    code, out, err = run_cli(capsys, "tag", str(labelled_output), "--head", str(head), "-o", str(tags))
    assert code == 0, err
    tagged = dict(zip(*pq.read_table(tags, columns=["video_id", "tag"]).to_pydict().values(), strict=True))
    assert len(tagged) == 16 and "missing" not in tagged
    assert tagged["unlabelled"] == "checker"
    assert "not tagged: videos not ok (no embedding): 1" in out


def test_clip_level_head_on_a_run(labelled_output, tmp_path, capsys):
    head = tmp_path / "clip-head.json"
    code, out, err = run_cli(
        capsys, "train-head", str(labelled_output), "--label-column", "label", "--level", "clip", "-o", str(head), "--json"
    )
    assert code == 0, err
    report = json.loads(out)
    # 15 labelled ok videos of 3 s at 1 sample/s in clips of 1 s: 3 clips each.
    assert report["split"]["train_examples"] + report["split"]["test_examples"] == 45
    assert report["evaluation"]["examples"] == 9
    assert report["evaluation"]["accuracy"] >= 8 / 9
    assert report["trained_on"]["clips_version"] == DeltaTable(str(labelled_output / "clips")).version()
