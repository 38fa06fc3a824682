"""`vidbatch train-head` and `vidbatch tag` on real Delta tables (written here with the deltalake
library in the output tables' schema; tests/test_train_head_run.py runs them on a real run's output)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable, write_deltalake
from test_cli_tools import run_cli

from vidbatch.schema import EMBEDDING

MODEL = "resnet18:sha256-0123abcd"
SAMPLING = "fps1-clip4-abc"
DIM = 16


def _unit(rng: np.random.Generator, centre: np.ndarray) -> list[float]:
    vector = centre + 0.4 * rng.normal(size=DIM)
    return (vector / np.linalg.norm(vector)).astype(np.float32).tolist()


def write_output(
    root: Path | str,
    videos: list[dict],
    *,
    clips_per_video: int = 3,
    stale_clips_of: tuple[str, ...] = (),
    label_type: pa.DataType | None = None,
    storage_options: dict[str, str] | None = None,
) -> Path | str:
    """A videos and a clips table as a run writes them: each ok video's clips carry its run_id;
    `stale_clips_of` also get clips of a run that died between its commits."""
    rng = np.random.default_rng(0)
    centres = {label: rng.normal(size=DIM) * 3 for label in ("cat", "dog", "owl", None, 1, 2)}
    video_rows, clip_rows = [], []
    for video in videos:
        ok = video.get("status", "ok") == "ok"
        centre = centres[video.get("looks_like", video.get("label"))]
        clips = [_unit(rng, centre) for _ in range(clips_per_video)] if ok else []
        mean = np.mean(clips, axis=0) if clips else None
        video_rows.append(
            {
                "video_id": video["video_id"],
                "uri": video.get("uri", f"/library/{video['video_id']}.mp4"),
                "status": video.get("status", "ok"),
                "embedding": None if mean is None or video.get("classify_only") else (mean / np.linalg.norm(mean)).tolist(),
                "model_id": video.get("model_id", MODEL),
                "sampling_id": SAMPLING,
                "run_id": video.get("run_id", "run-2"),
                "label": video.get("label"),
            }
        )
        for index, embedding in enumerate(clips):
            clip_rows.append(
                {
                    "video_id": video["video_id"],
                    "clip_index": index,
                    "run_id": video.get("run_id", "run-2"),
                    "embedding": embedding,
                }
            )
        if video["video_id"] in stale_clips_of:
            for index in range(5):  # a dead run's clips: unlike the video's own, and not current
                clip_rows.append(
                    {"video_id": video["video_id"], "clip_index": index, "run_id": "run-dead", "embedding": _unit(rng, -centre)}
                )
    videos_schema = pa.schema(
        [("video_id", pa.string()), ("uri", pa.string()), ("status", pa.string()), ("embedding", EMBEDDING),
         ("model_id", pa.string()), ("sampling_id", pa.string()), ("run_id", pa.string()), ("label", label_type or pa.string())]
    )  # fmt: skip
    clips_schema = pa.schema(
        [("video_id", pa.string()), ("clip_index", pa.int32()), ("run_id", pa.string()), ("embedding", EMBEDDING)]
    )
    options = {"storage_options": storage_options} if storage_options else {}
    write_deltalake(f"{root}/videos", pa.Table.from_pylist(video_rows, schema=videos_schema), **options)  # type: ignore[arg-type]
    write_deltalake(f"{root}/clips", pa.Table.from_pylist(clip_rows, schema=clips_schema), **options)  # type: ignore[arg-type]
    return root


def labelled(per_label: int, labels: tuple[str, ...] = ("cat", "dog", "owl")) -> list[dict]:
    return [{"video_id": f"{label}{i}", "label": label} for label in labels for i in range(per_label)]


def test_train_head_scores_held_out_videos_and_tag_labels_every_ok_video(tmp_path, capsys):
    videos = [
        *labelled(5),
        {"video_id": "broken", "status": "decode_error", "label": "cat"},
        {"video_id": "new1", "label": None, "looks_like": "dog"},
        {"video_id": "new2", "label": None, "looks_like": "owl"},
    ]
    output = write_output(tmp_path / "out", videos)
    head = tmp_path / "heads" / "animal.json"
    code, out, err = run_cli(capsys, "train-head", str(output), "--label-column", "label", "-o", str(head))
    assert code == 0, err
    assert "trained a linear head for 'label' (3 labels) on 12 videos; scored on 3 held-out videos" in out
    assert "left out: videos not ok (no embedding) 1, ok videos with no label 2" in out
    assert "accuracy 1.000 on 3 held-out examples" in out
    assert "cross-validation" in out
    saved = json.loads(head.read_text())
    assert saved["format"] == "vidbatch-linear-head/1"
    assert (saved["model_id"], saved["sampling_id"], saved["level"]) == (MODEL, SAMPLING, "video")
    assert saved["untrained_backbone"] is False
    assert saved["split"]["train_videos"] == 12 and saved["split"]["test_videos"] == 3
    # the held-out videos themselves, one of each label (the split a reader can check the figures on)
    held = saved["split"]["test_video_ids"]
    assert len(held) == 3 and sorted(v.rstrip("0123456789") for v in held) == ["cat", "dog", "owl"]
    assert saved["evaluation"]["per_class"]["owl"]["support"] == 1
    assert len(saved["head"]["weight"]) == 3 and len(saved["head"]["weight"][0]) == DIM

    tags = tmp_path / "tags.parquet"
    code, out, err = run_cli(capsys, "tag", str(output), "--head", str(head), "-o", str(tags))
    assert code == 0, err
    assert "tagged 17 videos with 'label'" in out
    assert "not tagged: videos not ok (no embedding): 1" in out
    table = pq.read_table(tags)
    assert table.schema.names == ["video_id", "run_id", "tag", "score"]
    made_from = {key.decode(): value.decode() for key, value in (table.schema.metadata or {}).items()}
    assert made_from["vidbatch.model_id"] == MODEL and made_from["vidbatch.sampling_id"] == SAMPLING
    assert made_from["vidbatch.label_column"] == "label" and made_from["vidbatch.videos_version"] == "0"
    current = {row["video_id"]: row["run_id"] for row in DeltaTable(str(output / "videos")).to_pyarrow_table().to_pylist()}
    pairs = zip(table.column("video_id").to_pylist(), table.column("run_id").to_pylist(), strict=True)
    assert all(current[video_id] == run_id for video_id, run_id in pairs)  # the rows each tag was made from
    tagged = dict(zip(table.column("video_id").to_pylist(), table.column("tag").to_pylist(), strict=True))
    assert "broken" not in tagged and len(tagged) == 17
    assert (tagged["new1"], tagged["new2"]) == ("dog", "owl")  # the unlabelled ones too
    assert all(tagged[v["video_id"]] == v["label"] for v in labelled(5))


def test_clip_level_learns_only_from_each_videos_current_clips(tmp_path, capsys):
    output = write_output(tmp_path / "out", labelled(4), clips_per_video=3, stale_clips_of=("cat0", "dog1"))
    head = tmp_path / "clip-head.json"
    code, out, err = run_cli(
        capsys, "train-head", str(output), "--label-column", "label", "--level", "clip", "-o", str(head), "--json"
    )
    assert code == 0, err
    report = json.loads(out)
    assert "head" not in report  # the weights stay in the file
    # 12 videos of 3 clips; the dead run's 10 clips (made to look like the opposite label) are not read.
    assert report["split"]["train_examples"] + report["split"]["test_examples"] == 36
    assert report["split"]["test_videos"] == 3 and report["split"]["test_examples"] == 9
    assert report["evaluation"]["accuracy"] == 1.0
    tags = tmp_path / "clip-tags.parquet"
    code, out, err = run_cli(capsys, "tag", str(output), "--head", str(head), "-o", str(tags))
    assert code == 0, err
    table = pq.read_table(tags)
    assert table.schema.names == ["video_id", "clip_index", "run_id", "tag", "score"]
    assert (table.schema.metadata or {}).get(b"vidbatch.clips_version") is not None
    assert table.num_rows == 36 and "tagged 36 clips" in out
    keys = list(zip(table.column("video_id").to_pylist(), table.column("clip_index").to_pylist(), strict=True))
    assert len(set(keys)) == 36


def test_a_chosen_weight_decay_and_seed_are_kept_in_the_head(tmp_path, capsys):
    output = write_output(tmp_path / "out", labelled(5, ("cat", "dog")))
    head = tmp_path / "h.json"
    code, out, err = run_cli(
        capsys,
        "train-head",
        str(output),
        "--label-column",
        "label",
        "-o",
        str(head),
        "--l2",
        "0.5",
        "--seed",
        "7",
        "--test-fraction",
        "0.4",
    )
    assert code == 0, err
    saved = json.loads(head.read_text())
    assert saved["head"]["l2"] == 0.5 and saved["l2_search"] == {"source": "given", "macro_f1_by_l2": None}
    assert saved["split"]["seed"] == 7 and saved["split"]["test_videos"] == 4  # 2 of each label's 5


@pytest.mark.parametrize(
    ("videos", "options", "message"),
    [
        (labelled(3), ["--label-column", "genre"], "'genre' is not a column of .* its manifest columns are: label"),
        (labelled(3, ("cat",)), [], r"same one \('cat': 3\): a head needs at least 2 labels"),
        (
            [{"video_id": "cat0", "label": "cat"}, {"video_id": "dog0", "label": "dog"}],
            [],
            "no label of 'label' has 2 or more ok videos",
        ),
        (
            [*labelled(3), {"video_id": "x", "label": "cat", "model_id": "resnet50:other"}],
            [],
            "mixes embeddings of different models or samplings .*9 videos of model resnet18.*1 videos of model resnet50:other",
        ),
        ([{**v, "classify_only": True} for v in labelled(3)], [], "model.task classify, which writes labels only"),
        (
            [{"video_id": "a", "status": "timeout", "label": "cat"}],
            [],
            r"no ok videos with a 'label': nothing to train on \(videos not ok",
        ),
        (labelled(3), ["--test-fraction", "1.5"], "--test-fraction 1.5"),
        (labelled(3), ["--l2", "-1"], "--l2 -1.0: give a positive weight decay"),
    ],
    ids=["no-such-column", "one-label", "one-video-each", "two-models", "classify-only", "nothing-ok", "fraction", "l2"],
)
def test_train_head_refuses_what_it_cannot_learn_from_and_says_what_to_do(tmp_path, capsys, videos, options, message):
    output = write_output(tmp_path / "out", videos)
    head = tmp_path / "h.json"
    label = [] if "--label-column" in options else ["--label-column", "label"]
    code, _, err = run_cli(capsys, "train-head", str(output), *label, *options, "-o", str(head))
    assert code == 2
    assert err.startswith("vidbatch: ") and err.count("\n") == 1
    assert re.search(message, err), err
    assert not head.exists()


def test_a_label_column_of_lists_is_refused(tmp_path, capsys):
    output = tmp_path / "out"
    write_output(
        output, [{**v, "label": [v["label"]], "looks_like": v["label"]} for v in labelled(3)], label_type=pa.list_(pa.string())
    )
    code, _, err = run_cli(capsys, "train-head", str(output), "--label-column", "label", "-o", str(tmp_path / "h.json"))
    assert code == 2 and "is list<element: string>: a head learns one label per video" in err


def test_tag_refuses_a_head_of_another_model_and_files_that_are_not_heads(tmp_path, capsys):
    trained_on = write_output(tmp_path / "a", labelled(3))
    head = tmp_path / "h.json"
    assert run_cli(capsys, "train-head", str(trained_on), "--label-column", "label", "-o", str(head))[0] == 0
    other = write_output(tmp_path / "b", [{**v, "model_id": "resnet50:sha256-ffff"} for v in labelled(3)])
    code, _, err = run_cli(capsys, "tag", str(other), "--head", str(head), "-o", str(tmp_path / "t.parquet"))
    assert code == 2 and f"no ok videos of the head's model {MODEL}" in err and "ok videos of another model or sampling: 9" in err
    assert not (tmp_path / "t.parquet").exists()
    (tmp_path / "not-a-head.json").write_text('{"classes": []}')
    code, _, err = run_cli(
        capsys, "tag", str(trained_on), "--head", str(tmp_path / "not-a-head.json"), "-o", str(tmp_path / "t.parquet")
    )
    assert code == 2 and "is not a head file of vidbatch train-head" in err
    code, _, err = run_cli(
        capsys, "tag", str(trained_on), "--head", str(tmp_path / "none.json"), "-o", str(tmp_path / "t.parquet")
    )
    assert code == 2 and "no such file; `vidbatch train-head" in err


def test_train_head_and_tag_read_and_write_object_storage(s3, capsys):
    bucket = s3.new_bucket("heads")
    output = f"s3://{bucket}/out"
    write_output(output, labelled(4), storage_options={**s3.delta_options(), "conditional_put": "etag"})
    storage = ("--endpoint-url", s3.endpoint, "--region", "us-east-1")
    head = f"s3://{bucket}/heads/label.json"
    code, out, err = run_cli(capsys, "train-head", output, "--label-column", "label", "-o", head, *storage)
    assert code == 0, err
    saved = json.loads(s3.client.get_object(Bucket=bucket, Key="heads/label.json")["Body"].read())
    assert saved["model_id"] == MODEL and saved["split"]["test_videos"] == 3
    code, out, err = run_cli(capsys, "tag", output, "--head", head, "-o", f"s3://{bucket}/tags/label.parquet", *storage)
    assert code == 0, err
    body = s3.client.get_object(Bucket=bucket, Key="tags/label.parquet")["Body"].read()
    assert pq.read_table(pa.BufferReader(body)).num_rows == 12


def test_a_head_on_untrained_embeddings_says_so_in_the_report_the_file_and_the_tags(tmp_path, capsys):
    untrained = "resnet18:UNTRAINED-random-init-seed0"
    output = write_output(tmp_path / "out", [{**v, "model_id": untrained} for v in labelled(3)])
    head = tmp_path / "h.json"
    code, out, err = run_cli(capsys, "train-head", str(output), "--label-column", "label", "-o", str(head))
    assert code == 0, err
    assert "NOTE: the embeddings come from untrained weights" in out
    assert json.loads(head.read_text())["untrained_backbone"] is True
    code, out, err = run_cli(capsys, "tag", str(output), "--head", str(head), "-o", str(tmp_path / "t.parquet"))
    assert code == 0 and "NOTE: the embeddings come from untrained weights" in out


def test_tables_a_merge_rewrote_are_read_and_tagged(tmp_path, capsys):
    """A run that adds a manifest column rewrites the videos file with a merge, which delta-rs writes
    with string_view columns: tag's scan filter crashed on them (helper-23)."""
    from deltalake import DeltaTable

    output = write_output(tmp_path / "out", labelled(4))
    table = DeltaTable(f"{output}/videos")
    rows = table.to_pyarrow_table().append_column("genre", pa.array(["x"] * 12))
    (
        table.merge(rows, predicate="t.video_id = s.video_id", source_alias="s", target_alias="t", merge_schema=True)
        .when_matched_update_all()
        .execute()
    )
    head = tmp_path / "h.json"
    assert run_cli(capsys, "train-head", str(output), "--label-column", "label", "-o", str(head))[0] == 0
    code, out, err = run_cli(capsys, "tag", str(output), "--head", str(head), "-o", str(tmp_path / "t.parquet"))
    assert code == 0, err
    assert pq.read_table(tmp_path / "t.parquet").num_rows == 12


