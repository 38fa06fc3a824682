"""The embeddings and labels a head is trained on, read from an output's current snapshot.

Labels come from a manifest column carried through into the videos table (e.g. `label`).
Only `ok` rows have embeddings; a clip counts only when its videos row names its run (clips
of a run that died between its two commits are still in the table until the next run removes
them, and are not the video's current result).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable

from vidbatch.config import StorageConfig
from vidbatch.delta_files import plain_table
from vidbatch.errors import JobError
from vidbatch.state import open_table

Level = Literal["video", "clip"]
LEVELS: tuple[str, ...] = ("video", "clip")
UNTRAINED_MARK = "UNTRAINED"  # in the model_id of a `weights: none` run
_OWN = ("video_id", "uri", "status", "model_id", "sampling_id", "run_id")  # the embedding is read for the kept rows only


@dataclass(frozen=True)
class Examples:
    """One row per example (a video, or a clip of one): its video, label and embedding."""

    level: Level
    video_ids: list[str]
    labels: list[str]
    features: np.ndarray  # (rows, dim) float32
    model_id: str
    sampling_id: str
    # What was left out, and why ("not ok": 3, "no label": 5): reported, never silent.
    left_out: dict[str, int] = field(default_factory=dict)
    # Each video's file (its uri as the videos table holds it): videos under two ids that are one
    # file must stay on one side of a split, or the test set holds what was trained on.
    file_of: dict[str, str] = field(default_factory=dict)
    # The table versions read (clips: at --level clip only): a head file says which snapshot it
    # learned from, as a tags file does.
    videos_version: int | None = None
    clips_version: int | None = None

    @property
    def untrained_backbone(self) -> bool:
        return UNTRAINED_MARK in self.model_id


def read_examples(output: str, storage: StorageConfig, *, label_column: str, level: Level) -> Examples:
    _validate_level(level)
    snapshot, videos = _videos(output, storage, label_column)
    left_out: Counter[str] = Counter()
    not_ok = pc.not_equal(videos.column("status"), "ok")
    left_out["videos not ok (no embedding)"] = pc.sum(not_ok).as_py() or 0
    videos = videos.filter(pc.invert(not_ok))
    unlabelled = pc.is_null(videos.column(label_column))
    left_out[f"ok videos with no {label_column}"] = pc.sum(unlabelled).as_py() or 0
    videos = videos.filter(pc.invert(unlabelled))
    if videos.num_rows == 0:
        raise JobError(f"output {output!r} has no ok videos with a {label_column!r}: nothing to train on ({_said(left_out)})")
    model_id, sampling_id = _one_model(output, videos)
    label_of = dict(zip(videos.column("video_id").to_pylist(), map(str, videos.column(label_column).to_pylist()), strict=True))
    clips_version = None
    if level == "video":
        embeddings = _embeddings_of(snapshot, videos.column("video_id"))
        video_ids = videos.column("video_id").to_pylist()
    else:
        clips, clips_version = _current_clips(output, storage, videos)
        embeddings = clips.column("embedding")
        video_ids = clips.column("video_id").to_pylist()
    features = embedding_matrix(embeddings)
    if len(features) == 0:
        raise JobError(f"output {output!r}: the labelled videos have no clips in the clips table; train at --level video")
    return Examples(
        level=level,
        video_ids=video_ids,
        labels=[label_of[video_id] for video_id in video_ids],
        features=features,
        model_id=model_id,
        sampling_id=sampling_id,
        left_out={reason: count for reason, count in left_out.items() if count},
        file_of=dict(
            zip(videos.column("video_id").to_pylist(), map(str, videos.column("uri").to_pylist()), strict=True)
        ),
        videos_version=snapshot.version(),
        clips_version=clips_version,
    )


def _videos(output: str, storage: StorageConfig, label_column: str) -> tuple[DeltaTable, pa.Table]:
    """The videos table's snapshot, and its rows without their embeddings."""
    table = open_table(output, "videos", storage)
    if table is None:
        raise JobError(f"{output!r} holds no videos table (no run has committed there); check the output")
    names = [column.name for column in table.schema().fields]
    if label_column in _all_own_columns():
        raise JobError(
            f"--label-column {label_column!r} is one of vidbatch's own columns of the videos table, not a manifest "
            "column; name the manifest column that holds the labels"
        )
    if label_column not in names:
        carried = [name for name in names if name not in _all_own_columns()]
        offer = (
            f"its manifest columns are: {', '.join(carried)}"
            if carried
            else "its manifest had no columns besides video_id and uri"
        )
        raise JobError(
            f"--label-column {label_column!r} is not a column of the videos table of {output!r}; {offer}. "
            "Add the label to the manifest (one value per video, null where unknown) and run the job"
        )
    videos = plain_table(table.to_pyarrow_table(columns=[*_OWN, label_column]))
    kind = videos.schema.field(label_column).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_integer(kind) or pa.types.is_boolean(kind)):
        raise JobError(
            f"--label-column {label_column!r} is {kind}: a head learns one label per video, "
            "so give a column of strings, integers or booleans"
        )
    return table, videos


