"""`vidbatch manifest build`: list a prefix of videos (local folder or any fsspec URI) into a manifest.

One row per video object under the prefix, found by its file extension; everything
else (sidecars, thumbnails, folder markers) is skipped and counted. `video_id` is the
object's path relative to the prefix, with `/` separators: stable across listings and
machines, unique within the prefix, and the same whether the library is read from a
bucket or from a mounted copy.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from vidbatch.config import StorageConfig
from vidbatch.errors import JobError
from vidbatch.storage import filesystem, is_local, modified_time, scheme_of
from vidbatch.storage_failures import explain_failure

# Containers FFmpeg opens in vidbatch.decode (FORMAT_WHITELIST), by their usual file names.
VIDEO_EXTENSIONS = frozenset(
    {
        "mp4", "m4v", "mov", "qt", "3gp", "3g2", "mj2",
        "mkv", "webm",
        "avi",
        "ts", "mts", "m2ts",
        "flv",
        "mpg", "mpeg", "m2v", "vob",
        "ogv",
        "wmv", "asf",
        "nut", "ivf", "h264", "264", "hevc", "h265", "265",
    }
)  # fmt: skip

MANIFEST_SCHEMA = pa.schema(
    [
        ("video_id", pa.string()),
        ("uri", pa.string()),
        ("size", pa.int64()),
        ("etag", pa.string()),
        ("last_modified", pa.timestamp("us", tz="UTC")),
    ]
)


@dataclass(frozen=True)
class BuildResult:
    manifest_uri: str
    videos: int
    skipped: int
    total_bytes: int


def _why_not_a_folder(fs: Any, root: str, source: str) -> str:
    if is_local(source):
        return "is a file; give the folder that holds the videos" if fs.exists(root) else "does not exist"
    bucket = root.split("/", 1)[0]
    if not fs.exists(bucket):
        return f"cannot be listed: its bucket {bucket!r} does not exist (or is not visible with these credentials and endpoint)"
    return "has no objects under it; check the prefix"


def list_videos(source: str, storage: StorageConfig, extensions: frozenset[str] = VIDEO_EXTENSIONS) -> tuple[pa.Table, int]:
    """(manifest table sorted by video_id, number of objects skipped as not video)."""
    try:
        fs, root = filesystem(source, storage)
        if not fs.isdir(root):
            raise JobError(f"source {source!r} {_why_not_a_folder(fs, root, source)}")
        found: dict[str, dict[str, Any]] = fs.find(root, withdirs=False, detail=True)
    except JobError:
        raise
    except PermissionError as exc:
        raise JobError(f"source {source!r}: access denied; the identity running this needs list and read access") from exc
    except Exception as exc:  # OSError, and botocore's own (no credentials, endpoint unreachable)
        raise JobError(
            f"source {source!r} cannot be listed ({explain_failure(exc)}); check the uri, --endpoint-url (or "
            "AWS_ENDPOINT_URL), --region and the credentials in the environment"
        ) from exc
    root = root.rstrip("/")
    rows: list[dict[str, Any]] = []
    skipped = 0
    for path, info in found.items():
        relative = path[len(root) :].lstrip("/") if path.startswith(root) else os.path.basename(path)
        if info.get("type") == "directory" or path.endswith("/") or not _is_video(relative, extensions):
            skipped += 1
            continue
        rows.append(
            {
                "video_id": relative.replace(os.sep, "/") if is_local(source) else relative,
                "uri": _uri_of(source, path),
                "size": int(info.get("size") or 0),
                "etag": _etag(info),
                "last_modified": _timestamp(info),
            }
        )
    rows.sort(key=lambda row: row["video_id"])
    return pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA), skipped


def build_manifest(source: str, output: str, storage: StorageConfig) -> BuildResult:
    table, skipped = list_videos(source, storage)
    if not table.num_rows:
        # An empty manifest makes the next run remove every row of its output: a wrong prefix or
        # an empty listing must not get that far.
        others = f"{skipped} other objects, none with a video extension such as .mp4, .mkv or .webm" if skipped else "it is empty"
        raise JobError(
            f"no videos under {source!r} ({others}); "
            f"nothing was written, so {output!r} is left as it was: check the source"
        )
    try:
        fs, path = filesystem(output, storage)
        if is_local(output):
            fs.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with fs.open(path, "wb") as handle:
            pq.write_table(table, handle)
    except Exception as exc:  # OSError, and botocore's own (no credentials, endpoint unreachable)
        raise JobError(
            f"manifest {output!r} cannot be written ({explain_failure(exc)}); check the uri, storage.endpoint_url "
            "and the job's credentials"
        ) from exc
    total = sum(table.column("size").to_pylist()) if table.num_rows else 0
    return BuildResult(manifest_uri=output, videos=table.num_rows, skipped=skipped, total_bytes=total)


def _is_video(relative: str, extensions: frozenset[str]) -> bool:
    name = relative.rsplit("/", 1)[-1]
    if name.startswith("."):  # ._foo.mp4 (macOS resource forks), .hidden files
        return False
    _, dot, ext = name.rpartition(".")
    return bool(dot) and ext.lower() in extensions


def _uri_of(source: str, path: str) -> str:
    if is_local(source):
        return path  # absolute local path, as the rest of vidbatch writes local URIs
    return f"{scheme_of(source)}://{path}"


def _etag(info: dict[str, Any]) -> str | None:
    etag = info.get("ETag") or info.get("etag")
    return str(etag).strip('"') if etag else None


def _timestamp(info: dict[str, Any]) -> datetime | None:
    seconds = modified_time(info)
    return datetime.fromtimestamp(seconds, tz=timezone.utc) if seconds is not None else None
