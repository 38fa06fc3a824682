"""What a run does with each manifest row, decided before any work: decode it, keep its row,
write its refusal, or remove a row whose video left the manifest.

`vidbatch run` acts on it; `vidbatch check` prints it, so the preview and the run cannot
disagree. Deciding stats every file the manifest keeps (that is how a changed file is found).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from vidbatch.collect import duration_text
from vidbatch.config import DECODE_REVISION, JobConfig
from vidbatch.errors import JobError, VideoError
from vidbatch.incremental import Decision, decide, reason_counts, refusal_unchanged
from vidbatch.manifest import Plan, Refusal
from vidbatch.output_refusals import refuse_retyped_columns
from vidbatch.schema import VIDEOS
from vidbatch.source_fingerprints import fingerprints
from vidbatch.state import PriorState, refreshed_rows
from vidbatch.storage import fingerprint_size
from vidbatch.uri_policy import redact_uri, spelled_plainly


@dataclass(frozen=True)
class Worklist:
    plan: Plan  # the manifest's plan, before the output was looked at
    decision: Decision
    work: Plan  # to_process: what is decoded; refused: the rows written without decoding
    refusals: tuple[Refusal, ...]  # refused by the plan, with a row that does not already say so
    known: tuple[Refusal, ...]  # to process, but the stat proved the file gone, denied or not a file
    refreshed: list[dict[str, Any]]  # rows kept whose carried-through manifest columns changed
    # Sizes in bytes of the videos to decode, from the stat or the manifest's `size` column (a first night
    # stats nothing): what the progress line's time left goes by, a long lecture weighing more than a clip.
    sizes: Mapping[str, int] = dataclasses.field(default_factory=dict)

    @property
    def refused_as_before(self) -> int:
        """Refused rows whose current row already says the same (not rewritten)."""
        return len(self.plan.refused) - len(self.refusals)

    @property
    def replaced_ids(self) -> set[str]:
        """The videos rows this run's commit replaces or deletes."""
        return set(self.decision.process) | set(self.decision.removed) | {r.video_id for r in self.work.refused}

    def table_statuses(
        self, prior: PriorState, written: Mapping[str, int], *, kept: AbstractSet[str] = frozenset()
    ) -> dict[str, int]:
        """The videos table's rows per status once this run's `written` rows (per status) are committed:
        the rows it keeps (refreshed rows keep their status, and `kept`: videos to redo it did not reach
        whose row from before stays) plus the ones it writes."""
        replaced = self.replaced_ids - kept
        rows = Counter(before.status for video_id, before in prior.videos.items() if video_id not in replaced)
        rows.update(written)
        return dict(sorted(rows.items()))

    def counts_line(self) -> str:
        """Every manifest row counted once (decode + unchanged + refused + duplicates = manifest rows);
        removed rows are the output's, gone from the manifest."""
        d = self.decision
        # Kept rows with changed manifest columns are among the unchanged or the refused as before.
        refreshed_ids = {row["video_id"] for row in self.refreshed}
        refreshed_skipped = len(refreshed_ids.intersection(d.skip))  # no set of every unchanged id
        refreshed_refused = len(refreshed_ids) - refreshed_skipped
        refreshed = (
            f" ({refreshed_skipped} with changed manifest columns, rows updated without decoding)" if refreshed_skipped else ""
        )
        as_before = ""
        if self.refused_as_before:
            updated = f", {refreshed_refused} of them with changed manifest columns, rows updated" if refreshed_refused else ""
            as_before = f" ({self.refused_as_before} as before{updated})"
        # files the stat found gone or denied: their rows come from the stat, nothing is decoded
        gone = f"; {len(self.known)} of them gone, denied or not a file, so not decoded" if self.known else ""
        return (
            f"{self.plan.manifest_rows} manifest rows ({self.plan.duplicates} duplicate ids); "
            f"{len(d.process)} to decode ({d.new} new, {d.changed} changed, {d.retried} retried{gone}), "
            f"{len(d.skip)} unchanged{refreshed}, {len(d.removed)} removed, "
            f"{len(self.plan.refused)} refused{as_before}"
        )

    def redone_line(self) -> str | None:
        """Why videos are done again (not new), by reason: a night that redoes a whole library should
        say why before it spends the hours."""
        redone = {reason: count for reason, count in reason_counts(self.decision).items() if reason != "new"}
        return "  done again: " + "; ".join(f"{count} {reason}" for reason, count in redone.items()) if redone else None

    def warnings(self, prior: PriorState) -> list[str]:
        """What a person should hear before a run rewrites much of an output, or cannot tell what it holds."""
        notes = self._older_decoding_note(prior) + _unrecorded_note(prior) + _duplicate_note(self.plan)
        notes += _shared_file_note(self.plan)
        return self._removal_warnings(prior) + self._rekeyed_warnings(prior) + self._unseen_warnings() + notes

    def _rekeyed_warnings(self, prior: PriorState) -> list[str]:
        """Removed ids whose files new ids name now: a manifest whose ids changed spelling (1 written as
        '0001', a new export tool's prefix) redid every such video and removed its old row, and the run
        said only that rows were gone (or nothing, below half of the output)."""
        if not self.decision.removed:
            return []
        gone = {spelled_plainly(uri): video_id for video_id in self.decision.removed if (uri := prior.videos[video_id].uri)}
        if not gone:
            return []
        ids, uris = self.plan.to_process.column("video_id").to_pylist(), self.plan.to_process.column("uri").to_pylist()
        moved = [
            (gone[key], video_id)
            for video_id, uri in zip(ids, uris, strict=True)
            if video_id not in prior.videos and (key := spelled_plainly(str(redact_uri(uri)))) in gone
        ]
        if not moved:
            return []
        before, after = moved[0]
        return [
            f"WARNING: {len(moved)} removed videos rows name files that ids new to the output name now (e.g. {before!r} "
            f"is now {after!r}): each is decoded again under its new id and its old row removed; if only the ids' "
            "spelling changed (a tool that pads or types them otherwise), write them as before"
        ]

    def _older_decoding_note(self, prior: PriorState) -> list[str]:
        """Rows that runs before this vidbatch's decoding made and that stay as they are: an upgrade
        does not redo them, and a fix of how some files decode does not reach them. --redo-older-decoding
        redoes both: the ok rows and the decode_error rows (a failure a newer decoding may not have)."""
        if not prior.older_decoding_runs:
            return []
        kept = set(self.decision.skip)
        older = [
            video.status
            for video_id, video in prior.videos.items()
            if video.run_id in prior.older_decoding_runs and video_id in kept
        ]
        rows, failed = older.count("ok"), older.count("decode_error")
        notes = []
        if rows:
            notes.append(
                f"NOTE: {_count_videos(rows)} kept as ok {'was' if rows == 1 else 'were'} decoded by an older vidbatch "
                f"(runs that recorded a decode_revision below {DECODE_REVISION}, or none): decoding fixes since then "
                "(cut-short AVI/Matroska uploads taken as ok, mirrored videos, frame times that go back, ...; in revision 2, "
                "videos whose first frame is shown after the header's start, such as MPEG-4 AVIs with B-frames; in "
                "revision 3, uniform sampling of AVI, ASF/WMV and FLV files whose first frame is after 0; in revision 4, "
                "uniform sampling of NUT and MPEG-PS (.mpg/.vob) files) do not "
                "reach them; most files decode as before (README, Nightly runs); --redo-older-decoding decodes them again"
            )
        if failed:
            notes.append(
                f"NOTE: {_count_videos(failed)} kept as decode_error failed under an older vidbatch's decoding; this "
                "one reads some files it could not (since revision 3, FLVs whose first packet is after 0): "
                "--redo-older-decoding decodes them again"
            )
        return notes

    def _unseen_warnings(self) -> list[str]:
        unseen = self.decision.unseen
        if not unseen:
            return []
        return [
            f"WARNING: {_count_videos(len(unseen))} that {'was' if len(unseen) == 1 else 'were'} ok could not be looked at "
            "(their store did not answer, or "
            f"the stat failed), e.g. {unseen[0]!r}: their rows are kept as they are, and the next run looks again"
        ]

    def _removal_warnings(self, prior: PriorState) -> list[str]:
        if not self.decision.removed:
            return []
        before = len(prior.videos)
        removed = len(self.decision.removed)
        if self.plan.manifest_rows == 0:
            return [
                f"WARNING: the manifest has no rows, so this run removes {_all_rows(removed)} of the output "
                "(and their clips); check the manifest if that is not meant"
            ]
        if removed * 2 >= before:
            return [
                f"WARNING: {removed} of the output's {before} videos rows are gone from the manifest and are removed "
                "by this run; check the manifest if that is not meant"
            ]
        return []


