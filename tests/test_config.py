"""Job files: typed, validated before work starts, errors name key and value."""

import pytest

from vidbatch.config import load_job, parse_job
from vidbatch.errors import JobError

BASE = "name: t\nmanifest: m.parquet\noutput: out\n"


def write(tmp_path, text):
    path = tmp_path / "job.yaml"
    path.write_text(text)
    return path


def test_defaults_and_overrides(tmp_path):
    job = load_job(write(tmp_path, BASE), ["model.arch=resnet18", "sampling.fps=2", "model.weights=none"])
    assert job.model.arch == "resnet18"
    assert job.sampling.fps == 2.0
    assert job.model.weights == "none"
    assert job.model.task == "both"


@pytest.mark.parametrize(
    ("text", "overrides", "message"),
    [
        (BASE + "modle: {}\n", [], "unknown key 'modle'"),
        (BASE, ["model.arch=resnet51"], "model.arch='resnet51'"),
        (BASE, ["sampling.mode=random"], "sampling.mode='random'"),
        (BASE, ["sampling.fps=0"], "sampling.fps=0"),
        (BASE, ["model.precision=fp8"], "model.precision='fp8'"),
        (BASE, ["resources.batch_frames=-4"], "resources.batch_frames=-4"),
        (BASE, ["limits.decode_memory_mb=420"], "limits.decode_memory_mb=420: Input should be greater than or equal to 1024"),
        ("name: t\noutput: o\n", [], "missing required key 'manifest'"),
        (BASE, ["model"], "expected key.path=value"),
        (BASE, ["name.sub=1"], "name is not a section"),
    ],
)
def test_bad_job_is_refused_with_the_key_named(tmp_path, text, overrides, message):
    with pytest.raises(JobError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_job(write(tmp_path, text), overrides)


def test_missing_job_file(tmp_path):
    with pytest.raises(JobError, match="does not exist"):
        load_job(tmp_path / "nope.yaml")


def test_yaml_null_weights_mean_random_init():
    assert parse_job({"name": "t", "manifest": "m", "output": "o", "model": {"weights": None}}).model.weights == "none"


def test_sampling_id_ignores_settings_of_other_modes():
    a = parse_job({"name": "t", "manifest": "m", "output": "o", "sampling": {"mode": "fps", "num_frames": 3}})
    b = parse_job({"name": "t", "manifest": "m", "output": "o", "sampling": {"mode": "fps", "num_frames": 9}})
    c = parse_job({"name": "t", "manifest": "m", "output": "o", "sampling": {"mode": "fps", "fps": 2}})
    assert a.sampling.sampling_id() == b.sampling.sampling_id() != c.sampling.sampling_id()


def test_shipped_job_files_are_valid():
    from pathlib import Path

    jobs = sorted(Path(__file__).resolve().parents[1].joinpath("jobs").glob("*.yaml"))
    assert {p.name for p in jobs} >= {"demo.yaml", "nightly_tagging.yaml"}
    for path in jobs:
        load_job(path)


@pytest.mark.parametrize(
    ("text", "overrides", "message"),
    [
        (BASE, ["sampling.fps=true"], "sampling.fps=True: Value error, True is a boolean; give a number"),
        (BASE + "model: {top_k: yes}\n", [], "model.top_k=True"),
        (BASE + "model: {seed: off}\n", [], "model.seed=False"),
        (BASE, ["resources.decode_actors=true"], "resources.decode_actors=True"),
        (BASE, ["sampling.fps=nan"], "sampling.fps='nan': Input should be a finite number"),
        (BASE, ["limits.max_duration_s=.inf"], "limits.max_duration_s=inf: Input should be a finite number"),
        (BASE + "name: t2\n", [], "key 'name' is given twice \\(line 4\\)"),
        (BASE + "model:\n  top_k: 3\n  top_k: 4\n", [], "key 'top_k' is given twice \\(line 6\\)"),
    ],
)
def test_booleans_non_finite_numbers_and_repeated_keys_are_refused(tmp_path, text, overrides, message):
    with pytest.raises(JobError, match=message):
        load_job(write(tmp_path, text), overrides)


def test_forgiving_where_nothing_is_lost(tmp_path):
    job = load_job(write(tmp_path, BASE + "resources:\n  # batch_frames: 16\nlimits:\n"), ["name=2024", "sampling.fps=2"])
    assert job.name == "2024" and job.resources.batch_frames == 32 and job.sampling.fps == 2.0
    merged = "defaults: &d {top_k: 3}\n" + BASE.replace("name: t\n", "") + "name: t\nmodel:\n  <<: *d\n  arch: resnet18\n"
    with pytest.raises(JobError, match="unknown key 'defaults'"):  # merge keys work; the anchor's key is still unknown
        load_job(write(tmp_path, merged))
    bom = tmp_path / "bom.yaml"
    bom.write_bytes(b"\xef\xbb\xbf" + BASE.encode())
    assert load_job(bom).name == "t"


def test_a_job_file_that_is_not_utf8_or_is_a_directory_is_named(tmp_path):
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(BASE.replace("t\n", "caf\xe9\n", 1).encode("latin-1"))
    with pytest.raises(JobError, match="is not UTF-8 text"):
        load_job(latin)
    with pytest.raises(JobError, match="is a directory"):
        load_job(tmp_path)
