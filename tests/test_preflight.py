"""`vidbatch check`'s preflight: what `vidbatch run` refuses, found without running (no Ray, nothing left)."""

import json
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vidbatch.config import parse_job
from vidbatch.errors import JobError
from vidbatch.preflight import preflight


def job(tmp_path, **changes):
    raw = {
        "name": "t",
        "manifest": str(tmp_path / "manifest.parquet"),
        "output": str(tmp_path / "out"),
        "model": {"arch": "resnet18", "weights": "none"},
    }
    for key, value in changes.items():
        section, _, name = key.partition("__")
        if name:
            raw[section][name] = value
        else:
            raw[section] = value
    return parse_job(raw)


@pytest.fixture
def manifest(tmp_path):
    ids = ["a", "b", "a", "c"]
    uris = [str(tmp_path / "a.mp4"), str(tmp_path / "b.mp4"), str(tmp_path / "x.mp4"), "http://host/c.mp4"]
    pq.write_table(pa.table({"video_id": ids, "uri": uris}), tmp_path / "manifest.parquet")


def test_a_good_job_is_summarised_and_nothing_is_left_behind(tmp_path, manifest):
    result = preflight(job(tmp_path))
    assert (result.manifest_rows, result.to_process, result.refused, result.duplicates) == (4, 2, 1, 1)
    assert result.model_id == "resnet18:UNTRAINED-random-init-seed0" and result.untrained
    assert result.prior_videos == 0 and result.output_checked
    assert "NOT meaningful" in "\n".join(result.lines())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.parquet"]  # the output was not created


def test_a_relative_output_is_named_where_it_is_read(tmp_path, manifest, monkeypatch):
    """A relative output is read from the current folder: check run from another folder said
    'no earlier runs' about the path as written, not where it looked."""
    monkeypatch.chdir(tmp_path)
    lines = preflight(job(tmp_path, output="out")).lines()
    assert f"output {tmp_path / 'out'}: no earlier runs (every video is new)" in lines, lines


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"manifest": "/nonexistent/manifest.parquet"}, "manifest '/nonexistent/manifest.parquet' does not exist"),
        ({"model__weights": "/nonexistent/w.pt"}, "model.weights='/nonexistent/w.pt'"),
        ({"model__weights": "IMAGENET9K_V9"}, "model.weights='IMAGENET9K_V9'"),
        ({"output": "FILE/out"}, "which is a file; the output is a folder"),
    ],
)
def test_what_the_run_refuses_check_refuses(tmp_path, manifest, changes, message):
    (tmp_path / "FILE").write_text("not a directory")
    changes = {k: (str(tmp_path / v) if v.startswith("FILE") else v) for k, v in changes.items()}
    with pytest.raises(JobError, match=message.replace("(", r"\(")):
        preflight(job(tmp_path, **changes))


def test_an_output_where_nothing_can_be_created_is_refused(tmp_path, manifest):
    """A real attempt, not a permission bit: root may write anywhere except on filesystems like /proc."""
    from pathlib import Path

    if not Path("/proc/self").is_dir():
        pytest.skip("needs Linux's /proc")
    # the message says what failed there (before: "'/proc': No such file or directory", of a folder that exists)
    refusal = r"output '/proc/vidbatch-out' cannot be written: a folder could not be made in '/proc' \(.*\); choose"
    with pytest.raises(JobError, match=refusal):
        preflight(job(tmp_path, output="/proc/vidbatch-out"))


