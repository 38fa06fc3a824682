"""The command-line tools around the runs: history, vacuum, demo-library, check --help, the run's last line.

The outputs here are real Delta tables written with the deltalake library, with the commit
metadata and `_runs/<run_id>/summary.json` files a run writes; no test here starts Ray.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from deltalake import CommitProperties, DeltaTable, write_deltalake
from s3server import dead_port, free_port

from vidbatch import history as history_mod
from vidbatch.cli import main

VACUUM_LISTED_FILES = 50  # the most files vacuum names per table (README)
NO_CHANGES = {"new": 0, "changed": 0, "retried": 0, "removed": 0, "unchanged": 3}


def commit_run(
    output: str,
    run_id: str,
    *,
    changes: dict[str, int],
    statuses: dict[str, int],
    storage_options: dict[str, str] | None = None,
    mode: str = "append",
) -> None:
    """One run's commits, with the metadata pipeline.run_job puts on them."""
    metadata = {
        "vidbatch.run_id": run_id,
        "vidbatch.statuses": json.dumps(statuses),
        "vidbatch.changes": json.dumps(changes),
        "vidbatch.clips": "2",
        "vidbatch.wall_time_s": "1.500",
        "vidbatch.model_id": "resnet18:UNTRAINED-random-init-seed0",
    }
    for name in ("clips", "videos"):
        write_deltalake(
            f"{output}/{name}",
            pa.table({"video_id": [f"{run_id}-a"], "run_id": [run_id]}),
            mode=mode,  # type: ignore[arg-type]
            storage_options=storage_options,
            commit_properties=CommitProperties(custom_metadata=metadata),
        )


def summary(run_id: str, finished_at: datetime, *, changes: dict[str, int], videos: int = 0) -> dict[str, Any]:
    """A summary.json as pipeline.run_job writes it (a run with nothing to do: videos 0, no statuses)."""
    return {
        "run_id": run_id,
        "job": "t",
        "finished_at": finished_at.isoformat(timespec="milliseconds"),
        "model_id": "resnet18:UNTRAINED-random-init-seed0",
        "untrained_weights": True,
        "manifest_rows": 3,
        "duplicate_ids": 0,
        "videos": videos,
        "statuses": {},
        "clips": 0,
        "frames": 0,
        "video_hours": 0.0,
        "wall_time_s": 0.8,
        "throughput": {"videos_per_s": 0.0, "frames_per_s": 0.0, "video_hours_per_wall_hour": 0.0},
        "table_versions": {"clips": 0, "videos": 0},
        "changes": changes,
    }


def write_local_summary(output: Path, payload: dict[str, Any]) -> None:
    folder = output / "_runs" / payload["run_id"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "summary.json").write_text(json.dumps(payload))


# A line Ray forwards to a driver in this process ("(raylet) ...", "(pid=12) ..."), maybe coloured.
_RAY_FORWARDED = re.compile(r"^(\x1b\[[0-9;]*m)?\((raylet|[\w:]*\s*pid=\d+)")


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """The command's exit code, stdout and stderr, less what a Ray shared by this test process forwards."""
    code = main(list(argv))
    captured = capsys.readouterr()
    err = "".join(line for line in captured.err.splitlines(keepends=True) if not _RAY_FORWARDED.match(line))
    return code, captured.out, err


def history_json(capsys: pytest.CaptureFixture[str], output: str, *options: str) -> list[dict[str, Any]]:
    code, out, err = run_cli(capsys, "history", output, "--json", *options)
    assert code == 0, err
    return json.loads(out)


def table_rows(text: str) -> list[dict[str, str]]:
    """`vidbatch history`'s table as {column: value} per line (the statuses column is last and free text)."""
    header, *lines = text.strip().splitlines()
    names = header.replace("time (UTC)", "time").split()
    rows = []
    for line in lines:
        cells = line.replace("no change", "no-change").split(maxsplit=len(names) - 1)
        rows.append(dict(zip(names, cells, strict=False)))
    return rows


# --- F4: runs that change nothing ---------------------------------------------------------------


