"""`vidbatch` command line. Exit 0 only when the run finished (committed, or had nothing to change); 2 when refused;
130/143 when Ctrl-C/SIGTERM stopped it (what was done committed, or nothing if no video had finished)."""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from vidbatch.driver_env import set_driver_allocator, set_driver_environment
from vidbatch.errors import JobError, Stopped

if TYPE_CHECKING:
    from vidbatch.config import StorageConfig


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # named by the command's own usage, not the top level's list of commands
        args.command_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        return int(args.func(args))
    except JobError as exc:
        # The message names the job's manifest, weights or output as given: a presigned or
        # basic-auth URL there must not reach the log (DESIGN guarantee 5).
        print(f"vidbatch: {_without_credentials(str(exc))}", file=sys.stderr)
        return 2
    except Stopped as exc:
        print(f"vidbatch: {_without_credentials(str(exc))}; nothing was committed by this run", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("vidbatch: interrupted; nothing was committed by this run", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of our output went away (`vidbatch history --json | head`): nothing more to say,
        # and the exit flush must not fail on the closed pipe either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


def _without_credentials(message: str) -> str:
    from vidbatch.uri_policy import redact_uris_in  # only when there is a message to print

    return redact_uris_in(message)


def entry() -> None:
    """The `vidbatch` console script: main(), then an exit that Ray's teardown cannot turn into a crash.

    After a run has committed, its exit code is the result the scheduler sees. Destroying a
    connected Ray client during interpreter teardown can crash in native code after the
    cluster lost a node (a SIGSEGV after the commit made a committed nightly run look
    failed), so the process flushes its output, stops a Ray it started itself, and ends
    without that teardown, as Ray's own worker processes do.
    """
    faulthandler.enable()  # a native crash prints every thread's Python stack
    set_driver_environment()  # before anything imports pyarrow
    try:
        code = main()
    except SystemExit as exc:  # argparse: --help (0) and usage errors (2)
        code = exc.code if isinstance(exc.code, int) else 0
    _leave(code)


def _leave(code: int) -> None:
    # The outcome is decided: Ctrl-C or SIGTERM during the teardown must not turn it into a
    # traceback and a different exit code (a committed run reported as failed).
    for stop in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop, signal.SIG_IGN)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing more to say
            stream.flush()
    logging.shutdown()
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized() and _started_local_ray(ray):
        from vidbatch.ray_leftovers import stop_local_ray

        try:
            # stops the local node's processes (raylet, GCS), and its workers that hang on their way out
            killed = stop_local_ray(ray)
        except Exception as exc:
            print(f"vidbatch: Ray's shutdown failed ({exc}); its processes end with this one", file=sys.stderr)
        else:
            if killed:
                print(f"vidbatch: {killed} of the local Ray's worker processes hung on their way out; killed", file=sys.stderr)
    # A client of a cluster needs no goodbye: the cluster ends the driver's job when the
    # process is gone.
    os._exit(code)


def _started_local_ray(ray: Any) -> bool:
    """True when this process runs the head node itself (a Ray API without a public name)."""
    try:
        return bool(ray._private.worker._global_node.head)
    except AttributeError:  # a client of a cluster has no node of its own
        return False


ALLOW_EMPTY_HELP = (
    "let this run empty the output: a manifest with no rows, or most of the videos that were ok now gone or denied "
    "(refused otherwise: a failed export, a missing mount or a wrong folder look the same)"
)


def run_flags(parser: argparse.ArgumentParser) -> None:
    """The flags of a run, shared by `run` and `submit` (which hands them to the run on the cluster)."""
    parser.add_argument(
        "--retry-failed", action="store_true", help="also redo videos whose last status was a permanent failure (unreadable, ...)"
    )
    parser.add_argument(
        "--redo-older-decoding",
        action="store_true",
        help="also decode again the ok and decode_error videos whose rows an older vidbatch made, before its "
        "decoding fixes (check and run count them)",
    )
    parser.add_argument("--allow-empty", action="store_true", help=ALLOW_EMPTY_HELP)


def _name_command_parsers(commands: argparse._SubParsersAction) -> None:
    """Each (sub)command's parser in its parsed arguments, so an error shows that command's usage."""
    for command_parser in commands.choices.values():
        command_parser.set_defaults(command_parser=command_parser)
        for action in command_parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                _name_command_parsers(action)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vidbatch", description="Turn a video library into embeddings and labels.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a job file here (local Ray, or --address / RAY_ADDRESS)")
    _job_arguments(run)
    run.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")
    run_flags(run)
    run.set_defaults(func=_run)

    check = sub.add_parser(
        "check",
        help="validate a job file, print the resolved settings, and check what the run needs (manifest, weights, output)",
    )
    _job_arguments(check)
    check.add_argument(
        "--settings-only",
        action="store_true",
        help="only validate the settings: do not read the manifest, resolve the weights or look at the output",
    )
    run_flags(check)  # the run's own flags: check decides every row as that run would
    check.set_defaults(func=_check)

    demo = sub.add_parser("demo-library", help="generate a small sample library and its manifest (no downloads)")
    demo.add_argument("directory", help="where to write the videos and manifest.parquet")
    demo.set_defaults(func=_demo_library)

    from vidbatch.cluster_cli import add_cluster_commands

    add_cluster_commands(sub)  # submit, status, logs, stop (Ray Jobs API)

    manifest = sub.add_parser("manifest", help="manifest tools")
    manifest_sub = manifest.add_subparsers(dest="manifest_command", required=True)
    build = manifest_sub.add_parser(
        "build", help="list a folder or prefix of videos (local or s3://...) into a manifest (Parquet)"
    )
    build.add_argument("source", metavar="SOURCE_URI", help="folder or prefix to list, e.g. s3://media/library/")
    build.add_argument("-o", "--output", required=True, metavar="MANIFEST", help="where to write the manifest (.parquet)")
    _storage_arguments(build)
    build.set_defaults(func=_manifest_build)

    weights = sub.add_parser("weights", help="model weights tools")
    weights_sub = weights.add_subparsers(dest="weights_command", required=True)
    stage = weights_sub.add_parser(
        "stage", help="copy torchvision weights (local torch cache, or downloaded) into object storage for offline clusters"
    )
    stage.add_argument("name", metavar="NAME", help="e.g. IMAGENET1K_V2, or ResNet50_Weights.IMAGENET1K_V2")
    stage.add_argument("--to", required=True, metavar="URI", help="a .pth file URI, or a prefix to put it under")
    stage.add_argument("--arch", default=None, help="resnet18 ... resnet152 (default: from NAME, else resnet50)")
    _storage_arguments(stage)
    stage.set_defaults(func=_weights_stage)
    history = sub.add_parser("history", help="list the runs of an output: its table commits, and the runs that changed nothing")
    history.add_argument("output", help="the job's output root")
    history.add_argument("--json", action="store_true", help="print JSON instead of a table")
    history.add_argument("--last", type=int, metavar="N", help="only the newest N runs (reads only theirs)")
    _storage_arguments(history)
    history.set_defaults(func=_history)

    vacuum = sub.add_parser("vacuum", help="delete data files of old table versions (safe while a run is going)")
    vacuum.add_argument("output", help="the job's output root")
    vacuum.add_argument("--retention-hours", type=int, default=168, help="keep files younger than this (default 168)")
    vacuum.add_argument("--dry-run", action="store_true", help="list the files that would be deleted, delete nothing")
    _storage_arguments(vacuum)
    vacuum.set_defaults(func=_vacuum)

    train = sub.add_parser(
        "train-head",
        help="custom tags: train a linear head on an output's embeddings and a manifest label column; "
        "prints accuracy, precision, recall and F1 on held-out videos",
    )
    train.add_argument("output", help="the job's output root (its current snapshot is read)")
    train.add_argument("--label-column", required=True, help="the manifest column (carried into the videos table) to learn")
    train.add_argument("-o", "--head", required=True, metavar="HEAD", help="where to write the head (.json; local or s3://...)")
    train.add_argument(
        "--level", choices=["video", "clip"], default="video", help="learn from video embeddings or clip embeddings"
    )
    train.add_argument("--test-fraction", type=float, default=0.2, help="share of each label's videos held out to score (0.2)")
    train.add_argument("--seed", type=int, default=0, help="which videos are held out (stable per video)")
    train.add_argument("--l2", type=float, default=None, help="weight decay (default: chosen by cross-validation)")
    train.add_argument("--json", action="store_true", help="print the head file's report as JSON instead of a table")
    _storage_arguments(train)
    train.set_defaults(func=_train_head)

    tag = sub.add_parser("tag", help="apply a head from train-head to an output's current snapshot; writes Parquet")
    tag.add_argument("output", help="the job's output root")
    tag.add_argument("--head", required=True, help="a head file written by train-head")
    tag.add_argument("-o", "--to", required=True, metavar="TAGS", help="where to write the tags (.parquet)")
    _storage_arguments(tag)
    tag.set_defaults(func=_tag)

    bench = sub.add_parser(
        "bench", help="benchmark: the pipeline vs a plain script and the stage bounds, on generated 720p videos"
    )
    _bench_arguments(bench)
    bench.set_defaults(func=_bench)

    plan = sub.add_parser("plan", help="dry run: probe a few videos, measure decode and model rates, estimate the run")
    plan.add_argument("job", help="job file (YAML)")
    plan.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    plan.add_argument("--probe", type=int, default=3, help="videos to time decoding on (default 3)")
    plan.add_argument("--metadata", type=int, default=30, help="videos to read durations from (default 30)")
    plan.add_argument("--cpus", type=int, default=None, help="estimate for a cluster with this many CPUs ...")
    plan.add_argument("--gpus", type=int, default=0, help="... and this many GPUs")
    plan.add_argument("--json", action="store_true", help="print JSON instead of text")
    plan.set_defaults(func=_plan)
    _name_command_parsers(sub)
    return parser


def _history(args: argparse.Namespace) -> int:
    from vidbatch.history import format_runs, runs

    if args.last is not None and args.last < 1:
        raise JobError(f"--last {args.last}: give how many of the newest runs to list (1 or more)")
    entries = runs(args.output, _storage_config(args), last=args.last)
    print(json.dumps(entries, indent=2) if args.json else format_runs(entries))
    return 0


# Past this many files per table, vacuum prints a count instead of every name.
VACUUM_LISTED_FILES = 50


def _vacuum(args: argparse.Namespace) -> int:
    from vidbatch.history import vacuum

    removed = vacuum(args.output, _storage_config(args), retention_hours=args.retention_hours, dry_run=args.dry_run)
    verb = "would delete" if args.dry_run else "deleted"
    for table, files in removed.items():
        print(f"{table}: {verb} {len(files)} file{'' if len(files) == 1 else 's'}")
        for line in _listed_files(table, files):
            print(line)
    return 0


def _listed_files(table: str, files: list[str]) -> list[str]:
    lines = [f"  {table}/{name}" for name in files[:VACUUM_LISTED_FILES]]
    if len(files) > VACUUM_LISTED_FILES:
        lines.append(f"  ... and {len(files) - VACUUM_LISTED_FILES} more")
    return lines


def _train_head(args: argparse.Namespace) -> int:
    from vidbatch.output_refusals import refuse_inside_tables
    from vidbatch.storage import check_destination
    from vidbatch.train_head import format_report, train_on_output, write_head

    storage = _storage_config(args)
    refuse_inside_tables(args.head, args.output, flag="-o")
    check_destination(args.head)  # before the training, not after it
    trained = train_on_output(
        args.output,
        storage,
        label_column=args.label_column,
        level=args.level,
        test_fraction=args.test_fraction,
        seed=args.seed,
        l2=args.l2,
    )
    write_head(trained, args.head, storage)
    if args.json:
        report = trained.to_dict()
        report.pop("head")  # the weights are in the file
        print(json.dumps(report, indent=2))
    else:
        print(format_report(trained, args.head))
    return 0


def _tag(args: argparse.Namespace) -> int:
    from vidbatch.head_metrics import shown_label
    from vidbatch.output_refusals import refuse_inside_tables
    from vidbatch.storage import check_destination
    from vidbatch.tag import tag_output
    from vidbatch.train_head import UNTRAINED_NOTE, read_head

    storage = _storage_config(args)
    refuse_inside_tables(args.to, args.output, flag="-o")
    check_destination(args.to)  # before the tagging, not after it
    head_file = read_head(args.head, storage)
    result = tag_output(args.output, storage, head_file, args.to)
    tags = ", ".join(f"{shown_label(tag)}: {count}" for tag, count in result.tags.items())
    noun = "videos" if head_file["level"] == "video" else "clips"
    print(f"tagged {result.rows} {noun} with {head_file['label_column']!r} ({tags}); wrote {args.to}")
    for reason, count in result.left_out.items():
        print(f"  not tagged: {reason}: {count}")
    if head_file.get("untrained_backbone"):
        print("  " + UNTRAINED_NOTE)
    return 0


def _job_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job", help="job file (YAML)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a job key, e.g. model.arch=resnet18",
    )


