"""`vidbatch tag`: apply a head from train-head to an output's current snapshot.

Streams the table (videos or clips, as the head was trained) in batches, so a library of
millions of videos is tagged in bounded memory, and writes one Parquet row per ok video (or
current clip) of the head's model and sampling: video_id[, clip_index], run_id, tag, score. Rows it
cannot tag are counted and named in the report, never dropped without a word.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from vidbatch.config import StorageConfig
from vidbatch.delta_files import plain_table
from vidbatch.errors import JobError
from vidbatch.head import LinearHead
from vidbatch.head_data import embedding_matrix, of_current_runs
from vidbatch.state import open_table
from vidbatch.storage import replaced_file

BATCH_ROWS = 4096


@dataclass(frozen=True)
class TagResult:
    rows: int
    tags: dict[str, int]  # how many rows got each tag
    left_out: dict[str, int]


def tag_output(output: str, storage: StorageConfig, head_file: dict[str, Any], destination: str) -> TagResult:
    head = LinearHead.from_dict(head_file["head"])
    level = head_file["level"]
    model_id, sampling_id = head_file["model_id"], head_file["sampling_id"]
    videos_table = open_table(output, "videos", storage)
    if videos_table is None:
        raise JobError(f"{output!r} holds no videos table (no run has committed there); check the output")
    videos = plain_table(videos_table.to_pyarrow_table(columns=["video_id", "status", "model_id", "sampling_id", "run_id"]))
    taggable, left_out = _taggable(videos, model_id, sampling_id)
    current = videos.filter(taggable)
    if current.num_rows == 0:
        raise JobError(
            f"output {output!r} has no ok videos of the head's model {model_id} and sampling {sampling_id} "
            f"({', '.join(f'{k}: {v}' for k, v in left_out.items()) or 'no videos'}); "
            "a head applies only to the embeddings it was trained on: train one on this output"
        )
    # run_id: the row each tag was made from, the key it joins on ((video_id, run_id), as clips join
    # videos); the file's metadata says which model, sampling, head and table version it is of, so a
    # tags file kept after the library changed can be told stale.
    provenance = {
        "vidbatch.model_id": model_id,
        "vidbatch.sampling_id": sampling_id,
        "vidbatch.label_column": str(head_file.get("label_column")),
        "vidbatch.head_trained_at": str(head_file.get("trained_at")),
        "vidbatch.videos_version": str(videos_table.version()),
    }
    if level == "video":
        batches = _video_batches(videos_table, current)
        fields = [("video_id", pa.string()), ("run_id", pa.string()), ("tag", pa.string()), ("score", pa.float32())]
    else:
        clips_table = open_table(output, "clips", storage)
        if clips_table is None:
            raise JobError(f"{output!r} holds no clips table, and the head was trained on clips")
        batches = _clip_batches(clips_table, current)
        fields = [
            ("video_id", pa.string()), ("clip_index", pa.int32()), ("run_id", pa.string()),
            ("tag", pa.string()), ("score", pa.float32()),
        ]  # fmt: skip
        provenance["vidbatch.clips_version"] = str(clips_table.version())
    schema = pa.schema(fields, metadata=provenance)
    counts: Counter[str] = Counter()
    rows = 0
    with replaced_file(destination, storage) as handle, pq.ParquetWriter(handle, schema) as writer:
        for batch in batches:
            if batch.num_rows == 0:
                continue
            tags, scores = head.predict(embedding_matrix(batch.column("embedding")))
            counts.update(tags)
            rows += batch.num_rows
            keys = {name: batch.column(name) for name in schema.names if name in batch.column_names}
            writer.write_table(
                pa.table({**keys, "tag": pa.array(tags, pa.string()), "score": pa.array(scores, pa.float32())}, schema=schema)
            )
    return TagResult(rows=rows, tags=dict(counts.most_common()), left_out=left_out)


def _taggable(videos: pa.Table, model_id: str, sampling_id: str) -> tuple[pa.Array, dict[str, int]]:
    """Which videos rows a head of this model and sampling can tag, and how many of the others there are, by reason."""
    ok = pc.equal(videos.column("status"), "ok")
    same = pc.fill_null(
        pc.and_(pc.equal(videos.column("model_id"), model_id), pc.equal(videos.column("sampling_id"), sampling_id)), False
    )
    counts = {
        "videos not ok (no embedding)": pc.sum(pc.invert(ok)).as_py() or 0,
        "ok videos of another model or sampling": pc.sum(pc.and_(ok, pc.invert(same))).as_py() or 0,
    }
    return pc.and_(ok, same), {reason: count for reason, count in counts.items() if count}


# Batches are filtered here, not in the scan: delta-rs writes strings as string_view, which the
# scan's filter cannot compare with a list of ids.


def _video_batches(table: Any, current: pa.Table) -> Iterator[pa.Table]:
    wanted = current.column("video_id").combine_chunks()
    for batch in table.to_pyarrow_dataset().to_batches(columns=["video_id", "run_id", "embedding"], batch_size=BATCH_ROWS):
        rows = plain_table(pa.Table.from_batches([batch]))
        yield rows.filter(pc.is_in(rows.column("video_id"), value_set=wanted))


def _clip_batches(table: Any, current: pa.Table) -> Iterator[pa.Table]:
    keys = current.select(["video_id", "run_id"])
    columns = ["video_id", "clip_index", "run_id", "embedding"]
    for batch in table.to_pyarrow_dataset().to_batches(columns=columns, batch_size=BATCH_ROWS):
        clips = plain_table(pa.Table.from_batches([batch]))
        # Only the clips of the run each videos row names (a dead run's clips are not current).
        yield clips.filter(of_current_runs(clips, keys))
