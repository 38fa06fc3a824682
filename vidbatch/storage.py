"""Where bytes live: local paths and fsspec URIs (s3://, gs://, ...).

Credentials are never handled here: fsspec/botocore and deltalake find them in the
environment, config files or instance roles, as the AWS SDKs do. Only non-secret
settings (endpoint, region) come from the job file. How a failure of the store becomes a row's status
and its message is vidbatch.storage_failures'.
"""

from __future__ import annotations

import functools
import os
import re
import stat
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import IO, Any, cast
from urllib.parse import unquote, urlsplit

import fsspec
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem

from vidbatch.config import StorageConfig
from vidbatch.errors import JobError, VideoError
from vidbatch.storage_failures import NOT_FOUND_MESSAGE, clean_error_text, explain_failure, install_hint, storage_failure

S3_SCHEMES = frozenset({"s3", "s3a"})  # one object store under two names


def scheme_of(uri: str) -> str:
    scheme = urlsplit(uri).scheme
    # "C:\\videos" or a bare path: local.
    return "file" if len(scheme) <= 1 else scheme.lower()


@functools.cache
def missing_filesystem(scheme: str) -> str | None:
    """Why this process cannot read `scheme` URIs (its fsspec implementation is not installed), or None.

    fsspec knows gs/az/... by name but imports gcsfs/adlfs only on first use; asked once per scheme
    so that a manifest's rows can be refused with the fix instead of failing one by one in the decoders.
    """
    if scheme == "file":
        return None
    try:
        fsspec.get_filesystem_class(scheme)
    except ImportError as exc:
        return (
            f"reading {scheme}:// needs a package that is not installed where this run reads its inputs "
            f"({install_hint(exc)}); "
            f"install it there, or drop {scheme!r} from inputs.allowed_schemes"
        )
    except ValueError:  # not an fsspec protocol at all: the uri policy names it
        return None
    return None


def is_local(uri: str) -> bool:
    return scheme_of(uri) == "file"


def local_path(uri: str) -> str:
    """The filesystem path of a local uri: a file: uri's path is percent-encoded (RFC 8089; its scheme,
    like any, is case-insensitive: FILE:///x is /x), a plain path is literal."""
    parts = urlsplit(uri)
    return unquote(parts.path) if parts.scheme.lower() == "file" else uri


# Throttling (503 SlowDown), 5xx answers and dropped connections are retried by botocore
# with exponential backoff and jitter; "adaptive" also slows this process's request rate
# while the store keeps throttling. s3fs adds its own retries for timeouts and truncated
# bodies around that.
S3_RETRY = {"mode": "adaptive", "max_attempts": 8}
# s3fs wraps both the request and the body read in its own retry loop (nested: the counts
# multiply with botocore's and aiohttp's own retry of a dropped pooled connection).
S3_FS_RETRIES = 2
# deltalake's object_store retries on its own (its defaults: 10 retries within 3 minutes); options
# given here override them (the tests give few, so that a store that is down fails in seconds).
DELTA_RETRY: dict[str, str] = {}
S3_CONNECT_TIMEOUT_S = 10
S3_READ_TIMEOUT_S = 60

# Videos are read through a file object by range requests of this size; a few blocks
# are kept so that a demuxer going back to the header (mp4 `moov` at the end) does not
# fetch them again. Memory per open video: at most VIDEO_MAX_BLOCKS * VIDEO_BLOCK_SIZE.
VIDEO_BLOCK_SIZE = 4 * 1024 * 1024
VIDEO_MAX_BLOCKS = 4


def s3_endpoint(storage: StorageConfig) -> str | None:
    """The job file's storage.endpoint_url wins; else the standard AWS variables."""
    return storage.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def fsspec_options(uri: str, storage: StorageConfig) -> dict[str, Any]:
    """s3fs settings: endpoint, region, retries, timeouts. Never credentials."""
    if scheme_of(uri) not in S3_SCHEMES:
        return {}
    retries = dict(S3_RETRY)
    if storage.max_attempts is not None:
        retries["max_attempts"] = storage.max_attempts
    options: dict[str, Any] = {
        "anon": storage.anon,
        "config_kwargs": {
            "retries": retries,
            "connect_timeout": S3_CONNECT_TIMEOUT_S,
            "read_timeout": S3_READ_TIMEOUT_S,
        },
    }
    endpoint = s3_endpoint(storage)
    client_kwargs: dict[str, Any] = {}
    if endpoint:
        client_kwargs["endpoint_url"] = endpoint
    if storage.region:
        client_kwargs["region_name"] = storage.region
    if client_kwargs:
        options["client_kwargs"] = client_kwargs
    return options