def test_a_refused_or_failed_tag_leaves_the_last_tags_file_as_it_was(tmp_path, capsys):
    output = write_output(tmp_path / "out", labelled(3))
    head = tmp_path / "h.json"
    tags = tmp_path / "tags.parquet"
    assert run_cli(capsys, "train-head", str(output), "--label-column", "label", "-o", str(head))[0] == 0
    assert run_cli(capsys, "tag", str(output), "--head", str(head), "-o", str(tags))[0] == 0
    before = tags.read_bytes()
    classify_only = write_output(tmp_path / "classify", [{**v, "classify_only": True} for v in labelled(3)])
    code, _, err = run_cli(capsys, "tag", str(classify_only), "--head", str(head), "-o", str(tags))
    assert code == 2 and "a head needs embeddings" in err
    assert tags.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("tags")) == ["tags.parquet"]  # no partial file left


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda h: h.pop("model_id"), "'model_id' is missing"),
        (lambda h: h.update(level="frame"), "level 'frame' is not one of video, clip"),
        (lambda h: h["head"]["weight"][0].__setitem__(0, float("nan")), "weight holds NaN or Inf"),
        (lambda h: h["head"].update(feature_scale=[0.0] * DIM), "feature_scale holds values that are not positive"),
        (lambda h: h["head"].update(classes=["cat", "cat", "dog"]), "classes name a label twice"),
        (lambda h: h["head"].update(bias=[0.0]), "do not fit 3 classes"),
        (lambda h: h.pop("head"), "'head' is missing"),
    ],
    ids=["no-model", "level", "nan", "zero-scale", "twice", "bias", "no-weights"],
)
def test_a_head_file_edited_by_hand_is_refused_naming_the_field(tmp_path, capsys, edit, message):
    output = write_output(tmp_path / "out", labelled(3))
    head = tmp_path / "h.json"
    assert run_cli(capsys, "train-head", str(output), "--label-column", "label", "-o", str(head))[0] == 0
    data = json.loads(head.read_text())
    edit(data)
    head.write_text(json.dumps(data))
    code, _, err = run_cli(capsys, "tag", str(output), "--head", str(head), "-o", str(tmp_path / "t.parquet"))
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "t.parquet").exists()


