"""Whether an object store's uri names its bucket (or a web uri its host), and more than the bucket.

A pure function of the string, importing nothing of vidbatch, so that the job file's validation
(config), the manifest's rows (uri_policy) and the output's checks (state) all use it.
"""

from __future__ import annotations

from urllib.parse import urlsplit

# Schemes whose uri starts with the bucket (container, host): `s3://` alone, or `s3:///key`, has none.
# (memory:// is not among them: its uris are paths, memory:///x as well as memory://x.)
_BUCKET_SCHEMES = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl"})
_HOST_SCHEMES = frozenset({"http", "https"})


def missing_bucket(uri: str) -> str | None:
    """What the uri lacks ("names no bucket (write s3://BUCKET/...)"), or None when it names one (or has no such part).

    Such a uri was read as a directory (`s3://` as the store's root: "names a directory") or as a
    path that fsspec could not place, and the message said something else than the missing bucket."""
    scheme, separator, _ = uri.partition("://")
    kind = "bucket" if scheme.lower() in _BUCKET_SCHEMES else "host" if scheme.lower() in _HOST_SCHEMES else None
    if not separator or kind is None or urlsplit(uri).netloc:
        return None
    return f"names no {kind} (write {scheme}://{kind.upper()}/...)"


def bucket_only(uri: str) -> str | None:
    """What a video's uri lacks when it names a bucket and nothing in it (`s3://media`, `s3://media/`,
    `abfs://container@account.dfs.core.windows.net/`), else None.

    A video is an object, never a bucket: such a row was stat'ed as the bucket's root ("names a
    directory", `not_found`) or, for a bucket that does not exist, said "no object at this uri". For a
    manifest or an output a bucket's root is a place like any folder: only the rows' uris are held to this.
    The bucket's name is not repeated (a uri's authority may carry user:password@)."""
    scheme, separator, rest = uri.partition("://")
    if not separator or scheme.lower() not in _BUCKET_SCHEMES or missing_bucket(uri) is not None:
        return None
    _, _, key = rest.partition("/")  # the raw key: '#' and '?' are characters of an S3 key, not a fragment or query
    if key.strip("/"):
        return None
    return f"names a bucket, not a video (write {scheme}://BUCKET/path/to/video)"
