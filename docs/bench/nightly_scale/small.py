"""Make 4 short real videos, seeded weights, a 4-row manifest and job: the first night, run for real."""
import sys
from pathlib import Path
sys.path.insert(0, "tests")  # run from the repository
import media, pyarrow as pa, pyarrow.parquet as pq, yaml, torch, torchvision

root = Path(sys.argv[1]); root.mkdir(parents=True, exist_ok=True)
src = root / "src"; src.mkdir(exist_ok=True)
for i in range(4):
    media.write_video(src / f"s{i}.mp4", num_frames=20 + i, fps=10)
torch.manual_seed(1234)
torch.save(torchvision.models.resnet18(weights=None).state_dict(), root / "w.pt")
ids = [f"s{i}" for i in range(4)]
pq.write_table(pa.table({"video_id": ids, "uri": [str(src / f"s{i}.mp4") for i in range(4)]}), root / "small.parquet")
job = {
    "name": "scale", "manifest": str(root / "small.parquet"), "output": str(root / "out"),
    "sampling": {"mode": "fps", "fps": 1.0, "clip_len_s": 2.0},
    "model": {"arch": "resnet18", "weights": str(root / "w.pt"), "precision": "fp32", "top_k": 2},
    "resources": {"batch_clips": 4},
}
(root / "small.yaml").write_text(yaml.safe_dump(job))
job["manifest"] = str(root / "manifest.parquet")
(root / "job.yaml").write_text(yaml.safe_dump(job))