def test_destinations_and_label_columns_that_cannot_work_are_refused_before_the_training(tmp_path, capsys):
    output = write_output(tmp_path / "out", labelled(3))
    (tmp_path / "a-file").write_text("x")
    for destination, message in (
        (tmp_path, "is a folder; give a file name in it"),
        (tmp_path / "a-file" / "h.json", "on its path is a file, not a folder"),
    ):
        code, out, err = run_cli(capsys, "train-head", str(output), "--label-column", "label", "-o", str(destination))
        assert code == 2 and message in err and "trained" not in out, err
    code, _, err = run_cli(capsys, "train-head", str(output), "--label-column", "status", "-o", str(tmp_path / "h.json"))
    assert code == 2 and "'status' is one of vidbatch's own columns" in err


def test_the_report_says_when_cross_validation_could_not_choose_the_decay(tmp_path, capsys):
    output = write_output(tmp_path / "out", labelled(2, ("cat", "dog")) + labelled(5, ("owl",)))
    head = tmp_path / "h.json"
    code, out, err = run_cli(capsys, "train-head", str(output), "--label-column", "label", "-o", str(head))
    assert code == 0, err
    assert "weight decay 0.01 (default 0.01: fewer than 2 labels have 3 training videos, too few for 3 folds)" in out
    assert json.loads(head.read_text())["l2_search"]["source"].startswith("default")