def run_id(at: datetime, suffix: str) -> str:
    """As pipeline.new_run_id makes them: the start time, then a random part."""
    return at.strftime("%Y%m%dT%H%M%SZ") + "-" + suffix


def last_commit_time(table: Path) -> datetime:
    return datetime.fromtimestamp(DeltaTable(str(table)).history(1)[0]["timestamp"] / 1000, timezone.utc)


def test_history_lists_runs_that_changed_nothing_among_the_commits(tmp_path, capsys):
    """A run with nothing to change makes no commit; history finds it in _runs and lists it in time order."""
    output = tmp_path / "out"
    now = datetime.now(timezone.utc)
    r1, r3, r4 = (run_id(now, suffix) for suffix in ("00000b", "00000c", "00000d"))
    r0, r5 = run_id(now - timedelta(days=1), "00000a"), run_id(now + timedelta(days=1), "00000e")
    write_local_summary(output, summary(r0, now - timedelta(days=1), changes=NO_CHANGES))  # before any commit
    commit_run(str(output), r1, changes={**NO_CHANGES, "new": 3, "unchanged": 0}, statuses={"ok": 3})
    commit_run(str(output), r3, changes={**NO_CHANGES, "changed": 1, "unchanged": 2}, statuses={"ok": 1})
    # every run writes a summary; the committed runs' must not be listed a second time
    write_local_summary(output, summary(r1, now, changes={**NO_CHANGES, "new": 3}, videos=3))
    write_local_summary(output, summary(r3, now, changes={**NO_CHANGES, "changed": 1}, videos=1))
    # a run right after r3, in the same second: later by its finished_at's milliseconds
    right_after = last_commit_time(output / "videos") + timedelta(milliseconds=1)
    write_local_summary(output, summary(r4, right_after, changes=NO_CHANGES))
    write_local_summary(output, summary(r5, now + timedelta(days=1), changes=NO_CHANGES))
    (output / "_runs" / "crashed").mkdir()  # started.json only: that run never finished
    (output / "_runs" / "crashed" / "started.json").write_text("{}")
    stopped = run_id(now + timedelta(hours=1), "00000f")  # a run stopped last night: listed, not lost
    (output / "_runs" / stopped).mkdir()
    started_at = (now + timedelta(hours=1)).isoformat(timespec="milliseconds")
    (output / "_runs" / stopped / "started.json").write_text(json.dumps({"run_id": stopped, "started_at": started_at}))

    entries = history_json(capsys, str(output))
    assert [(e["run_id"], e["version"], bool(e.get("unfinished"))) for e in entries] == [
        (r5, None, False), (stopped, None, True), (r4, None, False), (r3, 1, False), (r1, 0, False), (r0, None, False),
        ("crashed", None, True),  # no start time recorded: listed last
    ]  # fmt: skip
    assert entries[0]["changes"] == NO_CHANGES and entries[0]["committed_at"] is None

    code, text, _ = run_cli(capsys, "history", str(output))
    assert code == 0
    rows = table_rows(text)
    assert [(row["run_id"], row["version"]) for row in rows] == [
        (r5, "no-change"), (stopped, "unfinished"), (r4, "no-change"), (r3, "1"), (r1, "0"), (r0, "no-change"),
        ("crashed", "unfinished"),
    ]  # fmt: skip
    assert "did not finish (no summary): stopped, killed, refused at its commit, or still running" in text


def test_history_keeps_committed_runs_whose_commit_left_the_log(tmp_path, capsys):
    """Delta's log clean-up drops old commits from the history: their summaries say they committed."""
    output = tmp_path / "out"
    commit_run(str(output), "20260102T000000Z-00000b", changes={**NO_CHANGES, "changed": 1}, statuses={"ok": 1})
    expired = summary("20260101T000000Z-00000a", datetime(2026, 1, 1, 0, 5, tzinfo=timezone.utc), changes=NO_CHANGES, videos=2)
    expired["table_versions"] = {"clips": 6, "videos": 7}
    write_local_summary(output, expired)
    entries = history_json(capsys, str(output))
    assert [(e["run_id"], e["version"]) for e in entries][-1] == ("20260101T000000Z-00000a", 7)


