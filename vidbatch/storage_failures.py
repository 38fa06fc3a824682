"""How a failure of the store is sorted into a row's status, and said.

A store's errors come from many libraries (the operating system, s3fs/botocore, aiohttp for http(s),
deltalake's object_store); a row gets a status and a message that names the cause without a URL's
query string or user info. Apart from vidbatch.storage (where bytes live) so that the wording and
sorting of failures can change without touching how files are found and opened.
"""

from __future__ import annotations

import errno
import re

from vidbatch.errors import UNREACHABLE, Status, VideoError
from vidbatch.redaction import redact_text


def install_hint(exc: ImportError) -> str:
    """The first line of fsspec's ImportError, which names the package to install."""
    lines = clean_error_text(exc).strip().splitlines()
    return lines[0] if lines else "a package it needs is missing"


NOT_FOUND_MESSAGE = "no object at this uri; check the manifest or whether it was deleted"
_DENIED = "access denied; grant the job's identity read access to this object"


_NO_CREDENTIALS = frozenset({"NoCredentialsError", "PartialCredentialsError"})

# A path the file system refuses for what it is: the same answer every night, so a permanent status
# (not `timeout`, which would retry it every run).
_PATH_ERRORS: dict[int, tuple[Status, str]] = {
    errno.ELOOP: ("not_found", "the path loops through symbolic links (ELOOP); fix the link or the manifest row"),
    errno.ENOTDIR: ("not_found", "a folder in the path is a file (ENOTDIR); check the manifest row"),
    errno.ENAMETOOLONG: (
        "invalid_uri",
        "the path or a name in it is longer than the file system allows (ENAMETOOLONG); fix the manifest row",
    ),
}


def storage_failure(exc: BaseException) -> VideoError:
    """A failure of the store itself (throttling or dropped connections past every retry, timeouts).

    Status `timeout`: transient, so the next run tries the video again. The message names
    the error's type and HTTP status only: no URL, query string or credential can ride along.
    """
    if isinstance(exc, VideoError):
        return exc
    from_http = isinstance(exc, FileNotFoundError) or type(exc).__name__ == "ClientResponseError"  # aiohttp's
    if from_http and (answered := _http_failure(exc)) is not None:
        return answered
    if isinstance(exc, FileNotFoundError):
        return VideoError("not_found", NOT_FOUND_MESSAGE)
    if isinstance(exc, PermissionError):
        return VideoError("access_denied", _DENIED)
    if isinstance(exc, OSError) and exc.errno in _PATH_ERRORS:
        path_status, problem = _PATH_ERRORS[exc.errno]
        return VideoError(path_status, problem)
    if type(exc).__name__ in _NO_CREDENTIALS:  # botocore's; not transient, so not `timeout`
        return VideoError(
            "access_denied",
            "no credentials for the object store were found; set AWS credentials for the job or storage.anon: true",
        )
    if type(exc).__name__ == "ParamValidationError":  # botocore refused the address before any request
        return VideoError(
            "invalid_uri",
            "the uri is not a valid object-store address (a bucket name has only a-z, 0-9, '.' and '-', "
            "and credentials do not belong in it); fix the manifest row",
        )
    if type(exc).__name__ in _STORE_UNREACHABLE:
        return VideoError(
            "timeout",
            f"the object store did not answer ({type(exc).__name__}, after retries); the next run tries it again",
            error_type=UNREACHABLE,
        )
    response = getattr(exc, "response", None)
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode") if isinstance(response, dict) else None
    detail = f"{type(exc).__name__}" + (f", HTTP {status}" if status else "")
    if isinstance(exc, OSError) and exc.errno is not None and exc.filename is not None:
        # The operating system's (it names the file; s3fs's translated errors do not): a failing disk's
        # EIO, a stale NFS handle. Said as the file system's failure, not the object store's.
        detail = f"{errno.errorcode.get(exc.errno, exc.errno)}: {exc.strerror}"
        return VideoError("timeout", f"the file system failed to read this video ({detail}); the next run tries it again")
    return VideoError(
        "timeout",
        f"the object store failed to serve this video after retries ({detail}); the next run tries it again",
    )