def test_one_rare_label_does_not_turn_the_cross_validation_off_for_the_others(tmp_path, capsys):
    """Before: a single label with one video (a long tail of rare labels is the usual library) made
    every head take the default decay. Now the rare label is trained on in every fold, scored in none."""
    output = write_output(tmp_path / "out", labelled(5, ("cat", "dog")) + labelled(1, ("owl",)))
    head = tmp_path / "h.json"
    code, out, err = run_cli(capsys, "train-head", str(output), "--label-column", "label", "-o", str(head))
    assert code == 0, err
    saved = json.loads(head.read_text())
    assert saved["l2_search"]["source"] == "cross-validation", saved["l2_search"]
    assert len(saved["l2_search"]["macro_f1_by_l2"]) == 5 and "owl" in saved["head"]["classes"]


def test_labels_with_spaces_at_an_end_are_quoted_outside_the_score_table_too(tmp_path, capsys):
    """The score table quoted ' owl'; the 'not scored' line and tag's counts printed it bare, where it
    reads as 'owl'."""
    rare = [{"video_id": "owl0", "label": " owl", "looks_like": "owl"}]
    output = write_output(tmp_path / "out", labelled(5, ("cat", "dog")) + rare)
    head = tmp_path / "h.json"
    code, out, err = run_cli(capsys, "train-head", str(output), "--label-column", "label", "-o", str(head))
    assert code == 0, err
    assert "not scored (one video each, used for training): ' owl';" in out
    assert "WARNING: labels that differ only in case or spaces" not in out  # ' owl' alone is no look-alike
    code, out, err = run_cli(capsys, "tag", str(output), "--head", str(head), "-o", str(tmp_path / "t.parquet"))
    assert code == 0, err
    assert "' owl': 1" in out and ", owl:" not in out and "( owl:" not in out