def test_history_shows_the_wall_time_the_run_reported(tmp_path, capsys):
    """The commit records the time up to the commit; the summary (what the run printed) includes it.
    Before, history showed 13.5 for a run that had printed 13.6."""
    output = tmp_path / "out"
    with_summary, without = "20260102T000000Z-00000b", "20260103T000000Z-00000c"
    commit_run(str(output), with_summary, changes={**NO_CHANGES, "new": 1}, statuses={"ok": 1})  # commit: 1.500
    reported = summary(with_summary, datetime(2026, 1, 2, 0, 1, tzinfo=timezone.utc), changes={**NO_CHANGES, "new": 1}, videos=1)
    reported["wall_time_s"] = 13.61
    write_local_summary(output, reported)
    commit_run(str(output), without, changes={**NO_CHANGES, "new": 1}, statuses={"ok": 1})  # its summary was lost
    walls = {e["run_id"]: e["wall_time_s"] for e in history_json(capsys, str(output))}
    assert walls == {with_summary: 13.61, without: 1.5}
    code, text, _ = run_cli(capsys, "history", str(output))
    assert code == 0 and {row["run_id"]: row["wall_s"] for row in table_rows(text)}[with_summary] == "13.6"


def test_history_reads_the_runs_of_an_s3_output(s3, capsys):
    """_runs is read through the object store too; --endpoint-url and --region are taken."""
    bucket = s3.new_bucket("hist")
    output = f"s3://{bucket}/out"
    options = {**s3.delta_options(), "conditional_put": "etag"}
    commit_run(output, "r1-committed", changes={**NO_CHANGES, "new": 3}, statuses={"ok": 3}, storage_options=options)
    later = datetime.now(timezone.utc) + timedelta(hours=1)
    body = json.dumps(summary("r2-no-change", later, changes=NO_CHANGES)).encode()
    s3.client.put_object(Bucket=bucket, Key="out/_runs/r2-no-change/summary.json", Body=body)

    storage = ("--endpoint-url", s3.endpoint, "--region", "us-east-1")
    entries = history_json(capsys, output, *storage)
    assert [(e["run_id"], e["version"]) for e in entries] == [("r2-no-change", None), ("r1-committed", 0)]
    code, out, err = run_cli(capsys, "vacuum", output, "--dry-run", *storage)
    assert (code, out) == (0, "clips: would delete 0 files\nvideos: would delete 0 files\n"), err


def test_a_run_that_changes_nothing_says_so_and_history_lists_it(tmp_path, capsys):
    """Two real runs (no Ray: every manifest row is refused before decoding); the second has nothing to do."""
    manifest = tmp_path / "manifest.parquet"
    pq.write_table(pa.table({"video_id": ["a", "b"], "uri": ["http://example.com/a.mp4", None]}), manifest)
    job = tmp_path / "job.yaml"
    job.write_text(
        yaml.safe_dump(
            {
                "name": "t",
                "manifest": str(manifest),
                "output": str(tmp_path / "out"),
                "model": {"arch": "resnet18", "weights": "none"},
            }
        )
    )

    code, first, err = run_cli(capsys, "run", str(job))
    assert code == 0, err
    assert first.splitlines()[0].endswith("committed (resnet18:UNTRAINED-random-init-seed0)")
    versions = DeltaTable(str(tmp_path / "out" / "videos")).version()

    code, second, err = run_cli(capsys, "run", str(job))
    assert code == 0, err
    headline = second.splitlines()[0]
    assert "committed (" not in headline
    assert "changed nothing" in headline and "the tables were left as they were" in headline, headline
    assert DeltaTable(str(tmp_path / "out" / "videos")).version() == versions  # indeed no commit

    entries = history_json(capsys, str(tmp_path / "out"))
    assert [e["version"] for e in entries] == [None, versions]