# botocore's errors for an endpoint that could not be reached or did not answer in time (by name:
# botocore comes with s3fs, and only an s3 uri can raise them). An answer, even a 503, is not one.
_STORE_UNREACHABLE = frozenset(
    {"EndpointConnectionError", "ConnectTimeoutError", "ConnectionClosedError", "ProxyConnectionError", "ReadTimeoutError"}
)
# aiohttp's errors for a server that could not be reached or did not answer in time (by name: aiohttp
# is fsspec's dependency for http, not vidbatch's).
_HTTP_UNREACHABLE = frozenset(
    {"ClientConnectorError", "ClientOSError", "ServerDisconnectedError", "ServerTimeoutError", "TimeoutError"}
)


def _http_failure(exc: BaseException) -> VideoError | None:
    """What an http(s) server really answered: fsspec's HTTP file system raises FileNotFoundError
    for every failed look (info), with aiohttp's error as its cause, but aiohttp's ClientResponseError
    itself from a failed ranged read (a presigned URL that expired between the plan's look and the
    decode). A refusal (401/403: an expired presigned URL, most often) is access_denied, a server that
    could not be reached or failed (5xx, 429) transient; None when the cause is not such an answer (a
    real 404 stays not_found)."""
    cause = exc.__cause__ if isinstance(exc, FileNotFoundError) else exc
    if cause is None:
        return None
    name = type(cause).__name__
    status = getattr(cause, "status", None)
    if name == "ClientResponseError" and status in (401, 403):
        return VideoError(
            "access_denied",
            f"the server refused access (HTTP {status}); a presigned URL may have expired: put a fresh one in the manifest",
        )
    if name in _HTTP_UNREACHABLE:
        return VideoError(
            "timeout", f"the server did not answer ({name}); the next run tries it again", error_type=UNREACHABLE
        )
    if name == "ClientResponseError" and isinstance(status, int) and (status >= 500 or status == 429):
        return VideoError("timeout", f"the server failed to serve this video (HTTP {status}); the next run tries it again")
    return None


# Substrings of a store's error (deltalake's object_store and botocore spell them out) -> what they
# mean; the first match wins.
_CAUSES = (
    # object_store asking a cloud's metadata server for a token and being refused (a "403 Forbidden"
    # in its chain): no credentials were found, not a bucket refusing them.
    # AWS's instance metadata service (IMDSv2 token at 169.254.169.254, ECS at 169.254.170.2)
    # is asked last, when the environment and ~/.aws hold no credentials.
    (
        ("Error performing token request", "169.254.169.254", "169.254.170.2"),
        "no credentials were found: none in the environment or ~/.aws, and no instance role gave a token",
    ),
    (("NoSuchBucket",), "its bucket does not exist"),
    (("dns error", "Name or service not known", "nodename nor servname"), "the endpoint's host name does not resolve"),
    (("Connection refused", "client error (Connect)", "Could not connect"), "nothing answers at the endpoint"),
    (("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403 Forbidden"), "access denied"),
    (("NoCredentialsError", "Unable to locate credentials"), "no credentials were found"),
    # A local or mounted file system's refusals, as object_store (Rust) and Python word them.
    (("No space left on device", "os error 28)"), "no space is left on the device"),
    (("Read-only file system", "os error 30)"), "the file system is read-only"),
    (
        ("Operation not permitted", "Permission denied", "os error 1)", "os error 13)"),
        "permission denied by the file system (its permissions, or a folder made read-only or immutable)",
    ),
)


def explain_failure(exc: BaseException) -> str:
    """What a failure of the store means, when it is one of the usual ones; else describe_failure."""
    if isinstance(exc, ImportError):  # fsspec names the package to install (gcsfs, adlfs, ...)
        return f"a package it needs is not installed here; {install_hint(exc)}"
    text = f"{type(exc).__name__}: {exc}"
    for needles, meaning in _CAUSES:
        if any(needle in text for needle in needles):
            return meaning
    return describe_failure(exc)


def describe_failure(exc: BaseException) -> str:
    """`Type: first line of the message` for a one-line error: no query string, no XML body."""
    first = clean_error_text(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}" if first and first != type(exc).__name__ else type(exc).__name__


def error_text(exc: BaseException) -> str:
    """An error's text as it may be written to a row or a log: on one line (a line break in it would split a
    log line), without query strings or user info (see clean_error_text)."""
    return " ".join(clean_error_text(exc).split())


def clean_error_text(exc: BaseException) -> str:
    """An error's text without query strings (signatures, tokens), without the user info of a URL in it
    (a password), and at most 160 characters."""
    return re.sub(r"\?[^\s\"']*", "?...", redact_text(str(exc)))[:160] or type(exc).__name__
