"""Run a job on a Ray cluster through the Ray Jobs API (the head's dashboard, port 8265).

`submit` validates the job file here, ships the vidbatch package and the job file to the
cluster as the job's `working_dir`, and runs `python -m vidbatch.cli run JOB [--set ...]`
there, so the job runs on the cluster exactly as `vidbatch run` runs it here.

Exit codes (also for `status`, `logs`, `stop`):
  0  submitted (without --wait), or the job SUCCEEDED (with --wait)
  1  the job FAILED or was STOPPED (with --wait: the driver's own exit code when Ray
     reports one, e.g. 2 when the cluster refused the job), or no such submission
  2  refused here before anything was submitted (bad job file, bad id)
  3  the cluster could not be reached, refused our credentials, or the Jobs API failed
  130 interrupted while following (the job goes on; `vidbatch stop ID` ends it)

Token authentication (Ray >= 2.52 turns it on by default): the token is never put into
the job's runtime_env. It is taken from RAY_AUTH_TOKEN, or from the file named by
RAY_AUTH_TOKEN_PATH, or (for a head on this machine only) from ~/.ray/auth_token, and sent as an
`Authorization: Bearer` header; with RAY_AUTH_MODE=token Ray's own client does it instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import re
import shlex
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

import vidbatch
from vidbatch.config import STATE_DICT_SUFFIXES, JobConfig, load_job
from vidbatch.errors import JobError
from vidbatch.redaction import redact_text, redact_uri
from vidbatch.storage import is_local, local_path

EXIT_OK = 0
EXIT_JOB_FAILED = 1
EXIT_REFUSED = 2
EXIT_CLUSTER = 3
EXIT_INTERRUPTED = 130

TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
# Ray puts the submission id into URLs and log file names; keep it to a safe alphabet.
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
JOB_DIR = "job"  # where the job file sits inside the shipped working_dir
STOP_GRACE_S = 300  # a stopped job's time to commit what it has done, before Ray kills its driver


class ClusterError(Exception):
    """The cluster could not be reached or the Jobs API refused a request; the message says what to do."""


@dataclass
class Submission:
    """What is sent: the entrypoint and runtime_env, built and checked before any request."""

    job: JobConfig
    entrypoint: str
    runtime_env: dict[str, Any]
    metadata: dict[str, str]
    notes: list[str] = field(default_factory=list)


def expand_id(template: str | None, job_name: str, now: datetime | None = None) -> str | None:
    """`{name}` and `{date}` (UTC, YYYY-MM-DD) in --id, e.g. '{name}-{date}' -> 'nightly-tagging-2026-11-22'."""
    if template is None:
        return None
    now = now or datetime.now(timezone.utc)
    try:
        value = template.format(name=job_name, date=now.strftime("%Y-%m-%d"))
    except (KeyError, IndexError, ValueError) as exc:
        raise JobError(f"--id {template!r}: only {{name}} and {{date}} may be used in braces ({exc})") from None
    if not _ID_RE.match(value):
        raise JobError(
            f"--id {value!r}: use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit "
            "(e.g. nightly-tagging-2026-11-22)"
        )
    return value


def path_overrides(job: JobConfig, overrides: Sequence[str], cwd: Path | None = None) -> tuple[list[str], list[str]]:
    """--set overrides that make the job's relative local paths absolute, plus notes about local paths.

    On the cluster the job runs in its working_dir, where a relative path would name nothing;
    `vidbatch run` resolves relative paths against the current directory, so submit does too, for
    paths in the job file and in `--set` alike (the absolute one is set after, and the last wins).
    """
    cwd = cwd or Path.cwd()
    extra: list[str] = []
    local: list[str] = []

    def visit(key: str, value: str) -> str:
        if not is_local(value):
            return value
        local.append(f"{key}={value}")
        path = local_path(value)
        if Path(path).is_absolute():
            return value
        return str((cwd / path).resolve())

    for key, value in (("manifest", job.manifest), ("output", job.output)):
        absolute = visit(key, value)
        if absolute != value:
            extra.append(f"{key}={absolute}")
    weights = job.model.weights
    if weights.lower() != "none" and (weights.lower().endswith(STATE_DICT_SUFFIXES) or "/" in weights):
        absolute = visit("model.weights", weights)
        if absolute != weights:
            extra.append(f"model.weights={absolute}")
    if job.model.categories is not None:
        absolute = visit("model.categories", job.model.categories)
        if absolute != job.model.categories:
            extra.append(f"model.categories={absolute}")
    roots = [visit("inputs.allowed_roots", root) for root in job.inputs.allowed_roots]
    if list(job.inputs.allowed_roots) != roots:
        extra.append("inputs.allowed_roots=[" + ", ".join(_yaml_str(r) for r in roots) + "]")

    notes = []
    if local:
        notes.append(
            "local paths in the job (" + ", ".join(local) + ") must exist on the cluster: the driver reads the "
            "manifest and weights and writes the output; every worker node reads local video paths"
        )
    return extra, notes


def _yaml_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def build_submission(
    job_file: str | Path, overrides: Sequence[str], staging: Path, *, run_flags: Sequence[str] = ()
) -> Submission:
    """Validate the job file here and lay out the working_dir in `staging`. Raises JobError."""
    job_path = Path(job_file)
    config = load_job(job_path, list(overrides))
    extra, notes = path_overrides(config, overrides)
    all_overrides = [*overrides, *extra]
    if extra:
        config = load_job(job_path, all_overrides)  # still valid with the absolute paths

    package = Path(vidbatch.__file__).resolve().parent
    shutil.copytree(package, staging / "vidbatch", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (staging / JOB_DIR).mkdir()
    shipped = f"{JOB_DIR}/{job_path.name}"
    shutil.copyfile(job_path, staging / shipped)

    command = ["python", "-m", "vidbatch.cli", "run", shipped]
    for override in all_overrides:
        command += ["--set", override]
    command += list(run_flags)
    runtime_env = {
        # The working_dir holds vidbatch/ and job/; Ray puts it on every worker's sys.path and
        # runs the entrypoint in it, so this copy of vidbatch wins over an installed one.
        "working_dir": str(staging),
        "env_vars": {
            # Not a secret; makes the driver's progress lines reach the job log as they happen.
            "PYTHONUNBUFFERED": "1",
            # How long Ray's job stop waits after its SIGTERM before SIGKILL (Ray's default is 3 s;
            # its job supervisor reads it from the job's env_vars). A stopped run commits what it
            # has done, and a big night's commit rewrites files for minutes.
            "RAY_JOB_STOP_WAIT_TIME_S": str(STOP_GRACE_S),
        },
    }
    metadata = {"vidbatch_job": config.name, "vidbatch_version": vidbatch.__version__, "job_file": job_path.name}
    return Submission(config, shlex.join(command), runtime_env, metadata, notes)


def auth_headers(
    environ: dict[str, str] | None = None, *, address: str | None = None, home: Path | None = None
) -> dict[str, str]:
    """The Authorization header, unless Ray's own client adds it (RAY_AUTH_MODE=token).

    From RAY_AUTH_TOKEN, else the file named by RAY_AUTH_TOKEN_PATH, else, only when the
    address is this machine (a head started here with `ray start --head`), ~/.ray/auth_token.
    """
    env = os.environ if environ is None else environ
    mode = env.get("RAY_AUTH_MODE", "").lower()
    if mode == "token":
        return {}  # Ray's client reads RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token itself
    token = env.get("RAY_AUTH_TOKEN", "").strip()
    if not token and env.get("RAY_AUTH_TOKEN_PATH"):
        try:
            token = Path(env["RAY_AUTH_TOKEN_PATH"]).read_text().strip()
        except OSError as exc:
            raise ClusterError(f"RAY_AUTH_TOKEN_PATH={env['RAY_AUTH_TOKEN_PATH']!r} cannot be read ({exc.strerror})") from None
    if not token and mode != "disabled" and address and _is_this_machine(address):
        default = (home or Path.home()) / ".ray" / "auth_token"
        with contextlib.suppress(OSError):
            token = default.read_text().strip()
    return {"Authorization": f"Bearer {token}"} if token else {}


def _is_this_machine(address: str) -> bool:
    host = urlsplit(address if "://" in address else "http://" + address).hostname or ""
    if host == "localhost":
        return True
    try:
        if ipaddress.ip_address(host).is_loopback:
            return True
    except ValueError:
        pass
    try:
        return host in {socket.gethostname(), *socket.gethostbyname_ex(socket.gethostname())[2]}
    except OSError:
        return False


AUTH_HINT = (
    "the cluster wants its token: set RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH to a file holding it), "
    "or RAY_AUTH_MODE=token to use ~/.ray/auth_token; `ray get-auth-token` on the head prints it"
)


def connect(address: str | None) -> Any:
    """A JobSubmissionClient for ADDRESS (or RAY_ADDRESS / RAY_API_SERVER_ADDRESS). Raises ClusterError."""
    from ray.job_submission import JobSubmissionClient

    given = address is not None
    address = address or os.environ.get("RAY_API_SERVER_ADDRESS") or os.environ.get("RAY_ADDRESS")
    if not address:
        raise ClusterError("no cluster address: pass --address http://HEAD:8265 (the head's dashboard) or set RAY_ADDRESS")
    if "://" not in address:
        address = "http://" + address
    try:
        # Without --address, Ray's client resolves the variable itself (`auto`, a GCS HEAD:6379, as
        # `vidbatch run` reads RAY_ADDRESS); with it, the variables must not override it.
        with _address_variables_set_aside() if given else contextlib.nullcontext():
            return JobSubmissionClient(address, headers=auth_headers(address=address))
    except Exception as exc:  # ConnectionError, AuthenticationError, version errors...
        raise ClusterError(_explain(exc, address)) from None


_ADDRESS_VARIABLES = ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS")


@contextlib.contextmanager
def _address_variables_set_aside() -> Iterator[None]:
    """Ray's client takes RAY_API_SERVER_ADDRESS or RAY_ADDRESS over the address it is given: --address
    went unused, and the token chosen for it was sent to the other host."""
    saved = {name: os.environ.pop(name) for name in _ADDRESS_VARIABLES if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def _explain(exc: BaseException, address: str = "") -> str:
    # A dashboard behind an authenticating proxy is given as http://user:password@head:8265: what is said
    # (a log shipped to a shared system, most often) names the address without its password.
    address = redact_uri(address) or ""
    text = redact_text(str(exc).strip().splitlines()[0]) if str(exc).strip() else type(exc).__name__
    lowered = str(exc).lower()
    if "403" in lowered or "forbidden" in lowered or "authentication failed" in lowered:
        return f"{address or 'the cluster'}: the token was refused (it is not this cluster's token); {AUTH_HINT}"
    if "authentication" in lowered or "401" in lowered or "unauthorized" in lowered:
        return f"{address or 'the cluster'}: {AUTH_HINT}"
    if "failed to connect" in lowered or "connection" in lowered:
        where = f" at {address}" if address else ""  # following a job: the client's address was given before
        return f"cannot reach the Ray Jobs API{where}: is the head running, and is this its dashboard port (8265)?"
    return text


def _already_exists(exc: BaseException) -> bool:
    return "already exists" in str(exc)


def submit(
    job_file: str,
    overrides: Sequence[str],
    address: str | None,
    *,
    submission_id: str | None = None,
    wait: bool = False,
    timeout_s: float | None = None,
    run_flags: Sequence[str] = (),
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    """`vidbatch submit`. Returns the exit code. `run_flags` (--retry-failed, --allow-empty) go to the run."""
    with tempfile.TemporaryDirectory(prefix="vidbatch-submit-") as staging:
        # Refusals of the job itself (JobError) propagate to the CLI: exit 2, nothing sent.
        sub = build_submission(job_file, overrides, Path(staging), run_flags=run_flags)
        sid = expand_id(submission_id, sub.job.name)
        for note in sub.notes:
            print(f"note: {note}", file=err)
        try:
            client = connect(address)
            try:
                sid = client.submit_job(
                    entrypoint=sub.entrypoint, runtime_env=sub.runtime_env, metadata=sub.metadata, submission_id=sid
                )
            except RuntimeError as exc:
                if sid is None or not _already_exists(exc):
                    raise
                return _existing(client, sid, sub, wait, timeout_s, out, err)
        except ClusterError as exc:
            print(f"vidbatch: {exc}", file=err)
            return EXIT_CLUSTER
        except Exception as exc:
            print(f"vidbatch: submitting failed: {_explain(exc, address or '')}", file=err)
            return EXIT_CLUSTER
    print(sid, file=out, flush=True)
    print(f"submitted {sid}: {sub.entrypoint}", file=err)
    if not wait:
        print(f"follow it with: vidbatch logs {sid} --follow --address ...", file=err)
        return EXIT_OK
    return follow(client, sid, out, err, timeout_s=timeout_s)


def _existing(client: Any, sid: str, sub: Submission, wait: bool, timeout_s: float | None, out: TextIO, err: TextIO) -> int:
    """A submission with this id exists: never run twice; report it (and follow it with --wait)."""
    info = client.get_job_info(sid)
    status = str(info.status.value if hasattr(info.status, "value") else info.status)
    print(sid, file=out, flush=True)
    print(f"submission {sid} already exists on this cluster (status {status}); not submitting it again", file=err)
    theirs = (info.metadata or {}).get("vidbatch_job")
    if theirs != sub.job.name or info.entrypoint != sub.entrypoint:
        print(f"  note: it was submitted as: {info.entrypoint}", file=err)
    if status in TERMINAL:
        if info.message:
            print(f"  {info.message.strip()}", file=err)
        if status != "SUCCEEDED":
            print(f"  to run it again, submit with a new --id (e.g. {sid}-retry1)", file=err)
        return _exit_for(info)
    if wait:
        return follow(client, sid, out, err, timeout_s=timeout_s)
    return EXIT_OK


def _exit_for(info: Any) -> int:
    status = str(info.status.value if hasattr(info.status, "value") else info.status)
    if status == "SUCCEEDED":
        return EXIT_OK
    code = getattr(info, "driver_exit_code", None)
    if status == "FAILED" and isinstance(code, int) and 0 < code < 128:
        return code
    return EXIT_JOB_FAILED


def follow(
    client: Any,
    sid: str,
    out: TextIO,
    err: TextIO,
    *,
    timeout_s: float | None = None,
    poll_s: float = 2.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Print the job's log as it grows until the job ends; the exit code says how it ended.

    With `timeout_s`, a job still running after that long is stopped (it commits what it has
    done, within STOP_GRACE_S) and the exit code is 1: a lost node that nothing replaces can
    leave Ray waiting for resources forever, and a nightly run must end.
    """
    deadline = None if timeout_s is None else clock() + timeout_s
    shown = [0]  # characters of the log printed so far
    tailed_to_the_end = False
    try:
        try:
            asyncio.run(asyncio.wait_for(_tail(client, sid, out, shown), timeout=timeout_s))
            tailed_to_the_end = True
        except (asyncio.TimeoutError, TimeoutError):
            pass
        except Exception as exc:  # the log stream broke (head restart, proxy timeout): poll instead
            print(f"vidbatch: log stream interrupted ({_explain(exc, _address_of(client))}); polling the status", file=err)
        stopping = False
        while True:
            try:
                info = client.get_job_info(sid)
                status = str(info.status.value if hasattr(info.status, "value") else info.status)
                if status in TERMINAL:
                    break
                if deadline is not None and clock() >= deadline and not stopping:
                    print(f"vidbatch: {sid} still running after --timeout {timeout_s:g}s; stopping it", file=err)
                    client.stop_job(sid)
                    stopping = True
            except Exception as exc:
                print(f"vidbatch: cannot read the status of {sid}: {_explain(exc, _address_of(client))}", file=err)
                return EXIT_CLUSTER
            sleep(poll_s)
    except KeyboardInterrupt:
        print(f"vidbatch: stopped following; {sid} goes on on the cluster (vidbatch stop {sid} ends it)", file=err)
        return EXIT_INTERRUPTED
    if not tailed_to_the_end:
        # What the run said after the tail ended (a stopped run's commit and summary, the lines after a
        # broken stream): the log it would otherwise leave for `vidbatch logs`.
        _print_log_after(client, sid, out, err, shown=shown[0])
    message = (info.message or "").strip()
    print(f"{sid}: {status}" + (f" ({message})" if message else ""), file=err)
    return _exit_for(info)


