"""Nightly reruns: only new or changed work, removals, atomic commits, crash safety."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import media
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from deltalake import DeltaTable, write_deltalake
from extended import extended

from vidbatch.config import DECODE_REVISION, StorageConfig, parse_job
from vidbatch.incremental import OLDER_DECODING, OLDER_DECODING_FAILED, PriorVideo, decide
from vidbatch.pipeline import run_job
from vidbatch.state import load_prior, run_results_settings
from vidbatch.summary_text import summary_text

# --- the decision, as a pure function ---------------------------------------------------


def prior(status="ok", fp="fp1", model="m", sampling="s", uri="u", error_type=None):
    return PriorVideo(uri, fp, model, sampling, status, error_type, "r0", 1)


def decide_one(before, *, fp="fp1", model="m", sampling="s", uri="u", consistent=True, retry_failed=False):
    prior_map = {"v": before} if before else {}
    return decide(
        [("v", uri)],
        prior=prior_map,
        fingerprints={"v": fp},
        model_id=model,
        sampling_id=sampling,
        consistent={"v": consistent},
        manifest_ids=["v"],
        retry_failed=retry_failed,
    )


@pytest.mark.parametrize(
    ("before", "kwargs", "processed"),
    [
        (None, {}, True),
        (prior(), {}, False),
        (prior(), {"fp": "fp2"}, True),
        # an ok video whose file could not be looked at (the store did not answer): kept, not redone
        # (a redo would fail the same way and replace its good row with a timeout: before, it did)
        (prior(), {"fp": None}, False),
        (prior(), {"fp": None, "model": "m2"}, True),  # redone anyway for another model
        (prior("timeout"), {"fp": None}, True),  # no good result to keep: retried
        (prior(), {"model": "m2"}, True),
        (prior(), {"sampling": "s2"}, True),
        (prior(), {"uri": "u2"}, True),
        # the same file spelled another way: no change (a manifest tool switching spellings redid a library)
        (prior(uri="s3://b/k.mp4"), {"uri": "s3a://b/k.mp4"}, False),
        (prior(uri="/lib/k.mp4"), {"uri": "file:///lib/k.mp4"}, False),
        (prior(uri="s3://b/k.mp4"), {"uri": "s3://b//k.mp4"}, True),  # another key
        (prior(), {"consistent": False}, True),
        (prior("timeout"), {}, True),
        (prior("model_error"), {}, True),
        (prior("decode_error", error_type="lost"), {}, True),
        (prior("decode_error", error_type="killed"), {}, True),  # killed from outside: not the file
        (prior("decode_error", error_type="sandbox_start"), {}, True),
        (prior("decode_error", error_type="resources"), {}, True),  # FFmpeg's EAGAIN/ENOMEM: the node's state
        (prior("decode_error", error_type="DecoderCrash"), {}, False),  # a poison file: not every night
        (prior("unreadable"), {}, False),
        (prior("unreadable"), {"retry_failed": True}, True),
        (prior("no_video_stream"), {"fp": "fp2"}, True),
        (prior("not_found", fp=None), {"fp": "status:not_found"}, False),
        (prior("not_found", fp=None), {"fp": "fp9"}, True),
        (prior("access_denied", fp=None), {"fp": "status:access_denied"}, False),
        (prior("access_denied", fp=None), {"fp": "fp9"}, True),
        # a throttled look at a settled failure tonight: not "source changed" (audit finding)
        (prior("not_found", fp=None), {"fp": None}, False),
        (prior("access_denied", fp=None), {"fp": None}, False),
    ],
)
def test_decide(before, kwargs, processed):
    decision = decide_one(before, **kwargs)
    assert (decision.process == ("v",)) == processed
    assert (decision.skip == ("v",)) == (not processed)
    unseen = not processed and kwargs.get("fp", "fp1") is None and before.status == "ok"  # warned about: ok rows only
    assert decision.unseen == (("v",) if unseen else ())


@pytest.mark.parametrize(
    ("before", "reason"),
    [
        (prior("timeout", fp=None, error_type="no_progress"), "retry after timeout"),  # a watchdog row
        # a lost actor's row: named as not the file's doing (a bare decode_error reads as permanent)
        (prior("decode_error", fp=None, error_type="lost"), "retry after decode_error (result lost, not the file's doing)"),
        (prior("decode_error", error_type="killed"), "retry after decode_error (decoder killed, not the file's doing)"),
        # the store was down: retried when the file is the same, and when it could not be looked at
        (prior("timeout", error_type="unreachable"), "retry after timeout (store did not answer, not the file's doing)"),
        (prior("timeout", fp=None, error_type="unreachable"), "retry after timeout (store did not answer, not the file's doing)"),
        (prior("timeout"), "retry after timeout"),
        (prior("timeout"), "source changed"),
        (prior(), "source now not_found"),  # the stat found the file gone
        (prior(), "source changed"),
    ],
)
def test_decide_names_why(before, reason):
    fp = {"source changed": "fp2", "source now not_found": "status:not_found"}.get(reason, "fp1")
    decision = decide_one(before, fp=fp)
    assert decision.reasons == {"v": reason}
    assert (decision.retried, decision.changed) == ((1, 0) if reason.startswith("retry") else (0, 1))


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"model": "m2"}, "model changed"),
        ({"sampling": "s2"}, "sampling changed"),
        ({"model": "m2", "sampling": "s2"}, "model and sampling changed"),  # before: only the model was named
    ],
)
def test_the_reason_names_every_setting_that_changed(changes, reason):
    assert decide_one(prior(), **changes).reasons == {"v": reason}


@pytest.mark.parametrize(
    ("before_results", "status", "now", "reason"),
    [
        ({"task": "embed", "precision": "fp32"}, "ok", {"task": "both", "precision": "fp32", "top_k": 5},
         "model settings changed (task embed -> both, top_k none -> 5)"),
        ({"task": "both", "precision": "fp32", "top_k": 5}, "ok", {"task": "both", "precision": "fp32", "top_k": 2},
         "model settings changed (top_k 5 -> 2)"),
        ({"task": "embed", "precision": "fp32"}, "ok", {"task": "embed", "precision": "bf16"},
         "model settings changed (precision fp32 -> bf16)"),
        ({"task": "embed", "precision": "fp32", "resize": "exact"}, "ok",
         {"task": "embed", "precision": "fp32", "resize": "fast"}, "model settings changed (resize exact -> fast)"),
        ({"task": "embed", "precision": "fp32"}, "ok", {"task": "embed", "precision": "fp32"}, None),
        (None, "ok", {"task": "both", "precision": "fp32", "top_k": 5}, None),  # a run that left no record: not redone
        ({"task": "embed", "precision": "fp32"}, "unreadable", {"task": "both", "precision": "fp32", "top_k": 5}, None),
    ],
)
def test_decide_redoes_ok_rows_made_with_other_model_settings(before_results, status, now, reason):
    before = dataclasses.replace(prior(status), results=before_results)
    decision = decide(
        [("v", "u")], prior={"v": before}, fingerprints={"v": "fp1"}, model_id="m", sampling_id="s",
        consistent={"v": True}, manifest_ids=["v"], results=now,
    )  # fmt: skip
    assert decision.reasons == ({"v": reason} if reason else {})
    assert decision.changed == (1 if reason else 0)


def test_model_settings_of_runs_come_from_their_started_records(tmp_path):
    runs = tmp_path / "out" / "_runs"
    job = {"model": {"task": "both", "top_k": 3, "precision": "bf16", "arch": "resnet18"}}
    for run_id, text in {
        "r-both": json.dumps({"run_id": "r-both", "job": job}),
        "r-embed": json.dumps({"job": {"model": {"task": "embed", "top_k": 5, "precision": "auto"}}}),
        "r-fast": json.dumps({"job": {"model": {"task": "embed", "top_k": 5, "precision": "auto", "resize": "fast"}}}),
        "r-cut": '{"job": {"mod',  # cut short by a crash
        "r-other": json.dumps({"something": "else"}),
    }.items():
        (runs / run_id).mkdir(parents=True)
        (runs / run_id / "started.json").write_text(text)
    runs = {"r-both", "r-embed", "r-fast", "r-cut", "r-other", "r-gone"}
    found = run_results_settings(str(tmp_path / "out"), StorageConfig(), runs)
    assert found == {
        # runs from before model.resize resized exactly
        "r-both": {"task": "both", "top_k": 3, "precision": "bf16", "resize": "exact"},
        "r-embed": {"task": "embed", "precision": "auto", "resize": "exact"},  # top_k makes no difference without labels
        "r-fast": {"task": "embed", "precision": "auto", "resize": "fast"},
    }


@pytest.mark.parametrize(
    ("before", "redo_runs", "reason"),
    [
        (prior(), {"r0"}, OLDER_DECODING),
        (prior(), set(), None),  # not asked: kept (an upgrade alone redoes nothing)
        (prior(), {"r-other"}, None),  # made by a run of this decoding
        # a failure a newer decoding may not have (revision 3 reads FLVs revision 2 refused): redone as a retry
        (prior("decode_error", error_type="decode_error"), {"r0"}, OLDER_DECODING_FAILED),
        (prior("decode_error", error_type="decode_error"), set(), None),
        (prior("unreadable"), {"r0"}, None),  # no decoding fix reads what is not media: --retry-failed is for those
        (prior(fp="fp0"), {"r0"}, "source changed"),  # another reason comes first
    ],
)
def test_ok_and_decode_error_rows_of_older_decoding_are_redone_only_when_asked(before, redo_runs, reason):
    decision = decide(
        [("v", "u")], prior={"v": before}, fingerprints={"v": "fp1"}, model_id="m", sampling_id="s",
        consistent={"v": True}, manifest_ids=["v"], redo_runs=redo_runs,
    )  # fmt: skip
    assert decision.reasons == ({"v": reason} if reason else {})
    assert (decision.changed, decision.retried) == ((0, 1) if reason == OLDER_DECODING_FAILED else (1 if reason else 0, 0))


def test_runs_that_recorded_an_older_decode_revision_or_none_are_found(tmp_path):
    """An output an older vidbatch made: its runs' started.json has no decode_revision. Upgrading redid
    none of its rows, and files the newer decoding reads otherwise (an AVI cut short, kept as ok with
    the part before the cut) stayed as they were without a word; check and run now count them. A run
    that left decode_error rows only is one too (its record was not read: only ok rows' runs were)."""
    out = tmp_path / "out"
    revisions = {"r-old": {}, "r-new": {"decode_revision": DECODE_REVISION}, "r-odd": {"decode_revision": "x"},
                 "r-prev": {"decode_revision": 1}, "r-failed": {"decode_revision": 2}}  # fmt: skip
    for run_id, extra in revisions.items():
        (out / "_runs" / run_id).mkdir(parents=True)
        record = {"run_id": run_id, "job": {"model": {"task": "embed", "top_k": 5, "precision": "fp32"}}, **extra}
        (out / "_runs" / run_id / "started.json").write_text(json.dumps(record))
    ids = ["a", "b", "c", "d", "e", "f"]
    write_deltalake(
        str(out / "videos"),
        pa.table({
            "video_id": ids, "uri": ids, "source_fingerprint": ["f"] * 6, "model_id": ["m"] * 6, "sampling_id": ["s"] * 6,
            "status": ["ok", "ok", "ok", "unreadable", "ok", "decode_error"],
            "error_type": [None, None, None, "unreadable", None, "decode_error"],
            "error_message": [None, None, None, "x", None, "y"],
            "run_id": ["r-old", "r-new", "r-odd", "r-old", "r-prev", "r-failed"],
            "num_clips": pa.array([0] * 6, pa.int32()),
        }),
    )  # fmt: skip
    state = load_prior(str(out), StorageConfig())
    # r-prev: revision 1, whose sampling grid started at the header's start, not at the first frame shown
    assert state.older_decoding_runs == {"r-old", "r-odd", "r-prev", "r-failed"}
    assert state.unrecorded_runs == frozenset()


def test_decide_lists_removed_videos():
    decision = decide([], prior={"gone": prior()}, fingerprints={}, model_id="m", sampling_id="s", consistent={}, manifest_ids=[])
    assert decision.removed == ("gone",)


# --- real runs ---------------------------------------------------------------------------


def write_manifest(path: Path, rows: dict[str, Path]) -> None:
    pq.write_table(pa.table({"video_id": list(rows), "uri": [str(p) for p in rows.values()]}), path)


def job_dict(tmp_path: Path, weights: Path | str) -> dict:
    return {
        "name": "nightly-test",
        "manifest": str(tmp_path / "manifest.parquet"),
        "output": str(tmp_path / "out"),
        "sampling": {"mode": "fps", "fps": 1.0, "clip_len_s": 2.0},
        "model": {"arch": "resnet18", "weights": str(weights), "precision": "fp32", "top_k": 2},
        "resources": {"batch_clips": 4},
    }


def snapshot(tmp_path: Path) -> tuple[list[dict], list[dict]]:
    videos = DeltaTable(str(tmp_path / "out" / "videos")).to_pyarrow_table().to_pylist()
    clips = DeltaTable(str(tmp_path / "out" / "clips")).to_pyarrow_table(columns=["video_id", "clip_index", "run_id"]).to_pylist()
    return videos, clips


def assert_exact(tmp_path: Path, manifest_ids: set[str]) -> dict[str, dict]:
    """The current snapshot is exactly what the manifest says, with no duplicate keys."""
    videos, clips = snapshot(tmp_path)
    ids = [v["video_id"] for v in videos]
    assert len(ids) == len(set(ids)) and set(ids) == manifest_ids
    by_id = {v["video_id"]: v for v in videos}
    keys = [(c["video_id"], c["clip_index"]) for c in clips]
    assert len(keys) == len(set(keys)), "duplicate clip rows"
    for c in clips:
        assert c["video_id"] in by_id and c["run_id"] == by_id[c["video_id"]]["run_id"]
    for v in videos:
        assert sum(1 for c in clips if c["video_id"] == v["video_id"]) == v["num_clips"]
    return by_id


def run(tmp_path: Path, weights, **overrides):
    raw = job_dict(tmp_path, weights)
    for key, value in overrides.items():
        section, name = key.split("__")
        raw[section][name] = value
    result = run_job(parse_job(raw), progress=lambda _: None)
    # Every scenario here checks the summary's whole-table totals against the committed table.
    videos, _ = snapshot(tmp_path)
    assert result.summary["table_statuses"] == dict(sorted(Counter(v["status"] for v in videos).items()))
    # and what its rows took in the temporary folder before the commit (rows it rewrote without decoding too)
    assert result.summary["spill_bytes"] > 0 if result.summary["videos"] else result.summary["spill_bytes"] >= 0
    # and what its commits rewrote: the files its own log entries removed (copy-on-write), per table
    for table in ("clips", "videos"):
        removed = removed_by_run(tmp_path / "out" / table, result.run_id)
        said = (result.summary["rewritten_files"][table], result.summary["rewritten_bytes"][table])
        assert said == (len(removed), sum(removed)), table
    return result


def removed_by_run(table: Path, run_id: str) -> list[int]:
    """The sizes of the data files the run's commits removed, read from the table's log."""
    sizes = []
    for entry in sorted((table / "_delta_log").glob("*.json")) if table.is_dir() else []:
        actions = [json.loads(line) for line in entry.read_text().splitlines() if line.strip()]
        if any((a.get("commitInfo") or {}).get("vidbatch.run_id") == run_id for a in actions):
            sizes += [a["remove"]["size"] for a in actions if "remove" in a]
    return sizes


def test_no_carried_through_column_means_no_refresh_work(monkeypatch):
    """A library whose manifests carry no column beyond video_id and uri has no row to refresh; the
    check still built a set of every manifest id (new strings), sets of the output's ids, and read
    the videos table's log a second time, every night (at a million videos, ~200 MB on the driver).
    Counted as calls of the reading of the table's rows."""
    from types import SimpleNamespace

    import vidbatch.worklist as worklist
    from vidbatch.manifest import Plan
    from vidbatch.schema import VIDEOS
    from vidbatch.state import PriorState

    reads: list[set[str]] = []

    def counted(output, storage, *, kept, extras_by_id, extra_columns):
        reads.append(kept)
        return []

    monkeypatch.setattr(worklist, "refreshed_rows", counted)
    ids = [f"v{i}" for i in range(5)]
    manifest = pa.table({"video_id": ids, "uri": [f"/lib/{i}.mp4" for i in ids]})

    def plan(extra_columns: tuple[str, ...]) -> Plan:
        return Plan(manifest, {}, (), 0, len(ids), extra_columns, pa.table({}))

    def prior(schema: pa.Schema) -> PriorState:
        videos = {i: PriorVideo(f"/lib/{i}.mp4", "fp", "m", "s", "ok", None, "r0", 1) for i in ids}
        return PriorState(videos, {}, videos_schema=schema)

    config = SimpleNamespace(output="out", storage=None)
    assert worklist._refreshed_rows(config, plan(()), prior(VIDEOS), rewritten=set()) == []
    assert reads == []
    worklist._refreshed_rows(config, plan(("label",)), prior(VIDEOS), rewritten={"v0"})  # a column tonight
    worklist._refreshed_rows(config, plan(()), prior(VIDEOS.append(pa.field("label", pa.string()))), rewritten=set())  # before
    assert reads == [set(ids) - {"v0"}, set(ids)]


def test_the_look_at_the_files_holds_a_few_stats_at_a_time(tmp_path, monkeypatch):
    """The stats of a rerun went to the thread pool all at once (pool.map): a Future per file of the
    manifest, ~1.6 KB each, alive together, so a million files took ~1.6 GB of the driver's memory.
    Counted here as the Futures alive while the last files are looked at: a few per thread, not one
    per file."""
    import gc
    from concurrent.futures import Future

    import vidbatch.source_fingerprints as source_fingerprints
    from vidbatch.config import StorageConfig

    real_stat = source_fingerprints.stat_video
    alive: list[int] = []
    looked = 0
    lock = threading.Lock()

    def counting_stat(uri, storage):
        nonlocal looked
        with lock:
            looked += 1
            if looked % 500 == 0:
                alive.append(sum(isinstance(thing, Future) for thing in gc.get_objects()))
        return real_stat(uri, storage)

    video = tmp_path / "a.mp4"
    video.write_bytes(b"not decoded here: only stat'ed")
    rows = [(f"v{i}", str(video)) for i in range(3000)]
    monkeypatch.setattr(source_fingerprints, "stat_video", counting_stat)
    found = source_fingerprints.fingerprints(rows, StorageConfig(), threads=4)
    assert len(found) == 3000 and len(set(found.values())) == 1 and None not in found.values()
    assert alive and max(alive) <= 4 * 4 + 4, alive  # threads * in flight per thread (+ the ones being answered)


def test_the_look_at_the_files_says_how_far_it_has_got(tmp_path, seeded_weights, ray_local, monkeypatch):
    """A rerun stats every file of the manifest before anything else (a HEAD each on S3: a million
    files take many minutes), and said nothing until it was done. Each stat here takes 0.3 s, as a
    slow store's HEAD does, so the clock (every progress interval, at least 0.1 s) has time to speak."""
    import vidbatch.source_fingerprints as source_fingerprints

    real_stat = source_fingerprints.stat_video

    def slow_stat(uri, storage):
        time.sleep(0.3)
        return real_stat(uri, storage)

    from vidbatch.config import StorageConfig
    from vidbatch.source_fingerprints import fingerprints

    lib = tmp_path / "lib"
    lib.mkdir()
    paths = {k: media.write_video(lib / f"{k}.mp4", num_frames=10, fps=10).path for k in ("a", "b", "c")}
    write_manifest(tmp_path / "manifest.parquet", paths)
    run(tmp_path, seeded_weights)

    monkeypatch.setattr(source_fingerprints, "stat_video", slow_stat)
    counted: list[int] = []
    rows = [(k, str(v)) for k, v in paths.items()] + [("gone", str(lib / "gone.mp4"))]
    found = fingerprints(rows, StorageConfig(), progress=counted.append, progress_every_s=0)
    assert counted and sorted(counted) == counted and counted[-1] == 4  # on a clock, and all of them at the end
    assert found["gone"] is not None and all(found[k] for k in paths)

    said: list[str] = []
    raw = job_dict(tmp_path, seeded_weights)
    raw["resources"]["progress_interval_s"] = 1e-6
    night = run_job(parse_job(raw), progress=said.append)
    assert not night.summary["videos"]  # nothing changed
    looked = [line for line in said if line.startswith("planning: looked at ")]
    assert looked and looked[-1].startswith("planning: looked at 3 of 3 files to see which changed ("), said
    assert said.index(looked[-1]) < next(i for i, line in enumerate(said) if line.startswith("run "))


def test_a_run_that_reaches_its_time_limit_commits_what_is_done_and_the_next_does_the_rest(tmp_path, seeded_weights, ray_local):
    """limits.max_run_s: a first run over a whole library (a day or more) lands night by night. Here the
    limit has passed before the first video, so every video is 'not done'; the rows say so, the run
    commits them and says STOPPED EARLY, and the next run (no limit) does them all."""
    from vidbatch.summary_text import summary_text

    lib = tmp_path / "lib"
    lib.mkdir()
    paths = {k: media.write_video(lib / f"{k}.mp4", num_frames=20, fps=10).path for k in ("a", "b", "c")}
    write_manifest(tmp_path / "manifest.parquet", paths)
    said: list[str] = []
    raw = job_dict(tmp_path, seeded_weights)
    raw["limits"] = {"max_run_s": 0.001}
    first = run_job(parse_job(raw), progress=said.append)
    assert first.summary["stopped_early"] == "time_limit"
    assert any("reached limits.max_run_s=0.001s" in line for line in said), said
    assert "STOPPED EARLY: the run reached limits.max_run_s" in summary_text(first.summary, first.summary_uri)
    videos, clips = snapshot(tmp_path)
    assert {(v["video_id"], v["status"], v["error_type"]) for v in videos} == {
        (k, "timeout", "time_limit") for k in paths
    } and not clips  # fmt: skip
    assert all("max_run_s" in v["error_message"] and "next run" in v["error_message"] for v in videos)

    second = run(tmp_path, seeded_weights)  # no limit
    assert second.summary["stopped_early"] is None
    assert second.summary["reasons"] == {"retry after timeout (not reached within limits.max_run_s, not the file's doing)": 3}
    assert {v["status"] for v in assert_exact(tmp_path, set(paths)).values()} == {"ok"}


def test_check_previews_the_night_and_every_manifest_row_is_counted_once(tmp_path, seeded_weights, ray_local):
    from vidbatch.errors import JobError
    from vidbatch.preflight import preflight

    lib = tmp_path / "lib"
    lib.mkdir()
    a = media.write_video(lib / "a.mp4", num_frames=20, fps=10).path
    b = media.write_video(lib / "b.mp4", num_frames=20, fps=10).path
    http = Path("http://host/x.mp4")  # refused by the default inputs.allowed_schemes
    write_manifest(tmp_path / "manifest.parquet", {"a": a, "b": b, "web": http})
    run(tmp_path, seeded_weights)

    # tonight: b's file deleted, c new, a gone from the manifest, the refused row as before
    Path(b).unlink()
    c = media.write_video(lib / "c.mp4", num_frames=20, fps=10).path
    write_manifest(tmp_path / "manifest.parquet", {"b": b, "c": c, "web": http})
    config = parse_job(job_dict(tmp_path, seeded_weights))
    seen = preflight(config)
    assert (seen.to_process, seen.unchanged, seen.removed, seen.refused) == (1, 0, 1, 1)  # b: its row from the stat
    text = "\n".join(seen.lines())
    counts = (
        "2 to decode (1 new, 1 changed, 0 retried; 1 of them gone, denied or not a file, so not decoded), "
        "0 unchanged, 1 removed, 1 refused (1 as before)"
    )
    assert f"a run now: 3 manifest rows (0 duplicate ids); {counts}" in text, text
    assert "refused invalid_uri: 1 rows" in text and "'web': " in text and "http" in text, text
    assert "WARNING" not in text  # 1 of 3 rows removed is a normal night

    said: list[str] = []
    night = run_job(config, progress=said.append)
    assert any(counts in line for line in said), said  # the run does what check said
    redone = [line for line in said if line.startswith("  done again: ")]
    assert redone and redone[0] in text.splitlines(), (redone, text)  # and says why as check did
    # throughput counts the one video decoded, not b's row from the stat (it said 2 videos' rate)
    assert night.summary["throughput"]["videos_per_s"] == pytest.approx(1 / night.summary["wall_time_s"], abs=2e-4)

    # Most of the output's ok videos gone at once (a mount that is not mounted, relative uris run from
    # another folder): refused with nothing changed, not every ok row replaced by not_found.
    version = DeltaTable(str(tmp_path / "out" / "videos")).version()
    Path(c).rename(lib / "c.moved")
    vanished = r"1 of the output's 1 ok videos are gone now, e.g. 'c' at .*c\.mp4.*Nothing was changed.*--allow-empty"
    for attempt in (lambda: preflight(config), lambda: run_job(config, progress=lambda _: None)):
        with pytest.raises(JobError, match=vanished):
            attempt()
    assert DeltaTable(str(tmp_path / "out" / "videos")).version() == version
    allowed = "\n".join(preflight(config, allow_empty=True).lines())  # said to be gone: c's row from the stat
    assert "1 changed, 0 retried; 1 of them gone, denied or not a file, so not decoded" in allowed, allowed
    (lib / "c.moved").rename(c)

    # An empty manifest (an upstream export that failed, most often) would remove every row: check
    # and the run refuse it before anything happens, unless --allow-empty says the library is empty.
    # (with a carried column, as a failed export keeps its columns: before, its planning crashed)
    empty = pa.table({name: pa.array([], pa.string()) for name in ("video_id", "uri", "label")})
    pq.write_table(empty, tmp_path / "manifest.parquet")
    version = DeltaTable(str(tmp_path / "out" / "videos")).version()
    runs_before = sorted(os.listdir(tmp_path / "out" / "_runs"))
    refusal = r"has no rows, so this run would remove all 3 videos rows of the output .*--allow-empty"
    for attempt in (lambda: preflight(config), lambda: run_job(config, progress=lambda _: None)):
        with pytest.raises(JobError, match=refusal):
            attempt()
    assert DeltaTable(str(tmp_path / "out" / "videos")).version() == version
    assert sorted(os.listdir(tmp_path / "out" / "_runs")) == runs_before  # no started.json of the refused run
    text = "\n".join(preflight(config, allow_empty=True).lines())
    assert "WARNING: the manifest has no rows, so this run removes all 3 videos rows" in text, text
    said.clear()
    run_job(config, progress=said.append, allow_empty=True)
    assert any("removes all 3 videos rows" in line for line in said), said
    assert not DeltaTable(str(tmp_path / "out" / "videos")).to_pyarrow_table().num_rows


def test_a_compaction_or_a_run_landing_while_a_run_writes_its_files_doubles_nothing(
    tmp_path, seeded_weights, ray_local, monkeypatch
):
    """Writing a night's files takes as long as rewriting every file that holds a replaced video, and its
    commits only add and remove files. Before, a z-order that landed meanwhile left every row it had
    rewritten twice in both tables (exit 0), and a run that committed meanwhile went unseen."""
    from deltalake import CommitProperties, write_deltalake

    from vidbatch import commit as commit_module
    from vidbatch.errors import JobError

    lib = tmp_path / "lib"
    lib.mkdir()
    files = {name: media.write_video(lib / f"{name}.mp4", num_frames=30, fps=10).path for name in ("a", "b", "c")}
    write_manifest(tmp_path / "manifest.parquet", files)
    run(tmp_path, seeded_weights)
    real_hook = commit_module._fault_hook
    landed: list[str] = []

    def maintenance_while_writing(point: str) -> None:
        # while the files are written (both tables), and between the clips and the videos commits
        tables = {"files-written": ("clips", "videos"), "after-clips-commit": ("videos",)}.get(point, ())
        if tables and point not in landed:
            landed.append(point)
            for name in tables:
                DeltaTable(str(tmp_path / "out" / name)).optimize.z_order(["video_id"])
        real_hook(point)

    monkeypatch.setattr(commit_module, "_fault_hook", maintenance_while_writing)
    media.write_video(lib / "b.mp4", num_frames=40, fps=10)  # b changed tonight
    second = run(tmp_path, seeded_weights)
    assert landed == ["files-written", "after-clips-commit"] and second.summary["changes"]["changed"] == 1
    by_id = assert_exact(tmp_path, {"a", "b", "c"})  # one row per video, each with exactly its own clips
    assert by_id["b"]["run_id"] == second.run_id and by_id["b"]["num_clips"] == 2

    def another_run_while_writing(point: str) -> None:
        if point == "files-written":
            videos = DeltaTable(str(tmp_path / "out" / "videos"))
            other = CommitProperties(custom_metadata={"vidbatch.run_id": "20261207T000000Z-other"})
            write_deltalake(videos, videos.to_pyarrow_table().slice(0, 0), mode="append", commit_properties=other)
        real_hook(point)

    monkeypatch.setattr(commit_module, "_fault_hook", another_run_while_writing)
    media.write_video(lib / "c.mp4", num_frames=40, fps=10)
    clips_version = DeltaTable(str(tmp_path / "out" / "clips")).version()
    refused = r"another run \(20261207T000000Z-other\) committed .* while this one was writing its files.*nothing of this run"
    with pytest.raises(JobError, match=refused):
        run_job(parse_job(job_dict(tmp_path, seeded_weights)), progress=lambda _: None)
    assert DeltaTable(str(tmp_path / "out" / "clips")).version() == clips_version  # nothing committed


def test_a_carried_column_whose_values_no_longer_fit_its_type_is_refused_before_any_work(
    tmp_path, seeded_weights, ray_local
):
    """Before: string 'one' into the table's int64 column crashed every later run in the merge, after
    decoding (its clips committed as orphans); 1.5 into it was stored as 1 without a word."""
    from vidbatch.errors import JobError
    from vidbatch.preflight import preflight

    lib = tmp_path / "lib"
    lib.mkdir()
    a = str(media.write_video(lib / "a.mp4", num_frames=20, fps=10).path)
    new = str(media.write_video(lib / "new.mp4", num_frames=20, fps=10).path)
    manifest = tmp_path / "manifest.parquet"
    pq.write_table(pa.table({"video_id": ["a"], "uri": [a], "n": pa.array([1], pa.int64())}), manifest)
    run(tmp_path, seeded_weights)
    config = parse_job(job_dict(tmp_path, seeded_weights))
    clips_version = DeltaTable(str(tmp_path / "out" / "clips")).version()
    runs_before = sorted(os.listdir(tmp_path / "out" / "_runs"))
    for values, kind in [(["one", "two"], pa.string()), ([1.5, None], pa.float64())]:
        pq.write_table(pa.table({"video_id": ["a", "new"], "uri": [a, new], "n": pa.array(values, kind)}), manifest)
        for attempt in (lambda: preflight(config), lambda: run_job(config, progress=lambda _: None)):
            with pytest.raises(JobError, match=rf"manifest column 'n' is {kind} now, but .* holds it as int64"):
                attempt()
    assert sorted(os.listdir(tmp_path / "out" / "_runs")) == runs_before  # no started.json of the refused runs
    assert DeltaTable(str(tmp_path / "out" / "clips")).version() == clips_version  # nothing decoded or committed
    # values that fit the column's type unchanged are taken (1.0 is 1), and a new column starts with its own type
    pq.write_table(
        pa.table({"video_id": ["a", "new"], "uri": [a, new], "n": pa.array([1.0, 2.0]), "m": ["x", "y"]}), manifest
    )
    run(tmp_path, seeded_weights)
    rows = {v["video_id"]: v for v in assert_exact(tmp_path, {"a", "new"}).values()}
    assert (rows["new"]["n"], rows["new"]["m"]) == (2, "y")


@pytest.mark.parametrize(
    ("table_type", "manifest_values", "refused"),
    [
        (pa.list_(pa.string()), pa.array([[1, 2]], pa.list_(pa.int64())), True),  # ['1', '2'] would be stored
        (pa.struct([("k", pa.string())]), pa.array([{"k": 7}], pa.struct([("k", pa.int64())])), True),
        (pa.map_(pa.string(), pa.string()), pa.array([[("a", 1)]], pa.map_(pa.string(), pa.int64())), True),
        (pa.list_(pa.int64()), pa.array([["1"]], pa.list_(pa.string())), True),
        (pa.list_(pa.int64()), pa.array([[1, None]], pa.list_(pa.int32())), False),  # fits unchanged
        (pa.list_(pa.string()), pa.array([["x"]], pa.large_list(pa.large_string())), False),
        (pa.struct([("k", pa.string())]), pa.array([{"k": "v"}], pa.struct([("k", pa.string())])), False),
    ],
)
def test_a_nested_column_is_retyped_when_its_items_change_between_text_and_numbers(table_type, manifest_values, refused):
    """Before: list<int64> into the table's list<string> was taken, and stored 1 as '1', while int64
    into a string column at the top was refused."""
    from vidbatch.errors import JobError
    from vidbatch.output_refusals import refuse_retyped_columns

    manifest = pa.table({"video_id": ["a"], "tags": manifest_values})
    schema = pa.schema([("video_id", pa.string()), ("tags", table_type)])
    if refused:
        with pytest.raises(JobError, match=rf"manifest column 'tags' is {manifest_values.type} now"):
            refuse_retyped_columns(manifest, schema, "out")
    else:
        refuse_retyped_columns(manifest, schema, "out")


# Two runs: extended (~10 s on 2 cores). The default cases of the type mapping are test_inputs.py's
# test_carried_columns_get_types_the_delta_videos_table_holds_without_loss and
# test_nanosecond_timestamps_are_kept_to_the_microsecond_every_night_alike.
@extended
def test_carried_columns_of_any_writer_commit_and_an_all_null_column_takes_its_first_real_type(
    tmp_path, seeded_weights, ray_local
):
    """Before: uint8 200 failed in the commit after all the work (leaving a broken videos table), and a
    column that was all nulls on the first night refused its first real values for ever."""
    from datetime import datetime, timezone

    lib = tmp_path / "lib"
    lib.mkdir()
    a = str(media.write_video(lib / "a.mp4", num_frames=20, fps=10).path)
    manifest = tmp_path / "manifest.parquet"
    shot_at = datetime(2026, 6, 1, 8, tzinfo=timezone.utc)
    columns = {
        "video_id": ["a"],
        "uri": [a],
        "rating": pa.array([200], pa.uint8()),
        "shot_at": pa.array([shot_at], pa.timestamp("us", tz="Asia/Tokyo")),
        # pandas' default unit; Delta keeps microseconds. Before: cut at the first write, then refused
        # as a changed type on the second night with the same manifest.
        "seen_ns": pa.array([1_700_000_000_123_456_789], pa.timestamp("ns")),
    }
    pq.write_table(pa.table({**columns, "note": pa.nulls(1, pa.null())}), manifest)
    assert run(tmp_path, seeded_weights).summary["statuses"] == {"ok": 1}
    row = assert_exact(tmp_path, {"a"})["a"]
    assert (row["rating"], row["shot_at"], row["note"]) == (200, shot_at, None)
    assert row["seen_ns"] == datetime(2023, 11, 14, 22, 13, 20, 123456)

    pq.write_table(pa.table({**columns, "note": ["keeper"]}), manifest)
    run(tmp_path, seeded_weights)
    assert assert_exact(tmp_path, {"a"})["a"]["note"] == "keeper"
    note_type = DeltaTable(str(tmp_path / "out" / "videos")).schema().to_arrow().field("note").type
    assert note_type in (pa.string(), pa.large_string(), pa.string_view())


# Two runs: extended (~12 s on 2 cores). The default case is test_inputs.py's
# test_paths_the_file_system_refuses_for_what_they_are_get_permanent_statuses (the same stat, no run).
@extended
def test_paths_the_file_system_refuses_for_what_they_are_are_settled_and_left_alone_the_next_night(
    tmp_path, seeded_weights, ray_local
):
    """Before: a symlink loop and a name too long were `timeout` ("the object store failed") and a named
    pipe had no fingerprint ("source changed"): all three were decoded again every night."""
    import os

    lib = tmp_path / "lib"
    lib.mkdir()
    good = media.write_video(lib / "good.mp4", num_frames=20, fps=10).path
    os.symlink(lib / "loop-b.mp4", lib / "loop-a.mp4")
    os.symlink(lib / "loop-a.mp4", lib / "loop-b.mp4")
    os.mkfifo(lib / "fifo.mp4")
    (lib / "clip.mp4").write_bytes(b"not a folder")
    rows = {
        "good": good,
        "loop": lib / "loop-a.mp4",
        "long": lib / ("n" * 300 + ".mp4"),
        "fifo": lib / "fifo.mp4",
        "under_a_file": lib / "clip.mp4" / "x.mp4",
    }
    write_manifest(tmp_path / "manifest.parquet", rows)
    run(tmp_path, seeded_weights)
    by_id = assert_exact(tmp_path, set(rows))
    got = {video_id: (row["status"], row["error_message"]) for video_id, row in by_id.items()}
    assert got["good"][0] == "ok"
    assert got["loop"][0] == "not_found" and "loops through symbolic links" in got["loop"][1]
    assert got["long"][0] == "invalid_uri" and "longer than the file system allows" in got["long"][1]
    assert got["fifo"][0] == "unreadable" and "pipe" in got["fifo"][1]
    assert got["under_a_file"][0] == "not_found" and "a folder in the path is a file" in got["under_a_file"][1]

    again = run(tmp_path, seeded_weights)
    assert again.summary["videos"] == 0 and again.summary["changes"]["unchanged"] == len(rows), again.summary
    assert {v: (r["status"], r["error_message"]) for v, r in assert_exact(tmp_path, set(rows)).items()} == got


def _three_nights(tmp_path: Path, weights: Path) -> dict:
    """The first nights of a library: everything new, nothing changed, then a change, a removal
    and an addition. Returns the library's folder and the files its manifest names after the third night."""
    lib = tmp_path / "lib"
    lib.mkdir()
    a = media.write_video(lib / "a.mp4", num_frames=30, fps=10).path
    b = media.write_video(lib / "b.webm", num_frames=20, fps=10).path
    c = media.write_video(lib / "c.mp4", num_frames=25, fps=10).path
    junk = lib / "junk.mp4"
    junk.write_bytes(b"not a video" * 100)
    write_manifest(tmp_path / "manifest.parquet", {"a": a, "b": b, "c": c, "junk": junk})

    first = run(tmp_path, weights)
    assert first.summary["changes"]["new"] == 4
    v1 = assert_exact(tmp_path, {"a", "b", "c", "junk"})
    assert v1["junk"]["status"] == "unreadable"

    started = time.monotonic()
    second = run(tmp_path, weights)
    second_wall = time.monotonic() - started
    assert second.summary["videos"] == 0 and second.summary["changes"]["unchanged"] == 4
    assert second_wall < first.summary["wall_time_s"] / 2
    v2 = assert_exact(tmp_path, {"a", "b", "c", "junk"})
    assert {k: v["run_id"] for k, v in v2.items()} == {k: v["run_id"] for k, v in v1.items()}

    # change a, delete b from the manifest, add d; junk stays a permanent failure
    media.write_video(a, num_frames=40, fps=10)
    d = media.write_video(lib / "d.avi", num_frames=12, fps=12).path
    write_manifest(tmp_path / "manifest.parquet", {"a": a, "c": c, "junk": junk, "d": d})
    third = run(tmp_path, weights)
    assert third.summary["changes"] == {
        "new": 1, "changed": 1, "retried": 0, "removed": 1, "unchanged": 2, "refreshed": 0, "leftovers_removed": 0,
    }  # fmt: skip
    v3 = assert_exact(tmp_path, {"a", "c", "junk", "d"})
    assert v3["a"]["run_id"] == v3["d"]["run_id"] == third.run_id
    assert v3["c"]["run_id"] == v3["junk"]["run_id"] == first.run_id
    assert v3["a"]["num_clips"] == 2  # 4 s now: samples 0..3 -> windows 0, 1
    return {"a": a, "c": c, "junk": junk, "d": d, "lib": lib}


def test_nightly_reruns(tmp_path, seeded_weights, ray_local):
    _three_nights(tmp_path, seeded_weights)
    from vidbatch.cli import _parser
    from vidbatch.preflight import preflight

    # `check --retry-failed` previews the retry run (before, check refused the flag)
    args = _parser().parse_args(["check", str(tmp_path / "job.yaml"), "--retry-failed"])
    assert args.retry_failed and not args.allow_empty
    config = parse_job(job_dict(tmp_path, seeded_weights))
    assert "0 to decode (0 new, 0 changed, 0 retried), 4 unchanged" in preflight(config).counts
    assert "1 to decode (0 new, 0 changed, 1 retried), 3 unchanged" in preflight(config, retry_failed=True).counts


# Four more runs (~35 s on 2 cores): extended. Their logic has default cases of its own:
# --retry-failed and a changed model in test_decide, a deleted file under a kept row in
# test_check_previews_the_night_and_every_manifest_row_is_counted_once.
@extended
def test_later_nights_retry_failures_follow_the_model_and_settle_deleted_files(tmp_path, seeded_weights, ray_local):
    nights = _three_nights(tmp_path, seeded_weights)
    a, c, junk, d, lib = (nights[k] for k in ("a", "c", "junk", "d", "lib"))

    # --retry-failed redoes the permanent failure only
    fourth = run_job(parse_job(job_dict(tmp_path, seeded_weights)), progress=lambda _: None, retry_failed=True)
    assert fourth.summary["changes"]["retried"] == 1 and fourth.summary["videos"] == 1

    # a different model reprocesses everything
    fifth = run(tmp_path, "none")
    assert fifth.summary["changes"]["changed"] == 4
    v5 = assert_exact(tmp_path, {"a", "c", "junk", "d"})
    assert all("UNTRAINED" in v["model_id"] for v in v5.values())

    # older versions stay reachable through the history
    old = DeltaTable(str(tmp_path / "out" / "videos"), version=0).to_pyarrow_table().column("video_id").to_pylist()
    assert sorted(old) == ["a", "b", "c", "junk"]

    # a file deleted under a kept manifest row: its row says so, with no decoding at all
    c.unlink()
    sixth = run(tmp_path, "none")
    assert sixth.summary["changes"]["changed"] == 1 and sixth.summary["statuses"] == {"not_found": 1}
    assert "pipeline_s" not in sixth.summary["timings_s"]  # nothing went to the decode stage
    v6 = assert_exact(tmp_path, {"a", "c", "junk", "d"})
    assert v6["c"]["status"] == "not_found" and v6["c"]["run_id"] == sixth.run_id and v6["c"]["num_clips"] == 0
    assert "no object at this uri" in v6["c"]["error_message"]
    assert v6["a"]["run_id"] == v5["a"]["run_id"]

    # a night that only adds a video: one commit per table (no superseded clips to remove)
    def versions() -> tuple[int, int]:
        return tuple(DeltaTable(str(tmp_path / "out" / t)).version() for t in ("clips", "videos"))  # type: ignore[return-value]

    before = versions()
    e = media.write_video(lib / "e.mp4", num_frames=10, fps=10).path
    write_manifest(tmp_path / "manifest.parquet", {"a": a, "c": c, "junk": junk, "d": d, "e": e})
    seventh = run(tmp_path, "none")
    assert seventh.summary["changes"]["new"] == 1 and versions() == (before[0] + 1, before[1] + 1)
    assert_exact(tmp_path, {"a", "c", "junk", "d", "e"})


def test_task_top_k_precision_and_resize_changes_redo_the_ok_rows(tmp_path, seeded_weights, ray_local):
    lib = tmp_path / "lib"
    lib.mkdir()
    a = media.write_video(lib / "a.mp4", num_frames=20, fps=10).path
    junk = lib / "junk.mp4"
    junk.write_bytes(b"not a video" * 100)
    write_manifest(tmp_path / "manifest.parquet", {"a": a, "junk": junk})

    embed_only = run(tmp_path, seeded_weights, model__task="embed")
    rows = assert_exact(tmp_path, {"a", "junk"})
    assert rows["a"]["labels"] is None and rows["a"]["embedding"] is not None

    both = run(tmp_path, seeded_weights, model__task="both")  # top_k 2 from the job
    assert both.summary["changes"]["changed"] == 1 and both.summary["changes"]["unchanged"] == 1  # junk holds no results
    assert both.summary["reasons"] == {"model settings changed (task embed -> both, top_k none -> 2)": 1}
    rows = assert_exact(tmp_path, {"a", "junk"})
    assert rows["a"]["run_id"] == both.run_id and len(rows["a"]["labels"]) == 2
    assert rows["junk"]["run_id"] == embed_only.run_id
    clip_labels = DeltaTable(str(tmp_path / "out" / "clips")).to_pyarrow_table(columns=["labels"]).column("labels").to_pylist()
    assert clip_labels and all(len(labels) == 2 for labels in clip_labels)

    # A change of top_k alone (2 -> 1) is test_decide_redoes_ok_rows_made_with_other_model_settings's: one
    # more decoding run here cost ~10 s on 2 cores for no path of its own. A rerun with nothing to
    # decode starts no actors.
    again = run(tmp_path, seeded_weights, model__task="both")
    assert again.summary["videos"] == 0 and again.summary["changes"]["unchanged"] == 2

    # model.resize: fast reaches the decoders: the row is redone, its embedding a little off the exact one
    exact_embedding = np.array(rows["a"]["embedding"])
    fast = run(tmp_path, seeded_weights, model__task="both", model__resize="fast")
    assert fast.summary["reasons"] == {"model settings changed (resize exact -> fast)": 1} and fast.summary["resize"] == "fast"
    assert "frames resized by swscale (model.resize: fast)" in summary_text(fast.summary, str(tmp_path / "out"))
    fast_embedding = np.array(assert_exact(tmp_path, {"a", "junk"})["a"]["embedding"])
    assert 0.99 < float(exact_embedding @ fast_embedding) < 1.0 - 1e-7

    # The record of the run that made row a, damaged: its settings are unknown, so a change of
    # top_k cannot be seen. Before, that was silent; now check and the run say so.
    from vidbatch.preflight import preflight

    (tmp_path / "out" / "_runs" / fast.run_id / "started.json").write_text('{"job": {"mod')
    raw = job_dict(tmp_path, seeded_weights)
    raw["model"].update(task="both", top_k=3)
    seen = preflight(parse_job(raw))
    assert seen.to_process == 0
    text = "\n".join(seen.lines())
    assert f"WARNING: 1 ok rows come from runs whose _runs/<run_id>/started.json is gone or unreadable ({fast.run_id})" in text


def test_changed_manifest_columns_reach_kept_rows_without_decoding(tmp_path, seeded_weights, ray_local):
    """A relabelled video keeps its results but not its old label (columns carried through)."""
    lib = tmp_path / "lib"
    lib.mkdir()
    a = media.write_video(lib / "a.mp4", num_frames=20, fps=10).path
    b = media.write_video(lib / "b.mp4", num_frames=20, fps=10).path
    junk = lib / "junk.mp4"
    junk.write_bytes(b"not a video" * 100)
    # "nouri" is refused by the plan (invalid_uri), before any decoding, in both runs
    ids, uris = ["a", "b", "junk", "nouri"], [str(a), str(b), str(junk), ""]

    def manifest(**extras: list) -> None:
        pq.write_table(pa.table({"video_id": ids, "uri": uris, **extras}), tmp_path / "manifest.parquet")

    def versions() -> tuple[int, int]:
        return tuple(DeltaTable(str(tmp_path / "out" / t)).version() for t in ("clips", "videos"))  # type: ignore[return-value]

    manifest(label=["cat", "dog", "eel", "fox"])
    first = run(tmp_path, seeded_weights)
    v1 = assert_exact(tmp_path, set(ids))

    manifest(label=["lion", "dog", "eel", "wolf"], split=["train", "test", None, None])
    from vidbatch.preflight import preflight

    # The counts line puts each refreshed row where its manifest row is counted: a and b among
    # the unchanged, nouri among the refused as before (not "of the unchanged").
    counts = "\n".join(preflight(parse_job(job_dict(tmp_path, seeded_weights))).lines())
    assert "3 unchanged (2 with changed manifest columns, rows updated without decoding)" in counts, counts
    assert "1 refused (1 as before, 1 of them with changed manifest columns, rows updated)" in counts, counts
    second = run(tmp_path, seeded_weights)
    assert second.summary["videos"] == 0 and "pipeline_s" not in second.summary["timings_s"]
    # junk's values are the same as before (its split is null): its row is not rewritten
    assert second.summary["changes"]["unchanged"] == 3 and second.summary["changes"]["refreshed"] == 3
    from vidbatch.summary_text import summary_text

    said = summary_text(second.summary, "summary.json")  # what the terminal shows at the run's end
    assert " committed " in said.splitlines()[0]
    assert "unchanged 3; 3 kept rows with changed manifest columns rewritten, not decoded" in said
    v2 = assert_exact(tmp_path, set(ids))
    expected = {"a": ("lion", "train"), "b": ("dog", "test"), "junk": ("eel", None), "nouri": ("wolf", None)}
    assert {k: (v["label"], v["split"]) for k, v in v2.items()} == expected
    for key in ("run_id", "processed_at", "embedding", "labels", "status", "num_clips", "source_fingerprint"):
        assert {k: v[key] for k, v in v2.items()} == {k: v[key] for k, v in v1.items()}, key

    before = versions()
    third = run(tmp_path, seeded_weights)  # the same manifest again: nothing to rewrite
    assert third.summary["changes"]["refreshed"] == 0 and versions() == before

    manifest(label=["lion", "dog", "eel", "wolf"])  # a column dropped from the manifest is dropped from the rows
    fourth = run(tmp_path, seeded_weights)
    assert fourth.summary["changes"]["refreshed"] == 2
    v4 = assert_exact(tmp_path, set(ids))
    assert all(v["split"] is None for v in v4.values()) and v4["a"]["run_id"] == first.run_id


def _cli_run(
    tmp_path: Path,
    weights: Path,
    env_extra: dict[str, str],
    *,
    kill_after: str | None = None,
    term_after: str | None = None,
    term_delay_s: float = 0.0,
    term_signal: int = signal.SIGTERM,
    own_ray: bool = False,
    overrides: tuple[str, ...] = (),
    output: list[str] | None = None,
) -> int:
    """`vidbatch run` as its own driver process, on the test session's Ray (as on a cluster), or
    on a Ray it starts itself (own_ray, as a run on one machine)."""
    import ray

    if not own_ray:
        env_extra = {**env_extra, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    job = tmp_path / "job.yaml"
    raw = job_dict(tmp_path, weights)
    raw["resources"]["progress_interval_s"] = 0.1
    job.write_text(yaml.safe_dump(raw))
    env = {**os.environ, **env_extra}
    sets = [arg for override in overrides for arg in ("--set", override)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "vidbatch.cli", "run", str(job), *sets],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 240
    for line in proc.stdout:
        if output is not None:
            output.append(line)
        if kill_after and kill_after in line:
            os.killpg(proc.pid, signal.SIGKILL)  # the driver and everything it started
            break
        if term_after and term_after in line:
            time.sleep(term_delay_s)
            if term_signal == signal.SIGINT:
                os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the driver's whole process group
            else:
                proc.send_signal(term_signal)  # the driver only, as `vidbatch stop` or Kubernetes would
            term_after = None
        assert time.monotonic() < deadline, "run did not finish in time"
    return proc.wait(timeout=120)


def test_ctrl_c_during_the_commit_waits_for_it_and_the_run_says_it_committed(tmp_path, seeded_weights, ray_local):
    lib = tmp_path / "lib"
    lib.mkdir()
    a = media.write_video(lib / "a.mp4", num_frames=20, fps=10).path
    write_manifest(tmp_path / "manifest.parquet", {"a": a})
    output: list[str] = []
    code = _cli_run(tmp_path, seeded_weights, {"VIDBATCH_FAULT": "sigint:after-clips-commit"}, output=output)
    text = "".join(output)
    assert code == 0, text
    assert "SIGINT while committing" in text and "nothing was committed" not in text and "Traceback" not in text
    videos, _ = snapshot(tmp_path)
    (row,) = videos
    assert row["status"] == "ok" and (tmp_path / "out" / "_runs" / row["run_id"] / "summary.json").is_file()
    assert own_clips(tmp_path)["a"] == (row["run_id"], row["num_clips"])


def test_a_run_whose_output_reader_goes_away_still_commits(tmp_path, seeded_weights, ray_local):
    """`vidbatch run job.yaml | head -1`, or a log collector that dies: the next progress line met a
    closed pipe, and the run ended there (BrokenPipeError, exit 141, nothing committed, no word)."""
    import ray

    lib = tmp_path / "lib"
    lib.mkdir()
    paths = {k: media.write_video(lib / f"{k}.mp4", num_frames=30, fps=10).path for k in ("a", "b")}
    write_manifest(tmp_path / "manifest.parquet", paths)
    job = tmp_path / "job.yaml"
    raw = job_dict(tmp_path, seeded_weights)
    raw["resources"]["progress_interval_s"] = 0.1
    job.write_text(yaml.safe_dump(raw))
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    proc = subprocess.Popen(
        [sys.executable, "-m", "vidbatch.cli", "run", str(job)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    assert proc.stdout is not None
    proc.stdout.readline()  # the reader takes one line and leaves
    proc.stdout.close()
    assert proc.wait(timeout=240) == 0
    videos, _ = snapshot(tmp_path)
    assert sorted((row["video_id"], row["status"]) for row in videos) == [("a", "ok"), ("b", "ok")]
    (run_id,) = {row["run_id"] for row in videos}
    assert (tmp_path / "out" / "_runs" / run_id / "summary.json").is_file()


def test_sigterm_stops_a_run_with_one_line_and_commits_nothing(tmp_path, seeded_weights, ray_local):
    lib = tmp_path / "lib"
    lib.mkdir()
    paths = {k: media.write_video(lib / f"{k}.mp4", num_frames=40, fps=10).path for k in ("a", "b", "c")}
    write_manifest(tmp_path / "manifest.parquet", paths)
    output: list[str] = []
    code = _cli_run(tmp_path, seeded_weights, {}, term_after=" to decode ", output=output)
    text = "".join(output)
    assert code == 143, text
    assert "vidbatch: stopped by SIGTERM; nothing was committed by this run" in text
    assert "Traceback" not in text and "SIGTERM received" not in text
    assert not (tmp_path / "out" / "videos").exists()


# Ctrl-C takes the same path as SIGTERM after its first line: extended (~30 s), for the suite's 10 minutes.
@pytest.mark.parametrize("stop", [signal.SIGTERM, pytest.param(signal.SIGINT, marks=extended)], ids=["sigterm", "ctrl-c"])
def test_a_stop_signal_midway_commits_what_is_done_and_the_next_run_does_the_rest(tmp_path, seeded_weights, ray_local, stop):
    """Kubernetes' eviction, `vidbatch stop`, a Ctrl-C: a night's finished videos are kept. The rest
    are `timeout` rows the next run does first, and the exit still says the run was stopped."""
    lib = tmp_path / "lib"
    lib.mkdir()
    # Two long videos (~90 clips each to embed) on one decoder, which decodes one and then the
    # other: the stop comes as the first finishes, with the second far from done, whichever
    # order Ray Data hands them out in. (A short one could finish right after a long one: its
    # row waits behind the long one's clips.) Small frames: the clips' count is what takes the
    # model's time (each is resized for it), and two 320x240 videos took ~20 s to encode.
    rows = {
        name: media.write_video(lib / f"{name}.mp4", num_frames=1800, fps=10, width=64, height=48).path for name in ("a", "b")
    }
    write_manifest(tmp_path / "manifest.parquet", rows)
    output: list[str] = []
    code = _cli_run(
        tmp_path,
        seeded_weights,
        {},
        term_after="videos 1/2",
        term_signal=stop,
        # Rows go on to the model one by one, in the order they come.
        overrides=("resources.decode_actors=1", "resources.batch_clips=1"),
        output=output,
    )
    text = "".join(output)
    name = "SIGTERM" if stop == signal.SIGTERM else "Ctrl-C"
    assert code == (143 if stop == signal.SIGTERM else 130), text
    assert f"{name}: the run takes no more videos and commits what is done" in text, text
    assert "STOPPED EARLY: stopped by " in text and "what was done is committed" in text, text
    assert "nothing was committed" not in text and "Traceback" not in text, text
    by_id = assert_exact(tmp_path, {"a", "b"})
    ended = "sigterm" if stop == signal.SIGTERM else "interrupted"
    (done,) = [video_id for video_id, row in by_id.items() if row["status"] == "ok"]
    (left,) = {"a", "b"} - {done}
    assert (by_id[left]["status"], by_id[left]["error_type"]) == ("timeout", ended)
    assert "the next run does it" in by_id[left]["error_message"]
    run_id = by_id[done]["run_id"]
    summary = json.loads((tmp_path / "out" / "_runs" / run_id / "summary.json").read_text())
    assert summary["stopped_early"] == ended and summary["statuses"] == {"ok": 1, "timeout": 1}

    rerun = run(tmp_path, seeded_weights)
    assert rerun.summary["changes"]["retried"] == 1 and rerun.summary["changes"]["unchanged"] == 1
    said = "SIGTERM" if stop == signal.SIGTERM else "Ctrl-C"
    reason = f"retry after timeout (not reached: the run was stopped by {said}, not the file's doing)"
    assert rerun.summary["reasons"] == {reason: 1}
    after = assert_exact(tmp_path, {"a", "b"})
    assert after[left]["status"] == "ok" and after[done]["run_id"] == run_id


def test_a_stop_signal_before_any_video_finished_commits_nothing(tmp_path, seeded_weights, ray_local):
    """Nothing done: a commit would only put `timeout` rows over the rows of the run before."""
    lib = tmp_path / "lib"
    lib.mkdir()
    # A long video: its first clips are said (in progress) long before it finishes. Small frames:
    # the clips' count is what keeps it going (each is resized for the model); 320x240 took ~5 s to encode.
    long = media.write_video(lib / "long.mp4", num_frames=900, fps=10, width=64, height=48).path
    write_manifest(tmp_path / "manifest.parquet", {"long": long})
    output: list[str] = []
    code = _cli_run(tmp_path, seeded_weights, {}, term_after="of videos in progress)", output=output)
    text = "".join(output)
    assert code == 143, text
    assert "SIGTERM: the run takes no more videos" in text, text
    assert "vidbatch: stopped by SIGTERM; nothing was committed by this run" in text, text
    assert not (tmp_path / "out" / "videos").exists()


# A run that starts its own Ray pays Ray's start and the driver's imports (~40 s on 2 cores):
# extended. The default cases of the guarantee (one line, exit 143, nothing committed; or what was
# done committed) are test_sigterm_stops_a_run_with_one_line_and_commits_nothing and
# test_a_stop_signal_midway_commits_what_is_done_and_the_next_run_does_the_rest, on the session's Ray.
@extended
@pytest.mark.parametrize(
    ("term_after", "term_delay_s"),
    [
        (" to decode ", 0.3),  # while ray.init starts the run's own Ray (seconds)
        ("videos 1/", 0.0),  # while the pipeline runs
    ],
    ids=["ray-starting", "pipeline-running"],
)
def test_sigterm_to_a_run_with_its_own_ray_is_one_line_whenever_it_comes(
    tmp_path, seeded_weights, ray_local, term_after, term_delay_s
):
    lib = tmp_path / "lib"
    lib.mkdir()
    paths = {k: media.write_video(lib / f"{k}.mp4", num_frames=60, fps=10).path for k in ("a", "b", "c")}
    write_manifest(tmp_path / "manifest.parquet", paths)
    output: list[str] = []
    code = _cli_run(tmp_path, seeded_weights, {}, term_after=term_after, term_delay_s=term_delay_s, own_ray=True, output=output)
    text = "".join(output)
    # Before: a SIGTERM during Ray's start met ray.init's own handler (exit 15, or a native abort
    # with a stack dump); one during the pipeline was followed by Ray Data's tracebacks as its
    # execution outlived the Ray shut down on the way out.
    assert code == 143, text
    lines = [line for line in text.splitlines() if line.strip()]
    if term_after == " to decode ":
        last = "vidbatch: stopped by SIGTERM; nothing was committed by this run"
        assert last in lines, text
        assert not (tmp_path / "out" / "videos").exists()
    else:  # a video had finished: the run committed it, and its summary is the last word
        assert "STOPPED EARLY: stopped by SIGTERM; what was done is committed" in text, text
        (last,) = [line for line in lines if line.startswith("  summary: ")]
    # After it, only Ray Data's own INFO line may still arrive (its log is forwarded asynchronously);
    # before the fix, warnings and tracebacks followed it.
    after = lines[lines.index(last) + 1 :]
    assert all(" INFO " in line and "execution finished" in line for line in after), text
    assert "Traceback" not in text and "Fatal Python error" not in text, text


def test_a_second_stop_while_ray_starts_does_not_wait_for_the_start(monkeypatch):
    """The first SIGTERM during ray.init (or the drain) is held; a start that hangs must still
    yield to a second one (a scheduler's repeated stop), while the commit's hold ignores it. The
    same SIGTERM delivered twice at once (`timeout` forwarding what `pkill` also sent) is one stop."""
    from vidbatch import stop_signals
    from vidbatch.errors import Stopped
    from vidbatch.stop_signals import stops_recorded

    monkeypatch.setattr(stop_signals, "SAME_STOP_S", 0.3)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Stopped, match="stopped by SIGTERM"), stops_recorded(second_stops=True) as received:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        assert received == [signal.SIGTERM]  # held
        os.kill(os.getpid(), signal.SIGTERM)  # the same stop, delivered again
        time.sleep(0.05)
        assert received == [signal.SIGTERM, signal.SIGTERM]  # still held
        time.sleep(0.3)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        raise AssertionError("the second SIGTERM did not stop the block")
    with stops_recorded() as received:  # the commit's hold: every stop waits
        for _ in range(2):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
    assert received == [signal.SIGTERM, signal.SIGTERM]
    assert signal.getsignal(signal.SIGTERM) is before  # handlers restored


def own_clips(tmp_path: Path) -> dict[str, tuple[str, int]]:
    """What a strict reader sees: each videos row's run_id and the clips joined to it on (video_id, run_id)."""
    videos, clips = snapshot(tmp_path)
    return {
        v["video_id"]: (v["run_id"], sum(1 for c in clips if (c["video_id"], c["run_id"]) == (v["video_id"], v["run_id"])))
        for v in videos
    }


# After the videos commit: extended (the repair path is the after-clips case's).
@pytest.mark.parametrize("fault", ["after-clips-commit", pytest.param("after-videos-commit", marks=extended)])
def test_crash_between_the_commits_keeps_the_last_run_whole_and_is_repaired(tmp_path, seeded_weights, ray_local, fault):
    lib = tmp_path / "lib"
    lib.mkdir()
    rows = {name: media.write_video(lib / f"{name}.mp4", num_frames=20, fps=10).path for name in ("a", "b")}
    write_manifest(tmp_path / "manifest.parquet", rows)
    run(tmp_path, seeded_weights)
    before = assert_exact(tmp_path, {"a", "b"})
    seen_before = own_clips(tmp_path)

    media.write_video(rows["a"], num_frames=35, fps=10)  # a changes
    rows["c"] = media.write_video(lib / "c.mp4", num_frames=15, fps=10).path  # c is new
    write_manifest(tmp_path / "manifest.parquet", rows)
    code = _cli_run(tmp_path, seeded_weights, {"VIDBATCH_FAULT": fault})
    assert code == 137
    seen = own_clips(tmp_path)
    if fault == "after-clips-commit":  # the last complete run, whole: a keeps its old clips
        assert seen == seen_before
    else:  # the dead run is complete: every videos row has its own clips
        assert set(seen) == {"a", "b", "c"} and seen["a"][1] == 2 and seen["c"][1] == 1 and seen["b"] == seen_before["b"]

    del rows["c"]  # c leaves the manifest before the repair
    write_manifest(tmp_path / "manifest.parquet", rows)
    repaired = run(tmp_path, seeded_weights)
    after = assert_exact(tmp_path, {"a", "b"})  # no clip row of c, none left over from the dead run
    assert after["b"]["run_id"] == before["b"]["run_id"]
    if fault == "after-clips-commit":
        assert repaired.summary["changes"]["changed"] == 1
        assert after["a"]["run_id"] == repaired.run_id and after["a"]["num_clips"] == 2
    else:
        assert repaired.summary["changes"]["removed"] == 1 and repaired.summary["changes"]["changed"] == 0


@extended  # the tidying itself is in the default suite: the crash test's repair run
def test_a_run_that_only_removes_a_dead_runs_clips_commits_and_says_so(tmp_path, seeded_weights, ray_local):
    lib = tmp_path / "lib"
    lib.mkdir()
    rows = {name: media.write_video(lib / f"{name}.mp4", num_frames=20, fps=10).path for name in ("a", "b")}
    write_manifest(tmp_path / "manifest.parquet", rows)
    run(tmp_path, seeded_weights)
    seen_before = own_clips(tmp_path)
    old_bytes, old_stat = rows["a"].read_bytes(), rows["a"].stat()

    media.write_video(rows["a"], num_frames=35, fps=10)
    assert _cli_run(tmp_path, seeded_weights, {"VIDBATCH_FAULT": "after-clips-commit"}) == 137
    # a's old bytes come back: the dead run's clip rows are all that is left to deal with
    rows["a"].write_bytes(old_bytes)
    os.utime(rows["a"], ns=(old_stat.st_atime_ns, old_stat.st_mtime_ns))
    clips_version = DeltaTable(str(tmp_path / "out" / "clips")).version()

    lines: list[str] = []
    code = _cli_run(tmp_path, seeded_weights, {}, output=lines)
    assert code == 0
    text = "\n".join(lines)
    assert "changed nothing" not in text and "committed" in text
    assert "removed the clips an interrupted run left behind (of 1 video;" in text
    assert DeltaTable(str(tmp_path / "out" / "clips")).version() == clips_version + 1
    assert_exact(tmp_path, {"a", "b"})  # no clip row without its videos row
    assert own_clips(tmp_path) == seen_before


@extended  # a driver dead mid-run in the default suite: the crash test (os._exit between the commits)
def test_sigkill_mid_run_leaves_last_commit_and_rerun_finishes(tmp_path, seeded_weights, ray_local):
    lib = tmp_path / "lib"
    lib.mkdir()
    rows = {f"v{i}": media.write_video(lib / f"v{i}.mp4", num_frames=30, fps=10).path for i in range(4)}
    write_manifest(tmp_path / "manifest.parquet", dict(list(rows.items())[:1]))
    run(tmp_path, seeded_weights)
    committed = assert_exact(tmp_path, {"v0"})

    write_manifest(tmp_path / "manifest.parquet", rows)
    lines: list[str] = []
    code = _cli_run(tmp_path, seeded_weights, {}, kill_after="videos 1/3", output=lines)
    assert code == -signal.SIGKILL
    assert assert_exact(tmp_path, {"v0"}) == committed  # nothing of the dead run is visible
    (dead_run,) = {line.split()[1].rstrip(":") for line in lines if line.startswith("run ")}
    left = list(Path(tempfile.gettempdir()).glob(f"vidbatch-spill-{dead_run}-*"))
    assert left, "the killed driver's spill folder should be there until the next run"

    rerun = run(tmp_path, seeded_weights)
    assert not any(folder.exists() for folder in left)  # the next run removed it
    assert rerun.summary["changes"]["new"] == 3
    final = assert_exact(tmp_path, {"v0", "v1", "v2", "v3"})
    assert final["v0"]["run_id"] == committed["v0"]["run_id"]


def test_a_stuck_run_commits_at_the_no_progress_deadline_and_exits_cleanly(tmp_path, seeded_weights, ray_local):
    lib = tmp_path / "lib"
    lib.mkdir()
    rows = {name: media.write_video(lib / f"{name}.mp4", num_frames=20, fps=10).path for name in ("fine", "stuck")}
    write_manifest(tmp_path / "manifest.parquet", rows)
    output: list[str] = []
    started = time.monotonic()
    # The hang outlasts the decode deadline's reach (600 s), so only the driver's watchdog ends it.
    code = _cli_run(
        tmp_path,
        seeded_weights,
        # Ray's workers do not inherit the driver's environment: the fault rides in the job's
        # runtime_env, injected the way the Jobs API hands a driver its job config.
        {"RAY_JOB_CONFIG_JSON_ENV_VAR": json.dumps({"runtime_env": {"env_vars": {"VIDBATCH_FAULT": "decode-hang:stuck"}}})},
        # Long enough for the actors' start (torch import, model build) on a busy 2-core machine; "fine" may still time out.
        overrides=("limits.no_progress_timeout_s=12",),
        output=output,
    )
    text = "".join(output)
    assert code == 0, text
    assert time.monotonic() - started < 120, text
    assert "committing what is done" in text
    assert "STOPPED EARLY: no video finished for limits.no_progress_timeout_s" in text, text  # in the last lines
    # The abandoned execution is stopped before the driver exits: no Ray teardown tracebacks.
    assert "Traceback" not in text, text
    by_id = assert_exact(tmp_path, {"stuck", "fine"})
    assert by_id["stuck"]["status"] == "timeout" and by_id["stuck"]["error_type"] == "no_progress"
    # "fine" may have finished, or still sat in a Ray Data buffer behind the hung task (one decode
    # actor here); either way it has its row, and a timeout row says why and is retried.
    fine = by_id["fine"]
    assert fine["status"] == "ok" or (fine["status"] == "timeout" and fine["error_type"] == "no_progress"), fine

    rerun = run(tmp_path, seeded_weights)  # a watchdog timeout is transient: retried next run
    assert rerun.summary["changes"]["retried"] == (fine["status"] == "timeout") + 1, rerun.summary["changes"]
    assert {r["status"] for r in assert_exact(tmp_path, {"stuck", "fine"}).values()} == {"ok"}


def test_the_emptying_warning_counts_one_row_in_words():
    from vidbatch.worklist import _all_rows

    assert (_all_rows(1), _all_rows(3)) == ("the only videos row", "all 3 videos rows")


@pytest.fixture
def small_disk(tmp_path, monkeypatch):
    """A real small disk (tmpfs) as the temporary folder, where a run's spill goes. Mounting needs root."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", str(mount)], capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"a tmpfs cannot be mounted here ({done.stderr.strip() or done.returncode}): needs root")
    monkeypatch.setattr(tempfile, "tempdir", str(mount))
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


# ~22 s (600 clips on one decoder, to fill the spill's first flush): extended, so the default suite stays
# inside its 10 minutes. Cheaper cases in the default suite: the refusal of a run whose disk is already
# low (test_a_run_is_refused_before_any_work_when_its_temporary_disk_is_already_low), the stop that
# commits what is done (test_a_run_that_reaches_its_time_limit_commits_what_is_done_and_the_next_does_the_rest:
# the same give-up path), and the retry of the rows it leaves (test_videos_a_stopped_run_left_are_decoded_before_new_ones).
@extended
def test_a_run_whose_temporary_disk_runs_low_stops_and_commits_what_is_done(tmp_path, seeded_weights, ray_local, small_disk):
    """A disk that fills under the spill lost the whole night (the spill cannot be written, so nothing
    commits). With limits.spill_min_free_mb the run stops taking videos while there is room, commits
    what is done, and the next run does the rest. Here the disk has 300 KB above the reserve when the
    run starts, and the spill's first flush (512 clips of ~1.6 KB) takes more."""
    from vidbatch.summary_text import summary_text

    lib = tmp_path / "lib"
    lib.mkdir()
    paths = {
        f"v{i:02d}": media.write_video(lib / f"v{i:02d}.mp4", num_frames=50, fps=10, width=64, height=48).path for i in range(12)
    }
    write_manifest(tmp_path / "manifest.parquet", paths)
    raw = job_dict(tmp_path, seeded_weights)
    raw["sampling"] = {"mode": "fps", "fps": 10.0, "clip_len_s": 0.1}  # a clip a frame: 600 clips
    raw["resources"] = {"batch_clips": 8, "decode_actors": 1}
    raw["limits"] = {"spill_min_free_mb": 32}
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (shutil.disk_usage(small_disk).free - 32 * 2**20 - 300 * 2**10))
    said: list[str] = []
    first = run_job(parse_job(raw), progress=said.append)
    assert first.summary["stopped_early"] == "spill_space", said
    assert any("has" in line and "MB free, under limits.spill_min_free_mb=32" in line for line in said), said
    assert "STOPPED EARLY: the run's temporary folder ran low on space" in summary_text(first.summary, first.summary_uri)
    videos, clips = snapshot(tmp_path)
    by_status = Counter((v["status"], v["error_type"]) for v in videos)
    assert by_status[("ok", None)] >= 1 and by_status[("timeout", "spill_space")] >= 1, by_status
    assert set(by_status) == {("ok", None), ("timeout", "spill_space")}, by_status
    ok = {v["video_id"] for v in videos if v["status"] == "ok"}
    assert {c["video_id"] for c in clips} == ok and len(clips) == 50 * len(ok)  # whole videos only

    filler.unlink()  # room again: the next run does the rest, as not the files' doing
    second = run_job(parse_job(raw), progress=lambda _: None)
    assert second.summary["stopped_early"] is None
    assert second.summary["reasons"] == {
        "retry after timeout (not reached: the run's temporary folder ran low on space, not the file's doing)": 12 - len(ok)
    }
    assert {v["status"] for v in assert_exact(tmp_path, set(paths)).values()} == {"ok"}


def test_a_run_is_refused_before_any_work_when_its_temporary_disk_is_already_low(tmp_path, seeded_weights, small_disk):
    lib = tmp_path / "lib"
    lib.mkdir()
    write_manifest(tmp_path / "manifest.parquet", {"a": media.write_video(lib / "a.mp4", num_frames=20, fps=10).path})
    raw = job_dict(tmp_path, seeded_weights)
    raw["limits"] = {"spill_min_free_mb": 64}  # more than the whole disk
    from vidbatch.errors import JobError
    from vidbatch.preflight import preflight

    notes = preflight(parse_job(raw)).notes  # `vidbatch check` says so first
    assert any("has 40.0 MB free, under limits.spill_min_free_mb=64" in note and "would refuse" in note for note in notes), notes

    with pytest.raises(JobError, match=r"has 40\.0 MB free, under limits.spill_min_free_mb=64: free space there, point TMPDIR"):
        run_job(parse_job(raw), progress=lambda _: None)
    assert not (tmp_path / "out" / "videos").exists() and not list((tmp_path / "out" / "_runs").glob("*/started.json"))
    assert not list(small_disk.iterdir())  # the run's spill folder is gone too


def test_videos_a_stopped_run_left_are_decoded_before_new_ones():
    """The README says the next run does them first: a library that takes several nights must not be
    overtaken night after night by what is added (it kept manifest order)."""
    from vidbatch.worklist import _retries_first

    cut_off = prior("timeout", error_type="spill_space")
    candidates = [("a-new", "u"), ("m-cut-off", "u"), ("b-new", "u"), ("z-cut-off", "u")]
    decision = decide(
        candidates,
        prior={"m-cut-off": cut_off, "z-cut-off": cut_off},
        fingerprints={video_id: "fp1" for video_id, _ in candidates},
        model_id="m",
        sampling_id="s",
        consistent={},
        manifest_ids=[video_id for video_id, _ in candidates],
    )
    rows = pa.table({"video_id": [video_id for video_id, _ in candidates], "uri": ["u"] * 4})
    assert _retries_first(rows, decision).column("video_id").to_pylist() == ["m-cut-off", "z-cut-off", "a-new", "b-new"]


def test_the_planning_clock_stops_when_the_look_at_the_files_is_interrupted(monkeypatch):
    """A Ctrl-C (or an error) during the folder listings left the progress thread printing for good."""
    import threading

    import vidbatch.source_fingerprints as source_fingerprints
    from vidbatch.config import StorageConfig

    def interrupted(*args, **kwargs):
        time.sleep(0.3)  # the clock speaks meanwhile
        raise KeyboardInterrupt

    monkeypatch.setattr(source_fingerprints, "listed_infos", interrupted)
    said: list[int] = []
    with pytest.raises(KeyboardInterrupt):
        source_fingerprints.fingerprints(
            [("a", "s3://b/a.mp4")], StorageConfig(), progress=said.append, progress_every_s=0.1, listable={"a"}
        )
    assert said  # it did speak while listing
    spoken = len(said)
    time.sleep(0.3)
    assert len(said) == spoken and not [t for t in threading.enumerate() if t.name == "vidbatch-planning-progress"]
