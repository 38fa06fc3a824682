"""Reading a running dataset's results into the collector, and ending the run early.

A run ends when the dataset does, or early: nothing arrives for too long, the store is down, the
time limit passes, the spill folder's disk runs low, or a first Ctrl-C or SIGTERM comes. What each
early end says, and the message of the videos it left undone, are here too.
"""

from __future__ import annotations

import contextlib
import logging
import math
import queue
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from vidbatch.collect import Collector, duration_text
from vidbatch.config import JobConfig
from vidbatch.errors import UNREACHABLE, Stopped
from vidbatch.spill import SpillRoom, spill_space_said
from vidbatch.stop_signals import stops_recorded

log = logging.getLogger(__name__)

# How long the driver waits for an execution it gave up on (no progress) to stop.
_STOP_JOIN_S = 20.0

Ended = Literal["finished", "no_progress", "unreachable", "time_limit", "spill_space", "interrupted", "sigterm"]


@dataclass(frozen=True)
class _StopSignal:
    """A first Ctrl-C or SIGTERM ends the run as a time limit does: what is done is committed."""

    ended: Ended  # the summary's stopped_early, and the error_type of the videos not done
    name: str  # as the run's lines name it
    said_at_once: str  # the line the signal gets at once: the commit that follows can take a while


STOP_SIGNALS: dict[int, _StopSignal] = {
    signal.SIGINT: _StopSignal(
        "interrupted",
        "Ctrl-C (SIGINT)",
        "Ctrl-C: the run takes no more videos and commits what is done (Ctrl-C again stops it at once, committing nothing)",
    ),
    signal.SIGTERM: _StopSignal(
        "sigterm",
        "SIGTERM",
        "SIGTERM: the run takes no more videos and commits what is done "
        "(a second SIGTERM or Ctrl-C stops it at once, committing nothing)",
    ),
}
SIGNAL_NAMES: dict[str, str] = {stop.ended: stop.name for stop in STOP_SIGNALS.values()}
# How often the driver looks whether a stop signal came while it waits for a batch.
_SIGNAL_POLL_S = 0.2
# How long a run may go without a result before the driver says it is still waiting, and how often
# it says so again: the progress line only comes when something arrives, so a stalled run (a lost
# node, a cluster adding GPU nodes) was silent until limits.no_progress_timeout_s, 30 minutes.
QUIET_LINE_EVERY_S = 60.0


def stopped_early(ended: Ended, config: JobConfig, spill_room: SpillRoom) -> tuple[str, str, str]:
    """For a run that stopped before every video was tried: what it says, the message of the videos
    not done (`timeout` rows the next run retries) and their error_type."""
    limits = config.limits
    if ended in ("interrupted", "sigterm"):
        name = SIGNAL_NAMES[ended]
        return (
            f"stopped by {name}: committing what is done",
            f"not done: the run was stopped by {name} before this video; the next run does it",
            ended,
        )
    if ended == "spill_space":
        said = spill_space_said(spill_room.folder.parent, spill_room.free_bytes(), limits.spill_min_free_mb)
        return (
            f"{said}. The run takes no more videos and commits what is done",
            f"not done: the run's temporary folder ran low on space (limits.spill_min_free_mb={limits.spill_min_free_mb}) "
            "before this video; the next run does it",
            "spill_space",
        )
    if ended == "time_limit":
        return (
            f"the run reached limits.max_run_s={limits.max_run_s:g}s: it takes no more videos and commits what is done",
            f"not done: the run reached limits.max_run_s={limits.max_run_s:g}s before this video; the next run does it",
            "time_limit",
        )
    if ended == "no_progress":
        patience = limits.no_progress_timeout_s
        return (
            f"no video finished for limits.no_progress_timeout_s={patience:g}s: committing what is done",
            f"the run stopped waiting after {patience:g}s without progress; the next run retries it",
            "no_progress",
        )
    # A store that is down fails every video after its retries (~40 s each for S3): a night would
    # spend its hours writing `timeout` rows. Stopped, the rest wait for the next run.
    in_a_row = limits.unreachable_in_a_row
    return (
        f"{in_a_row} videos in a row could not be read: their object store or server did not answer "
        f"(limits.unreachable_in_a_row={in_a_row}). The run stops and commits what is done, if its output "
        "can be written; check the store, then run again: it retries every video not done",
        f"not done: the run stopped after {in_a_row} videos in a row found their store not answering; "
        "the next run retries it",
        UNREACHABLE,
    )