def test_a_first_run_over_an_empty_manifest_says_it_created_the_tables(tmp_path, capsys):
    """It commits the two empty tables (version 0): its headline said "nothing was committed and the tables were
    left as they were", and a summary whose commit had left the log would have been listed as no change."""
    manifest = tmp_path / "manifest.parquet"
    pq.write_table(pa.table({"video_id": pa.array([], pa.string()), "uri": pa.array([], pa.string())}), manifest)
    job = tmp_path / "job.yaml"
    output = tmp_path / "out"
    settings = {"name": "t", "manifest": str(manifest), "output": str(output), "model": {"arch": "resnet18", "weights": "none"}}
    job.write_text(yaml.safe_dump(settings))

    code, first, err = run_cli(capsys, "run", str(job), "--allow-empty")
    assert code == 0, err
    headline = first.splitlines()[0]
    assert "created the videos and clips tables, empty" in headline and "(videos at version 0, clips at version 0)" in headline
    assert "nothing was committed" not in first and "left as they were" not in first
    assert (DeltaTable(str(output / "videos")).version(), DeltaTable(str(output / "clips")).version()) == (0, 0)
    (summary_path,) = output.glob("_runs/*/summary.json")
    summary = json.loads(summary_path.read_text())
    assert summary["tables_created"] == ["videos", "clips"]
    assert history_mod._summary_entry(summary, summary["run_id"])["version"] == 0  # as if its commit had expired

    code, second, err = run_cli(capsys, "run", str(job), "--allow-empty")  # now there is nothing to create
    assert code == 0, err
    assert "changed nothing" in second.splitlines()[0] and "(videos still at version 0)" in second.splitlines()[0]


# --- F9: object-store failures ------------------------------------------------------------------


@pytest.mark.parametrize("command", [["history"], ["vacuum", "--dry-run"]])
def test_history_and_vacuum_of_an_output_without_a_bucket_say_so(capsys, command):
    """deltalake said 'Unable to recognise URL "s3:/videos"' of `s3://` alone."""
    code, out, err = run_cli(capsys, command[0], "s3://", *command[1:])
    assert (code, out, err) == (2, "", "vidbatch: output 's3://' names no bucket (write s3://BUCKET/...)\n")


@pytest.mark.parametrize("command", [["history"], ["vacuum", "--dry-run"]])
def test_history_and_vacuum_of_a_missing_bucket_or_dead_endpoint_say_what_to_check(s3, capsys, command):
    missing = f"s3://vb-missing-{free_port()}/out"
    code, out, err = run_cli(capsys, command[0], missing, *command[1:], "--endpoint-url", s3.endpoint)
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and err.startswith(f"vidbatch: output {missing!r} cannot be"), err
    assert "its bucket does not exist" in err and s3.endpoint in err and "Traceback" not in err

    dead = f"http://127.0.0.1:{dead_port()}"
    output = f"s3://{s3.new_bucket('dead')}/out"
    code, out, err = run_cli(capsys, command[0], output, *command[1:], "--endpoint-url", dead)
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and "nothing answers at the endpoint" in err and dead in err, err


# --- F10: vacuum of a place without tables --------------------------------------------------------


def test_vacuum_refuses_an_output_without_tables_as_history_does(tmp_path, capsys):
    for command in (["history"], ["vacuum"], ["vacuum", "--dry-run"]):
        code, out, err = run_cli(capsys, command[0], str(tmp_path), *command[1:])
        assert (code, out) == (2, ""), command
        assert err.startswith(f"vidbatch: {str(tmp_path)!r} holds no") and "no run has committed there" in err, err


# --- F12: demo-library into a place it cannot write -----------------------------------------------


def test_demo_library_refuses_a_file_or_an_unwritable_place_in_one_line(tmp_path, capsys):
    existing = tmp_path / "existing.mp4"
    existing.write_bytes(b"x")
    places = [existing, existing / "below", *([Path("/proc/vidbatch-demo")] if Path("/proc").is_dir() else [])]
    for place in places:
        code, out, err = run_cli(capsys, "demo-library", str(place))
        assert (code, out) == (2, ""), place
        assert err.count("\n") == 1 and err.startswith("vidbatch: ") and repr(str(place.resolve())) in err, err
    assert existing.read_bytes() == b"x"


# --- F19: vacuum says what it deleted -------------------------------------------------------------