def _stat_progress(total: int, say: Callable[[str], None]) -> Callable[[int], None]:
    """The planning's progress line: how many files were looked at (a stat each, a HEAD on object
    stores), and about how long the rest takes at the rate so far."""
    started = time.monotonic()

    def report(done: int) -> None:
        elapsed = time.monotonic() - started
        left = f", about {duration_text((total - done) * elapsed / done)} left" if done else ""
        say(
            f"planning: looked at {done} of {total} files to see which changed ({done / elapsed:.0f}/s, "
            f"{duration_text(elapsed)} elapsed{left})"
        )

    return report


def _count_videos(count: int) -> str:
    return "1 video" if count == 1 else f"{count} videos"


def _all_rows(count: int) -> str:
    return "the only videos row" if count == 1 else f"all {count} videos rows"


def make_worklist(
    config: JobConfig,
    plan: Plan,
    prior: PriorState,
    *,
    model_id: str,
    retry_failed: bool = False,
    redo_older_decoding: bool = False,
    allow_empty: bool = False,
    say: Callable[[str], None] | None = None,
) -> Worklist:
    """Decide every manifest row against the output's current rows (see module doc). `say` (if given)
    hears how far the look at the files has got, every resources.progress_interval_s of it."""
    refuse_emptying(config, plan, prior, allow_empty=allow_empty)
    refuse_retyped_columns(plan.extras, prior.videos_schema, config.output)
    candidates = list(zip(plan.to_process.column("video_id").to_pylist(), plan.to_process.column("uri").to_pylist(), strict=True))
    missing: dict[str, VideoError] = {}  # the stat proved these gone, denied or not a file
    found = (
        fingerprints(
            candidates,
            config.storage,
            settled=missing,
            unreachable_in_a_row=config.limits.unreachable_in_a_row,
            progress=_stat_progress(len(candidates), say) if say is not None else None,
            progress_every_s=config.resources.progress_interval_s,
            listable={video_id for video_id, before in prior.videos.items() if before.status == "ok"},
        )
        if prior.videos
        else {}
    )
    decision = decide(
        candidates,
        prior=prior.videos,
        fingerprints=found,
        model_id=model_id,
        sampling_id=config.sampling.sampling_id(),
        consistent=prior.consistent,
        manifest_ids=[*plan.to_process.column("video_id").to_pylist(), *(r.video_id for r in plan.refused)],
        retry_failed=retry_failed,
        results=config.model.results_settings(),
        redo_runs=prior.older_decoding_runs if redo_older_decoding else frozenset(),
    )
    sizes = _sizes(found, decision.process, plan.extras_by_id)
    del found  # a fingerprint per manifest row: not held through the rest
    refuse_vanishing(config, candidates, prior, missing, allow_empty=allow_empty)
    refusals = tuple(r for r in plan.refused if not refusal_unchanged(prior.videos.get(r.video_id), r.uri, r.status, r.message))
    todo = set(decision.process)
    # A video to process whose file the stat found gone (denied, a pipe, ...) gets its row here: decoding
    # would only stat it again, and a night whose only change is a deleted file then needs no Ray.
    known = tuple(
        Refusal(video_id, uri, missing[video_id].status, missing[video_id].message, plan.extras_by_id.get(video_id, {}))
        for video_id, uri in candidates
        if video_id in todo and video_id in missing
    )
    to_decode = todo - {r.video_id for r in known}
    refreshed = _refreshed_rows(config, plan, prior, rewritten=todo | {r.video_id for r in refusals} | set(decision.removed))
    work = dataclasses.replace(
        plan,
        to_process=_retries_first(
            plan.to_process.filter(pa.array([video_id in to_decode for video_id, _ in candidates], pa.bool_())), decision
        ),
        refused=refusals + known,
    )
    return Worklist(
        plan=plan,
        decision=decision,
        work=work,
        refusals=refusals,
        known=known,
        refreshed=refreshed,
        sizes=sizes,
    )