def drain(
    dataset: Any,
    collector: Collector,
    *,
    no_progress_timeout_s: float,
    unreachable_in_a_row: int,
    stop_at: float | None = None,
    spill_room: SpillRoom | None = None,
    stops: list[int],
    say: Callable[[str], None] | None = None,
    quiet_line_every_s: float = QUIET_LINE_EVERY_S,
) -> Ended:
    """Feed the collector until the dataset ends ("finished"), nothing arrives for
    `no_progress_timeout_s` (a stuck cluster: "no_progress"), `unreachable_in_a_row` videos in a
    row found their store not answering ("unreachable"), time.monotonic() passes `stop_at`
    (limits.max_run_s: "time_limit"), the spill folder's disk runs low ("spill_space"), or a first
    Ctrl-C or SIGTERM comes ("interrupted", "sigterm"; a second one raises, as before the drain).
    `stops` is the caller's record of stop signals (stops_recorded(second_stops=True)), which goes on
    after the drain returns. While nothing arrives, `say` is told so every `quiet_line_every_s`.

    The dataset is consumed on a daemon thread so the driver itself can never hang: when it stops
    early the execution is stopped (its actors and tasks cancelled) and the driver commits what
    is done.
    """
    batches: queue.Queue[Any] = queue.Queue(maxsize=8)
    end = object()
    abandoned = threading.Event()

    def consume() -> None:
        try:
            for batch in dataset.iter_batches(batch_format="pyarrow", batch_size=None):
                if abandoned.is_set():
                    return
                batches.put(batch)
            batches.put(end)
        except BaseException as exc:  # handed to the driver thread, which re-raises it
            if not abandoned.is_set():
                batches.put(exc)

    consumer = threading.Thread(target=consume, name="vidbatch-consume", daemon=True)
    consumer.start()

    def give_up(why: Ended) -> Ended:
        abandoned.set()
        # Results already made and waiting here are kept: emptying the queue to free the consumer
        # dropped up to its 8 batches, and a video whose last clips were among them was redone.
        while True:
            try:
                item = batches.get_nowait()
            except queue.Empty:
                break
            if item is end or isinstance(item, BaseException):
                break
            collector.add_batch(item)
        _stop_execution(dataset, consumer, batches)
        return why

    try:
        # The first Ctrl-C or SIGTERM is only recorded: the loop sees it within _SIGNAL_POLL_S and
        # stops the execution, and the run commits what is done. A second one stops at once (below).
        last_result = time.monotonic()
        patient_until = last_result + no_progress_timeout_s
        said_quiet = last_result
        while True:
            now = time.monotonic()
            if stops:
                stop = STOP_SIGNALS[stops[0]]
                if say is not None:
                    say(stop.said_at_once)
                return give_up(stop.ended)
            if stop_at is not None and now >= stop_at:
                return give_up("time_limit")
            if now >= patient_until:
                return give_up("no_progress")
            if say is not None and now - said_quiet >= quiet_line_every_s:
                said_quiet = now
                say(_quiet_line(now - last_result, patient_until - now, no_progress_timeout_s, collector))
            wake = min(patient_until, stop_at if stop_at is not None else math.inf, now + _SIGNAL_POLL_S)
            try:
                item = batches.get(timeout=max(0.0, wake - now))
            except queue.Empty:
                continue  # a limit or a stop signal above
            last_result = said_quiet = time.monotonic()
            patient_until = last_result + no_progress_timeout_s
            if item is end:
                return "finished"
            if isinstance(item, BaseException):
                raise item
            collector.add_batch(item)
            if collector.unreachable_in_a_row >= unreachable_in_a_row:
                return give_up("unreachable")
            if spill_room is not None and spill_room.low():
                return give_up("spill_space")
    except (KeyboardInterrupt, Stopped):
        # Stopped before Ray is, wherever the signal lands (waiting for a batch, or adding one to
        # the collector): an execution left running would print Ray's tracebacks after the
        # one-line message, and restart a Ray of its own once ours is shut down.
        abandoned.set()
        with stops_recorded():  # a second Ctrl-C must not cut the stop short
            _stop_execution(dataset, consumer, batches)
        raise


def _quiet_line(quiet_s: float, left_s: float, patience_s: float, collector: Collector) -> str:
    """What a run that has had no result for a while says, so that a stall is seen before it ends the run."""
    return (
        f"waiting: no result for {duration_text(quiet_s)} (videos {collector.tally.videos}/{collector.total} done); "
        f"the run gives up waiting after limits.no_progress_timeout_s={patience_s:g}s without one, "
        f"in {duration_text(max(left_s, 0.0))}, and commits what is done"
    )


def _stop_execution(dataset: Any, consumer: threading.Thread, batches: queue.Queue[Any]) -> None:
    """Stops an execution the driver gave up on, so no thread is left inside Ray when it exits.

    A consumer thread blocked in Ray's client while the interpreter tears Ray down printed
    tracebacks after a committed run and, on a cluster that had lost a node, crashed the
    driver with SIGSEGV after its commit, so the job was reported failed.
    """
    executors = _running_executors(dataset)
    for executor in executors:
        try:
            executor.shutdown(force=True)  # cancels its tasks and kills its actors
        except Exception as exc:  # Ray's internals: a failed stop must not lose the commit
            log.warning("could not stop the abandoned dataset execution: %s", exc)
    deadline = time.monotonic() + _STOP_JOIN_S
    for executor in executors:
        # shutdown() waits 2 s for the executor's scheduling loop; on a busy machine the loop can
        # still be in a step then, and once Ray is shut down that step prints Ray's tracebacks
        # after the run's one-line message. The executor is that loop's thread: wait for it.
        if isinstance(executor, threading.Thread) and executor is not threading.current_thread():
            executor.join(timeout=max(0.0, deadline - time.monotonic()))
    while consumer.is_alive() and time.monotonic() < deadline:
        with contextlib.suppress(queue.Empty):
            batches.get_nowait()  # a consumer blocked on a full queue must see `abandoned`
        consumer.join(timeout=0.2)
    if consumer.is_alive():
        log.warning("the abandoned dataset execution did not stop within %gs", _STOP_JOIN_S)


def _running_executors(dataset: Any) -> list[Any]:
    """The Ray Data executors running `dataset` (Ray has no public way to cancel an iteration).

    The dataset records its executor only once the first block is out, which a stuck run may
    never produce; the executor is also a thread named after the dataset's execution id.
    """
    found = [getattr(dataset, "_current_executor", None)]
    with contextlib.suppress(Exception):
        name = f"StreamingExecutor-{dataset.get_dataset_id()}"
        found += [t for t in threading.enumerate() if t.name == name and hasattr(t, "shutdown")]
    unique = {id(e): e for e in found if e is not None}
    return list(unique.values())