def _embeddings_of(table: DeltaTable, video_ids: pa.ChunkedArray) -> pa.ChunkedArray:
    """The embeddings of `video_ids` in the videos table's snapshot `table`, in that order, read a batch at
    a time and kept only for those: a head is trained on a few thousand labelled videos of a library of
    millions, whose embeddings all read at once took gigabytes (1.4 GB for 300 labelled of 180,000)."""
    wanted = video_ids.combine_chunks()
    kept = []
    for batch in table.to_pyarrow_dataset().to_batches(columns=["video_id", "embedding"], batch_size=8192):
        rows = plain_table(pa.Table.from_batches([batch]))
        kept.append(rows.filter(pc.is_in(rows.column("video_id"), value_set=wanted)))
    found = pa.concat_tables(kept, promote_options="permissive") if kept else pa.table({"video_id": pa.array([], pa.string())})
    order = pc.index_in(wanted, value_set=found.column("video_id").combine_chunks())
    assert not order.null_count  # the same snapshot the ids were read from
    return found.column("embedding").take(order)


def _one_model(output: str, videos: pa.Table) -> tuple[str, str]:
    """Embeddings of two models (or two samplings) are not comparable: one head cannot learn both."""
    pairs = Counter(zip(videos.column("model_id").to_pylist(), videos.column("sampling_id").to_pylist(), strict=True))
    if len(pairs) > 1:
        listed = "; ".join(
            f"{count} videos of model {model} sampling {sampling}" for (model, sampling), count in pairs.most_common()
        )
        raise JobError(
            f"output {output!r} mixes embeddings of different models or samplings ({listed}); "
            "a head learns one embedding space: finish the rerun that brings every video to the same model"
        )
    (model_id, sampling_id), _ = pairs.most_common(1)[0]
    return str(model_id), str(sampling_id)


def _current_clips(output: str, storage: StorageConfig, videos: pa.Table) -> tuple[pa.Table, int]:
    """The clips of the runs `videos` names, and the clips table's version they were read from."""
    table = open_table(output, "clips", storage)
    if table is None:
        raise JobError(f"{output!r} holds no clips table; train at --level video")
    wanted = pa.table({"video_id": videos.column("video_id"), "run_id": videos.column("run_id")})
    kept = []
    for batch in table.to_pyarrow_dataset().to_batches(columns=["video_id", "clip_index", "run_id", "embedding"]):
        # Filtered here, not in the scan: delta-rs writes strings as string_view, which the scan's
        # filter cannot compare. Only the clips of the run the videos row names (module docstring).
        clips = plain_table(pa.Table.from_batches([batch]))
        kept.append(clips.filter(of_current_runs(clips, wanted)))
    if not kept:
        empty = {"video_id": pa.string(), "clip_index": pa.int32(), "run_id": pa.string(), "embedding": pa.list_(pa.float32())}
        return pa.table({name: pa.array([], kind) for name, kind in empty.items()}), table.version()
    current = pa.concat_tables(kept, promote_options="permissive")
    return current.sort_by([("video_id", "ascending"), ("clip_index", "ascending")]), table.version()


def of_current_runs(clips: pa.Table, current: pa.Table) -> pa.ChunkedArray:
    """Which clips belong to the run their video's current row names (`current`: video_id, run_id).
    By a joined key: Arrow's join cannot carry the list-typed embeddings along."""
    return pc.is_in(_run_key(clips), value_set=_run_key(current).combine_chunks())


def _run_key(table: pa.Table) -> pa.ChunkedArray:
    return pc.binary_join_element_wise(table.column("video_id"), pc.fill_null(table.column("run_id"), ""), "\0")


def embedding_matrix(embeddings: pa.ChunkedArray) -> np.ndarray:
    lists = embeddings.combine_chunks()
    if lists.null_count:
        raise JobError(
            "ok rows without an embedding: the run had model.task classify, which writes labels only; "
            "a head needs embeddings: run the job with task embed or both"
        )
    if len(lists) == 0:
        return np.zeros((0, 0), dtype=np.float32)
    lengths = pc.list_value_length(lists).to_numpy(zero_copy_only=False)
    if len(set(lengths.tolist())) != 1:
        raise JobError(f"embeddings of different lengths ({sorted(set(lengths.tolist()))}) in one table: it cannot be")
    values = pc.list_flatten(lists).to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return values.reshape(len(lists), int(lengths[0]))


def _all_own_columns() -> set[str]:
    from vidbatch.schema import VIDEOS

    return set(VIDEOS.names)


def _said(left_out: Counter[str]) -> str:
    return ", ".join(f"{reason}: {count}" for reason, count in left_out.items() if count) or "the table is empty"


def _validate_level(level: str) -> None:
    if level not in LEVELS:
        raise ValueError(f"level={level!r}: one of {', '.join(LEVELS)}")
