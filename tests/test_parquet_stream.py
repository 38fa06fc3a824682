"""Parquet streamed by vidbatch (vidbatch.parquet_stream): real files written and read with pyarrow."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vidbatch.parquet_stream import BATCH_BYTES, batch_rows, open_parquet, open_writer, read_batches, string_columns


def _embeddings(rows: int, width: int) -> pa.Array:
    values = pa.array(np.random.default_rng(0).standard_normal(rows * width).astype(np.float32))
    return pa.ListArray.from_arrays(pa.array(np.arange(0, (rows + 1) * width, width, dtype=np.int32)), values)


def test_a_streamed_parquet_file_is_not_held_whole_while_its_batches_are_read(tmp_path):
    """pyarrow's default pre-buffering kept every column chunk read for as long as the reader lived: a
    spill of a first run's clips was held whole at the commit."""
    rows = 20_000
    path = tmp_path / "clips.parquet"
    clips = pa.table({"video_id": [f"v{i}" for i in range(rows)], "embedding": _embeddings(rows, 512)})
    pq.write_table(clips, path, row_group_size=1024)
    file_bytes = path.stat().st_size
    assert file_bytes > 30e6

    baseline = pa.total_allocated_bytes()
    held, seen = 0, 0
    parquet = open_parquet(path)
    for batch in parquet.iter_batches(batch_size=1024):
        seen += batch.num_rows
        held = max(held, pa.total_allocated_bytes() - baseline)
    assert seen == rows
    assert held < file_bytes / 4, f"{held / 1e6:.0f} MB held reading a {file_bytes / 1e6:.0f} MB file"


def test_batches_are_sized_in_bytes_so_wide_rows_come_few_to_a_batch_and_narrow_ones_many(tmp_path):
    """A commit writes each batch as a row group and holds a few batches meanwhile: 1,024 rows of
    resnet50 embeddings held tens of MB, while rows without embeddings in batches that small would
    give a table's files thousands of tiny row groups."""
    rows = 3000
    pq.write_table(pa.table({"embedding": _embeddings(rows, 2048)}), tmp_path / "wide.parquet")
    pq.write_table(pa.table({"video_id": [f"v{i}" for i in range(rows)]}), tmp_path / "narrow.parquet")
    pq.write_table(pa.table({"video_id": pa.array([], pa.string())}), tmp_path / "empty.parquet")

    wide_file = open_parquet(tmp_path / "wide.parquet")
    per_batch = batch_rows(wide_file.metadata)
    assert 100 <= per_batch <= 140  # ~8 KB a row
    sizes = [batch.num_rows for batch in read_batches(wide_file)]
    assert sum(sizes) == rows and max(sizes) == per_batch
    assert max(batch.nbytes for batch in read_batches(wide_file)) < 1.2 * BATCH_BYTES
    assert batch_rows(open_parquet(tmp_path / "narrow.parquet").metadata) >= rows  # one batch
    assert batch_rows(open_parquet(tmp_path / "empty.parquet").metadata) > 0


def test_only_string_columns_are_dictionary_encoded_at_any_depth(tmp_path):
    """A dictionary for embeddings (distinct floats) is filled, dropped and held meanwhile: twice the
    memory and time of writing them plain."""
    schema = pa.schema(
        [
            ("video_id", pa.string()),
            ("embedding", pa.list_(pa.float32())),
            ("labels", pa.list_(pa.struct([("label", pa.string()), ("score", pa.float32())]))),
            ("tags", pa.map_(pa.string(), pa.int64())),
            ("n", pa.int32()),
        ]
    )
    assert string_columns(schema) == ["video_id", "labels.list.element.label", "tags.key_value.key"]
    rows = pa.table(
        {
            "video_id": ["a"] * 50,
            "embedding": _embeddings(50, 64),
            "labels": [[{"label": "cat", "score": 0.5}]] * 50,
            "tags": [[("k", 1)]] * 50,
            "n": pa.array(range(50), pa.int32()),
        },
        schema=schema,
    )
    with open_writer(tmp_path / "t.parquet", schema) as writer:
        writer.write_table(rows)
    group = pq.ParquetFile(tmp_path / "t.parquet").metadata.row_group(0)
    columns = [group.column(i) for i in range(group.num_columns)]
    dictionary = {column.path_in_schema: any("DICTIONARY" in e for e in column.encodings) for column in columns}
    assert dictionary == {
        "video_id": True,
        "embedding.list.element": False,
        "labels.list.element.label": True,
        "labels.list.element.score": False,
        "tags.key_value.key": True,
        "tags.key_value.value": False,
        "n": False,
    }
    assert pq.read_table(tmp_path / "t.parquet").equals(rows)
