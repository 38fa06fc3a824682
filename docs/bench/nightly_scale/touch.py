"""Make every 1000th video of the library a changed file: the link replaced by a copy of new mtime."""
import os, shutil, sys, time
from pathlib import Path
root = Path(sys.argv[1]); n = int(sys.argv[2]); stamp = time.time()
for i in range(0, n, 1000):
    path = root / "files" / f"d{i // 1000:04d}" / f"v{i:07d}.mp4"
    data = path.read_bytes(); path.unlink(); path.write_bytes(data)
    os.utime(path, (stamp, stamp))
print(f"changed {len(range(0, n, 1000))} files")
