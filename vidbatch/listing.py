"""Object infos for many files of one folder from its listing, instead of a HEAD request each.

A nightly rerun looks at every file of the library to see which changed. On S3 that is a HEAD per
object: a million of them take tens of minutes, night after night. A listing answers for up to
1,000 objects a request, with the same ETag and size a HEAD gives (so the fingerprint is the
same). Folders holding few of the wanted files keep their HEADs, which are then cheaper.

A listing says what is there, not what may be read: a file whose read permission changed keeps
its row until its bytes change. So only files whose last result was `ok` are looked up here; the
others (and anything a listing does not answer for) get their HEAD, whose errors say what is wrong.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fsspec.asyn import sync

from vidbatch.config import StorageConfig
from vidbatch.storage import S3_SCHEMES, filesystem, scheme_of

# Fewer wanted files than this in a folder: a HEAD each costs less than listing the whole folder.
MIN_PER_FOLDER = 32
_LISTINGS_AT_ONCE = 4  # each holds only the wanted files' infos, so memory stays small
_SAID_EVERY = 1000  # rows found, about a page of a listing
_PAGE = 1000  # objects a listing request answers for
# A listing reads every object of a folder, wanted or not, one page after another, where HEADs go 32 at
# a time: past about this many objects per wanted file it is the slower way (and on S3, where a LIST
# costs 12.5 HEADs, the dearer one), so the listing stops there and the files not yet found get HEADs.
_LISTED_PER_WANTED = 10


def listed_infos(
    rows: Iterable[tuple[str, str]],
    storage: StorageConfig,
    *,
    min_per_folder: int = MIN_PER_FOLDER,
    on_found: Callable[[int], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """video_id -> the file's info from its folder's listing, for (video_id, uri) rows of object stores
    whose folder holds at least `min_per_folder` of them. Rows the listing does not find, and folders
    whose listing fails (no s3:ListBucket permission, a store that does not answer), are left out.
    `on_found` hears how many rows each page of a listing answered for (a flat folder of a million
    files is a thousand pages, listed one after another)."""
    folders: dict[tuple[str, str], dict[str, list[str]]] = {}  # (bucket, prefix) -> path -> video ids
    systems: dict[str, Any] = {}
    for video_id, uri in rows:
        if scheme_of(uri) not in S3_SCHEMES:
            continue
        try:
            fs, path = filesystem(uri, storage)
        except ValueError:  # an unusable uri: its HEAD says why
            continue
        if getattr(fs, "version_aware", False):
            continue  # a versioned listing names versions; the HEAD reads the current one
        bucket, _, key = path.partition("/")
        prefix = key.rpartition("/")[0]
        systems.setdefault(bucket, fs)
        folders.setdefault((bucket, prefix), {}).setdefault(path, []).append(video_id)
    listed = [(folder, wanted) for folder, wanted in folders.items() if sum(map(len, wanted.values())) >= min_per_folder]
    found: dict[str, dict[str, Any]] = {}
    failed = threading.Event()  # one failed listing (denied, or a store not answering: ~40 s of retries
    # each) and the rest are not tried either: their HEADs answer, and count a store that is down

    def answer(item: tuple[tuple[str, str], dict[str, list[str]]]) -> dict[str, dict[str, Any]]:
        (bucket, prefix), wanted = item
        if failed.is_set():
            return {}
        infos = _list_folder(systems[bucket], bucket, prefix, wanted, on_found)
        if infos is None:
            failed.set()
        return infos or {}

    with ThreadPoolExecutor(max_workers=_LISTINGS_AT_ONCE, thread_name_prefix="vidbatch-list") as pool:
        answers = pool.map(answer, listed)
        for ((_, _), wanted), infos in zip(listed, answers, strict=True):
            for path, info in infos.items():
                for video_id in wanted[path]:
                    found[video_id] = info
    return found


def _list_folder(
    fs: Any, bucket: str, prefix: str, wanted: dict[str, list[str]], on_found: Callable[[int], None] | None
) -> dict[str, dict[str, Any]] | None:
    """The infos of the `wanted` paths directly under bucket/prefix, page by page (a folder of a
    million objects is never held whole); None when the folder cannot be listed."""
    said = 0  # rows reported found: taken back if the listing fails, as their HEADs count them then
    budget = max(_PAGE, _LISTED_PER_WANTED * len(wanted))

    def found(rows: int) -> None:
        nonlocal said
        if on_found is not None and rows:
            on_found(rows)
            said += rows

    async def collect() -> dict[str, dict[str, Any]]:
        infos = {}
        rows = 0
        seen = 0
        async for info in fs._iterdir(bucket, prefix=f"{prefix}/" if prefix else ""):
            if info.get("type") == "file" and info.get("name") in wanted:
                infos[info["name"]] = info
                rows += len(wanted[info["name"]])
                if rows >= _SAID_EVERY:
                    found(rows)
                    rows = 0
            seen += 1
            # every wanted file found; or far more files than wanted (the rest get their HEADs)
            if len(infos) == len(wanted) or seen >= budget:
                break
        found(rows)
        return infos

    try:
        return sync(fs.loop, collect)
    except Exception:  # denied, not answering, or an s3fs without _iterdir: the HEADs answer instead
        found(-said)
        return None
