"""The first night of an N-video library without decoding N videos.

N hard links (distinct paths, one inode per source video, so the same size + mtime fingerprint as
the row the real run wrote for that source), an N-row manifest, and the output's videos and clips
tables replicated from the real 4-video run: every column as vidbatch wrote it, only video_id and
uri differ. Written with deltalake (one overwrite commit per table, in vidbatch's own schema).
"""
import os, shutil, sys, time
from pathlib import Path
import pyarrow as pa, pyarrow.compute as pc, pyarrow.parquet as pq
from deltalake import CommitProperties, DeltaTable, write_deltalake

base = Path(os.environ.get("SCALE_ROOT", "/tmp/vidbatch-scale")); n = int(sys.argv[1]); root = base / f"n{n}"
t0 = time.time()
if root.exists():
    shutil.rmtree(root)
(root / "files").mkdir(parents=True)
shutil.copytree(base / "out", root / "out")
videos = DeltaTable(str(base / "out/videos")).to_pyarrow_table()
clips = DeltaTable(str(base / "out/clips")).to_pyarrow_table()
run_id = videos.column("run_id")[0].as_py()
srcs = sorted(videos.column("video_id").to_pylist())  # s0..s3
k = len(srcs)
ids = [f"v{i:07d}" for i in range(n)]
uris = [str(root / "files" / f"d{i // 1000:04d}" / f"v{i:07d}.mp4") for i in range(n)]
for d in range((n + 999) // 1000):
    (root / "files" / f"d{d:04d}").mkdir()
# ext4 allows 65,000 links per inode: link to 32 copies of each source (copy2 keeps the mtime,
# so every copy has the fingerprint of the source's row)
copies = base / "copies"
copies.mkdir(exist_ok=True)
for s in srcs:
    for c in range(32):
        if not (copies / f"{s}_{c}.mp4").exists():
            shutil.copy2(base / "src" / f"{s}.mp4", copies / f"{s}_{c}.mp4")
for i, uri in enumerate(uris):
    os.link(copies / f"{srcs[i % k]}_{(i // k) % 32}.mp4", uri)
print(f"links {time.time() - t0:.1f}s", flush=True)
pq.write_table(pa.table({"video_id": ids, "uri": uris}), root / "manifest.parquet")

vpos = {v: j for j, v in enumerate(videos.column("video_id").to_pylist())}
cv = clips.column("video_id").to_pylist()
rows_of = {s: [j for j, v in enumerate(cv) if v == s] for s in srcs}
meta = CommitProperties(custom_metadata={"vidbatch.run_id": run_id, "note": "scale bench: replicated first night"})
step = 65_536  # one commit per 64k videos, as nights of commits would leave several files
for first in range(0, n, step):
    part = range(first, min(n, first + step))
    v = videos.take(pa.array([vpos[srcs[i % k]] for i in part]))
    v = v.set_column(0, "video_id", pa.array(ids[first:part.stop])).set_column(1, "uri", pa.array(uris[first:part.stop]))
    take, cids = [], []
    for i in part:
        for j in rows_of[srcs[i % k]]:
            take.append(j); cids.append(ids[i])
    c = clips.take(pa.array(take)).set_column(0, "video_id", pa.array(cids))
    mode = "overwrite" if first == 0 else "append"
    write_deltalake(str(root / "out/clips"), c, mode=mode, commit_properties=meta)
    write_deltalake(str(root / "out/videos"), v, mode=mode, commit_properties=meta)
print(f"done {time.time() - t0:.1f}s", flush=True)