def _print_log_after(client: Any, sid: str, out: TextIO, err: TextIO, *, shown: int) -> None:
    try:
        log = client.get_job_logs(sid)
    except Exception as exc:
        why = _explain(exc, _address_of(client))
        print(f"vidbatch: cannot read the rest of {sid}'s log ({why}); `vidbatch logs {sid}` shows it", file=err)
        return
    out.write(log[shown:])
    out.flush()


def _address_of(client: Any) -> str:
    """The Jobs API address a JobSubmissionClient talks to ('' if this Ray's client does not say)."""
    address = getattr(client, "_address", "")
    return address if isinstance(address, str) else ""


async def _tail(client: Any, sid: str, out: TextIO, shown: list[int]) -> None:
    async for chunk in client.tail_job_logs(sid):
        out.write(chunk)
        out.flush()
        shown[0] += len(chunk)


def _with_client(address: str | None, err: TextIO, action: Callable[[Any], int]) -> int:
    try:
        client = connect(address)
        return action(client)
    except ClusterError as exc:
        print(f"vidbatch: {exc}", file=err)
        return EXIT_CLUSTER
    except RuntimeError as exc:
        if "does not exist" in str(exc) or "404" in str(exc):
            print("vidbatch: no such submission on this cluster", file=err)
            return EXIT_JOB_FAILED
        print(f"vidbatch: {_explain(exc, address or '')}", file=err)
        return EXIT_CLUSTER
    except Exception as exc:
        print(f"vidbatch: {_explain(exc, address or '')}", file=err)
        return EXIT_CLUSTER


