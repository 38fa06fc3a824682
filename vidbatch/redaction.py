"""What may be written or printed of a uri or an error's text: no password, token or signature
(DESIGN guarantee 5: no credential ever appears in outputs, summaries or logs).

Pure functions of strings, importing nothing of vidbatch, so that the job file's validation
(config) can use them as well as the manifest's rows (uri_policy) and the error messages (storage).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

REDACTED = "REDACTED"
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
# Query keys that carry a credential: presigned S3 and GCS URLs (X-Amz-Signature, X-Amz-Credential,
# X-Amz-Security-Token, X-Goog-Signature), Azure SAS tokens (sig), and the usual token/key/password.
_CREDENTIAL_QUERY_KEY = re.compile(r"signature|sig$|token|credential|secret|passw|pwd|key", re.IGNORECASE)
# A URL's user info anywhere in a text (an error message quoting the URL it failed on).
_USER_INFO_IN_TEXT = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://)[^/\s@\"']+@")


def _scheme(uri: str) -> str:
    scheme = urlsplit(uri).scheme
    return "file" if len(scheme) <= 1 else scheme.lower()  # "C:\\videos" or a bare path: local


def redact_uri(uri: str | None) -> str | None:
    """The uri as it may be written to outputs: no password, token or signature.

    A manifest may hold presigned or basic-auth URLs (`https://user:pw@host/v.mp4?X-Amz-Signature=...`):
    the user info and every query value but a version id become REDACTED. A plain path, and an
    S3 key (`s3://bucket/what?.mp4`), are written as given: '?' is a character of the name there,
    as the file system that reads them takes it.
    """
    if uri is None or "://" not in uri:
        return uri
    if _scheme(uri) in _KEY_IS_THE_PATH_SCHEMES:
        bucket_and_key = uri.split("://", 1)[1]
        head, slash, key = bucket_and_key.partition("/")
        if "@" in head:  # user info before the bucket: a key pair some tools accept there
            return f"{uri.split('://', 1)[0]}://{REDACTED}@{head.rsplit('@', 1)[1]}{slash}{key}"
        return uri
    parts = urlsplit(uri)
    netloc = parts.netloc
    if "@" in netloc and _scheme(uri) not in _CONTAINER_AT_ACCOUNT_SCHEMES:
        netloc = f"{REDACTED}@{netloc.rsplit('@', 1)[1]}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, v if k in _PLAIN_QUERY_KEYS else REDACTED) for k, v in pairs], safe="")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def credentials_in_uri(uri: str) -> str | None:
    """What credential a uri of the job file carries (user info, or a signature or token in its query
    string), or None. Such a uri would be printed by `check`, written to every run's started.json and
    shown in Ray's dashboard by `submit`; credentials belong in the environment instead."""
    if "://" not in uri:
        return None
    scheme = _scheme(uri)
    authority = uri.split("://", 1)[1].split("/", 1)[0]
    if "@" in authority and scheme not in _CONTAINER_AT_ACCOUNT_SCHEMES:
        return "user info (a name or key and a password or secret before '@')"
    if scheme in _KEY_IS_THE_PATH_SCHEMES:
        return None  # '?' is a character of the key there, not a query string
    keys = [key for key, _ in parse_qsl(urlsplit(uri).query, keep_blank_values=True) if key not in _PLAIN_QUERY_KEYS]
    if any(_CREDENTIAL_QUERY_KEY.search(key) for key in keys):
        return "a signature or token in its query string"
    return None


def redact_text(text: str) -> str:
    """A free text (an error's message) with the user info of every URL in it replaced by REDACTED."""
    return _USER_INFO_IN_TEXT.sub(rf"\1{REDACTED}@", text)


# A URL inside a message or a record: up to a space or a quote (messages quote the values they name).
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")


def redact_uris_in(text: str) -> str:
    """`text` with every URL in it redacted as redact_uri does (DESIGN guarantee 5 for logs).

    Messages name the job's manifest, weights or output as the job gave them: a query string whose
    keys do not look like a credential (`?auth=...`) is taken by the job file, and redacted here."""
    return _URL_IN_TEXT.sub(lambda found: str(redact_uri(found.group(0))), text)


def redact_uris_in_record(value: Any) -> Any:
    """A JSON-like record (started.json's job, a summary) with every URL in its strings redacted."""
    if isinstance(value, str):
        return redact_uris_in(value)
    if isinstance(value, dict):
        return {key: redact_uris_in_record(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [redact_uris_in_record(item) for item in value]
    return value