def _sizes(
    found: Mapping[str, str | None], to_decode: Iterable[str], manifest_rows: Mapping[str, Mapping[str, object]]
) -> dict[str, int]:
    """The sizes of the videos to decode only (a night's few new ones of a million rows looked at): the
    stat's, else a `size` column of the manifest (`vidbatch manifest build` writes one), so that a first
    night, which stats nothing, also has them when its manifest says them."""
    sizes = {}
    for video_id in to_decode:
        size = fingerprint_size(found.get(video_id)) or _manifest_size(manifest_rows.get(video_id))
        if size:
            sizes[video_id] = size
    return sizes


def _manifest_size(row: Mapping[str, object] | None) -> int | None:
    """A manifest row's `size` when it is a whole number of bytes (a column of another meaning is not)."""
    size = row.get("size") if row else None
    return size if isinstance(size, int) and not isinstance(size, bool) and size > 0 else None


def _retries_first(rows: pa.Table, decision: Decision) -> pa.Table:
    """The rows to decode with the retries first, each part in manifest order: the videos a stopped
    run left (its window closed, its disk ran low, its store went down) are done before new ones,
    so a library that takes several nights is not overtaken night after night by what is added."""
    retry = [_left_by_a_stop(decision.reasons.get(video_id, "")) for video_id in rows.column("video_id").to_pylist()]
    if not any(retry) or all(retry):
        return rows
    return rows.take([i for i, first in enumerate(retry) if first] + [i for i, first in enumerate(retry) if not first])


