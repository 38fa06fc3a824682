"""The Ray a run uses: a cluster at an address (refused at once when nothing answers there), one
already running on this host, or one started here for this run alone."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
from collections.abc import Iterator
from typing import Any

from vidbatch.errors import JobError
from vidbatch.stop_signals import raise_stopped, stop_on_sigterm, stops_recorded

log = logging.getLogger(__name__)


def ensure_ray(address: str | None) -> Any:
    import ray

    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS")
        # A Ray started here lives only as long as this run and our progress line reports it, so
        # it starts without the dashboard (~1 s less start-up); VIDBATCH_LOCAL_DASHBOARD=1 keeps it.
        local_dashboard = os.environ.get("VIDBATCH_LOCAL_DASHBOARD") == "1"
        dashboard = None if address or local_dashboard else False  # None: Ray's default
        refuse_unreachable(address)
        # A stop during the seconds of Ray's start takes effect once it is up: ray.init's own
        # SIGTERM handler exits wherever the start is (exit 15, or a native abort with a stack
        # dump), and a KeyboardInterrupt could leave a half-started node. The Ray started here
        # is stopped on the way out (cli._leave). A second stop does not wait: a start that
        # hangs must not outlast it.
        with stops_recorded(second_stops=True) as received, _ray_leaves_sigterm_alone(ray):
            try:
                _init_ray(ray, address=address, include_dashboard=dashboard)
            except ConnectionError as exc:  # it answers but lets no driver in: most often its token
                raise JobError(_not_connected(address, exc)) from exc
        stop_on_sigterm()  # had ray.init installed its handler, a SIGTERM would dump a native stack and die
        if signal.SIGINT in received:
            raise KeyboardInterrupt
        if received:
            raise_stopped(received[0], None)
    return ray


def _not_connected(address: str | None, exc: Exception) -> str:
    from vidbatch.submit import AUTH_HINT

    said = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
    return (
        f"could not connect to the Ray cluster at {address or 'this machine'} ({said}); if the cluster uses "
        f"token authentication (Ray's default), {AUTH_HINT}"
    )


# A Ray started by ray.init() here serves this run alone, whose stages are all actors. Ray would
# start a worker per CPU as the driver connects and keep as many idle workers for later tasks:
# on 2 cores their start (~1 CPU-s each, beside the driver's own) made Ray's start ~1 s longer,
# and each idle worker then took ~1% of a core for the whole run. Measured on 2 cores, bench
# workload, interleaved x3: time to the pipeline 5.3-5.6 s instead of 5.9-6.9, keyframes run
# 16.4-17.5 s instead of 17.1-18.2 (docs/performance.md, eighth session).
_LOCAL_RAY_SYSTEM_CONFIG = {"prestart_worker_first_driver": False, "num_workers_soft_limit": 0}


def _init_ray(ray: Any, *, address: str | None, include_dashboard: bool | None) -> None:
    """ray.init as a run needs it: a Ray it starts gets _LOCAL_RAY_SYSTEM_CONFIG; a cluster keeps its own."""
    common: dict[str, Any] = {"include_dashboard": include_dashboard, "logging_level": logging.WARNING, "log_to_driver": True}
    if address is None:
        try:
            ray.init(address=None, _system_config=_LOCAL_RAY_SYSTEM_CONFIG, **common)
            return
        except ValueError as exc:
            # ray.init() without an address joins a cluster `ray start` runs on this host, and
            # refuses, before connecting, settings of a cluster it did not start ("When connecting
            # to an existing cluster, _system_config must not be provided."): join it as it is. Not
            # matched on the words, which Ray may change; any other refusal comes again below.
            log.debug("ray.init refused the local settings (%s); starting or joining without them", exc)
    ray.init(address=address, **common)


@contextlib.contextmanager
def _ray_leaves_sigterm_alone(ray: Any) -> Iterator[None]:
    """ray.init without its SIGTERM handler (it installs it through this private helper; where a
    Ray lacks it, the handler is replaced after the start as before)."""
    utils: Any = getattr(getattr(ray, "_private", None), "utils", None)
    installs = getattr(utils, "set_sigterm_handler", None)
    if installs is None:
        yield
        return
    utils.set_sigterm_handler = lambda handler: None
    try:
        yield
    finally:
        utils.set_sigterm_handler = installs


def refuse_unreachable(address: str | None, *, timeout_s: float = 10.0) -> None:
    """JobError when nothing answers at a host:port Ray address.

    ray.init retries a GCS that does not answer for ever (a warning every 35 s), so a wrong
    --address or RAY_ADDRESS would hang a nightly run instead of failing it.
    """
    if not address or address in ("auto", "local"):
        return
    target = address.split("://", 1)[1] if "://" in address else address
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        return  # not host:port: Ray says what is wrong with it
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise JobError(
            f"nothing answers at the Ray address {address!r} ({type(exc).__name__}: {exc}); check the address "
            "(--address or RAY_ADDRESS) and that the cluster is up (`ray status` on its head node)"
        ) from exc
