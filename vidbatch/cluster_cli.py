"""The cluster verbs of `vidbatch`: submit, status, logs, stop (through the Ray Jobs API).

Kept out of cli.py so that file only wires them in; the work is in vidbatch.submit.
"""

from __future__ import annotations

import argparse

_ADDRESS_HELP = "the head's Jobs API, e.g. http://HEAD:8265 (default: RAY_API_SERVER_ADDRESS or RAY_ADDRESS)"


def add_cluster_commands(sub: argparse._SubParsersAction) -> None:
    submit = sub.add_parser("submit", help="run a job file on a Ray cluster through the Ray Jobs API")
    submit.add_argument("job", help="job file (YAML); validated here before anything is sent")
    submit.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a job key")
    submit.add_argument("--address", default=None, help=_ADDRESS_HELP)
    submit.add_argument(
        "--id",
        dest="submission_id",
        default=None,
        metavar="SUBMISSION_ID",
        help="deterministic submission id, e.g. nightly-tagging-2026-11-22 or '{name}-{date}' (UTC date); "
        "a second submit with the same id does not run the job again",
    )
    submit.add_argument("--wait", action="store_true", help="follow the job's log; exit 0 only when it SUCCEEDED")
    submit.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="with --wait: stop the job if it is still running after this long (it commits what it has done; exit 1)",
    )
    from vidbatch.cli import run_flags

    run_flags(submit)  # handed to `vidbatch run` on the cluster
    submit.set_defaults(func=_submit)

    status = sub.add_parser("status", help="status of a submitted job")
    status.add_argument("submission_id", metavar="ID")
    status.add_argument("--address", default=None, help=_ADDRESS_HELP)
    status.set_defaults(func=_status)

    logs = sub.add_parser("logs", help="log of a submitted job")
    logs.add_argument("submission_id", metavar="ID")
    logs.add_argument("--address", default=None, help=_ADDRESS_HELP)
    logs.add_argument("--follow", "-f", action="store_true", help="follow until the job ends; exit as submit --wait does")
    logs.set_defaults(func=_logs)

    stop = sub.add_parser("stop", help="stop a submitted job (the run commits the videos it has finished)")
    stop.add_argument("submission_id", metavar="ID")
    stop.add_argument("--address", default=None, help=_ADDRESS_HELP)
    stop.set_defaults(func=_stop)


def _submit(args: argparse.Namespace) -> int:
    from vidbatch.errors import JobError
    from vidbatch.submit import submit

    if args.timeout is not None and not args.wait:  # it was ignored: a nightly job meant to be bounded was not
        raise JobError(
            "--timeout works with --wait (the submitter follows the job and stops it past the time); add --wait, "
            "or bound the run itself with --set limits.max_run_s=SECONDS"
        )

    flags = [
        flag
        for flag, given in (
            ("--retry-failed", args.retry_failed),
            ("--redo-older-decoding", args.redo_older_decoding),
            ("--allow-empty", args.allow_empty),
        )
        if given
    ]
    return submit(
        args.job,
        args.overrides,
        args.address,
        submission_id=args.submission_id,
        wait=args.wait,
        timeout_s=args.timeout,
        run_flags=flags,
    )


def _status(args: argparse.Namespace) -> int:
    from vidbatch.submit import status

    return status(args.submission_id, args.address)


def _logs(args: argparse.Namespace) -> int:
    from vidbatch.submit import logs

    return logs(args.submission_id, args.address, follow_logs=args.follow)


def _stop(args: argparse.Namespace) -> int:
    from vidbatch.submit import stop

    return stop(args.submission_id, args.address)