def test_one_file_under_several_ids_stays_on_one_side_of_the_split(tmp_path, capsys):
    """Split by id, one copy of a file was trained on and another scored: 600 rows of 5 files scored
    accuracy 1.000 against a 0.400 baseline. The videos of one file (its uri) now go together."""
    videos = [
        {"video_id": f"{label}{i}-copy{c}", "label": label, "uri": f"/library/{label}{i}.mp4"}
        for label in ("cat", "dog", "owl") for i in range(4) for c in range(3)
    ]  # fmt: skip
    output = write_output(tmp_path / "out", videos)
    head = tmp_path / "h.json"
    code, out, err = run_cli(capsys, "train-head", str(output), "--label-column", "label", "-o", str(head))
    assert code == 0, err
    held = set(json.loads(head.read_text())["split"]["test_video_ids"])
    assert held
    for video in videos:
        copies = {v["video_id"] for v in videos if v["uri"] == video["uri"]}
        assert copies <= held or not copies & held, video["uri"]  # all of a file's copies on one side
    assert {v["label"] for v in videos if v["video_id"] in held} == {"cat", "dog", "owl"}  # every label still scored


def test_labels_that_differ_only_in_case_or_spaces_are_warned_about(tmp_path, capsys):
    """'cat', 'Cat' and 'cat ' became three classes without a word, and tag gave videos 'Cat'."""
    videos = labelled(4, ("cat", "dog")) + [
        {"video_id": f"Cat{i}", "label": "Cat", "looks_like": "cat"} for i in range(2)
    ] + [{"video_id": f"cat-{i}", "label": "cat ", "looks_like": "cat"} for i in range(2)]  # fmt: skip
    output = write_output(tmp_path / "out", videos)
    code, out, err = run_cli(capsys, "train-head", str(output), "--label-column", "label", "-o", str(tmp_path / "h.json"))
    assert code == 0, err
    assert "WARNING: labels that differ only in case or spaces are separate classes (Cat, cat, 'cat '): " in out