def _left_by_a_stop(reason: str) -> bool:
    # Not the permanent failures --retry-failed asks for again: those wait behind new videos.
    return reason.startswith("retry") and not reason.endswith("(--retry-failed)")


def _unrecorded_note(prior: PriorState) -> list[str]:
    if not prior.unrecorded_runs:
        return []
    rows = sum(1 for video in prior.videos.values() if video.status == "ok" and video.run_id in prior.unrecorded_runs)
    shown = ", ".join(sorted(prior.unrecorded_runs)[:3]) + (", ..." if len(prior.unrecorded_runs) > 3 else "")
    return [
        f"WARNING: {rows} ok rows come from runs whose _runs/<run_id>/started.json is gone or unreadable ({shown}): "
        "their task, top_k and precision are unknown, so a change of those settings does not redo them"
    ]


def _duplicate_note(plan: Plan) -> list[str]:
    """Which ids repeat: a count alone left a person to search the manifest for them. A later row that
    names another file than its id's first row is warned about: the id's videos row holds whichever
    file comes first, so a manifest written in another row order (a Spark table's part files, a sort)
    swaps the id's video, and the run redoes it as a changed uri. Rows are counted from 0 in the order
    the manifest is read (a folder's files in name order)."""
    if not plan.duplicates:
        return []
    shown = ", ".join(
        f"{video_id!r} (row {kept} used, row {row} not" + (f": {redact_uri(uri)!r})" if uri is not None else ")")
        for video_id, kept, row, uri in plan.duplicate_examples
    )
    lines = [
        f"NOTE: {plan.duplicates} manifest rows repeat the video_id of an earlier row and get no videos row of their "
        f"own (the first row of an id is used), e.g. {shown}"
    ]
    if plan.duplicates_elsewhere:
        lines.append(
            f"WARNING: {plan.duplicates_elsewhere} of them {'names' if plan.duplicates_elsewhere == 1 else 'name'} "
            "another file than their id's first row: the id's "
            "videos row holds the first row's file, so the manifest's row order decides which video an id is; "
            "give each file an id of its own, or drop the stale rows"
        )
    return lines


def _shared_file_note(plan: Plan) -> list[str]:
    """Manifest rows under different ids that name one file (`v01` and `v01-copy`, `lib/a.mp4` and
    `lib//a.mp4`): each is decoded and indexed as a video of its own, and a search finds it twice.
    Said, not refused: a library may list a file under two ids on purpose. Counted in Arrow (a
    manifest has millions of rows); local paths are compared with repeated slashes and file:// gone."""
    uris = plan.to_process.column("uri")
    if len(uris) < 2:
        return []
    local = pc.replace_substring_regex(uris, pattern="^file://", replacement="")
    slashes = pc.replace_substring_regex(local, pattern="/{2,}", replacement="/")
    same = pc.if_else(pc.match_substring(local, "://"), local, slashes)
    counted = pc.value_counts(same)
    many = pc.greater(counted.field("counts"), 1)
    if not pc.any(many).as_py():
        return []
    rows = pc.sum(counted.field("counts").filter(many)).as_py()
    first = counted.field("values").filter(many)[0]
    ids = plan.to_process.column("video_id").filter(pc.equal(same, first)).to_pylist()[:2]
    return [
        f"NOTE: {rows} manifest rows name a file another row names too, e.g. {ids[0]!r} and {ids[1]!r} "
        f"({redact_uri(str(first))!r}): each is decoded and indexed as a video of its own"
    ]