def _storage_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--endpoint-url", default=None, help="S3-compatible endpoint (default: AWS_ENDPOINT_URL)")
    parser.add_argument("--region", default=None, help="object-store region")


def _storage_config(args: argparse.Namespace) -> StorageConfig:
    from vidbatch.config import parse_storage

    return parse_storage({"endpoint_url": args.endpoint_url, "region": args.region}, source="--endpoint-url/--region")


def _manifest_build(args: argparse.Namespace) -> int:
    from vidbatch.manifest_build import build_manifest

    result = build_manifest(args.source, args.output, _storage_config(args))
    print(
        f"wrote {result.manifest_uri}: {result.videos} videos ({result.total_bytes / 1e9:.3f} GB), "
        f"{result.skipped} other objects skipped"
    )
    return 0


def _weights_stage(args: argparse.Namespace) -> int:
    from vidbatch.model_weights import stage_torchvision_weights

    arch = args.arch
    if arch is None:
        prefix = args.name.split("_Weights.", 1)[0] if "_Weights." in args.name else ""
        arch = prefix.lower() if prefix else "resnet50"
    staged = stage_torchvision_weights(arch, args.name, args.to, _storage_config(args))
    print(staged.uri)
    print(f"sha256 {staged.sha256}  ({staged.size} bytes, copied from {staged.source})")
    print(f"use it with: --set model.arch={arch} --set model.weights={staged.uri}")
    return 0


