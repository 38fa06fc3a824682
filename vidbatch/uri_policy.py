"""Which URIs a job may read: allowed schemes and local roots, no traversal tricks.

Pure function of the string: a refused uri becomes an `invalid_uri` row before any
I/O happens.
"""

from __future__ import annotations

import os
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from vidbatch.config import InputPolicy
from vidbatch.storage import local_path, scheme_of, within_roots


def refusal_reason(uri: object, policy: InputPolicy) -> str | None:
    """None when the uri may be read, else a message saying what is wrong."""
    if uri is None:
        return "the manifest's uri is empty; fill it in or remove the row"
    if not isinstance(uri, str) or not uri.strip():
        return "the manifest's uri is empty; fill it in or remove the row"
    if any(ch in uri for ch in ("\x00", "\n", "\r")):
        if not any(ch in uri.strip() for ch in ("\x00", "\n", "\r")):  # a writer's trailing newline, most often
            return "the uri begins or ends with a line break; strip it in the manifest row"
        # Refused, not read: a name with a line break splits log lines and breaks tools downstream.
        return "the uri contains control characters (a line break or NUL); rename the file and fix the manifest row"
    scheme = scheme_of(uri)
    if scheme not in policy.allowed_schemes:
        allowed = ", ".join(policy.allowed_schemes)
        return f"scheme {scheme!r} is not allowed (allowed: {allowed}; see inputs.allowed_schemes)"
    path = urlsplit(uri).path if "://" in uri else uri
    decoded = unquote(unquote(path))
    if any(ch in decoded for ch in ("\x00", "\n", "\r")):
        return (
            "the uri contains control characters (a percent-encoded line break or NUL); rename the file and fix the manifest row"
        )
    if ".." in decoded.replace("\\", "/").split("/"):
        return "the uri contains a '..' path segment; give the direct path"
    if scheme == "file" and "://" in uri and urlsplit(uri).netloc not in ("", "localhost"):
        # file://host/path would read /path of this machine: not the file the row names.
        return (
            f"the uri names the host {urlsplit(uri).netloc!r}; file:// reads this machine's files only: "
            "write file:///path (or the plain path) for a local file, or serve the file from object storage"
        )
    if scheme == "file" and policy.allowed_roots and not within_roots(os.path.realpath(local_path(uri)), policy.allowed_roots):
        return "the file lies outside inputs.allowed_roots; move it or add its folder there"
    return None


# Query parameters that name a thing rather than grant access; every other value is redacted.
_PLAIN_QUERY_KEYS = frozenset({"versionId", "version", "generation"})
# Object stores whose fsspec file systems read '?' and '#' as characters of the key (s3fs splits
# off only '?versionId='): such a uri has no query string to redact, and redacting one would
# name a key other than the one that was read. (Azure's are not among them: a SAS token rides
# in a query string there, and is redacted.)
_KEY_IS_THE_PATH_SCHEMES = frozenset({"s3", "s3a", "memory"})
# Azure's uris name the container before '@' (abfs://container@account.dfs.core.windows.net/x):
# that is no user info, and is kept.
_CONTAINER_AT_ACCOUNT_SCHEMES = frozenset({"az", "abfs", "abfss", "adl"})
REDACTED = "REDACTED"


def spelled_plainly(uri: str) -> tuple[str, str]:
    """A uri as (scheme, the rest), with the spellings of one place made one: the scheme in lower case,
    s3a read as s3 (one object store, two names), a plain path as file (file:///x and /x alike)."""
    scheme, separator, rest = uri.partition("://")
    if not separator:
        return "file", uri
    scheme = scheme.lower()
    return {"s3a": "s3"}.get(scheme, scheme), rest


def redact_uri(uri: str | None) -> str | None:
    """The uri as it may be written to outputs: no password, token or signature (DESIGN guarantee 5).

    A manifest may hold presigned or basic-auth URLs (`https://user:pw@host/v.mp4?X-Amz-Signature=...`):
    the user info and every query value but a version id become REDACTED. A plain path, and an
    S3 key (`s3://bucket/what?.mp4`), are written as given: '?' is a character of the name there,
    as the file system that reads them takes it.
    """
    if uri is None or "://" not in uri:
        return uri
    if scheme_of(uri) in _KEY_IS_THE_PATH_SCHEMES:
        bucket_and_key = uri.split("://", 1)[1]
        head, slash, key = bucket_and_key.partition("/")
        if "@" in head:  # user info before the bucket: a key pair some tools accept there
            return f"{uri.split('://', 1)[0]}://{REDACTED}@{head.rsplit('@', 1)[1]}{slash}{key}"
        return uri
    parts = urlsplit(uri)
    netloc = parts.netloc
    if "@" in netloc and scheme_of(uri) not in _CONTAINER_AT_ACCOUNT_SCHEMES:
        netloc = f"{REDACTED}@{netloc.rsplit('@', 1)[1]}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, v if k in _PLAIN_QUERY_KEYS else REDACTED) for k, v in pairs], safe="")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
