"""Which URIs a job may read: allowed schemes and local roots, no traversal tricks.

Pure function of the string: a refused uri becomes an `invalid_uri` row before any
I/O happens.
"""

from __future__ import annotations

import os
from urllib.parse import unquote, urlsplit

from vidbatch.config import InputPolicy
from vidbatch.redaction import REDACTED, redact_uri, redact_uris_in, redact_uris_in_record
from vidbatch.storage import local_path, scheme_of, within_roots
from vidbatch.uri_bucket import bucket_only, missing_bucket

__all__ = ["REDACTED", "redact_uri", "redact_uris_in", "redact_uris_in_record", "refusal_reason", "spelled_plainly"]


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
    if (lacking := missing_bucket(uri)) is not None:  # `s3://` alone was read as the store's root: "a directory"
        return f"the uri {lacking}; fix the manifest row"
    if (lacking := bucket_only(uri)) is not None:  # was read as the bucket's root: not_found, "names a directory"
        return f"the uri {lacking}; fix the manifest row"
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
            f"the uri names the host {urlsplit(uri).hostname!r}; file:// reads this machine's files only: "
            "write file:///path (or the plain path) for a local file, or serve the file from object storage"
        )
    if scheme == "file" and policy.allowed_roots and not within_roots(os.path.realpath(local_path(uri)), policy.allowed_roots):
        return "the file lies outside inputs.allowed_roots; move it or add its folder there"
    return None


def spelled_plainly(uri: str) -> tuple[str, str]:
    """A uri as (scheme, the rest), with the spellings of one place made one: the scheme in lower case,
    s3a read as s3 (one object store, two names), a plain path as file (file:///x and /x alike)."""
    scheme, separator, rest = uri.partition("://")
    if not separator:
        return "file", uri
    scheme = scheme.lower()
    return {"s3a": "s3"}.get(scheme, scheme), rest