def age_tombstones(table: Path, hours: float) -> None:
    """As if the files were removed `hours` ago (vacuum keeps removed files younger than the retention)."""
    for log in sorted((table / "_delta_log").glob("*.json")):
        actions = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        for action in actions:
            if "remove" in action:
                action["remove"]["deletionTimestamp"] -= int(hours * 3600 * 1000)
        log.write_text("".join(json.dumps(action) + "\n" for action in actions))


def replaced_files(output: Path, *, runs: int) -> list[str]:
    """`runs` commits to the videos table, then an overwrite: the files before it are old versions' files."""
    for index in range(runs):
        commit_run(str(output), f"r{index}", changes=NO_CHANGES, statuses={"ok": 1})
    old = sorted(path.name for path in (output / "videos").glob("*.parquet"))
    commit_run(str(output), "r-last", changes=NO_CHANGES, statuses={"ok": 1}, mode="overwrite")
    age_tombstones(output / "videos", hours=200)
    return old


def test_vacuum_lists_what_it_deletes_and_a_repeat_deletes_nothing(tmp_path, capsys):
    output = tmp_path / "out"
    old = replaced_files(output, runs=1)
    listed = "".join(f"  videos/{name}\n" for name in old)

    code, out, _ = run_cli(capsys, "vacuum", str(output), "--dry-run")
    assert (code, out) == (0, f"clips: would delete 0 files\nvideos: would delete 1 file\n{listed}")
    assert all((output / "videos" / name).exists() for name in old)

    code, out, _ = run_cli(capsys, "vacuum", str(output))
    assert (code, out) == (0, f"clips: deleted 0 files\nvideos: deleted 1 file\n{listed}")
    assert not any((output / "videos" / name).exists() for name in old)

    # The tombstones stay in the log after their files are gone: a repeat has nothing left to delete.
    code, out, _ = run_cli(capsys, "vacuum", str(output))
    assert (code, out) == (0, "clips: deleted 0 files\nvideos: deleted 0 files\n")
    code, out, _ = run_cli(capsys, "vacuum", str(output), "--dry-run")
    assert (code, out) == (0, "clips: would delete 0 files\nvideos: would delete 0 files\n")
    assert DeltaTable(str(output / "videos")).to_pyarrow_table().column("run_id").to_pylist() == ["r-last"]


def test_vacuum_dry_run_listing_is_capped(tmp_path, capsys):
    output = tmp_path / "out"
    old = replaced_files(output, runs=VACUUM_LISTED_FILES + 3)
    code, out, _ = run_cli(capsys, "vacuum", str(output), "--dry-run")
    lines = out.splitlines()
    videos = lines.index(f"videos: would delete {len(old)} files")
    shown = lines[videos + 1 :]
    assert code == 0 and len(shown) == VACUUM_LISTED_FILES + 1
    assert shown[:-1] == [f"  videos/{name}" for name in old[:VACUUM_LISTED_FILES]]
    assert shown[-1] == "  ... and 3 more"


# --- F20: retried videos are not counted as changed ---------------------------------------------


def test_history_shows_retried_videos_apart_from_changed_ones(tmp_path, capsys):
    output = tmp_path / "out"
    commit_run(str(output), "r1", changes={**NO_CHANGES, "new": 4, "unchanged": 0}, statuses={"unreadable": 4})
    commit_run(str(output), "r2-retry", changes={**NO_CHANGES, "retried": 4, "unchanged": 0}, statuses={"unreadable": 4})
    code, text, _ = run_cli(capsys, "history", str(output))
    retry_run = table_rows(text)[0]
    assert code == 0 and retry_run["run_id"] == "r2-retry"
    assert (retry_run["new"], retry_run["chg"], retry_run["retry"]) == ("0", "0", "4")


