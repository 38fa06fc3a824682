"""How SIGINT and SIGTERM stop a run: at once (a Stopped exception, as Ctrl-C does), or held
until a step that must not be cut short (Ray's start, the commit) has ended."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from vidbatch.errors import Stopped

# A stop signal this soon after the first is the same stop delivered twice, not a second one: a
# wrapper such as `timeout` or a shell forwards the SIGTERM that `kill`/`pkill` also sent the run.
SAME_STOP_S = 1.0


@contextlib.contextmanager
def interrupts_held(say: Callable[[str], None], *, during: str = "committing") -> Iterator[None]:
    """SIGINT (Ctrl-C) and SIGTERM are held until the block ends and then dropped: the run they
    would have stopped is committed by then."""
    with stops_recorded() as received:
        yield
    if received:
        name = signal.Signals(received[0]).name
        say(f"{name} while {during}: the commit was finished first, so this run is committed")


@contextlib.contextmanager
def stops_recorded(*, second_stops: bool = False) -> Iterator[list[int]]:
    """SIGINT and SIGTERM received in the block are only recorded (in the list it yields); the
    handlers in place before are back when it ends. With `second_stops`, a second one stops the
    block at once (a step that hangs must still yield to an insistent stop); one within SAME_STOP_S
    of the first is taken for the same stop. Only the main thread
    can set signal handlers; elsewhere (a run inside another program's thread) the list stays empty."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    first_at: list[float] = []

    def record(signum: int, frame: Any) -> None:
        received.append(signum)
        now = time.monotonic()
        first_at[:] = first_at or [now]
        if second_stops and len(received) > 1 and now - first_at[0] >= SAME_STOP_S:
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            raise_stopped(signum, frame)

    held = (signal.SIGINT, signal.SIGTERM)
    previous = {signum: signal.signal(signum, record) for signum in held}
    try:
        yield received
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def stop_on_sigterm() -> None:
    """SIGTERM stops the run the way Ctrl-C does (a Stopped exception, a one-line message), on the main thread."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, raise_stopped)


def raise_stopped(signum: int, frame: Any) -> None:
    raise Stopped(f"stopped by {signal.Signals(signum).name}")
