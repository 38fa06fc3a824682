"""Join the stages' rows back into the two tables' rows, on the driver, streaming.

A video is final once its video row and all of its clip rows have arrived (they may
come in any order and in different batches). Finished rows go straight to local spill
files, so the driver's memory holds only videos still in flight.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vidbatch.clip_arrays import top_labels, vector_rows
from vidbatch.config import Task
from vidbatch.errors import UNREACHABLE, JobError
from vidbatch.manifest import Plan
from vidbatch.parquet_stream import open_writer
from vidbatch.schema import CLIPS, EMBEDDING, LABELS, VIDEOS
from vidbatch.uri_policy import redact_uri, redact_uris_in

_FLUSH_ROWS = 512


@dataclass(frozen=True)
class Identity:
    model_id: str
    sampling_id: str
    run_id: str


@dataclass
class Tally:
    statuses: dict[str, int] = field(default_factory=dict)
    clips: int = 0
    frames: int = 0
    video_seconds: float = 0.0  # of ok videos
    clips_in_flight: int = 0  # clips of videos not finished yet (a long video shows progress too)
    # Bytes of the videos to decode (by the nightly stat's sizes; 0: not known) and of those finished:
    # what the time left goes by, as a 2-hour lecture takes as long as a hundred one-minute clips.
    bytes_total: float = 0.0
    bytes_done: float = 0.0

    def add(self, status: str, *, clips: int = 0, frames: int = 0, seconds: float = 0.0) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1
        self.clips += clips
        self.frames += frames
        self.video_seconds += seconds

    @property
    def videos(self) -> int:
        return sum(self.statuses.values())


class _Spill:
    """Rows bound for one spill file, written every _FLUSH_ROWS rows: dict rows (a video's row) and
    whole tables (a batch's clips), in the order they came."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.path = path
        self.schema = schema
        self.rows: list[dict[str, Any]] = []
        self.parts: list[pa.Table] = []
        self.buffered = 0
        try:
            self.writer = open_writer(path, schema)
        except OSError as exc:
            raise self._unwritable(exc) from exc
        self.count = 0

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        self._added(1)

    def add_table(self, table: pa.Table) -> None:
        self._seal_rows()
        self.parts.append(table)
        self._added(table.num_rows)

    def _added(self, rows: int) -> None:
        self.buffered += rows
        if self.buffered >= _FLUSH_ROWS:
            self.flush()

    def _seal_rows(self) -> None:
        if self.rows:
            self.parts.append(pa.Table.from_pylist(self.rows, schema=self.schema))
            self.rows = []

    def flush(self) -> None:
        self._seal_rows()
        if self.parts:
            try:
                self.writer.write_table(pa.concat_tables(self.parts))
            except OSError as exc:
                raise self._unwritable(exc) from exc
            self.count += self.buffered
            self.parts, self.buffered = [], 0

    def close(self) -> None:
        self.flush()
        try:
            self.writer.close()
        except OSError as exc:
            raise self._unwritable(exc) from exc

    def _unwritable(self, exc: OSError) -> JobError:
        # A spill that cannot be written cannot be committed from: the run ends here, saying why
        # (most often a full disk, which limits.spill_min_free_mb is there to stop short of).
        return JobError(
            f"the run's rows could not be written to its temporary folder ({self.path.parent}): {exc}. Nothing was "
            "committed by this run; free space there or point TMPDIR at a larger disk (limits.spill_min_free_mb "
            "stops a run, and commits what is done, before its disk fills)"
        )


class Collector:
    def __init__(
        self,
        *,
        plan: Plan,
        identity: Identity,
        categories: tuple[str, ...],
        task: Task,
        top_k: int,
        spill_dir: Path,
        on_progress: Callable[[Tally, int], None] | None = None,
        sizes: Mapping[str, int] | None = None,
    ) -> None:
        """`sizes`: bytes of the videos to decode that are known (Worklist.sizes); a video without one
        weighs as much as the known ones on average."""
        self.plan = plan
        self.identity = identity
        self.category_names = pa.array(categories, pa.string())  # built once: every label takes from it
        self.task = task
        self.top_k = min(top_k, len(categories))
        self.videos_schema = _videos_schema(plan.extra_schema)
        self.clips_out = _Spill(spill_dir / "clips.parquet", CLIPS)
        self.videos_out = _Spill(spill_dir / "videos.parquet", self.videos_schema)
        self.uris = dict(
            zip(plan.to_process.column("video_id").to_pylist(), plan.to_process.column("uri").to_pylist(), strict=True)
        )
        self.pending: dict[str, _InFlight] = {}
        self.done: set[str] = set()
        self.spilled_clips: set[str] = set()  # videos with clip rows in the spill file
        self.failed_videos: set[str] = set()
        # Videos that failed after some of their clips were spilled (a decode error midway, or still in
        # flight when a run stops early): the commit leaves their clips out as it reads the spill. A
        # copy of the spill without them needed its size again, on the disk a run stops for being full.
        self.void_clips: frozenset[str] = frozenset()
        # Videos finished one after another whose store did not answer (error_type UNREACHABLE).
        self.unreachable_in_a_row = 0
        self.lost = 0  # rows `close` wrote for videos the pipeline never finished
        self.kept: frozenset[str] = frozenset()  # videos `close` wrote no row for (their row from before stays)
        self.tally = Tally()
        self.precisions: set[str] = set()  # the dtypes the model actors ran this run's clips in
        self.total = plan.to_process.num_rows + len(plan.refused)
        self.sizes: Mapping[str, int] = sizes or {}
        self.unknown_size = 0.0
        if self.sizes and plan.to_process.num_rows:
            known = float(sum(self.sizes.values()))
            self.unknown_size = known / len(self.sizes)
            self.tally.bytes_total = known + (plan.to_process.num_rows - len(self.sizes)) * self.unknown_size
        self.on_progress = on_progress
        for refusal in plan.refused:
            self._write_video(
                {
                    "video_id": refusal.video_id,
                    "status": refusal.status,
                    "error_type": refusal.status,
                    "error_message": refusal.message,
                },
                uri=refusal.uri,
                extra=refusal.extra,
            )
            self.tally.add(refusal.status)

    def add_refreshed(self, rows: list[dict[str, Any]]) -> None:
        """Kept videos rows with today's carried-through manifest columns (vidbatch.state.refreshed_rows).

        Written as they are: same results, run_id and processed_at, so their clips still belong
        to them. Not counted in the tally, which is what this run decoded or refused.
        """
        for row in rows:
            self.videos_out.add({name: row.get(name) for name in self.videos_schema.names})

    # --- intake ------------------------------------------------------------------------

    def add_batch(self, batch: pa.Table) -> None:
        """Take a batch of the model stage's rows. Which rows count is decided row by row on the
        small key columns; the embeddings and probabilities of the clips taken are summed and
        spilled as whole arrays. One driver takes every clip of a cluster's run: row by row, every
        value a Python float, a resnet50 clip cost 130-200 us (5,000-7,800 clips/s on one core);
        as arrays 44-59 us (17,000-22,600 clips/s)."""
        video_ids = batch.column("video_id").to_pylist()
        kinds = batch.column("kind").to_pylist()
        clip_indexes = batch.column("clip_index").to_pylist()
        statuses = batch.column("status").to_pylist()
        taken: list[int] = []  # rows of ok clips, in the order they came
        taking: dict[str, _InFlight] = {}  # their videos (some may finish in this batch)
        finished: list[tuple[str, dict[str, Any], _InFlight]] = []
        for row, (video_id, kind, clip_index, status) in enumerate(zip(video_ids, kinds, clip_indexes, statuses, strict=True)):
            if video_id in self.done:
                continue  # a retried task delivered it twice: keep the first, never duplicate
            entry = self.pending.setdefault(video_id, _InFlight())
            if kind == "video":
                entry.video = _row(batch, row)
            elif clip_index not in entry.seen:
                entry.seen.add(clip_index)
                if status == "ok":
                    taken.append(row)
                    taking[video_id] = entry
                elif entry.failed is None or clip_index < entry.failed["clip_index"]:
                    entry.failed = _row(batch, row)
            video = entry.video
            if video is not None and (video["status"] != "ok" or len(entry.seen) >= (video["num_clips"] or 0)):
                # Finished once this batch's clips are summed: later rows of it are repeats.
                self.pending.pop(video_id)
                self.done.add(video_id)
                finished.append((video_id, video, entry))
        if taken:
            self._take_clips(batch.take(taken), taking)
        for video_id, video, entry in finished:
            self._finish(video_id, video, entry)
        if taken and self.on_progress is not None:
            self.on_progress(self.tally, self.total)

    def _take_clips(self, clips: pa.Table, entries: dict[str, _InFlight]) -> None:
        """Ok clips go to the spill file at once; only running sums stay, so the driver's memory
        does not grow with a video's length (a 6-hour video has thousands of clips)."""
        self.precisions.update(p for p in pc.unique(clips.column("precision")).to_pylist() if p)
        embeddings = vector_rows(clips.column("embedding"))
        probs_column = clips.column("probs")
        valid = probs_column.is_valid()
        has_probs = valid.to_numpy(zero_copy_only=False)
        probs = vector_rows(probs_column.filter(valid)) if has_probs.any() else None
        frames = pc.list_value_length(clips.column("frame_pts_s")).to_numpy(zero_copy_only=False)
        video_ids = clips.column("video_id").to_numpy(zero_copy_only=False)
        for video_id, entry in entries.items():  # a batch holds clips of a few videos
            rows = video_ids == video_id
            with_probs = rows[has_probs]
            entry.add(
                embeddings[rows],
                probs[with_probs] if probs is not None and with_probs.any() else None,
                frames=int(frames[rows].sum()),
            )
            self.spilled_clips.add(video_id)
        self.tally.clips_in_flight += clips.num_rows
        n = clips.num_rows
        labels = pa.nulls(n, LABELS)
        if self.task != "embed" and probs is not None:
            labels = top_labels(probs, has_probs, self.category_names, self.top_k)
        self.clips_out.add_table(
            pa.table(
                {
                    "video_id": clips.column("video_id"),
                    "clip_index": clips.column("clip_index"),
                    "start_s": clips.column("start_s"),
                    "end_s": clips.column("end_s"),
                    "frame_pts_s": clips.column("frame_pts_s"),
                    "embedding": clips.column("embedding") if self.task != "classify" else pa.nulls(n, EMBEDDING),
                    "labels": labels,
                    "model_id": pa.repeat(pa.scalar(self.identity.model_id, pa.string()), n),
                    "sampling_id": pa.repeat(pa.scalar(self.identity.sampling_id, pa.string()), n),
                    "run_id": pa.repeat(pa.scalar(self.identity.run_id, pa.string()), n),
                }
            ).cast(CLIPS)
        )

    @property
    def all_finished(self) -> bool:
        """Every video handed to the pipeline has its row (nothing pending, nothing unseen)."""
        return not self.pending and all(video_id in self.done for video_id in self.uris)

    def close(
        self,
        lost_message: str,
        *,
        lost_status: str = "decode_error",
        lost_type: str = "lost",
        keep: AbstractSet[str] = frozenset(),
    ) -> Tally:
        """Anything not finished (or never seen) still gets its row: nothing is dropped.

        Such rows are transient failures (error_type `lost` / `no_progress`): the next run retries them.
        The videos of `keep` not finished get no row (`kept` names them): their row from before stays,
        and the clips of theirs this run spilled are left out of the commit (void_clips).
        """
        lost = {"status": lost_status, "error_type": lost_type, "error_message": lost_message}
        unfinished = [video_id for video_id in self.uris if video_id not in self.done]
        self.kept = frozenset(video_id for video_id in unfinished if video_id in keep)
        for video_id in self.kept:
            entry = self.pending.pop(video_id, None)
            if entry is not None:
                self.tally.clips_in_flight -= entry.clips
            self.failed_videos.add(video_id)  # its spilled clips, if any, are void
        finished = len(self.done)
        for video_id in list(self.pending):
            entry = self.pending[video_id]
            self._finish(video_id, {**(entry.video or {"video_id": video_id}), **lost}, entry)
        for video_id in self.uris:
            if video_id not in self.done and video_id not in self.kept:
                self._finish(video_id, {"video_id": video_id, **lost}, _InFlight())
        self.lost = len(self.done) - finished
        self.clips_out.close()
        self.videos_out.close()
        self.void_clips = frozenset(self.spilled_clips & self.failed_videos)
        return self.tally

    # --- finishing ---------------------------------------------------------------------

    def _finish(self, video_id: str, video: dict[str, Any], entry: _InFlight) -> None:
        self.pending.pop(video_id, None)
        self.done.add(video_id)
        failed = entry.failed
        if failed is not None and video["status"] == "ok":
            video = {
                **video,
                "status": failed["status"],
                "error_type": failed["error_type"],
                "error_message": failed["error_message"],
            }
        ok = video["status"] == "ok"
        self.unreachable_in_a_row = self.unreachable_in_a_row + 1 if video.get("error_type") == UNREACHABLE else 0
        clips = entry.clips if ok else 0
        self.tally.clips_in_flight -= entry.clips
        if self.sizes:
            self.tally.bytes_done += self.sizes.get(video_id, self.unknown_size)
        if not ok:
            self.failed_videos.add(video_id)
        video_row = dict(video)
        if clips:
            video_row["embedding"] = entry.embedding() if self.task != "classify" else None
            mean_probs = entry.mean_probs()
            video_row["labels"] = self._labels(mean_probs) if mean_probs is not None and self.task != "embed" else None
        video_row["num_clips"] = clips
        self._write_video(video_row, uri=self.uris.get(video_id), extra=self.plan.extras_by_id.get(video_id, {}))
        self.tally.add(
            video_row["status"],
            clips=clips,
            frames=entry.frames if ok else 0,
            seconds=float(video_row.get("duration_s") or 0.0) if ok else 0.0,
        )
        if self.on_progress is not None:
            self.on_progress(self.tally, self.total)

    def _labels(self, probs: np.ndarray) -> list[dict[str, Any]]:
        """A video row's labels: the clips' rule, on its mean probabilities."""
        labels: list[dict[str, Any]] = top_labels(probs[np.newaxis], np.ones(1, bool), self.category_names, self.top_k)[0].as_py()
        return labels

    def _write_video(self, row: dict[str, Any], *, uri: str | None, extra: dict[str, object]) -> None:
        out = {name: row.get(name) for name in VIDEOS.names}
        message = out.get("error_message")
        out.update(
            uri=redact_uri(uri),
            # An unforeseen failure's message is the library's, which can quote the URL it read, signature and all.
            error_message=redact_uris_in(message) if isinstance(message, str) else message,
            model_id=self.identity.model_id,
            sampling_id=self.identity.sampling_id,
            run_id=self.identity.run_id,
            processed_at=datetime.now(timezone.utc),
        )
        out["num_clips"] = out.get("num_clips") or 0
        fps = out.get("fps")
        if fps is not None and not math.isfinite(fps):
            out["fps"] = None
        out.update(extra)
        self.videos_out.add(out)


def _videos_schema(extra: pa.Schema) -> pa.Schema:
    return pa.schema([*VIDEOS, *extra])


@dataclass
class _InFlight:
    """A video whose rows are still arriving: its video row (once seen), the clip indexes seen,
    and sums of its ok clips (float64, so the mean does not depend on the order of arrival)."""

    video: dict[str, Any] | None = None
    seen: set[int] = field(default_factory=set)
    failed: dict[str, Any] | None = None  # the earliest clip that failed
    clips: int = 0
    frames: int = 0
    embedding_sum: np.ndarray | None = None
    probs_sum: np.ndarray | None = None
    probs_count: int = 0

    def add(self, embeddings: np.ndarray, probs: np.ndarray | None, *, frames: int) -> None:
        """Ok clips: their embeddings (a row each), the probabilities of those that have them."""
        self.clips += len(embeddings)
        self.frames += frames
        total = embeddings.astype(np.float64).sum(axis=0)
        self.embedding_sum = total if self.embedding_sum is None else self.embedding_sum + total
        if probs is not None and len(probs):
            total = probs.astype(np.float64).sum(axis=0)
            self.probs_sum = total if self.probs_sum is None else self.probs_sum + total
            self.probs_count += len(probs)

    def embedding(self) -> np.ndarray | None:
        """The L2-normalised mean of the clip embeddings."""
        if self.embedding_sum is None:
            return None
        mean = self.embedding_sum / self.clips
        return (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)

    def mean_probs(self) -> np.ndarray | None:
        return self.probs_sum / self.probs_count if self.probs_sum is not None else None


def _row(batch: pa.Table, row: int) -> dict[str, Any]:
    return batch.slice(row, 1).to_pylist()[0]


class ProgressPrinter:
    """`videos 12/40 (ok 11, decode_error 1) clips 130 | 2.1 videos/s`, at most every `interval_s`."""

    def __init__(
        self,
        interval_s: float,
        write: Callable[[str], None],
        *,
        written_up_front: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval_s = interval_s
        self.write = write
        # Rows written before any decoding (refusals, files the stat found gone): in the count of
        # videos, not in the rate, or a night of a few refusals would promise a fast finish.
        self.written_up_front = written_up_front
        self.clock = clock
        self.started = clock()
        # -inf, not 0: time.monotonic() counts from the boot, and a node up for less than
        # interval_s would otherwise hold back the first lines.
        self.last = -math.inf  # any line
        self.last_videos_line = -math.inf  # a line after videos finished
        self.last_seen: tuple[int, int] = (0, 0)  # (videos done, clips seen) of the last line
        self.printed = False
        # (time, videos decoded, Tally.bytes_done) at the first line with a decoded video
        self.first_decoded: tuple[float, int, float] | None = None

    def __call__(self, tally: Tally, total: int, *, force: bool = False) -> None:
        now = self.clock()
        seen = (tally.videos, tally.clips + tally.clips_in_flight)
        if seen == self.last_seen and (self.printed or not force):
            return  # nothing new (a forced line still comes once, e.g. for an empty manifest)
        # A line when videos finished, and in between when clips of videos still decoding
        # arrived (a long video shows progress before its end). Each kind keeps its own pace,
        # so clip lines never hold back the line of a finished video.
        videos_finished = tally.videos != self.last_seen[0]
        since = now - (self.last_videos_line if videos_finished else self.last)
        if not (force or since >= self.interval_s or tally.videos >= total):
            return
        self.last, self.last_seen, self.printed = now, seen, True
        if videos_finished:
            self.last_videos_line = now
        elapsed = max(now - self.started, 1e-9)
        statuses = ", ".join(f"{k} {v}" for k, v in sorted(tally.statuses.items()))
        in_flight = f" (+{tally.clips_in_flight} of videos in progress)" if tally.clips_in_flight else ""
        decoded = max(tally.videos - self.written_up_front, 0)
        left = total - tally.videos
        if decoded and self.first_decoded is None:
            self.first_decoded = (now, decoded, tally.bytes_done)
        eta = ""
        if left > 0 and self.first_decoded is not None and decoded > self.first_decoded[1]:
            eta = f", about {duration_text(_time_left(tally, left, decoded, now, self.first_decoded))} left"
        self.write(
            f"videos {tally.videos}/{total} ({statuses or 'none yet'}) clips {tally.clips}{in_flight} frames {tally.frames}"
            f" | {decoded / elapsed:.2f} videos/s, {tally.video_seconds / elapsed:.1f} video-h/wall-h, "
            f"{duration_text(elapsed)} elapsed{eta}"
        )


def _time_left(tally: Tally, left: int, decoded: int, now: float, first: tuple[float, int, float]) -> float:
    """The rate since the first decoded video (Ray's and the actors' start-up, paid before it, would make
    the time left look many times longer than it is early in a run), applied to the bytes left where
    the videos' sizes are known, else to the videos left. By videos, a library of short clips and a few
    long lectures was promised hours too few while the lectures were ahead, too many once behind."""
    since, at, bytes_at = first
    if tally.bytes_total > 0 and tally.bytes_done > bytes_at:
        return max(tally.bytes_total - tally.bytes_done, 0.0) * (now - since) / (tally.bytes_done - bytes_at)
    return left * (now - since) / (decoded - at)


def duration_text(seconds: float) -> str:
    """3h 20m, 4m 05s, 12s: a time left to read at a glance."""
    whole = int(round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"
