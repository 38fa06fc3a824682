"""Reading a whole clips table written with each target size: deltalake -> pyarrow dataset, every column,
rounds alternated between the sizes (a loaded host's noise falls on all of them alike).

    python docs/bench/rewrite/read.py ROOT ROUNDS TARGET_MB ...   # ROOT holds measure.py's rows_sorted.parquet
"""
import json, os, sys, time
from deltalake import CommitProperties, DeltaTable
from vidbatch.config import StorageConfig
from vidbatch.delta_files import create
from vidbatch.parquet_stream import open_parquet

root, rounds, targets = sys.argv[1], int(sys.argv[2]), [int(t) for t in sys.argv[3:]]
for mb in targets:
    if not os.path.isdir(f"{root}/read_{mb}"):
        create(f"{root}/read_{mb}", StorageConfig(), open_parquet(f"{root}/rows_sorted.parquet"), CommitProperties(), target_file_bytes=mb * 2**20)
for round_ in range(rounds):
    for mb in targets:
        started = time.monotonic()
        table = DeltaTable(f"{root}/read_{mb}")
        rows = sum(batch.num_rows for batch in table.to_pyarrow_dataset().to_batches())
        whole = time.monotonic() - started
        started = time.monotonic()
        table.to_pyarrow_table(columns=["video_id", "run_id"])
        keys = time.monotonic() - started
        print(json.dumps({"round": round_, "target_mb": mb, "files": len(table.file_uris()), "rows": rows,
                          "all_columns_s": round(whole, 2), "key_columns_s": round(keys, 3), "load": os.getloadavg()[0]}), flush=True)