def filesystem(uri: str, storage: StorageConfig) -> tuple[fsspec.AbstractFileSystem, str]:
    if is_local(uri):
        return fsspec.filesystem("file"), os.path.abspath(local_path(uri))
    # A scheme is case-insensitive (RFC 3986; `S3://` passes inputs.allowed_schemes as s3), and
    # fsspec knows only the lower-case names: "Protocol not known: S3" made such rows invalid_uri.
    scheme, rest = uri.split("://", 1) if "://" in uri else ("", uri)
    fs, path = url_to_fs(f"{scheme.lower()}://{rest}" if scheme else uri, **fsspec_options(uri, storage))
    if scheme_of(uri) in S3_SCHEMES:
        fs.retries = S3_FS_RETRIES  # a class attribute in s3fs, not a constructor argument
    return fs, path


def source_fingerprint(info: dict[str, Any]) -> str:
    """ETag where the store has one, else size + mtime: changes when the bytes change."""
    size = info.get("size")
    etag = info.get("ETag") or info.get("etag")
    if etag:
        return f"etag={str(etag).strip(chr(34))};size={size}"
    return f"size={size};mtime={modified_time(info)}"


def fingerprint_size(fingerprint: str | None) -> int | None:
    """The size in bytes a source_fingerprint records (None for no fingerprint, a settled failure's
    or one whose store gave no size): the nightly stat's size of a file, read back without another."""
    if not fingerprint:
        return None
    start = 5 if fingerprint.startswith("size=") else fingerprint.find(";size=") + 6
    if start < 5:  # no size in it
        return None
    end = fingerprint.find(";", start)
    value = fingerprint[start:] if end < 0 else fingerprint[start:end]
    return int(value) if value.isdigit() else None


def modified_time(info: dict[str, Any]) -> float | None:
    """Last-modified time as POSIX seconds, from local (mtime) or object-store (LastModified) info."""
    value: Any = info.get("mtime") or info.get("LastModified") or info.get("last_modified")
    if value is None:
        return None
    if hasattr(value, "timestamp"):
        return float(value.timestamp())
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def is_pipe_or_device(info: dict[str, Any]) -> bool:
    """fsspec's type "other": a pipe, socket or device, where reading could block for ever."""
    return info.get("type") == "other"


_A_DIRECTORY = "the uri names a directory, not a video file; point it at the video file"
_A_PIPE = "the uri names a pipe or device, not a regular file; give a video file"


def stat_video(uri: str, storage: StorageConfig) -> tuple[dict[str, Any], fsspec.AbstractFileSystem, str]:
    """fs.info() with the errors sorted into statuses."""
    try:
        fs, path = filesystem(uri, storage)
    except ValueError as exc:
        raise VideoError("invalid_uri", f"the uri cannot be opened ({clean_error_text(exc)})") from exc
    try:
        info = fs.info(path)
    except Exception as exc:
        failure = storage_failure(exc)
        hint = _misspelled(uri, path) if failure.status == "not_found" and failure.message == NOT_FOUND_MESSAGE else None
        raise (VideoError("not_found", f"{NOT_FOUND_MESSAGE}; {hint}") if hint else failure) from exc
    if info.get("type") == "directory":
        raise VideoError("not_found", _A_DIRECTORY)
    if is_pipe_or_device(info):
        raise VideoError("unreadable", _A_PIPE)
    return info, fs, path


_WINDOWS_PATH = re.compile(r"^(?:[A-Za-z]:[\\/]|\\\\)")


def _misspelled(uri: str, path: str) -> str | None:
    """Why a uri that names nothing may still mean a file that is there, in the manifest's own spelling:
    the message said only 'no object at this uri' for a uri a manifest tool padded with a space, a
    '~' no shell expanded, a Windows path, or a name in another Unicode form than the disk's (macOS
    writes names decomposed, NFD; most tools compose them, NFC)."""
    if uri != uri.strip():  # the uri itself is not repeated: the message is written where credentials may not be
        where = " and ".join(end for end, padded in (("begins", uri != uri.lstrip()), ("ends", uri != uri.rstrip())) if padded)
        return f"the uri {where} with blank space (a space or tab); strip it in the manifest"
    if uri.startswith("~"):
        return "a leading '~' is not expanded (it is read as a folder named '~'); give the absolute path"
    if _WINDOWS_PATH.match(uri):
        return "this is a Windows path; give the path (or uri) under which this machine reads the file"
    if scheme_of(uri) != "file":
        return None
    folder, name = os.path.split(path)
    for form in ("NFC", "NFD"):
        other = unicodedata.normalize(form, name)
        if other != name and os.path.lexists(os.path.join(folder, other)):
            return (
                f"a file whose name differs only in its Unicode form ({form}) is there: write the name as the disk "
                "has it (file names are compared byte for byte)"
            )
    return None