def _run(args: argparse.Namespace) -> int:
    # A run's work must not depend on who reads its output: `vidbatch run job.yaml | head`, or a log
    # collector that dies, ended a night at its next progress line (BrokenPipeError, exit 141,
    # nothing committed). Its lines go nowhere from then on; the summary and the tables say the rest.
    sys.stdout, sys.stderr = _ReaderMayLeave(sys.stdout), _ReaderMayLeave(sys.stderr)
    from vidbatch.config import load_job
    from vidbatch.pipeline import run_job
    from vidbatch.stop_signals import interrupts_held, stop_on_sigterm
    from vidbatch.summary_text import summary_text
    from vidbatch.uri_policy import redact_uris_in

    stop_on_sigterm()  # before Ray starts too (the manifest, the weights)
    set_driver_allocator()  # `run` only: the commands that run torch here (plan, train-head) keep glibc's own
    config = load_job(args.job, args.overrides)
    result = run_job(
        config,
        address=args.address,
        retry_failed=args.retry_failed,
        redo_older_decoding=args.redo_older_decoding,
        allow_empty=args.allow_empty,
    )
    # The run has committed: a stop now (its summary printed to a slow reader) must not end it with
    # "nothing was committed by this run".
    with interrupts_held(lambda line: print(f"vidbatch: {line}", file=sys.stderr), during="printing the summary"):
        print(redact_uris_in(summary_text(result.summary, result.summary_uri)))
    # A run a stop signal ended early committed what was done; its exit still says it was stopped
    # (a scheduler's retry then does the rest), as a stop that committed nothing does.
    return _STOPPED_EXIT.get(result.summary.get("stopped_early") or "", 0)


