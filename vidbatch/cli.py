"""`vidbatch` command line. Exit 0 only when the run committed; 2 when the job was refused."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from vidbatch.errors import JobError


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except JobError as exc:
        print(f"vidbatch: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vidbatch: interrupted; nothing was committed by this run", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vidbatch", description="Turn a video library into embeddings and labels.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a job file here (local Ray, or --address / RAY_ADDRESS)")
    run.add_argument("job", help="job file (YAML)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a job key, e.g. model.arch=resnet18")
    run.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")
    run.set_defaults(func=_run)

    check = sub.add_parser("check", help="validate a job file and print the resolved settings")
    check.add_argument("job")
    check.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    check.set_defaults(func=_check)

    demo = sub.add_parser("demo-library", help="generate a small sample library and its manifest (no downloads)")
    demo.add_argument("directory", help="where to write the videos and manifest.parquet")
    demo.set_defaults(func=_demo_library)
    return parser


def _run(args: argparse.Namespace) -> int:
    from vidbatch.config import load_job
    from vidbatch.pipeline import run_job

    config = load_job(args.job, args.overrides)
    result = run_job(config, address=args.address)
    print(_summary_text(result.summary, result.summary_uri))
    return 0


def _check(args: argparse.Namespace) -> int:
    from vidbatch.config import load_job

    config = load_job(args.job, args.overrides)
    print(json.dumps(config.model_dump(mode="json"), indent=2))
    return 0


def _demo_library(args: argparse.Namespace) -> int:
    from vidbatch.demo import write_demo_library

    manifest = write_demo_library(args.directory)
    print(f"wrote {manifest}")
    return 0


def _summary_text(summary: dict, uri: str) -> str:
    statuses = ", ".join(f"{k}: {v}" for k, v in summary["statuses"].items())
    lines = [
        f"run {summary['run_id']} committed ({summary['model_id']})",
        f"  videos {summary['videos']} ({statuses}); duplicates skipped {summary['duplicate_ids']}",
        f"  clips {summary['clips']}, frames {summary['frames']}, video hours {summary['video_hours']:.4f}",
        f"  wall {summary['wall_time_s']:.1f}s, {summary['throughput']['videos_per_s']} videos/s, "
        f"{summary['throughput']['frames_per_s']} frames/s",
        f"  summary: {uri}",
    ]
    if summary.get("untrained_weights"):
        lines.insert(1, "  NOTE: untrained weights (seeded random init): embeddings and labels are not meaningful")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