def test_heads_and_tags_are_not_written_inside_the_tables_whose_vacuum_would_delete_them(tmp_path, capsys):
    output = write_output(tmp_path / "out", labelled(5))
    inside = output / "videos" / "head.json"
    code, out, err = run_cli(capsys, "train-head", str(output), "--label-column", "label", "-o", str(inside))
    assert code == 2 and "inside the output's videos table" in err and "trained" not in out, err
    assert not inside.exists()
    head = output / "head.json"  # beside the tables is fine
    code, _, err = run_cli(capsys, "train-head", str(output), "--label-column", "label", "-o", str(head))
    assert code == 0, err
    saved = json.loads(head.read_text())
    assert saved["trained_on"] == {"output": str(output), "videos_version": 0, "clips_version": None}
    tags = tmp_path / "out" / "clips" / "tags" / "t.parquet"
    code, out, err = run_cli(capsys, "tag", f"{tmp_path}/./out/", "--head", str(head), "-o", str(tags))
    assert code == 2 and "inside the output's clips table" in err and "tagged" not in out, err
    assert not tags.exists()


@pytest.mark.parametrize(
    "destination",
    ["s3a://b/out/videos/h.json", "S3://b/out/videos/h.json", "s3://b/out//videos/h.json", "s3://b/./out/clips/t.parquet"],
)
def test_a_file_inside_a_table_is_refused_however_its_uri_is_spelled(destination):
    from vidbatch.errors import JobError
    from vidbatch.output_refusals import refuse_inside_tables

    with pytest.raises(JobError, match="inside the output's (videos|clips) table"):
        refuse_inside_tables(destination, "s3://b/out", flag="-o")
    refuse_inside_tables("s3://b/out/heads/h.json", "s3://b/out", flag="-o")  # beside the tables: fine


def test_a_file_inside_a_table_is_refused_through_a_linked_output(tmp_path):
    from vidbatch.errors import JobError
    from vidbatch.output_refusals import refuse_inside_tables

    (tmp_path / "out" / "videos").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "out")
    with pytest.raises(JobError, match="inside the output's videos table"):
        refuse_inside_tables(str(tmp_path / "out" / "videos" / "h.json"), str(tmp_path / "link"), flag="-o")