@contextmanager
def open_source(
    fs: fsspec.AbstractFileSystem, path: str, *, allowed_roots: tuple[str, ...] = (), block_size: int = VIDEO_BLOCK_SIZE
) -> Iterator[str | IO[bytes]]:
    """A local path for FFmpeg's own file I/O, or a seekable file object that reads by range.

    A local file is opened here first and checked as opened (see `_opened_local`): it must be a
    regular file and, when `allowed_roots` are given, really lie under one of them.

    Only the blocks the demuxer touches are fetched (one ranged GET each), and at most
    VIDEO_MAX_BLOCKS of them are held: a video is never downloaded whole into memory.
    A read that fails past every retry raises VideoError (through FFmpeg, which hands a
    file object's exceptions back unchanged), so the row gets a status, not decode_error.
    """
    if isinstance(fs, LocalFileSystem):
        with _opened_local(path, allowed_roots) as opened:
            yield opened
        return
    try:
        handle = fs.open(
            path, "rb", block_size=block_size, cache_type="blockcache", cache_options={"maxblocks": VIDEO_MAX_BLOCKS}
        )
    except Exception as exc:
        raise storage_failure(exc) from exc
    with handle:
        yield cast(IO[bytes], _SourceReader(handle))


@contextmanager
def _opened_local(path: str, allowed_roots: tuple[str, ...]) -> Iterator[str | IO[bytes]]:
    """The local file, opened once and checked as opened; FFmpeg reads that same open file.

    The plan checked the uri against inputs.allowed_roots on the driver, maybe hours before the
    decode: a file or folder swapped for a symlink since then would send FFmpeg outside the roots,
    and a pipe swapped in would block its open for ever. So the file is opened here without
    blocking, its type and real path are checked on the open file, and FFmpeg is given the open
    file itself (/proc/self/fd/N: a later swap of the path cannot redirect it).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise storage_failure(exc) from exc
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise VideoError("not_found", _A_DIRECTORY)
        if not stat.S_ISREG(mode):
            raise VideoError("unreadable", _A_PIPE)
        by_descriptor = f"/proc/self/fd/{fd}"
        if os.path.exists(by_descriptor):
            real = os.readlink(by_descriptor)
            if allowed_roots and not within_roots(real, allowed_roots):
                raise VideoError("invalid_uri", OUTSIDE_ROOTS_NOW)
            yield by_descriptor
            return
        # No /proc (not Linux): the path's real target must be the file that was opened, and FFmpeg
        # reads the open file through Python.
        real = os.path.realpath(path)
        opened = os.fstat(fd)
        try:
            now = os.stat(real)
        except OSError:
            now = None
        if allowed_roots and (
            now is None or (now.st_dev, now.st_ino) != (opened.st_dev, opened.st_ino) or not within_roots(real, allowed_roots)
        ):
            raise VideoError("invalid_uri", OUTSIDE_ROOTS_NOW)
        with os.fdopen(os.dup(fd), "rb") as handle:
            yield cast(IO[bytes], handle)
    finally:
        os.close(fd)


OUTSIDE_ROOTS_NOW = (
    "the file lies outside inputs.allowed_roots when opened (the path leads through a link that was changed "
    "after the run was planned); check who changes the library's links, or add the folder to inputs.allowed_roots"
)


def within_roots(real_path: str, roots: tuple[str, ...]) -> bool:
    """Whether a real (symlink-free) path lies in or under one of `roots` (resolved here)."""
    for root in roots:
        real_root = os.path.realpath(root)
        if real_path == real_root or real_path.startswith(real_root.rstrip(os.sep) + os.sep):
            return True
    return False


class _SourceReader:
    """The file object FFmpeg reads through: storage errors become statuses."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle

    def read(self, size: int = -1) -> bytes:
        try:
            return bytes(self._handle.read(size))
        except Exception as exc:
            raise storage_failure(exc) from exc

    def seek(self, offset: int, whence: int = 0) -> int:
        try:
            return int(self._handle.seek(offset, whence))
        except Exception as exc:
            raise storage_failure(exc) from exc

    def tell(self) -> int:
        return int(self._handle.tell())

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    @property
    def size(self) -> int:
        return int(self._handle.size)

    def close(self) -> None:
        self._handle.close()