def test_vidbatch_check_refuses_what_the_run_refuses_and_says_what_the_run_would_see(tmp_path, manifest, capsys):
    import yaml

    from vidbatch.cli import main

    path = tmp_path / "job.yaml"
    raw = {"name": "t", "manifest": str(tmp_path / "manifest.parquet"), "output": str(tmp_path / "out")}
    path.write_text(yaml.safe_dump({**raw, "model": {"arch": "resnet18", "weights": "none"}}))
    assert main(["check", str(path)]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["model"]["arch"] == "resnet18"  # stdout is the settings alone: a script may pipe it (README)
    assert "a run now: 4 manifest rows (1 duplicate ids); 2 to decode (2 new, 0 changed, 0 retried)" in err
    assert "refused invalid_uri: 1 rows" in err and "'c': " in err
    assert main(["check", str(path), "--set", "model.weights=/nonexistent/w.pt"]) == 2
    assert "vidbatch: model.weights='/nonexistent/w.pt'" in capsys.readouterr().err
    # --settings-only: the settings alone, for a job whose manifest lives where the run will be
    assert main(["check", str(path), "--settings-only", "--set", "manifest=s3://elsewhere/m.parquet"]) == 0
    assert capsys.readouterr().err == ""


def test_a_refused_url_with_credentials_is_named_without_them(tmp_path, manifest, capsys):
    """Guarantee 5: the refusal of a presigned or basic-auth manifest URL printed the password and signature."""
    import yaml

    from vidbatch.cli import main

    path = tmp_path / "job.yaml"
    secret_manifest = "https://user:pw-s3cr3t@127.0.0.1:9/m.parquet?X-Amz-Signature=sig-s3cr3t"
    path.write_text(yaml.safe_dump({"name": "t", "manifest": secret_manifest, "output": str(tmp_path / "out"),
                                    "model": {"arch": "resnet18", "weights": "none"}}))  # fmt: skip
    assert main(["check", str(path)]) == 2
    out, err = capsys.readouterr()
    assert "https://REDACTED@127.0.0.1:9/m.parquet?X-Amz-Signature=REDACTED" in err
    assert "s3cr3t" not in out + err


def test_gpus_this_machine_lacks_are_said_not_refused(tmp_path, manifest, monkeypatch):
    """`check` has no --address: the job may be meant for a cluster with GPUs, so it says what a run here would refuse."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # no GPU for a local Ray, even on a machine that has some
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path / "ray"))  # no `ray start`ed cluster of this host to join
    monkeypatch.delenv("RAY_OVERRIDE_RESOURCES", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    if "ray" in sys.modules:  # the suite's own Ray (ray_local) must not make this process look connected
        monkeypatch.setattr(sys.modules["ray"], "is_initialized", lambda: False)
    lines = preflight(job(tmp_path, resources={"model_gpus": 1})).lines()
    assert lines[-1].startswith("gpus: resources.model_gpus=1 but this machine has 0 GPUs, and a run here starts its own Ray")
    assert "`vidbatch run` here would refuse it" in lines[-1]
    assert not any(line.startswith("gpus:") for line in preflight(job(tmp_path)).lines())
    monkeypatch.setenv("RAY_ADDRESS", "head:6379")  # a run would join that cluster: its GPUs are known there
    assert not any(line.startswith("gpus:") for line in preflight(job(tmp_path, resources={"model_gpus": 1})).lines())


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("out/videos", "'{out}/videos' is a Delta table that vidbatch did not write (it has no video_id, run_id column"),
        ("out", "output '{out}' is itself a Delta table (it has a _delta_log)"),
    ],
    ids=["another-tools-videos-table", "output-is-a-table"],
)
def test_an_output_holding_another_tools_delta_table_is_refused_by_every_command(tmp_path, manifest, capsys, where, expected):
    """Before: check blamed the bucket (ArrowInvalid ... FieldRef video_id), or a run wrote its tables inside
    another table's folder, where that table's vacuum deletes them."""
    from deltalake import DeltaTable, write_deltalake

    from vidbatch.cli import main

    write_deltalake(str(tmp_path / where), pa.table({"id": [1, 2], "name": ["a", "b"]}))
    message = expected.format(out=tmp_path / "out")
    with pytest.raises(JobError) as refused:
        preflight(job(tmp_path))
    assert message in str(refused.value), refused.value
    for command in (["history", str(tmp_path / "out")], ["vacuum", str(tmp_path / "out")]):
        assert main(command) == 2
        assert message in capsys.readouterr().err
    assert DeltaTable(str(tmp_path / where)).to_pyarrow_table().num_rows == 2  # the other table is left as it was


@pytest.mark.parametrize("below", ["", "sub/out"])
def test_an_output_that_is_a_file_or_inside_one_is_refused_saying_so(tmp_path, manifest, below):
    (tmp_path / "taken").write_text("not a folder")
    output = str(tmp_path / "taken" / below) if below else str(tmp_path / "taken")
    with pytest.raises(JobError) as caught:
        preflight(job(tmp_path, output=output))
    message = str(caught.value)
    assert "which is a file" in message if below else "is a file" in message
    assert "bucket" not in message and "choose another path" in message


def test_fp16_on_cpus_that_cannot_pack_it_is_said_before_the_run(tmp_path, manifest, monkeypatch):
    """It ran several times slower than fp32 with only the model actor's log saying why."""
    import vidbatch.model as model

    fp16_on_cpus = {"model": {"arch": "resnet18", "weights": "none", "precision": "fp16"}, "resources": {"model_gpus": 0}}
    monkeypatch.setattr(model, "_cpu_flags", lambda: {"avx2", "avx512f", "avx512_bf16"})
    notes = "\n".join(preflight(job(tmp_path, **fp16_on_cpus)).notes)
    assert "model.precision: fp16 on CPUs like this machine's, which lack fp16 matrix instructions" in notes
    assert "model.precision: fp16" not in "\n".join(preflight(job(tmp_path, resources={"model_gpus": 0})).notes)  # auto: no note
    monkeypatch.setattr(model, "_cpu_flags", lambda: {"avx2", "avx512f", "avx512_fp16"})
    assert "model.precision: fp16" not in "\n".join(preflight(job(tmp_path, **fp16_on_cpus)).notes)


def test_what_auto_precision_runs_in_here_is_said_before_the_run(tmp_path, manifest, monkeypatch):
    """auto ran bf16 on an AVX512-BF16 CPU under the same model_id as fp32 rows; only the summary said so, afterwards."""
    import vidbatch.model as model

    monkeypatch.delenv("VIDBATCH_CPU_BF16", raising=False)
    on_cpus = {"model": {"arch": "resnet18", "weights": "none", "precision": "auto"}, "resources": {"model_gpus": 0}}
    monkeypatch.setattr(model, "_cpu_flags", lambda: {"avx2", "avx512f", "avx512_bf16"})
    notes = "\n".join(preflight(job(tmp_path, **on_cpus)).notes)
    assert "model.precision: auto runs the model in bfloat16" in notes
    assert "the rows do not say which" in notes
    monkeypatch.setattr(model, "_cpu_flags", lambda: {"avx2"})
    assert "model.precision: auto runs the model in float32" in "\n".join(preflight(job(tmp_path, **on_cpus)).notes)
    fp32 = {"model": {"arch": "resnet18", "weights": "none", "precision": "fp32"}, "resources": {"model_gpus": 0}}
    assert "model.precision: auto" not in "\n".join(preflight(job(tmp_path, **fp32)).notes)
