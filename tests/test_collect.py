"""The driver's collector: rows of the stages joined back into the two tables' rows, streaming."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vidbatch.collect import Collector, Identity
from vidbatch.config import InputPolicy
from vidbatch.manifest import plan
from vidbatch.video_task import EMBEDDED

DIM, CLASSES = 512, 1000


def collector(tmp_path, ids, *, task="both"):
    manifest = pa.table({"video_id": ids, "uri": [f"/v/{i}.mp4" for i in ids]})
    return Collector(
        plan=plan(manifest, InputPolicy()),
        identity=Identity(model_id="m", sampling_id="s", run_id="r"),
        categories=tuple(f"c{i}" for i in range(CLASSES)),
        task=task,
        top_k=3,
        spill_dir=tmp_path,
    )


def clip(video_id, index, rng, status="ok"):
    emb = rng.normal(size=DIM).astype(np.float32)
    probs = rng.dirichlet(np.ones(CLASSES)).astype(np.float32)
    return {
        "video_id": video_id, "kind": "clip", "clip_index": index, "start_s": 4.0 * index, "end_s": 4.0 * index + 4,
        "frame_pts_s": [4.0 * index + k for k in range(4)], "num_frames": 4, "status": status,
        "error_type": None if status == "ok" else "x", "error_message": None if status == "ok" else "bad clip",
        "embedding": (emb / np.linalg.norm(emb)).tolist() if status == "ok" else None,
        "probs": probs.tolist() if status == "ok" else None,
    }  # fmt: skip


def video(video_id, clips, status="ok"):
    return {"video_id": video_id, "kind": "video", "status": status, "num_clips": clips, "duration_s": 4.0 * clips}


def batch(*rows):
    return pa.Table.from_pylist(list(rows), schema=EMBEDDED)


def spilled(tmp_path, name):
    return pq.read_table(tmp_path / f"{name}.parquet").to_pylist()


def test_a_video_row_aggregates_its_clips_whatever_order_and_repeats_they_come_in(tmp_path):
    rng = np.random.default_rng(0)
    rows = [clip("a", i, rng) for i in range(5)]
    c = collector(tmp_path, ["a"])
    c.add_batch(batch(rows[3], rows[0]))
    c.add_batch(batch(rows[0], rows[4], rows[1]))  # clip 0 again: a retried task
    c.add_batch(batch(video("a", 5), rows[2]))
    tally = c.close("lost")
    clips = spilled(tmp_path, "clips")
    assert sorted(r["clip_index"] for r in clips) == [0, 1, 2, 3, 4] and tally.clips == 5 and tally.frames == 20
    (row,) = spilled(tmp_path, "videos")
    mean = np.mean([r["embedding"] for r in rows], axis=0)
    np.testing.assert_allclose(row["embedding"], mean / np.linalg.norm(mean), atol=1e-6)
    top = np.argsort(-np.mean([r["probs"] for r in rows], axis=0))[:3]
    assert [label["label"] for label in row["labels"]] == [f"c{i}" for i in top]
    assert row["num_clips"] == 5 and row["status"] == "ok"


def test_a_failure_message_that_quotes_a_signed_url_is_written_without_its_signature(tmp_path):
    """Guarantee 5: an unforeseen decoder failure's message is the library's ('unexpected decoder failure:
    403 for url https://host/v.mp4?X-Amz-Signature=...'), and it went into error_message whole."""
    c = collector(tmp_path, ["a"])
    message = "unexpected decoder failure: 403 for url 'https://u:pw@host/v.mp4?X-Amz-Signature=s3cr3t'"
    failed = {**video("a", 0, status="decode_error"), "error_type": "ClientResponseError", "error_message": message}
    c.add_batch(batch(failed))
    c.close("lost")
    (row,) = spilled(tmp_path, "videos")
    assert row["status"] == "decode_error" and "s3cr3t" not in row["error_message"] and ":pw@" not in row["error_message"]
    assert row["error_message"].endswith("'https://REDACTED@host/v.mp4?X-Amz-Signature=REDACTED'")


def test_a_video_that_fails_after_some_clips_keeps_none_of_them(tmp_path):
    rng = np.random.default_rng(1)
    c = collector(tmp_path, ["bad", "good", "lost"])
    c.add_batch(batch(clip("bad", 0, rng), clip("good", 0, rng), clip("bad", 1, rng), clip("lost", 0, rng)))
    c.add_batch(batch(clip("bad", 2, rng, status="model_error"), video("bad", 3), video("good", 1)))
    c.close("the run lost it")  # "lost" never got its video row
    # Their spilled clips are void: the commit leaves them out as it reads the spill (no second copy of it).
    assert c.void_clips == {"bad", "lost"}
    kept = [(r["video_id"], r["clip_index"]) for r in spilled(tmp_path, "clips") if r["video_id"] not in c.void_clips]
    assert kept == [("good", 0)]
    videos = {r["video_id"]: r for r in spilled(tmp_path, "videos")}
    assert videos["bad"]["status"] == "model_error" and videos["bad"]["num_clips"] == 0
    assert videos["bad"]["embedding"] is None and videos["bad"]["error_message"] == "bad clip"
    assert videos["lost"]["status"] == "decode_error" and videos["lost"]["num_clips"] == 0
    assert videos["good"]["num_clips"] == 1


def _peak_bytes_for_a_video_of(tmp_path, clips: int) -> int:
    rng = np.random.default_rng(2)
    rows = [batch(clip("long", i, rng)) for i in range(clips)]  # made before measuring
    c = collector(tmp_path, ["long"])
    tracemalloc.start()
    tracemalloc.reset_peak()
    arrow_before, arrow_peak = pa.total_allocated_bytes(), 0
    for b in rows:
        c.add_batch(b)
        arrow_peak = max(arrow_peak, pa.total_allocated_bytes() - arrow_before)  # the spill's buffered clips
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    c.add_batch(batch(video("long", clips)))
    assert c.close("lost").clips == clips
    return peak + arrow_peak


@pytest.mark.parametrize("clips", [2400])
def test_the_driver_memory_does_not_grow_with_the_length_of_a_video(tmp_path, clips):
    """A 6-hour video has thousands of clips: they go to the spill file, not into the driver's memory."""
    (tmp_path / "short").mkdir()
    (tmp_path / "long").mkdir()
    short = _peak_bytes_for_a_video_of(tmp_path / "short", 600)
    long = _peak_bytes_for_a_video_of(tmp_path / "long", clips)
    # Holding every clip until its video's row arrives cost ~50 KB per clip here (the 1000
    # classes' probabilities as Python floats): 92 MB more for 2400 clips than for 600.
    # The spill file's buffer is bounded, whatever the length (Python objects and Arrow buffers).
    # Arrow's clip tables unflushed would be ~6.6 MB more; bounded, the two differ by ~0.2 MB.
    assert long - short < 3 * 1024 * 1024, f"peak {short / 1e6:.1f} MB for 600 clips, {long / 1e6:.1f} MB for {clips}"


def test_progress_shows_clips_of_a_long_video_before_it_ends(tmp_path):
    from vidbatch.collect import ProgressPrinter

    lines: list[str] = []
    rng = np.random.default_rng(3)
    c = collector(tmp_path, ["long", "short"])
    c.on_progress = ProgressPrinter(0.0, lines.append)
    for i in range(3):
        c.add_batch(batch(clip("long", i, rng)))
    assert lines[-1].startswith("videos 0/2 (none yet) clips 0 (+3 of videos in progress)")
    c.add_batch(batch(clip("long", 3, rng), video("long", 4)))
    assert lines[-1].startswith("videos 1/2 (ok 1) clips 4 frames 16")
    c.close("lost")


def test_clip_lines_never_hold_back_the_line_of_a_finished_video(tmp_path):
    from vidbatch.collect import ProgressPrinter

    lines: list[str] = []
    rng = np.random.default_rng(4)
    c = collector(tmp_path, ["a", "b"])
    c.on_progress = ProgressPrinter(3600.0, lines.append)  # at most one line of each kind an hour
    c.add_batch(batch(clip("a", 0, rng)))
    c.add_batch(batch(video("a", 1)))
    assert [line.split(" (")[0] for line in lines] == ["videos 0/2", "videos 1/2"]
    c.close("lost")


def test_progress_says_the_rate_of_decoded_videos_and_the_time_left():
    from vidbatch.collect import ProgressPrinter, Tally

    lines: list[str] = []
    now = [100.0]
    printer = ProgressPrinter(0.0, lines.append, written_up_front=2, clock=lambda: now[0])
    tally = Tally()
    for _ in range(2):  # refused before any decoding: counted, but not a rate
        tally.add("invalid_uri")
    now[0] = 110.0
    printer(tally, 12)
    assert lines[-1].endswith("| 0.00 videos/s, 0.0 video-h/wall-h, 10s elapsed"), lines[-1]
    tally.add("ok", clips=3, frames=9, seconds=40.0)
    now[0] = 120.0  # the first decoded video, after 20 s of start-up: no rate to go by yet
    printer(tally, 12)
    assert lines[-1].endswith("| 0.05 videos/s, 2.0 video-h/wall-h, 20s elapsed"), lines[-1]
    tally.add("ok", clips=3, frames=9, seconds=40.0)
    tally.add("ok", clips=3, frames=9, seconds=40.0)
    now[0] = 130.0
    # 2 more in 10 s: the 7 left take about 35 s (the start-up is not in that rate)
    assert printer(tally, 12) is None
    assert lines[-1].endswith("| 0.10 videos/s, 4.0 video-h/wall-h, 30s elapsed, about 35s left"), lines[-1]
    for _ in range(7):
        tally.add("ok", clips=1, frames=1, seconds=1.0)
    now[0] = 7300.0
    printer(tally, 12)
    assert lines[-1].endswith("2h 00m elapsed"), lines[-1]  # done: no time left to promise


def test_the_first_progress_lines_come_at_once_on_a_node_booted_moments_ago():
    """time.monotonic() counts from the boot: a printer that took 0 as "the last line" held back
    every line for the first interval_s after a node's boot (seen on a fresh CI machine)."""
    from vidbatch.collect import ProgressPrinter, Tally

    lines: list[str] = []
    printer = ProgressPrinter(3600.0, lines.append, clock=lambda: 5.0)  # up for 5 s
    tally = Tally()
    tally.clips_in_flight = 2
    printer(tally, 3)
    tally.add("ok", clips=2, frames=4, seconds=8.0)
    printer(tally, 3)
    assert [line.split(" (")[0].split(" clips")[0] for line in lines] == ["videos 0/3", "videos 1/3"], lines


@pytest.mark.parametrize("task", ["embed", "classify", "both"])
def test_spilled_clip_rows_carry_each_clip_as_the_model_stage_gave_it(tmp_path, task):
    """Taken as whole arrays: each clip's embedding as it came, its top-k labels from its own
    probabilities, in the order the clips came; a clip without probabilities has no labels."""
    rng = np.random.default_rng(7)
    rows = [clip("a", i, rng) for i in (2, 0, 1)] + [clip("b", 0, rng)]
    rows[3]["probs"] = None  # e.g. a clip whose classifier head gave nothing usable
    c = collector(tmp_path, ["a", "b"], task=task)
    c.add_batch(batch(*rows[:2]))
    c.add_batch(batch(rows[2], rows[0], rows[3], video("a", 3), video("b", 1)))  # rows[0] again: a retry
    c.close("lost")
    spilled_rows = spilled(tmp_path, "clips")
    assert [(r["video_id"], r["clip_index"]) for r in spilled_rows] == [("a", 2), ("a", 0), ("a", 1), ("b", 0)]
    for got, given in zip(spilled_rows, [rows[0], rows[1], rows[2], rows[3]], strict=True):
        assert (got["start_s"], got["end_s"], got["frame_pts_s"]) == (given["start_s"], given["end_s"], given["frame_pts_s"])
        assert (got["model_id"], got["sampling_id"], got["run_id"]) == ("m", "s", "r")
        if task == "classify":
            assert got["embedding"] is None
        else:
            np.testing.assert_array_equal(got["embedding"], np.float32(given["embedding"]))
        if task == "embed" or given["probs"] is None:
            assert got["labels"] is None
        else:
            probs = np.float32(given["probs"])
            top = np.argsort(-probs, kind="stable")[:3]
            assert got["labels"] == [{"label": f"c{i}", "score": float(probs[i])} for i in top]
    videos = {r["video_id"]: r for r in spilled(tmp_path, "videos")}
    assert (videos["a"]["num_clips"], videos["b"]["num_clips"]) == (3, 1)
    if task != "embed":  # b's only clip had no probabilities: no labels to average
        assert videos["b"]["labels"] is None and len(videos["a"]["labels"]) == 3


def test_clips_after_their_video_failed_or_finished_in_the_same_batch_are_not_taken(tmp_path):
    rng = np.random.default_rng(8)
    c = collector(tmp_path, ["failed", "done"])
    c.add_batch(
        batch(
            video("failed", 0, status="decode_error"),
            clip("failed", 0, rng),  # a clip arriving after its video's failure
            clip("done", 0, rng),
            video("done", 1),
            clip("done", 0, rng),  # a retried clip of a video finished moments before
        )
    )
    tally = c.close("lost")
    assert [(r["video_id"], r["clip_index"]) for r in spilled(tmp_path, "clips")] == [("done", 0)]
    assert tally.clips == 1 and tally.statuses == {"decode_error": 1, "ok": 1}


def test_the_unreachable_run_and_the_rows_close_writes_are_counted(tmp_path):
    """What the driver decides on: videos in a row whose store did not answer (reset by any other
    video), and how many rows `close` wrote for videos never finished (no throughput: before, a run
    a store outage stopped counted them as videos done per second)."""
    c = collector(tmp_path, ["a", "b", "c", "d", "e"])
    down = {"status": "timeout", "error_type": "unreachable", "error_message": "the object store did not answer"}
    c.add_batch(batch({**video("a", 0), **down}, {**video("b", 0), **down}))
    assert c.unreachable_in_a_row == 2
    c.add_batch(batch({**video("c", 0), "status": "not_found", "error_type": "not_found"}))
    assert c.unreachable_in_a_row == 0  # the store answered for c
    c.add_batch(batch({**video("d", 0), **down}))
    c.close("not done", lost_status="timeout", lost_type="unreachable")
    assert c.lost == 1  # e: never finished, its row written by close



def test_all_finished_only_once_every_video_has_its_row(tmp_path):
    """A run's time window (limits.max_run_s) that closes as the last video comes in left nothing out:
    the run must not say STOPPED EARLY. Only a video with its row counts, not one with clips alone."""
    rng = np.random.default_rng(3)
    c = collector(tmp_path, ["a", "b"])
    assert not c.all_finished
    c.add_batch(batch(clip("a", 0, rng), video("a", 1), clip("b", 0, rng)))
    assert not c.all_finished  # b has a clip, not its row yet
    c.add_batch(batch(video("b", 1)))
    assert c.all_finished


def test_a_spill_that_cannot_be_written_ends_the_run_saying_why_and_what_to_do():
    """/dev/full fails every write with ENOSPC, as a full disk does: the run's rows cannot wait for
    the commit, so the run ends with a message naming the folder and the fix, not a traceback."""
    from pathlib import Path

    from vidbatch.collect import _Spill
    from vidbatch.errors import JobError
    from vidbatch.schema import VIDEOS

    with pytest.raises(JobError, match=r"could not be written to its temporary folder \(/dev\): .*No space left on device"):
        _Spill(Path("/dev/full"), pa.schema([VIDEOS.field("video_id")]))


def test_videos_to_keep_that_did_not_finish_get_no_row_and_their_clips_are_void(tmp_path):
    """close(keep=...): a video redone only for an older decoding that the run did not finish keeps
    its row from before; the clips of it this run spilled must not join that row's clips."""
    rng = np.random.default_rng(4)
    c = collector(tmp_path, ["done", "kept-midway", "kept-unseen", "other"])
    c.add_batch(batch(clip("done", 0, rng), video("done", 1), clip("kept-midway", 0, rng)))
    tally = c.close("stopped", lost_status="timeout", lost_type="sigterm", keep={"done", "kept-midway", "kept-unseen"})
    assert c.kept == {"kept-midway", "kept-unseen"}  # a finished video's row is written, kept or not
    rows = {row["video_id"]: row["status"] for row in spilled(tmp_path, "videos")}
    assert rows == {"done": "ok", "other": "timeout"}
    assert c.void_clips == {"kept-midway"} and tally.clips_in_flight == 0
    assert tally.statuses == {"ok": 1, "timeout": 1}


def test_the_time_left_goes_by_bytes_when_the_sizes_of_the_videos_are_known():
    """A library of short clips with a long lecture last: by videos, the 4 left of 10 looked like 4
    more short ones (12 s); by bytes the lecture's 60 of 100 MB are ahead (3m 00s)."""
    from vidbatch.collect import ProgressPrinter, Tally

    lines: list[str] = []
    now = [100.0]
    printer = ProgressPrinter(0.0, lines.append, clock=lambda: now[0])
    tally = Tally(bytes_total=100e6)
    tally.add("ok", clips=1, frames=4, seconds=4.0)
    tally.bytes_done += 5e6
    now[0] = 120.0  # the first decoded video (after the start-up)
    printer(tally, 10)
    for _ in range(5):
        tally.add("ok", clips=1, frames=4, seconds=4.0)
        tally.bytes_done += 5e6
    now[0] = 135.0  # 25 MB in 15 s since the first: the 70 MB left take 42 s
    printer(tally, 10)
    assert lines[-1].endswith("35s elapsed, about 42s left"), lines[-1]
    for _ in range(3):
        tally.add("ok", clips=1, frames=4, seconds=4.0)
        tally.bytes_done += 3.333e6
    now[0] = 141.0  # 35 MB in 21 s: the lecture's 60 MB take 36 s (by videos: 1 left, 2.6 s)
    printer(tally, 10)
    assert lines[-1].endswith("41s elapsed, about 36s left"), lines[-1]


def test_without_sizes_the_time_left_goes_by_videos():
    from vidbatch.collect import ProgressPrinter, Tally

    lines: list[str] = []
    now = [0.0]
    printer = ProgressPrinter(0.0, lines.append, clock=lambda: now[0])
    tally = Tally()
    tally.add("ok")
    now[0] = 10.0
    printer(tally, 10)
    tally.add("ok")
    now[0] = 12.0
    printer(tally, 10)
    assert lines[-1].endswith("about 16s left"), lines[-1]  # 8 left at 2 s each


def test_the_collector_weighs_each_finished_video_by_its_size_and_an_unknown_one_by_the_mean(tmp_path):
    manifest = pa.table({"video_id": ["a", "b", "c", "d"], "uri": [f"/v/{i}.mp4" for i in "abcd"]})
    c = Collector(
        plan=plan(manifest, InputPolicy()),
        identity=Identity(model_id="m", sampling_id="s", run_id="r"),
        categories=tuple(f"c{i}" for i in range(CLASSES)),
        task="both",
        top_k=3,
        spill_dir=tmp_path,
        sizes={"a": 100, "b": 300, "c": 800},  # d's size is not known: 400, the mean
    )
    assert c.tally.bytes_total == 1600 and c.tally.bytes_done == 0
    c.add_batch(batch(video("c", 0, status="decode_error")))  # a failure is done too
    assert c.tally.bytes_done == 800
    c.add_batch(batch(video("d", 0, status="decode_error")))
    assert c.tally.bytes_done == 1200
    c.close("lost")  # a and b get their lost rows: all of it done
    assert c.tally.bytes_done == 1600


def test_the_collector_without_sizes_counts_no_bytes(tmp_path):
    c = collector(tmp_path, ["a", "b"])
    c.add_batch(batch(video("a", 0, status="decode_error")))
    assert c.tally.bytes_total == 0 and c.tally.bytes_done == 0
    c.close("lost")