def status(sid: str, address: str | None, *, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """`vidbatch status ID`: one line per fact; exit 0 when the job is known (whatever its state)."""

    def action(client: Any) -> int:
        info = client.get_job_info(sid)
        state = str(info.status.value if hasattr(info.status, "value") else info.status)
        print(f"{sid}: {state}", file=out)
        if info.message:
            print(f"  message: {info.message.strip()}", file=out)
        print(f"  entrypoint: {info.entrypoint}", file=out)
        for label, stamp in (("started", info.start_time), ("ended", info.end_time)):
            if stamp:
                print(f"  {label}: {datetime.fromtimestamp(stamp / 1000, timezone.utc).isoformat(timespec='seconds')}", file=out)
        if getattr(info, "driver_exit_code", None) is not None:
            print(f"  driver exit code: {info.driver_exit_code}", file=out)
        return EXIT_OK

    return _with_client(address, err, action)


def logs(sid: str, address: str | None, *, follow_logs: bool = False, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """`vidbatch logs ID [--follow]`: the driver's log so far, or followed to the end (then exit as --wait would)."""

    def action(client: Any) -> int:
        if follow_logs:
            client.get_job_info(sid)  # "no such submission" before opening the stream
            return follow(client, sid, out, err)
        out.write(client.get_job_logs(sid))
        out.flush()
        return EXIT_OK

    return _with_client(address, err, action)


def stop(sid: str, address: str | None, *, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """`vidbatch stop ID`: ask the job to stop. The run commits what it has done (Ray's SIGTERM), and
    Ray kills its driver STOP_GRACE_S later if it is still going."""

    def action(client: Any) -> int:
        stopped = client.stop_job(sid)
        info = client.get_job_info(sid)
        state = str(info.status.value if hasattr(info.status, "value") else info.status)
        print(f"{sid}: {'stop requested' if stopped else 'was not running'} (status {state})", file=out)
        if stopped:  # what a stop does is not Ray's default (a kill 3 s after SIGTERM)
            said = f"  the run commits what it has done (up to {STOP_GRACE_S} s); `vidbatch logs {sid} --follow` shows it"
            print(said, file=out)
        return EXIT_OK

    return _with_client(address, err, action)