class _ReaderMayLeave:
    """A text stream whose writes, once its reader has gone away (a closed pipe), go to /dev/null."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return int(self._stream.write(text))
        except BrokenPipeError:
            self._to_nowhere()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._to_nowhere()

    def _to_nowhere(self) -> None:
        # The descriptor itself, so that what Ray and native code write there goes nowhere too, and the
        # text still buffered is flushed there.
        with contextlib.suppress(OSError, ValueError):
            nowhere = os.open(os.devnull, os.O_WRONLY)
            os.dup2(nowhere, self._stream.fileno())
            os.close(nowhere)
        with contextlib.suppress(OSError, ValueError):
            self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _check(args: argparse.Namespace) -> int:
    from vidbatch.config import load_job
    from vidbatch.uri_policy import redact_uris_in, redact_uris_in_record

    config = load_job(args.job, args.overrides)
    print(json.dumps(redact_uris_in_record(config.model_dump(mode="json")), indent=2))
    if not args.settings_only:
        from vidbatch.preflight import preflight

        # What the run would refuse the job for, found now (JobError -> exit 2), and what it would see.
        for line in preflight(
            config, allow_empty=args.allow_empty, retry_failed=args.retry_failed, redo_older_decoding=args.redo_older_decoding
        ).lines():
            print(redact_uris_in(line), file=sys.stderr)
    return 0


def _demo_library(args: argparse.Namespace) -> int:
    from vidbatch.demo import write_demo_library

    manifest = write_demo_library(args.directory)
    print(f"wrote {manifest}")
    return 0


def _bench_arguments(parser: argparse.ArgumentParser) -> None:
    from vidbatch.bench import add_arguments

    add_arguments(parser)


def _bench(args: argparse.Namespace) -> int:
    from vidbatch.bench import main_from_args

    return main_from_args(args)


def _plan(args: argparse.Namespace) -> int:
    from vidbatch.config import load_job
    from vidbatch.plan_probe import check_args, format_report, make_plan

    check_args(args.probe, args.metadata, args.cpus, args.gpus)
    config = load_job(args.job, args.overrides)
    say = (lambda line: None) if args.json else (lambda line: print(line, file=sys.stderr, flush=True))
    report = make_plan(
        config, probe_videos=args.probe, metadata_videos=args.metadata, cluster_cpus=args.cpus, cluster_gpus=args.gpus, say=say
    )
    print(json.dumps(report.to_dict(), indent=2, default=str) if args.json else format_report(report))
    if not report.estimated:  # a script reading the plan must not take "no estimate" for one
        print(f"vidbatch: no estimate: {report.notes[-1] if report.notes else 'nothing could be measured'}", file=sys.stderr)
        return 2
    return 0


_STOPPED_EXIT = {"interrupted": 130, "sigterm": 143}


if __name__ == "__main__":
    entry()
