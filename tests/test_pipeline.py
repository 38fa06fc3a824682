"""The whole job on a real local Ray: PyAV decoding, the ResNet, Delta tables read back."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import recompute
from deltalake import DeltaTable

from vidbatch.config import parse_job
from vidbatch.pipeline import run_job
from vidbatch.schema import CLIPS, VIDEOS

pytestmark = pytest.mark.slow


def make_job(tmp_path: Path, rows: dict[str, object], weights: Path | str, **sections) -> object:
    manifest = tmp_path / "manifest.parquet"
    pq.write_table(pa.table({"video_id": list(rows), "uri": [None if u is None else str(u) for u in rows.values()]}), manifest)
    raw = {
        "name": "test",
        "manifest": str(manifest),
        "output": str(tmp_path / "out"),
        "sampling": {"mode": "fps", "fps": 1.0, "clip_len_s": 2.0},
        "model": {"arch": "resnet18", "weights": str(weights), "precision": "fp32", "top_k": 3},
        "resources": {"batch_clips": 3, "progress_interval_s": 1},
    }
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value}
    return parse_job(raw)


def read(tmp_path: Path, table: str) -> pa.Table:
    return DeltaTable(str(tmp_path / "out" / table)).to_pyarrow_table()


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, library, seeded_weights, ray_local):
    """One run over every codec, the VFR and rotated files, and rows that must fail."""
    tmp_path = tmp_path_factory.mktemp("run")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00\x01garbage" * 500)
    rows = {name: video.path for name, video in library.items()}
    rows.update({"junk": junk, "missing": tmp_path / "missing.mp4", "null_uri": None, "escape": "/tmp/../etc/passwd"})
    job = make_job(tmp_path, rows, seeded_weights)
    lines: list[str] = []
    import ray.data  # noqa: F401  (its logging set-up on import replaces the handlers of "ray.data")

    ray_data_log = _Records()
    logging.getLogger("ray.data").addHandler(ray_data_log)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = run_job(job, progress=lines.append)
    finally:
        logging.getLogger("ray.data").removeHandler(ray_data_log)
    noise = {"warnings": caught, "ray_data_log": ray_data_log.records}
    return tmp_path, result, lines, rows, noise


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_tables_have_the_design_schema(full_run):
    tmp_path, _, _, _, _ = full_run
    clips, videos = read(tmp_path, "clips"), read(tmp_path, "videos")
    assert clips.schema.equals(CLIPS), clips.schema
    assert videos.schema.equals(VIDEOS), videos.schema
    # Plain Arrow lists, no extension types: any reader can take them.
    assert str(clips.schema.field("embedding").type) == "list<element: float>"


def test_every_manifest_row_has_exactly_one_videos_row(full_run):
    tmp_path, result, _, rows, _ = full_run
    videos = read(tmp_path, "videos").to_pylist()
    assert sorted(v["video_id"] for v in videos) == sorted(rows)
    status = {v["video_id"]: v["status"] for v in videos}
    assert status == {
        "h264": "ok", "vp9": "ok", "mpeg4": "ok", "vfr": "ok", "rotated": "ok", "gop": "ok",
        "junk": "unreadable", "missing": "not_found", "null_uri": "invalid_uri", "escape": "invalid_uri",
    }  # fmt: skip
    for v in videos:
        assert (v["error_message"] is None) == (v["status"] == "ok")
    assert result.summary["statuses"] == {"ok": 6, "unreadable": 1, "not_found": 1, "invalid_uri": 2}


def test_each_clip_embedding_matches_an_independent_recomputation(full_run, library, seeded_weights):
    tmp_path, _, _, _, _ = full_run
    clips = read(tmp_path, "clips").to_pylist()
    model = recompute.load_backbone(seeded_weights)
    ours = np.array([c["embedding"] for c in clips], np.float32)
    theirs = np.array(
        [recompute.clip_embedding(model, recompute.frames_at(library[c["video_id"]].path, c["frame_pts_s"])) for c in clips]
    )
    distances = np.linalg.norm(ours[:, None, :] - theirs[None, :, :], axis=2)
    own = np.diag(distances).copy()
    np.fill_diagonal(distances, np.inf)
    nearest_other = distances.min(axis=1)
    # Untrained features are nearly parallel, so compare against the nearest *other* clip.
    assert (own < 1e-4).all(), own.max()
    assert (own * 100 < nearest_other).all()


def test_sampled_times_follow_the_settings(full_run, library):
    tmp_path, _, _, _, _ = full_run
    clips = read(tmp_path, "clips").to_pylist()
    for name, video in library.items():
        mine = sorted((c for c in clips if c["video_id"] == name), key=lambda c: c["clip_index"])
        used = [p for c in mine for p in c["frame_pts_s"]]
        targets = [float(k) for k in range(len(used))]  # fps 1.0 from t=0
        expected = [max(p for p in video.frame_pts_s if p <= t + 1e-6) for t in targets]
        assert used == pytest.approx(expected, abs=1e-6), name
        assert [c["clip_index"] for c in mine] == list(range(len(mine)))
        for c in mine:
            assert c["start_s"] == pytest.approx(2.0 * c["clip_index"])
            assert c["start_s"] <= min(c["frame_pts_s"]) + 1.0  # on screen within the window's samples
            assert len(c["labels"]) == 3 and c["labels"][0]["score"] >= c["labels"][-1]["score"]
            assert abs(np.linalg.norm(c["embedding"]) - 1) < 1e-5
    assert len(clips) == sum(v["num_clips"] for v in read(tmp_path, "videos").to_pylist())


def test_the_model_actor_ran_its_model_packed_for_onednn(full_run, ray_local):
    """The recomputation above (torchvision's own forward) checked the packed model's embeddings: the
    model actor, on this CPU-only machine, says in its log that it packed them and did not fall back."""
    logs = Path(ray_local._private.worker._global_node.get_logs_dir_path())
    text = "".join(path.read_text(errors="replace") for path in logs.glob("worker-*.err"))
    assert "vidbatch.model: model weights packed for oneDNN (torch.float32;" in text
    assert "oneDNN weight packing failed" not in text


def test_video_rows_aggregate_their_clips(full_run):
    tmp_path, result, _, _, _ = full_run
    clips = read(tmp_path, "clips").to_pylist()
    for v in read(tmp_path, "videos").to_pylist():
        if v["status"] != "ok":
            assert v["embedding"] is None and v["num_clips"] == 0
            continue
        mine = np.array([c["embedding"] for c in clips if c["video_id"] == v["video_id"]])
        mean = mine.mean(axis=0)
        np.testing.assert_allclose(v["embedding"], mean / np.linalg.norm(mean), atol=1e-6)
        assert v["model_id"].startswith("resnet18:sha256-") and v["run_id"] == result.run_id
        assert v["width"] > 0 and v["duration_s"] > 0 and v["codec"]


def test_summary_and_progress(full_run):
    tmp_path, result, lines, _, _ = full_run
    summary = json.loads(Path(result.summary_uri).read_text())
    assert summary["videos"] == 10 and summary["clips"] > 0
    assert summary["untrained_weights"] is False
    assert set(summary["versions"]) >= {"vidbatch", "torch", "ray", "av", "model_id"}  # DESIGN.md lists model_id among them
    assert summary["versions"]["model_id"] == summary["model_id"]
    assert any(line.startswith("videos 10/10") for line in lines)
    # the dtype the model actors ran in (the rows do not say: `auto` differs from host to host)
    from vidbatch.summary_text import summary_text

    assert summary["model_precision"] == ["float32"]
    assert "; the model ran in float32" in summary_text(summary, result.summary_uri)


def test_a_run_leaves_no_warning_pointing_at_vidbatch_or_at_switches_it_sets_on_purpose(full_run):
    """A nightly log should hold only what needs a person: no deprecation warnings raised at our
    own calls (Ray 2.60 deprecates `**ray_remote_args`) and no hint to re-enable the Ray Data
    progress bars that vidbatch turns off for its own progress line."""
    *_, noise = full_run
    package = Path(__file__).resolve().parents[1] / "vidbatch"
    ours = [
        f"{w.category.__name__} at {w.filename}:{w.lineno}: {w.message}"
        for w in noise["warnings"]
        if Path(w.filename).resolve().is_relative_to(package)
    ]
    assert not ours
    hints = [r.getMessage() for r in noise["ray_data_log"] if "progress bars" in r.getMessage().lower()]
    assert not hints


def test_restart_bounds_go_where_this_ray_takes_them():
    from vidbatch.pipeline import _restart_bounds

    def named(fn, *, num_cpus=None, max_restarts=None, max_task_retries=None): ...
    def keywords(fn, *, num_cpus=None, **ray_remote_args): ...
    def neither(fn, *, num_cpus=None, runtime_env=None): ...

    assert _restart_bounds(named) == _restart_bounds(keywords) == {"max_restarts": 8, "max_task_retries": 16}
    assert _restart_bounds(neither) == {}


def test_untrained_run_says_so_and_tasks_shape_outputs(tmp_path, library, ray_local):
    job = make_job(tmp_path, {"h264": library["h264"].path}, "none", model={"task": "embed", "precision": "auto"})
    lines: list[str] = []
    result = run_job(job, progress=lines.append)
    import torch

    from vidbatch.model import pick_dtype

    # what `auto` became on this host, said in the summary (bfloat16 on CPUs with AMX or AVX512-BF16)
    assert result.summary["model_precision"] == [str(pick_dtype("auto", torch.device("cpu"))).removeprefix("torch.")]
    clips, videos = read(tmp_path, "clips").to_pylist(), read(tmp_path, "videos").to_pylist()
    assert "UNTRAINED" in videos[0]["model_id"] and all("UNTRAINED" in c["model_id"] for c in clips)
    assert result.summary["untrained_weights"] is True
    assert any("NOT meaningful" in line for line in lines)
    assert all(c["labels"] is None and len(c["embedding"]) == 512 for c in clips)


def test_classify_only_and_keyframes(tmp_path, library, seeded_weights, ray_local):
    job = make_job(
        tmp_path, {"gop": library["gop"].path}, seeded_weights, model={"task": "classify"}, sampling={"mode": "keyframes"}
    )
    run_job(job, progress=lambda _: None)
    clips = read(tmp_path, "clips").to_pylist()
    assert sorted(p for c in clips for p in c["frame_pts_s"]) == pytest.approx([0.0, 1.5, 3.0, 4.5])
    assert all(c["embedding"] is None and len(c["labels"]) == 3 for c in clips)


def test_the_input_dataset_is_built_on_the_driver_one_block_per_slice(ray_local):
    """Building the decode stage's input needs no worker: it is ready while every CPU is taken.

    ray.data.from_arrow asks remote tasks for each block's metadata and waits for them; with no
    CPU free it would wait here until the placement group below is removed.
    """
    import threading

    from ray.util.placement_group import placement_group, remove_placement_group

    from vidbatch.pipeline import _dataset_of

    table = pa.table({"video_id": [f"v{i}" for i in range(5)], "uri": [f"/videos/{i}.mp4" for i in range(5)]})
    blocks = [table.slice(i, 2) for i in range(0, 5, 2)]
    everything = placement_group([{"CPU": ray_local.cluster_resources()["CPU"]}])
    ray_local.get(everything.ready(), timeout=30)
    built: list[object] = []
    try:
        builder = threading.Thread(target=lambda: built.append(_dataset_of(ray_local, blocks)), daemon=True)
        builder.start()
        builder.join(timeout=20)
        assert built, "building the dataset waited for a worker while no CPU was free"
    finally:
        remove_placement_group(everything)
    dataset = built[0]
    assert dataset.num_blocks() == 3
    assert dataset.schema().names == ["video_id", "uri"]
    assert sorted(dataset.take_all(), key=lambda r: r["video_id"]) == table.to_pylist()


def test_a_stop_while_the_driver_adds_a_batch_stops_the_execution_first(ray_local):
    """SIGTERM or Ctrl-C can land while the driver adds a batch to the collector, not only while it
    waits for one. Before, only the wait stopped the execution: the stop line was then followed by
    Ray Data's tracebacks (its executor outlived the Ray shut down on the way out)."""
    import threading

    from vidbatch.drain import drain
    from vidbatch.errors import Stopped

    class StoppedWhileAdding:
        def add_batch(self, batch):
            raise Stopped("stopped by SIGTERM")

    def slow(batch):  # defined here, so Ray ships it by value: the still-running execution
        import time

        time.sleep(0.5)
        return batch

    dataset = ray_local.data.range(40, override_num_blocks=40).map_batches(slow, batch_size=1)
    with pytest.raises(Stopped):
        drain(dataset, StoppedWhileAdding(), no_progress_timeout_s=60, unreachable_in_a_row=32, stops=[])
    executors = [t for t in threading.enumerate() if t.name.startswith("StreamingExecutor-") and t.is_alive()]
    assert not executors, executors


def test_a_run_that_stops_early_keeps_the_results_already_waiting_for_the_driver():
    """A time limit (or a stop signal, a full spill disk) met while results wait in the driver's
    queue: they were dropped with the queue emptied to free the consumer, and a video whose last
    clips were among them was marked not done and redone by the next run."""
    import time

    from vidbatch.drain import drain

    class Dataset:  # five results at once, then nothing more for a while
        def iter_batches(self, **_):
            yield from range(5)
            time.sleep(1.0)

    class SlowCollector:
        unreachable_in_a_row = 0

        def __init__(self):
            self.taken = []

        def add_batch(self, batch):
            time.sleep(0.2)  # the queue fills while the driver is here
            self.taken.append(batch)

    collector = SlowCollector()
    ended = drain(
        Dataset(), collector, no_progress_timeout_s=60, unreachable_in_a_row=32, stop_at=time.monotonic() + 0.1, stops=[]
    )
    assert ended == "time_limit"
    assert collector.taken == [0, 1, 2, 3, 4]


def test_a_run_with_no_result_for_a_while_says_it_is_waiting_and_when_it_gives_up():
    """The progress line comes only when a result arrives: a stalled run (a lost worker node, a
    cluster adding GPU nodes) printed nothing until limits.no_progress_timeout_s (30 min by
    default) ended it. Found by the issue-5 re-check: 2 minutes of silence before the commit."""
    import time
    from types import SimpleNamespace

    from vidbatch.drain import drain

    class Dataset:  # one result, a stall, another result, the end
        def iter_batches(self, **_):
            yield "a"
            time.sleep(1.3)
            yield "b"

    class Collector:
        unreachable_in_a_row = 0
        total = 7
        tally = SimpleNamespace(videos=3)

        def add_batch(self, batch):
            pass

    said: list[str] = []
    ended = drain(
        Dataset(), Collector(), no_progress_timeout_s=90, unreachable_in_a_row=32, stops=[], say=said.append,
        quiet_line_every_s=0.5,
    )
    assert ended == "finished"
    waiting = [line for line in said if line.startswith("waiting: ")]
    assert 1 <= len(waiting) <= 3, said  # about every 0.5 s of the 1.3 s stall, not on every poll
    assert "(videos 3/7 done)" in waiting[0] and "limits.no_progress_timeout_s=90s" in waiting[0]
    assert "in 1m 29s" in waiting[0] or "in 1m 30s" in waiting[0], waiting[0]  # the time left before it gives up

    said.clear()  # results that keep coming: nothing said
    drain(Dataset(), Collector(), no_progress_timeout_s=90, unreachable_in_a_row=32, stops=[], say=said.append,
          quiet_line_every_s=5.0)
    assert not [line for line in said if line.startswith("waiting: ")], said


def test_the_driver_hands_the_weights_to_the_object_store_and_keeps_no_copy(ray_local, seeded_weights):
    """The driver kept the weights' bytes (98 MB for resnet50) for the whole run after putting them in
    the object store: through the drain and the commit, where a long video's run reaches its peak."""
    from dataclasses import replace

    from vidbatch import pipeline
    from vidbatch.config import ModelConfig, StorageConfig
    from vidbatch.model_weights import resolve_weights

    weights = resolve_weights(ModelConfig(arch="resnet18", weights=str(seeded_weights)), StorageConfig())
    ref, kept = pipeline._hand_over_weights(ray_local, weights)
    assert ray_local.get(ref) == weights.state_dict_bytes  # what every model actor loads
    assert kept.state_dict_bytes == b""
    assert replace(kept, state_dict_bytes=weights.state_dict_bytes) == weights  # nothing else changed


def test_committing_line_names_rewrites_that_decode_nothing():
    """A night that only relabels kept rows (or drops videos) rewrites the videos table: its
    committing line said "committing 0 videos rows and 0 clips" (found upgrading an old output)."""
    from vidbatch.pipeline import _committing_line

    plain = {"new": 2, "changed": 0, "retried": 0, "removed": 0, "unchanged": 3, "refreshed": 0, "leftovers_removed": 0}
    assert _committing_line(2, 3, plain, "/out") == "committing 2 videos rows and 3 clips to /out"
    # what the commit will write (upload, on object storage): a big night's commit takes minutes
    assert _committing_line(2, 3, plain, "/out", spill_bytes=4_150_000) == "committing 2 videos rows and 3 clips (4.2 MB) to /out"
    assert _committing_line(2, 3, plain, "/out", spill_bytes=31_400) == "committing 2 videos rows and 3 clips (31 kB) to /out"
    relabel = dict(plain, new=0, refreshed=1, removed=2, leftovers_removed=1)
    line = _committing_line(0, 0, relabel, "/out")
    assert line.startswith("committing 0 videos rows and 0 clips to /out (")
    assert "1 kept row rewritten with changed manifest columns" in line
    assert "2 rows of videos gone from the manifest removed" in line
    assert "interrupted run left of 1 videos removed" in line


def _a_run_that_reaches_its_time_limit_at_once(tmp_path, monkeypatch):
    """The job of two videos ("a", "b": files that are never decoded) whose drain, without Ray, ends on
    its time limit with neither video done."""
    from vidbatch import pipeline

    monkeypatch.setattr(pipeline, "ensure_ray", lambda address: None)
    monkeypatch.setattr(pipeline, "_hand_over_weights", lambda ray, weights: (None, weights))
    monkeypatch.setattr(pipeline, "_build_dataset", lambda *args: object())
    monkeypatch.setattr(pipeline, "drain", lambda *args, **kwargs: "time_limit")
    uris = {name: str(tmp_path / f"{name}.mp4") for name in ("a", "b")}
    for uri in uris.values():
        Path(uri).write_bytes(b"not decoded here")
    pq.write_table(pa.table({"video_id": list(uris), "uri": list(uris.values())}), tmp_path / "manifest.parquet")
    return parse_job(
        {
            "name": "t",
            "manifest": str(tmp_path / "manifest.parquet"),
            "output": str(tmp_path / "out"),
            "model": {"arch": "resnet18", "weights": "none"},
            "limits": {"max_run_s": 3600},
        }
    )


def _stopped_after_the_drain(tmp_path, monkeypatch, signals: int):
    """A run whose drain ended on its time limit with neither video done, and `signals` SIGTERMs
    (a second one more than SAME_STOP_S after the first) arriving while the rows of the videos not
    done are written, between the drain's return and the commit's hold."""
    import os
    import signal

    from vidbatch import stop_signals
    from vidbatch.collect import Collector

    monkeypatch.setattr(stop_signals, "SAME_STOP_S", 0.0)
    config = _a_run_that_reaches_its_time_limit_at_once(tmp_path, monkeypatch)
    real_close = Collector.close

    def close_with_signals(self, *args, **kwargs):
        for _ in range(signals):
            os.kill(os.getpid(), signal.SIGTERM)
        return real_close(self, *args, **kwargs)

    monkeypatch.setattr(Collector, "close", close_with_signals)
    said: list[str] = []
    before = signal.getsignal(signal.SIGTERM)
    stop_signals.stop_on_sigterm()  # as `vidbatch run` does
    try:
        return run_job(config, progress=said.append), said
    finally:
        assert signal.getsignal(signal.SIGTERM) is stop_signals.raise_stopped  # the handlers in place before are back
        signal.signal(signal.SIGTERM, before)


def test_a_first_stop_after_the_drain_ended_still_commits(tmp_path, monkeypatch):
    """The drain had returned (time limit, or the last video done): a SIGTERM then, while the rows of
    the videos not done were written (a million on a big first run), stopped the run with
    'nothing was committed', though the decoding was over."""
    from vidbatch.errors import Stopped

    try:
        result, said = _stopped_after_the_drain(tmp_path, monkeypatch, signals=1)
    except Stopped as exc:  # a BaseException: pytest would take it for a stop of its own session
        pytest.fail(f"a first stop after the drain lost the run's work: {exc}")
    assert result.summary["stopped_early"] == "time_limit"
    assert any(line.startswith("SIGTERM after the decoding ended: committing what is done") for line in said), said
    rows = DeltaTable(str(tmp_path / "out" / "videos")).to_pyarrow_table().to_pylist()
    assert sorted((row["video_id"], row["status"], row["error_type"]) for row in rows) == [
        ("a", "timeout", "time_limit"),
        ("b", "timeout", "time_limit"),
    ]


def test_a_stop_while_the_spill_folder_is_removed_leaves_the_run_committed(tmp_path, monkeypatch):
    """The commit had landed and the summary was written; a SIGTERM while the spill folder was
    removed (gigabytes after a big night) ended the run with "nothing was committed by this run"."""
    import contextlib
    import os
    import signal

    from vidbatch import pipeline
    from vidbatch.errors import Stopped

    real_spill_folder = pipeline.spill_folder

    @contextlib.contextmanager
    def spill_folder_stopped_on_removal(run_id):
        with real_spill_folder(run_id) as folder:
            yield folder
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(pipeline, "spill_folder", spill_folder_stopped_on_removal)
    try:
        result, said = _stopped_after_the_drain(tmp_path, monkeypatch, signals=0)
    except Stopped as exc:  # a BaseException: pytest would take it for a stop of its own session
        pytest.fail(f"a stop after the commit said the run had committed nothing: {exc}")
    assert said[-1] == "SIGTERM while committing: the commit was finished first, so this run is committed", said
    assert (tmp_path / "out" / "_runs" / result.run_id / "summary.json").exists()


def test_a_second_stop_after_the_drain_ended_stops_at_once(tmp_path, monkeypatch):
    from vidbatch.errors import Stopped

    with pytest.raises(Stopped, match="stopped by SIGTERM"):
        _stopped_after_the_drain(tmp_path, monkeypatch, signals=2)
    assert not (tmp_path / "out" / "videos").exists()


def test_rows_of_an_older_decoding_the_run_did_not_reach_are_kept(tmp_path, monkeypatch):
    """--redo-older-decoding over a library, with a time limit (or a stop): the videos it did not reach
    got `timeout` rows without their embeddings and labels, in place of ok rows that held them (most
    of a library's rows on a first night), until a later night redid them."""
    import pyarrow.compute as pc
    from deltalake import write_deltalake

    from vidbatch.config import StorageConfig
    from vidbatch.source_fingerprints import fingerprints

    config = _a_run_that_reaches_its_time_limit_at_once(tmp_path, monkeypatch)
    uris = {name: str(tmp_path / f"{name}.mp4") for name in ("a", "b")}
    first = run_job(config, progress=lambda line: None)
    # Made ok rows of a vidbatch from before decode_revision (a real run's rows would hold results).
    videos = DeltaTable(str(tmp_path / "out" / "videos")).to_pyarrow_table()
    stat = fingerprints(list(uris.items()), StorageConfig())
    for name, values in {
        "status": pa.array(["ok"] * 2),
        "error_type": pa.nulls(2, pa.string()),
        "error_message": pa.nulls(2, pa.string()),
        "source_fingerprint": pa.array([stat[v] for v in videos.column("video_id").to_pylist()]),
    }.items():
        videos = videos.set_column(videos.schema.get_field_index(name), name, values)
    write_deltalake(str(tmp_path / "out" / "videos"), videos, mode="overwrite")
    started = tmp_path / "out" / "_runs" / first.run_id / "started.json"
    record = json.loads(started.read_text())
    del record["decode_revision"]
    started.write_text(json.dumps(record))

    said: list[str] = []
    result = run_job(config, progress=said.append, redo_older_decoding=True)
    assert result.summary["reasons"] == {"decoded by an older vidbatch (--redo-older-decoding)": 2}
    after = DeltaTable(str(tmp_path / "out" / "videos")).to_pyarrow_table()
    assert pc.unique(after.column("status")).to_pylist() == ["ok"]
    assert sorted(after.column("run_id").to_pylist()) == [first.run_id] * 2
    assert result.summary["table_statuses"] == {"ok": 2}
    assert any("2 videos decoded by an older vidbatch and not reached keep their rows" in line for line in said), said


def test_decode_errors_of_an_older_decoding_are_counted_and_redone_with_its_ok_rows(tmp_path, monkeypatch):
    """A newer decoding reads some files an older one failed on (revision 3: FLVs whose first packet is
    after 0). Their decode_error rows are not retried on their own; --redo-older-decoding redid the ok rows
    only (they needed --retry-failed, which redoes every other failure too), and a run that left decode_error
    rows only was not counted as an older decoding at all (its started.json was not read)."""
    from deltalake import write_deltalake

    from vidbatch.config import StorageConfig
    from vidbatch.incremental import OLDER_DECODING, OLDER_DECODING_FAILED
    from vidbatch.source_fingerprints import fingerprints

    config = _a_run_that_reaches_its_time_limit_at_once(tmp_path, monkeypatch)
    uris = {name: str(tmp_path / f"{name}.mp4") for name in ("a", "b")}
    first = run_job(config, progress=lambda line: None)
    failed_run = first.run_id + "-failed"  # a's row is the only row of a run of its own
    videos = DeltaTable(str(tmp_path / "out" / "videos")).to_pyarrow_table().sort_by("video_id")
    stat = fingerprints(list(uris.items()), StorageConfig())
    for name, values in {
        "status": pa.array(["decode_error", "ok"]),
        "error_type": pa.array(["decode_error", None]),
        "error_message": pa.array(["seeking back to the start failed", None]),
        "source_fingerprint": pa.array([stat["a"], stat["b"]]),
        "run_id": pa.array([failed_run, first.run_id]),
    }.items():
        videos = videos.set_column(videos.schema.get_field_index(name), name, values)
    write_deltalake(str(tmp_path / "out" / "videos"), videos, mode="overwrite")
    runs = tmp_path / "out" / "_runs"
    record = json.loads((runs / first.run_id / "started.json").read_text())
    record["decode_revision"] = 2
    (runs / first.run_id / "started.json").write_text(json.dumps(record))
    (runs / failed_run).mkdir()
    (runs / failed_run / "started.json").write_text(json.dumps({**record, "run_id": failed_run}))

    said: list[str] = []
    result = run_job(config, progress=said.append)
    assert result.summary["changes"]["unchanged"] == 2  # neither is redone without being asked
    notes = [line for line in said if line.startswith("NOTE: 1 video kept as")]
    assert len(notes) == 2, said
    assert "kept as ok was decoded by an older vidbatch" in notes[0] and "--redo-older-decoding" in notes[0]
    assert "kept as decode_error failed under an older vidbatch's decoding" in notes[1]
    assert "--redo-older-decoding decodes them again" in notes[1]

    result = run_job(config, progress=said.append, redo_older_decoding=True)
    assert result.summary["reasons"] == {OLDER_DECODING: 1, OLDER_DECODING_FAILED: 1}
    assert {key: result.summary["changes"][key] for key in ("changed", "retried")} == {"changed": 1, "retried": 1}
    # Not reached (the time limit came at once): the ok row keeps its results; the decode_error row, which
    # holds none, is a timeout the next run retries on its own.
    after = {row["video_id"]: row for row in DeltaTable(str(tmp_path / "out" / "videos")).to_pyarrow_table().to_pylist()}
    assert (after["b"]["status"], after["b"]["run_id"]) == ("ok", first.run_id)
    assert (after["a"]["status"], after["a"]["error_type"]) == ("timeout", "time_limit")


def test_the_summary_says_what_the_commit_rewrote_and_not_when_it_only_added():
    from vidbatch.run_summary import rewritten_line

    summary = {
        "rewritten_files": {"clips": 2, "videos": 1},
        "rewritten_bytes": {"clips": 536_870_912, "videos": 31_400},
        "rewritten_rows_kept": {"clips": 65_000, "videos": 1_999},
    }
    assert rewritten_line(summary) == (
        "the commit rewrote 3 data files (clips 2, 536.9 MB; videos 1, 31 kB), carrying 66,999 unchanged rows over "
        "to replace the changed and removed videos' rows"
    )
    assert rewritten_line({**summary, "rewritten_files": {"clips": 0, "videos": 0}}) is None  # new videos only add files
    assert rewritten_line({}) is None  # a summary of an older vidbatch
