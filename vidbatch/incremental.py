"""Nightly reruns: decide which videos need work, from the state kept in the output tables.

A video is skipped when its current `videos` row was made from the same bytes (source
fingerprint), the same uri, model and sampling (and, for an ok row, the same task, top_k
and precision), and ended in a status that will not change by trying again. Transient
failures (throttling, timeouts, lost results) are retried every run; permanent ones only
when the file, model or sampling changes, or with `--retry-failed`. There is no local ledger: the tables are the state.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from vidbatch.errors import UNREACHABLE
from vidbatch.uri_policy import redact_uri, redact_uris_in, spelled_plainly

# A retry of these cannot succeed until the file (or the model/sampling) changes.
# not_found / access_denied / invalid_uri, and a pipe's unreadable, are re-checked with a cheap stat
# every run (see _same_source); timeout and model_error are transient and always retried.
PERMANENT = frozenset(
    {
        "ok",
        "unreadable",
        "no_video_stream",
        "decode_error",
        "too_short",
        "too_large",
        "not_found",
        "access_denied",
        "invalid_uri",
    }
)


@dataclass(frozen=True, slots=True)  # one per videos row: millions of them in a driver's memory
class PriorVideo:
    uri: str | None
    fingerprint: str | None
    model_id: str | None
    sampling_id: str | None
    status: str
    error_type: str | None
    run_id: str | None
    num_clips: int
    error_message: str | None = None
    # The model settings beyond model_id of the run that made the row (ModelConfig.results_settings);
    # None when not known (a run from before they were recorded): such a row is not redone for them.
    results: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Decision:
    process: tuple[str, ...]  # to decode, in manifest order
    skip: tuple[str, ...]  # current row stays as it is
    removed: tuple[str, ...]  # in the tables, gone from the manifest
    new: int = 0
    changed: int = 0
    retried: int = 0
    reasons: Mapping[str, str] = field(default_factory=dict)
    # ok videos kept (in `skip`) although their file could not be looked at tonight (UNSEEN)
    unseen: tuple[str, ...] = ()


def decide(
    candidates: Iterable[tuple[str, str]],
    *,
    prior: Mapping[str, PriorVideo],
    fingerprints: Mapping[str, str | None],
    model_id: str,
    sampling_id: str,
    consistent: Mapping[str, bool],
    manifest_ids: Iterable[str],
    retry_failed: bool = False,
    results: Mapping[str, Any] | None = None,
    redo_runs: Collection[str] = frozenset(),
) -> Decision:
    """`candidates` are (video_id, uri) of rows that passed the plan; `manifest_ids` all kept ids;
    `results` this run's ModelConfig.results_settings (None: do not compare them); the ok rows of
    the ok and decode_error rows of `redo_runs` (runs an older vidbatch's decoding made, --redo-older-decoding)
    are done again."""
    process, skip, unseen = [], [], []
    new = changed = retried = 0
    reasons: dict[str, str] = {}
    for video_id, uri in candidates:
        before = prior.get(video_id)
        fingerprint = fingerprints.get(video_id)
        if fingerprint is None and before is not None and video_id in fingerprints:
            fingerprint = UNSEEN  # looked at, no answer (throttled, not answering): not a change
        reason = _why_process(before, uri, fingerprint, model_id, sampling_id, retry_failed)
        if reason is None and results is not None:
            reason = _results_change(before, results)
        if reason is None and before is not None and before.run_id in redo_runs:
            reason = _OLDER_DECODING_REASONS.get(before.status)
        if reason is None and not consistent.get(video_id, True):
            reason = "clips table does not match the videos row (an interrupted commit, or rows deleted by another tool)"
        if reason is None:
            skip.append(video_id)
            if fingerprint == UNSEEN and before is not None and before.status == "ok":
                unseen.append(video_id)
            continue
        process.append(video_id)
        reasons[video_id] = reason
        if before is None:
            new += 1
        elif reason.startswith("retry") or reason == OLDER_DECODING_FAILED:
            retried += 1
        else:
            changed += 1
    keep = set(manifest_ids)
    removed = tuple(sorted(video_id for video_id in prior if video_id not in keep))
    return Decision(
        tuple(process), tuple(skip), removed, new=new, changed=changed, retried=retried, reasons=reasons, unseen=tuple(unseen)
    )


# The reason of an ok row redone because an older vidbatch decoded it (--redo-older-decoding).
OLDER_DECODING = "decoded by an older vidbatch (--redo-older-decoding)"
# And of a decode_error row such a run left: a newer decoding reads some of those files (revision 3 the FLVs
# whose first packet is after 0). A retry, counted as one; not kept when a stopped run does not reach it
# (it holds no results): its `timeout` row is retried by the next run on its own.
OLDER_DECODING_FAILED = "decode_error under an older vidbatch's decoding (--redo-older-decoding)"
_OLDER_DECODING_REASONS = {"ok": OLDER_DECODING, "decode_error": OLDER_DECODING_FAILED}

_SETTLED = "status:"
# The "fingerprint" of a video whose file could not be looked at tonight (a store that did not
# answer, a throttled HEAD): its row is kept, not redone. A redo would fail the same way and replace
# a good result with a `timeout`, dropping its embeddings (or a settled not_found/access_denied with a
# `timeout` retried every night, as "source changed"); if the file changed, the next run sees it. A
# transient failure is retried all the same.
UNSEEN = "unseen"


def settled_failure(status: str) -> str:
    """The "fingerprint" of an object that a stat proved missing or denied."""
    return _SETTLED + status


def _same_source(before: PriorVideo, fingerprint: str | None) -> bool:
    if fingerprint is None:
        return False  # could not tell, and no good result to keep: decode again
    if fingerprint == UNSEEN:
        return True
    if fingerprint.startswith(_SETTLED):
        return before.status == fingerprint[len(_SETTLED) :]
    return before.fingerprint == fingerprint


# error_type of failures that were not the file's doing, whatever their status: a lost actor or
# result, a decoder killed from outside (the kernel's OOM killer on a node short of memory), a
# decode sandbox that could not start, a store that did not answer, a run's time limit reached first,
# a run stopped before its temporary folder's disk filled, a run stopped by a signal. Each with how
# a retry names it: "retry after decode_error" alone reads as a permanent failure retried.
_NOT_THE_FILE_SAID = {
    "lost": "result lost",
    "killed": "decoder killed",
    "sandbox_start": "decode sandbox did not start",
    "resources": "node short of resources",
    UNREACHABLE: "store did not answer",
    "time_limit": "not reached within limits.max_run_s",
    "spill_space": "not reached: the run's temporary folder ran low on space",
    "sigterm": "not reached: the run was stopped by SIGTERM",
    "interrupted": "not reached: the run was stopped by Ctrl-C",
}
NOT_THE_FILE = frozenset(_NOT_THE_FILE_SAID)


def _transient(before: PriorVideo) -> bool:
    """A failure worth retrying every run: a transient status, or one that was not the file's doing."""
    return before.status not in PERMANENT or before.error_type in NOT_THE_FILE


def _why_process(
    before: PriorVideo | None, uri: str, fingerprint: str | None, model_id: str, sampling_id: str, retry_failed: bool
) -> str | None:
    if before is None:
        return "new"
    if not _same_place(before.uri, redact_uri(uri)):  # outputs hold the redacted uri: a new signature is no change
        return "uri changed"
    if before.fingerprint is None and _transient(before):
        # Written by the driver (a watchdog or lost-actor row) without reading the file: no
        # fingerprint to compare, so this is a retry, not a change.
        return _retry(before)
    if not _same_source(before, fingerprint):
        if fingerprint is not None and fingerprint.startswith(_SETTLED):
            return f"source now {fingerprint[len(_SETTLED) :]}"  # the stat found it gone, denied, ...
        return "source changed"
    differ = {"model": before.model_id != model_id, "sampling": before.sampling_id != sampling_id}
    settings = [what for what, changed in differ.items() if changed]
    if settings:
        return " and ".join(settings) + " changed"
    if _transient(before):
        return _retry(before)
    if retry_failed and before.status != "ok":
        return f"retry after {before.status} (--retry-failed)"
    return None


def _same_place(before: str | None, now: str | None) -> bool:
    """The same file spelled another way is no change: s3a:// for s3://, a scheme in capitals,
    file:///x for /x. (A manifest tool that switched spellings redid a whole library.) Paths are
    compared as written: in an object store a//b and a/b are two keys."""
    return before == now or (before is not None and now is not None and spelled_plainly(before) == spelled_plainly(now))


def _retry(before: PriorVideo) -> str:
    cause = _NOT_THE_FILE_SAID.get(before.error_type or "")
    return f"retry after {before.status}" + (f" ({cause}, not the file's doing)" if cause else "")


def _results_change(before: PriorVideo | None, results: Mapping[str, Any]) -> str | None:
    """Why an ok row made with other task/top_k/precision settings is redone, or None.

    A failed row holds no results, so these settings cannot change it.
    """
    if before is None or before.status != "ok" or before.results is None or dict(before.results) == dict(results):
        return None
    changed = [
        f"{key} {before.results.get(key, 'none')} -> {results.get(key, 'none')}"
        for key in sorted({*before.results, *results})
        if before.results.get(key) != results.get(key)
    ]
    return "model settings changed (" + ", ".join(changed) + ")"


def reason_counts(decision: Decision) -> dict[str, int]:
    """How many videos are processed for each reason, most common first."""
    counts: dict[str, int] = {}
    for reason in decision.reasons.values():
        counts[reason] = counts.get(reason, 0) + 1
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def refusal_unchanged(before: PriorVideo | None, uri: str | None, status: str, message: str) -> bool:
    """A refused row whose current row already says the same needs no rewrite."""
    written = redact_uris_in(message)  # as the row holds it
    return before is not None and before.uri == redact_uri(uri) and before.status == status and before.error_message == written
