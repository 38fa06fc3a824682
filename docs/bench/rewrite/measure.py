"""What a nightly commit rewrites of a clips table, by data-file target size and row order.

A synthetic first night of N videos (1.75 clips a video, resnet50's 2048-float embedding of random
values, which does not compress, like real ones) written by vidbatch's own streamed writer
(delta_files.create) with each target size, in two orders: `sorted` (rows by video_id) and `arrival`
(rows in a random order of video_id: a manifest whose order is not the ids', or decoders finishing out
of order). Each night is vidbatch's own prepared commit (delta_files.prepare) dropping the clips of the
changed videos, timed; its files are then deleted uncommitted, so every night starts from the same table.
Nights: `random K` (K videos anywhere), `clustered K` (K consecutive video_ids: recent uploads edited).
Then the whole table is read (deltalake -> pyarrow dataset, every column), timed.

    python docs/bench/rewrite/measure.py ROOT N [TARGET_MB ...]     # prints one JSON line per measurement
"""
import json, os, shutil, sys, time
import numpy as np, pyarrow as pa, pyarrow.compute as pc, pyarrow.parquet as pq
from deltalake import CommitProperties, DeltaTable
from vidbatch.config import StorageConfig
from vidbatch.delta_files import create, prepare
from vidbatch.parquet_stream import open_parquet

root, n = sys.argv[1], int(sys.argv[2]); targets = [int(t) for t in sys.argv[3:]] or [32, 64, 128, 256]
os.makedirs(root, exist_ok=True)
rng = np.random.default_rng(0)
ids = [f"v{i:07d}" for i in range(n)]


def source(order: str) -> str:
    path = f"{root}/rows_{order}.parquet"
    if os.path.exists(path):
        return path
    videos = ids if order == "sorted" else [ids[i] for i in rng.permutation(n)]
    schema = pa.schema([("video_id", pa.string()), ("clip_index", pa.int32()), ("embedding", pa.list_(pa.float32())), ("run_id", pa.string())])
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, n, 4096):
            part = videos[start:start + 4096]
            vid = [v for v in part for c in range(1 if int(v[1:]) % 4 == 0 else 2)]
            idx = [c for v in part for c in range(1 if int(v[1:]) % 4 == 0 else 2)]
            noise = rng.standard_normal(len(vid) * 2048).astype(np.float32)
            emb = pa.ListArray.from_arrays(pa.array(np.arange(0, (len(vid) + 1) * 2048, 2048, dtype=np.int32)), pa.array(noise))
            writer.write_table(pa.table({"video_id": vid, "clip_index": pa.array(idx, pa.int32()), "embedding": emb, "run_id": ["r1"] * len(vid)}, schema=schema))
    return path


def night(uri: str, changed: list[str]) -> dict:
    table = DeltaTable(uri)
    wanted = pa.array(sorted(changed))
    started = time.monotonic()
    prepared = prepare(table, uri, StorageConfig(), drop=lambda rows: pc.is_in(rows.column("video_id"), value_set=wanted), candidates=set(changed))
    took = time.monotonic() - started
    for action in prepared.actions:  # uncommitted: the next night starts from the same table
        if hasattr(action, "modification_time"):
            os.remove(f"{uri}/{action.path}")
    r = prepared.rewritten
    return {"rewritten_files": r.files, "rewritten_bytes": r.bytes, "rows_kept": r.rows_kept, "s": round(took, 1)}


def read_all(uri: str) -> dict:
    started = time.monotonic()
    rows = sum(batch.num_rows for batch in DeltaTable(uri).to_pyarrow_dataset().to_batches())
    return {"rows": rows, "s": round(time.monotonic() - started, 1)}


nights = {f"random {k}": lambda k=k: [ids[i] for i in rng.choice(n, k, replace=False)] for k in (10, 100, 1000)}
nights["clustered 100"] = lambda: ids[n // 2: n // 2 + 100]
for order in ("sorted", "arrival"):
    rows = source(order)
    for mb in targets:
        uri = f"{root}/clips_{order}_{mb}"
        shutil.rmtree(uri, ignore_errors=True)
        t0 = time.monotonic()
        create(uri, StorageConfig(), open_parquet(rows), CommitProperties(), target_file_bytes=mb * 2**20)
        files = pa.table(DeltaTable(uri).get_add_actions(flatten=True))
        base = {"order": order, "target_mb": mb, "files": files.num_rows, "table_bytes": pc.sum(files["size_bytes"]).as_py()}
        print(json.dumps({**base, "what": "create", "s": round(time.monotonic() - t0, 1)}), flush=True)
        print(json.dumps({**base, "what": "read", **read_all(uri)}), flush=True)
        for name, pick in nights.items():
            if order == "arrival" and name.startswith("random"):
                continue  # a random night does not care how rows are ordered
            print(json.dumps({**base, "what": name, **night(uri, pick())}), flush=True)
        shutil.rmtree(uri)
