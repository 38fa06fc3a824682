"""Per-video statuses and the errors that carry them.

A video's failure is data, not an exception that escapes: stages catch `VideoError`
(and anything unexpected) and turn it into a status row.  `JobError` is the other
kind: a problem with the job itself (bad config, unwritable output, missing weights)
that must stop the run before any work starts.
"""

from __future__ import annotations

from typing import Literal, get_args

Status = Literal[
    "ok",
    "not_found",
    "access_denied",
    "invalid_uri",
    "unreadable",
    "no_video_stream",
    "decode_error",
    "too_short",
    "too_large",
    "timeout",
    "model_error",
]
STATUSES: tuple[str, ...] = get_args(Status)


# error_type of a video whose store or server did not answer at all (no connection, or none in
# time, past every retry): the store's state, not the file's. Enough of them in a row stop a run
# (limits.unreachable_in_a_row).
UNREACHABLE = "unreachable"


# What a person can do about a row a limit refused, said at the end of its message: such a row is a
# permanent failure, decoded again only when asked.
RAISE_LIMIT = "raise it and rerun with --retry-failed to process this video"


def out_of_memory_message(decode_memory_mb: int) -> str:
    return f"decoding needed more memory than limits.decode_memory_mb={decode_memory_mb}; {RAISE_LIMIT}"


class JobError(Exception):
    """The job cannot run as configured; the message says what to change."""


class Stopped(KeyboardInterrupt):
    """The run was told to stop (SIGTERM: `vidbatch stop`, Ray's job stop, Kubernetes), like Ctrl-C."""


class VideoError(Exception):
    """One video failed; `status` is its row's status, the message says what to do."""

    def __init__(
        self, status: Status, message: str, *, error_type: str | None = None, facts: dict[str, object] | None = None
    ) -> None:
        if status not in STATUSES or status == "ok":
            raise ValueError(f"VideoError needs a failure status, got {status!r}")
        super().__init__(message)
        self.status: Status = status
        self.message = message
        # The row's error_type: the status, unless a finer cause matters to the run (UNREACHABLE).
        self.error_type = error_type or status
        # What was learned about the video before it failed (duration_s, width, ...): its row keeps it.
        self.facts: dict[str, object] = dict(facts or {})