def test_history_shows_a_relabelling_night_s_rewritten_rows(tmp_path, capsys):
    """Before: a commit whose only change was rows rewritten for changed manifest columns showed as
    a row of zeros, a table version with nothing to say what changed."""
    output = tmp_path / "out"
    commit_run(str(output), "r1", changes={**NO_CHANGES, "new": 5, "unchanged": 0}, statuses={"ok": 5})
    commit_run(str(output), "r2-relabel", changes={**NO_CHANGES, "unchanged": 5, "refreshed": 3}, statuses={})
    code, text, _ = run_cli(capsys, "history", str(output))
    relabel, first = table_rows(text)
    assert code == 0 and relabel["run_id"] == "r2-relabel"
    assert (relabel["same"], relabel["upd"], first["upd"]) == ("5", "3", "0")


# --- F21: check --help ----------------------------------------------------------------------------


def test_check_help_describes_the_job_and_set(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["check", "--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0
    assert "job file (YAML)" in out and "override a job key" in out


@pytest.mark.parametrize("command", ["history", "vacuum"])
def test_history_and_vacuum_of_an_output_that_is_a_file_say_so(tmp_path, capsys, command):
    (tmp_path / "out").write_text("not a folder")
    code, _, err = run_cli(capsys, command, str(tmp_path / "out"))
    assert code == 2
    assert "is a file" in err and "Generic LocalFileSystem error" not in err


def test_history_last_lists_the_newest_runs_reading_only_theirs(tmp_path, capsys):
    """A library run every night for years: `--last N` lists the newest N runs, committed or not,
    and does not read the summaries of older runs."""
    output = tmp_path / "out"
    start = datetime.now(timezone.utc) - timedelta(days=10)
    ids = [run_id(start + timedelta(days=day), f"{day:06x}") for day in range(6)]
    for day, rid in enumerate(ids):
        if day % 2 == 0:  # even nights committed, odd nights changed nothing
            commit_run(str(output), rid, changes={**NO_CHANGES, "changed": 1}, statuses={"ok": 1})
            changes = {**NO_CHANGES, "changed": 1}
            write_local_summary(output, summary(rid, datetime.now(timezone.utc), changes=changes, videos=1))
        else:
            write_local_summary(output, summary(rid, start + timedelta(days=day), changes=NO_CHANGES))
    everything = history_json(capsys, str(output))
    assert len(everything) == 6
    # An old night's summary that cannot be read: listing every run fails on it, the newest three do not.
    old = output / "_runs" / ids[1] / "summary.json"
    old.unlink()
    old.symlink_to(tmp_path / "gone.json")
    assert run_cli(capsys, "history", str(output))[0] == 2
    newest = history_json(capsys, str(output), "--last", "3")
    assert [e["run_id"] for e in newest] == [e["run_id"] for e in everything][:3]
    code, _, err = run_cli(capsys, "history", str(output), "--last", "0")
    assert code == 2 and "--last 0" in err


def test_a_run_that_only_removed_a_killed_runs_clips_is_listed_as_such(tmp_path, capsys):
    """It committed to the clips table alone: history gave it the videos version of the run before (helper-20)."""
    output = tmp_path / "out"
    commit_run(str(output), "r1-committed", changes={**NO_CHANGES, "new": 3}, statuses={"ok": 3})
    later = datetime.now(timezone.utc) + timedelta(minutes=5)
    tidy = summary("r2-tidy", later, changes={**NO_CHANGES, "leftovers_removed": 2})
    write_local_summary(output, tidy)
    entries = {e["run_id"]: e for e in history_json(capsys, str(output))}
    assert (entries["r2-tidy"]["version"], entries["r2-tidy"]["tidied_only"]) == (None, True)
    assert (entries["r1-committed"]["version"], entries["r1-committed"]["tidied_only"]) == (0, False)
    code, text, _ = run_cli(capsys, "history", str(output))
    line = next(row for row in text.splitlines() if "r2-tidy" in row)
    assert " tidy " in line and "removed the clips of 2 videos killed runs left" in line


def test_history_last_reads_past_commits_that_runs_did_not_make(tmp_path, capsys):
    """--last 2 read the newest 2 commits; after a vacuum (or an OPTIMIZE) those are not runs, and a
    committed run whose summary was lost vanished from the list (helper-22)."""
    output = tmp_path / "out"
    for rid in ("r1", "r2"):
        commit_run(str(output), rid, changes={**NO_CHANGES, "new": 1}, statuses={"ok": 1})
    table = DeltaTable(str(output / "videos"))
    for _ in range(3):  # maintenance commits with no vidbatch.run_id
        table.optimize.compact()
        write_deltalake(str(output / "videos"), pa.table({"video_id": ["x"], "run_id": [None]}), mode="append")
    # the last append above carries no run_id either: every newest commit is someone else's
    newest = history_json(capsys, str(output), "--last", "2")
    assert [e["run_id"] for e in newest] == ["r2", "r1"]
    assert all(e["version"] is not None for e in newest)


def test_a_reader_that_goes_away_ends_the_command_without_a_traceback(tmp_path, capsys, monkeypatch):
    """`vidbatch history OUT --json | head` ended with a BrokenPipeError traceback (helper-22)."""
    import os

    output = tmp_path / "out"
    commit_run(str(output), "r1", changes={**NO_CHANGES, "new": 1}, statuses={"ok": 1})
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before anything is written
    with os.fdopen(write_end, "w", buffering=1) as closed_pipe:  # line-buffered, as a terminal-less pipe fills
        monkeypatch.setattr("sys.stdout", closed_pipe)
        code = main(["history", str(output), "--json"])
    assert code == 141
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "usage"),
    [
        (["run", "--bogus", "job.yaml"], "usage: vidbatch run "),
        (["check", "job.yaml", "--nope"], "usage: vidbatch check "),
        (["manifest", "build", "src", "-o", "m.parquet", "--nope"], "usage: vidbatch manifest build "),
    ],
)
def test_an_unknown_flag_is_named_with_its_command_s_usage(argv, usage, capsys):
    """Before: the top level's usage (the list of commands) and 'vidbatch: error', whatever the command."""
    with pytest.raises(SystemExit) as caught:
        main(argv)
    err = capsys.readouterr().err
    assert caught.value.code == 2
    assert usage in err and f"vidbatch {' '.join(usage.split()[2:])}: error: unrecognized arguments: " in err, err