def refuse_emptying(config: JobConfig, plan: Plan, prior: PriorState, *, allow_empty: bool) -> None:
    """JobError when an empty manifest would remove every row of an output that has some.

    An upstream export that failed and wrote an empty file is the usual cause; a night that
    followed it would wipe the output (its embeddings feed search). A library that really is
    empty now says so with --allow-empty.
    """
    if plan.manifest_rows == 0 and prior.videos and not allow_empty:
        raise JobError(
            f"the manifest {config.manifest!r} has no rows, so this run would remove {_all_rows(len(prior.videos))} "
            f"of the output {config.output!r} (and their clips); check the manifest, or run with --allow-empty if the "
            "library is empty now"
        )


def refuse_vanishing(
    config: JobConfig,
    candidates: list[tuple[str, str]],
    prior: PriorState,
    missing: dict[str, VideoError],
    *,
    allow_empty: bool,
) -> None:
    """JobError when more than half of the output's ok videos are found gone or denied now.

    A video mount that is not mounted, a manifest of relative uris run from another folder, a
    bucket renamed or credentials revoked all look like this; the run would replace every such
    row (and drop its clips and embeddings, which feed search) with not_found or access_denied.
    A library whose files really are gone says so with --allow-empty, as an empty manifest does.
    """
    ok_before = {video_id for video_id, before in prior.videos.items() if before.status == "ok"}
    vanished = [(video_id, uri) for video_id, uri in candidates if video_id in ok_before and video_id in missing]
    if allow_empty or not vanished or len(vanished) * 2 <= len(ok_before):
        return
    video_id, uri = vanished[0]
    relative = not uri.startswith("/") and "://" not in uri
    hint = f" (relative uris are read from the current folder, {os.getcwd()!r})" if relative else ""
    raise JobError(
        f"{len(vanished)} of the output's {len(ok_before)} ok videos are {_gone_or_denied(vanished, missing)} now, e.g. "
        f"{video_id!r} at {redact_uri(uri)!r}{hint}. A missing mount, a wrong folder or endpoint, or revoked credentials "
        "look like this; the run would replace their rows and drop their embeddings. Nothing was changed: check where "
        "the files are, or run with --allow-empty if they are really gone"
    )


def _gone_or_denied(vanished: list[tuple[str, str]], missing: dict[str, VideoError]) -> str:
    statuses = {missing[video_id].status for video_id, _ in vanished}
    if len(statuses) > 1:
        return "gone or denied"
    return {"not_found": "gone", "access_denied": "denied"}.get(statuses.pop(), "unreadable")


def _refreshed_rows(config: JobConfig, plan: Plan, prior: PriorState, *, rewritten: set[str]) -> list[dict[str, Any]]:
    """Rows this run keeps as they are but whose carried-through manifest columns changed."""
    if not prior.videos or not (plan.extra_columns or _earlier_manifest_columns(prior)):
        # No column carried through, tonight or before: nothing to refresh, so no set of every
        # manifest id (a million strings and sets of them) and no second read of the table's log.
        return []
    extras = {**plan.extras_by_id, **{r.video_id: r.extra for r in plan.refused}}
    manifest_ids = set(plan.to_process.column("video_id").to_pylist()) | {r.video_id for r in plan.refused}
    kept = (set(prior.videos) & manifest_ids) - rewritten
    return refreshed_rows(config.output, config.storage, kept=kept, extras_by_id=extras, extra_columns=plan.extra_columns)



def _earlier_manifest_columns(prior: PriorState) -> list[str]:
    """The videos table's columns that earlier manifests carried through (not vidbatch's own)."""
    return [name for name in prior.videos_schema.names if name not in VIDEOS.names] if prior.videos_schema is not None else []
