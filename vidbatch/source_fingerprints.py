"""The nightly look at every source file: its fingerprint now, to compare with what the tables say.

Stats in parallel with a bound on those in flight (object stores answer HEADs slowly but
concurrently), folder listings where they answer for many files at once, progress said on a clock,
and a refusal when the store does not answer at all. Apart from vidbatch.state (which reads the
tables) so that how the files are looked at can change without touching how the tables are read.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from vidbatch.config import StorageConfig
from vidbatch.errors import UNREACHABLE, JobError, VideoError
from vidbatch.incremental import PERMANENT, settled_failure
from vidbatch.listing import listed_infos
from vidbatch.storage import source_fingerprint, stat_video

_Row = TypeVar("_Row")
_Answer = TypeVar("_Answer")


_PROGRESS_FLOOR_S = 0.1  # however small resources.progress_interval_s is set


def fingerprints(
    rows: Iterable[tuple[str, str]],
    storage: StorageConfig,
    *,
    threads: int = 32,
    settled: dict[str, VideoError] | None = None,
    unreachable_in_a_row: int | None = None,
    progress: Callable[[int], None] | None = None,
    progress_every_s: float = 10.0,
    listable: Collection[str] = (),
) -> dict[str, str | None]:
    """Stat every candidate (in parallel: object stores answer HEADs slowly but concurrently).

    Candidates in `listable` (videos whose last result was ok) may be answered by their folder's
    listing instead, where many share a folder on an object store (vidbatch.listing).

    `progress` (if given) is called with the number of candidates looked at so far, every
    `progress_every_s` while the stats go on: a million files on S3 take many minutes.

    `settled` (if given) receives the error of each video the stat proved missing or denied:
    its row is known without decoding. When `unreachable_in_a_row` stats in a row found the store
    not answering at all, the rest are not tried and the run is refused: a store that is down
    would cost every file its retries (~40 s on S3) and then a decode that fails the same way.
    """
    lock = threading.Lock()
    in_a_row = 0  # stats in a row whose store did not answer
    said = ""  # the last such stat's message
    gave_up = threading.Event()
    done = 0

    def count(unreachable: VideoError | None, *, files: int = 1) -> None:
        nonlocal in_a_row, said, done
        with lock:
            in_a_row = in_a_row + 1 if unreachable is not None else 0
            said = unreachable.message if unreachable is not None else said
            if unreachable_in_a_row is not None and in_a_row >= unreachable_in_a_row:
                gave_up.set()
            done += files

    # Said on a clock, not as files are answered: a folder's listing (pages of files not wanted) and
    # a store's retries answer nothing for a while, and the log must not look stalled meanwhile.
    finished = threading.Event()
    reported = False
    failed: list[BaseException] = []  # what `progress` raised on the clock's thread, raised here

    def report(say: Callable[[int], None]) -> None:
        nonlocal reported
        while not finished.wait(max(progress_every_s, _PROGRESS_FLOOR_S)):
            with lock:
                looked = done
            try:
                say(looked)
            except BaseException as exc:  # a closed pipe, say: the caller's to handle
                failed.append(exc)
                return
            reported = True

    def one(row: tuple[str, str]) -> tuple[str, str | None]:
        video_id, uri = row
        if gave_up.is_set():
            return video_id, None
        if video_id in listed:  # counted as its folder's listing found it
            return video_id, source_fingerprint(listed[video_id])
        try:
            info, _, _ = stat_video(uri, storage)
        except VideoError as exc:  # still gone, denied, a pipe, a path too long: a settled answer, like a fingerprint
            count(exc if exc.error_type == UNREACHABLE else None)
            if exc.status not in PERMANENT:
                return video_id, None
            if settled is not None:
                settled[video_id] = exc
            return video_id, settled_failure(exc.status)
        except Exception:  # a throttled or failed HEAD: unknown, so the video is decoded again
            count(None)
            return video_id, None
        count(None)
        return video_id, source_fingerprint(info)

    rows = list(rows)
    wanted = set(listable)
    listed: dict[str, dict[str, Any]] = {}
    ticker = None
    if progress is not None:
        ticker = threading.Thread(target=report, args=(progress,), name="vidbatch-planning-progress", daemon=True)
        ticker.start()
    try:
        if wanted:
            listed = listed_infos(
                ((video_id, uri) for video_id, uri in rows if video_id in wanted),
                storage,
                on_found=lambda files: count(None, files=files),
            )
        with ThreadPoolExecutor(max_workers=threads) as pool:
            found = dict(_in_order(pool, one, rows, in_flight=threads * _IN_FLIGHT_PER_THREAD))
    finally:  # an error or a Ctrl-C in the listing or the stats stops the clock too
        finished.set()
        if ticker is not None:
            ticker.join()
    if failed:
        raise failed[0]
    if reported and progress is not None:
        progress(done)  # the last word: all looked at
    if gave_up.is_set():
        raise JobError(
            f"{unreachable_in_a_row} files in a row could not be looked at: {said.split(';')[0]} "
            f"(limits.unreachable_in_a_row={unreachable_in_a_row}). Nothing was run or changed; check the store "
            "(and storage.endpoint_url), then run again"
        )
    return found


# Stats handed to the pool ahead of the ones answered: enough to keep every thread busy.
_IN_FLIGHT_PER_THREAD = 4


def _in_order(
    pool: ThreadPoolExecutor, work: Callable[[_Row], _Answer], rows: Iterable[_Row], *, in_flight: int
) -> Iterator[_Answer]:
    """pool.map, with at most `in_flight` rows handed to the pool at a time. pool.map submits every
    row before the first answer is taken: a Future (with its lock and condition) per file of the
    manifest, ~1.6 KB each, held at once: a million files took ~1.6 GB of the driver's memory."""
    pending: deque[Future[_Answer]] = deque()
    try:
        for row in rows:
            pending.append(pool.submit(work, row))
            if len(pending) >= in_flight:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:  # an error or a Ctrl-C: the rows not started are not stat'ed
        for future in pending:
            future.cancel()