@pytest.mark.parametrize("table", ["videos", "clips"])
def test_history_and_vacuum_of_one_of_the_tables_name_the_output_that_holds_it(tmp_path, capsys, table):
    """Before: 'is itself a Delta table ... choose an output folder of its own', advice for a run."""
    output = tmp_path / "out"
    commit_run(str(output), "r1", changes=NO_CHANGES, statuses={"ok": 1})  # writes both tables
    for command in ("history", "vacuum"):
        assert main([command, str(output / table)]) == 2
        err = capsys.readouterr().err
        assert f"is vidbatch's {table} table itself; give the output folder that holds it: '{output}'" in err, err



def test_a_stop_while_the_summary_is_printed_does_not_say_nothing_was_committed(tmp_path, monkeypatch, capsys):
    """The run had committed; a SIGTERM while its summary was printed (to a slow log reader) ended it
    with "nothing was committed by this run" and exit 143."""
    import os
    import signal

    from vidbatch import cli, pipeline, stop_signals, summary_text

    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({"name": "t", "manifest": str(tmp_path / "m.parquet"), "output": str(tmp_path / "out")}))
    committed = pipeline.RunResult(run_id="r1", summary={"stopped_early": None}, summary_uri=str(tmp_path / "summary.json"))
    monkeypatch.setattr(pipeline, "run_job", lambda config, **kwargs: committed)

    def summary_text_stopped(summary, uri):
        os.kill(os.getpid(), signal.SIGTERM)
        return "summary of r1"

    monkeypatch.setattr(summary_text, "summary_text", summary_text_stopped)
    monkeypatch.setattr(cli, "set_driver_allocator", lambda: None)
    before = signal.getsignal(signal.SIGTERM)
    try:
        code = main(["run", str(job)])
    finally:
        assert signal.getsignal(signal.SIGTERM) is stop_signals.raise_stopped
        signal.signal(signal.SIGTERM, before)
    out, err = capsys.readouterr()
    assert code == 0
    assert "summary of r1" in out
    assert "nothing was committed" not in err
    assert "SIGTERM while printing the summary: the commit was finished first, so this run is committed" in err