def delta_storage_options(uri: str, storage: StorageConfig) -> dict[str, str]:
    """Options for deltalake's object_store, for this process only (never logged, never shipped to Ray).

    object_store finds credentials in the environment and in instance/container roles by
    itself; credentials that only botocore can find (~/.aws files, AWS_PROFILE, SSO,
    credential_process) are resolved here, fresh on every call, so output tables work
    with whatever the job's video reads work with.
    """
    if scheme_of(uri) not in S3_SCHEMES:
        return {}
    options: dict[str, str] = {}
    endpoint = s3_endpoint(storage)
    if endpoint:
        options["AWS_ENDPOINT_URL"] = endpoint
        if endpoint.startswith("http://"):
            options["AWS_ALLOW_HTTP"] = "true"
        # S3-compatible stores (MinIO, moto, Ceph) support conditional writes by ETag;
        # this makes concurrent commits safe without a DynamoDB lock table.
        options["conditional_put"] = "etag"
    if storage.region:
        options["AWS_REGION"] = storage.region
    options.update(DELTA_RETRY)
    if storage.anon:
        options["AWS_SKIP_SIGNATURE"] = "true"
    else:
        options.update(_credentials_object_store_cannot_find(with_region="AWS_REGION" not in options))
    return options


# botocore's names for the sources object_store reads by itself.
_OBJECT_STORE_NATIVE = frozenset({"env", "iam-role", "container-role", "assume-role-with-web-identity"})


def _credentials_object_store_cannot_find(*, with_region: bool) -> dict[str, str]:
    if os.environ.get("AWS_ACCESS_KEY_ID") and os.environ.get("AWS_SECRET_ACCESS_KEY"):
        return {}
    try:
        import botocore.session

        session = botocore.session.Session()
        credentials = session.get_credentials()
        region = session.get_config_variable("region")
    except Exception:  # a broken profile: let object_store report what it finds
        return {}
    found: dict[str, str] = {}
    if credentials is not None and credentials.method not in _OBJECT_STORE_NATIVE:
        frozen = credentials.get_frozen_credentials()
        found = {"AWS_ACCESS_KEY_ID": frozen.access_key, "AWS_SECRET_ACCESS_KEY": frozen.secret_key}
        if frozen.token:
            found["AWS_SESSION_TOKEN"] = frozen.token
    if with_region and region and not (os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")):
        found["AWS_REGION"] = str(region)
    return found


def join_uri(root: str, *parts: str) -> str:
    return "/".join([root.rstrip("/"), *parts])


def check_destination(uri: str) -> None:
    """JobError now, before any work, when a local file cannot be written at `uri` (a folder is
    there, a folder on its path is a file, or the folder cannot be written)."""
    if not is_local(uri):
        return  # an object store answers only when written to
    path = os.path.abspath(local_path(uri))
    if os.path.isdir(path):
        raise JobError(f"{uri!r} is a folder; give a file name in it")
    parent = os.path.dirname(path)
    existing = parent
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise JobError(f"{uri!r} cannot be written: {existing!r} on its path is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise JobError(f"{uri!r} cannot be written: the folder {existing!r} is not writable")


@contextmanager
def replaced_file(uri: str, storage: StorageConfig, mode: str = "wb") -> Iterator[IO[Any]]:
    """A file written beside `uri` and moved onto it once whole: a failure or a refusal midway
    leaves what was there before (a good file from the night before), not a truncated one."""
    check_destination(uri)
    fs, path = filesystem(uri, storage)
    if is_local(uri) and "/" in path:
        fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    partial = f"{path}.partial-{os.getpid()}-{int.from_bytes(os.urandom(4), 'big'):08x}"
    try:
        with fs.open(partial, mode) as handle:
            yield handle
        fs.mv(partial, path)
    except BaseException as exc:
        with suppress(Exception):
            fs.rm(partial)
        if isinstance(exc, OSError):
            raise JobError(f"writing {uri!r} failed ({explain_failure(exc)}); what was there is left as it was") from exc
        raise
