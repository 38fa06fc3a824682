"""Read what the output tables already say: the prior state of every video.

Only small columns are read (no embeddings), so this stays cheap for large tables.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from deltalake import DeltaTable

from vidbatch.config import StorageConfig
from vidbatch.errors import JobError, VideoError
from vidbatch.incremental import PriorVideo, settled_failure
from vidbatch.storage import delta_storage_options, describe_failure, join_uri, source_fingerprint, stat_video

_VIDEO_COLUMNS = [
    "video_id", "uri", "source_fingerprint", "model_id", "sampling_id",
    "status", "error_type", "error_message", "run_id", "num_clips",
]  # fmt: skip


@dataclass(frozen=True)
class PriorState:
    videos: dict[str, PriorVideo]
    consistent: dict[str, bool]  # does the clips table hold exactly the clips the videos row promises?
    # (video_id, run_id) of clip rows no videos row refers to: a run died between its commits.
    stale_clips: frozenset[tuple[str, str]] = frozenset()
    clip_video_ids: frozenset[str] = frozenset()  # videos with any clip row


def open_table(output: str, name: str, storage: StorageConfig) -> DeltaTable | None:
    uri = join_uri(output, name)
    options = delta_storage_options(uri, storage)
    if not DeltaTable.is_deltatable(uri, storage_options=options):
        return None
    return DeltaTable(uri, storage_options=options)


def load_prior(output: str, storage: StorageConfig) -> PriorState:
    """What the output's tables say now; JobError (before any work) when they cannot be read."""
    try:
        return _load_prior(output, storage)
    except Exception as exc:  # a missing bucket, an unreachable endpoint, no credentials, ...
        raise JobError(
            f"output {output!r} cannot be read ({describe_failure(exc)}); "
            "check that its bucket exists, storage.endpoint_url and the job's credentials"
        ) from exc


def _load_prior(output: str, storage: StorageConfig) -> PriorState:
    videos_table = open_table(output, "videos", storage)
    rows = videos_table.to_pyarrow_table(columns=_VIDEO_COLUMNS).to_pylist() if videos_table is not None else []
    videos = {
        row["video_id"]: PriorVideo(
            uri=row["uri"],
            fingerprint=row["source_fingerprint"],
            model_id=row["model_id"],
            sampling_id=row["sampling_id"],
            status=row["status"],
            error_type=row["error_type"],
            run_id=row["run_id"],
            num_clips=int(row["num_clips"] or 0),
            error_message=row["error_message"],
        )
        for row in rows
    }
    clips_table = open_table(output, "clips", storage)
    clip_counts: Counter[tuple[str, str]] = Counter()
    if clips_table is not None:
        clips = clips_table.to_pyarrow_table(columns=["video_id", "run_id"])
        clip_counts.update(zip(clips.column("video_id").to_pylist(), clips.column("run_id").to_pylist(), strict=True))
    # A videos row counts only the clips of its own run; clips of any other run are leftovers
    # of a run that died between its commits, deleted by the next commit (not a reason to redo).
    consistent = {
        video_id: clip_counts.get((video_id, prior.run_id or ""), 0) == prior.num_clips for video_id, prior in videos.items()
    }
    current = {(video_id, prior.run_id) for video_id, prior in videos.items()}
    stale = frozenset(key for key in clip_counts if key not in current)
    return PriorState(videos, consistent, stale, frozenset(video_id for video_id, _ in clip_counts))


def fingerprints(
    rows: Iterable[tuple[str, str]],
    storage: StorageConfig,
    *,
    threads: int = 32,
    settled: dict[str, VideoError] | None = None,
) -> dict[str, str | None]:
    """Stat every candidate (in parallel: object stores answer HEADs slowly but concurrently).

    `settled` (if given) receives the error of each video the stat proved missing or denied:
    its row is known without decoding.
    """

    def one(row: tuple[str, str]) -> tuple[str, str | None]:
        video_id, uri = row
        try:
            info, _, _ = stat_video(uri, storage)
        except VideoError as exc:  # still missing / still denied: a settled answer, like a fingerprint
            if exc.status not in ("not_found", "access_denied"):
                return video_id, None
            if settled is not None:
                settled[video_id] = exc
            return video_id, settled_failure(exc.status)
        except Exception:  # a throttled or failed HEAD: unknown, so the video is decoded again
            return video_id, None
        return video_id, source_fingerprint(info)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        return dict(pool.map(one, rows))
