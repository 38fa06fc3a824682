"""Model weights: state_dict files at paths/URIs, torchvision names from the local torch cache,
`vidbatch weights stage`, and the job stopping before any work when weights cannot be had.

There is no internet here and no real torchvision checkpoint on disk, so torchvision's
checkpoints are stood in for by seeded state_dicts named the way torchvision names its
files (`<arch>-<sha256 prefix>.pth`), with the weights entry's URL pointed at that name.
"""

from __future__ import annotations

import argparse
import hashlib
import io

import pytest
import torch
import torchvision
from s3server import dead_port

from vidbatch.cli import main
from vidbatch.config import ModelConfig, StorageConfig, parse_job
from vidbatch.errors import JobError
from vidbatch.model_weights import resolve_weights
from vidbatch.preprocess import PreprocessSpec

pytest_plugins = ["conftest_s3"]

WAYS = ("$TORCH_HOME/hub/checkpoints", "vidbatch weights stage", ".safetensors", "none")


def seeded_state_dict(arch: str = "resnet18", seed: int = 1, num_classes: int = 1000) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return torchvision.models.get_model(arch, weights=None, num_classes=num_classes).state_dict()


def saved(obj: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def resnet18_blob() -> bytes:
    return saved(seeded_state_dict())


@pytest.fixture()
def torch_home(tmp_path, monkeypatch):
    home = tmp_path / "torch_home"
    home.mkdir()
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home


@pytest.fixture()
def fake_v1_checkpoint(torch_home, monkeypatch, resnet18_blob):
    """torchvision's resnet18 IMAGENET1K_V1, as far as file name, hash and cache location go."""
    sha = hashlib.sha256(resnet18_blob).hexdigest()
    name = f"resnet18-{sha[:8]}.pth"
    path = torch_home / "hub" / "checkpoints" / name
    path.parent.mkdir(parents=True)
    path.write_bytes(resnet18_blob)
    monkeypatch.setattr(torchvision.models.ResNet18_Weights.IMAGENET1K_V1.value, "url", f"https://download.pytorch.org/models/{name}")
    return path, sha


@pytest.fixture()
def offline_v1(torch_home, monkeypatch):
    """Nothing cached, and the download fails (a closed local port: deterministic, no internet needed)."""
    url = f"http://127.0.0.1:{dead_port()}/models/resnet18-f37072fd.pth"
    monkeypatch.setattr(torchvision.models.ResNet18_Weights.IMAGENET1K_V1.value, "url", url)


def _scripted() -> bytes:
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), buffer)
    return buffer.getvalue()


def _model(weights: str, arch: str = "resnet18") -> ModelConfig:
    return ModelConfig(arch=arch, weights=weights)  # type: ignore[arg-type]


def test_state_dict_from_s3_uri(s3, resnet18_blob):
    bucket = s3.new_bucket("weights")
    s3.client.put_object(Bucket=bucket, Key="models/r18.pt", Body=resnet18_blob)
    resolved = resolve_weights(_model(f"s3://{bucket}/models/r18.pt"), StorageConfig())
    sha = hashlib.sha256(resnet18_blob).hexdigest()
    assert resolved.model_id == f"resnet18:sha256-{sha}" and resolved.sha256 == sha
    assert resolved.preprocess == PreprocessSpec() and len(resolved.categories) == 1000
    assert resolved.note is None and not resolved.untrained
    loaded = torch.load(io.BytesIO(resolved.state_dict_bytes), weights_only=True)
    assert torch.equal(loaded["fc.weight"], seeded_state_dict()["fc.weight"])


def test_training_checkpoint_and_other_class_counts(s3):
    bucket = s3.new_bucket("weights")
    blob = saved({"state_dict": seeded_state_dict(num_classes=7), "epoch": 3})
    s3.client.put_object(Bucket=bucket, Key="ckpt.pth", Body=blob)
    resolved = resolve_weights(_model(f"s3://{bucket}/ckpt.pth"), StorageConfig())
    assert resolved.categories == tuple(f"class_{i}" for i in range(7))


def test_safetensors_from_s3(s3):
    safetensors_torch = pytest.importorskip("safetensors.torch", reason="the optional 'safetensors' package is not installed")
    bucket = s3.new_bucket("weights")
    blob = safetensors_torch.save(seeded_state_dict())
    s3.client.put_object(Bucket=bucket, Key="r18.safetensors", Body=blob)
    resolved = resolve_weights(_model(f"s3://{bucket}/r18.safetensors"), StorageConfig())
    assert resolved.sha256 == hashlib.sha256(blob).hexdigest()
    loaded = torch.load(io.BytesIO(resolved.state_dict_bytes), weights_only=True)
    assert torch.equal(loaded["conv1.weight"], seeded_state_dict()["conv1.weight"])


def test_unusable_weight_files_are_refused_with_the_ways(s3, resnet18_blob):
    bucket = s3.new_bucket("weights")
    with pytest.raises(JobError, match="no such file") as missing:
        resolve_weights(_model(f"s3://{bucket}/nope.pth"), StorageConfig())
    assert all(way in str(missing.value) for way in WAYS)
    s3.client.put_object(Bucket=bucket, Key="r18.pth", Body=resnet18_blob)
    with pytest.raises(JobError, match="does not fit resnet50"):
        resolve_weights(_model(f"s3://{bucket}/r18.pth", arch="resnet50"), StorageConfig())
    s3.client.put_object(Bucket=bucket, Key="junk.pt", Body=b"not a pickle")
    with pytest.raises(JobError, match="not a torch checkpoint"):
        resolve_weights(_model(f"s3://{bucket}/junk.pt"), StorageConfig())


def test_a_tensor_of_the_wrong_shape_is_refused_by_name(tmp_path):
    # The fit check builds the model on the meta device: shapes must still be compared, tensor by tensor.
    state_dict = seeded_state_dict()
    state_dict["layer2.0.conv1.weight"] = torch.zeros(128, 64, 1, 1)
    path = tmp_path / "r18-bad.pth"
    path.write_bytes(saved(state_dict))
    with pytest.raises(JobError, match=r"(?s)does not fit resnet18: .*size mismatch for layer2\.0\.conv1\.weight"):
        resolve_weights(_model(str(path)), StorageConfig())
    good = tmp_path / "r18.pth"
    good.write_bytes(saved(seeded_state_dict()))
    assert resolve_weights(_model(str(good)), StorageConfig()).arch == "resnet18"


@pytest.mark.parametrize(
    "wrap",
    [
        # torchvision's reference scripts: model, optimizer, lr_scheduler, epoch and the argparse args
        lambda sd: {"model": sd, "optimizer": {"state": {}, "param_groups": []}, "epoch": 7, "args": argparse.Namespace(lr=0.1)},
        lambda sd: {"state_dict": sd, "epoch": 3},  # Lightning and others
        lambda sd: {f"module.{key}": value for key, value in sd.items()},  # saved from DistributedDataParallel
    ],
    ids=["torchvision-reference", "state_dict-key", "ddp-prefix"],
)
def test_training_checkpoints_load_as_their_state_dict(tmp_path, wrap):
    path = tmp_path / "checkpoint.pth"
    blob = saved(wrap(seeded_state_dict()))
    path.write_bytes(blob)
    resolved = resolve_weights(_model(str(path)), StorageConfig())
    # the identity is the file's; the actors get the bare state_dict
    assert resolved.model_id == f"resnet18:sha256-{hashlib.sha256(blob).hexdigest()}"
    loaded = torch.load(io.BytesIO(resolved.state_dict_bytes), weights_only=True)
    assert loaded.keys() == seeded_state_dict().keys()
    assert torch.equal(loaded["layer4.1.bn2.weight"], seeded_state_dict()["layer4.1.bn2.weight"])


def _ema(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torch.optim.swa_utils.AveragedModel(model).state_dict(): 'module.' keys and a counter."""
    return {"n_averaged": torch.tensor(5), **{f"module.{key}": value for key, value in sd.items()}}


@pytest.mark.parametrize(
    ("wrap", "note"),
    [
        (lambda sd: {f"_orig_mod.{k}": v for k, v in sd.items()}, "found under '_orig_mod.'"),  # torch.compile
        (lambda sd: {f"module._orig_mod.{k}": v for k, v in sd.items()}, "found under '_orig_mod.'"),  # DDP of compile
        (lambda sd: {"state_dict": {f"model.{k}": v for k, v in sd.items()}, "epoch": 2}, "found under 'model.'"),  # Lightning
        (_ema, "left out 1 tensors that are not resnet18's (n_averaged)"),
        (
            lambda sd: {**sd, "proj_head.weight": torch.ones(128, 512)},
            "left out 1 tensors that are not resnet18's (proj_head.weight)",
        ),
    ],
    ids=["compile", "ddp-compile", "lightning-model-attribute", "ema-averaged-model", "projection-head"],
)
def test_a_resnet_inside_a_training_codes_wrappers_is_found_and_what_is_left_out_is_said(tmp_path, wrap, note):
    path = tmp_path / "checkpoint.ckpt"
    path.write_bytes(saved(wrap(seeded_state_dict())))
    resolved = resolve_weights(_model(str(path)), StorageConfig())
    loaded = torch.load(io.BytesIO(resolved.state_dict_bytes), weights_only=True)
    assert loaded.keys() == seeded_state_dict().keys()
    assert all(torch.equal(loaded[key], value) for key, value in seeded_state_dict().items())
    assert resolved.note is not None and note in resolved.note, resolved.note


def test_a_backbone_without_an_imagenet_fc_gives_embeddings_and_is_refused_labels(tmp_path):
    backbone = {k: v for k, v in seeded_state_dict().items() if not k.startswith("fc.")}
    two_layer_head = {**backbone, "fc.0.weight": torch.ones(256, 512), "fc.0.bias": torch.ones(256)}
    for name, state_dict in (("headless.pt", backbone), ("mlp-head.pt", two_layer_head)):
        path = tmp_path / name
        path.write_bytes(saved(state_dict))
        with pytest.raises(JobError, match=r"has no resnet18 fc layer .*set model.task: embed"):
            resolve_weights(_model(str(path)), StorageConfig())  # task both: labels asked for
        resolved = resolve_weights(ModelConfig(arch="resnet18", weights=str(path), task="embed"), StorageConfig())
        loaded = torch.load(io.BytesIO(resolved.state_dict_bytes), weights_only=True)
        assert all(torch.equal(loaded[key], value) for key, value in backbone.items())
        assert resolved.note is not None and "no fc layer of its own (embeddings only)" in resolved.note


def test_a_one_output_classifier_is_refused_labels_and_a_small_one_says_its_class_names(tmp_path):
    binary = tmp_path / "binary.pt"
    binary.write_bytes(saved(seeded_state_dict(num_classes=1)))
    with pytest.raises(JobError, match=r"fc layer has 1 output .*1\.0 for every video"):
        resolve_weights(ModelConfig(arch="resnet18", weights=str(binary), task="classify"), StorageConfig())
    assert resolve_weights(ModelConfig(arch="resnet18", weights=str(binary), task="embed"), StorageConfig()).note is None
    ten = tmp_path / "ten.pt"
    ten.write_bytes(saved(seeded_state_dict(num_classes=10)))
    resolved = resolve_weights(_model(str(ten)), StorageConfig())
    assert resolved.categories == tuple(f"class_{i}" for i in range(10))
    assert resolved.note == "its classifier has 10 classes, named class_0 to class_9 in the labels"
    # a top_k above the class count was taken without a word; the labels hold every class
    many = resolve_weights(ModelConfig(arch="resnet18", weights=str(ten), task="both", top_k=20), StorageConfig())
    assert many.note is not None and "model.top_k=20 but the classifier has 10 classes: labels hold all 10" in many.note
    embed_only = resolve_weights(ModelConfig(arch="resnet18", weights=str(ten), task="embed", top_k=20), StorageConfig())
    assert "top_k" not in (embed_only.note or "")


def test_a_relative_ckpt_path_is_a_state_dict_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "last.ckpt").write_bytes(saved({"state_dict": seeded_state_dict()}))
    assert resolve_weights(_model("last.ckpt"), StorageConfig()).model_id.startswith("resnet18:sha256-")


def test_weights_files_that_are_no_state_dict_are_refused_saying_what_they_are(tmp_path):
    cases = {
        "job.pt": (b"name: nightly\nmodel:\n  arch: resnet18\n", "is not a torch checkpoint (torch.save writes a zip archive"),
        "whole-model.pt": (
            saved(torchvision.models.resnet18()),
            "holds Python objects besides tensors (torchvision.models.resnet.ResNet)",
        ),
        "r50.pth": (
            saved(seeded_state_dict("resnet50")),
            "does not fit resnet18: the tensors are resnet50's: set model.arch: resnet50",
        ),
        "r34.pth": (  # resnet18's tensors and more blocks: another arch, not a backbone with extras
            saved(seeded_state_dict("resnet34")),
            "does not fit resnet18: the tensors are resnet34's: set model.arch: resnet34",
        ),
        "scripted.pt": (_scripted(), "is a TorchScript archive (torch.jit.save)"),
        "cut-short.pt": (saved(seeded_state_dict())[:100_000], "is cut short or damaged (100,000 bytes"),
    }
    for name, (blob, expected) in cases.items():
        (tmp_path / name).write_bytes(blob)
        with pytest.raises(JobError) as refused:
            resolve_weights(_model(str(tmp_path / name)), StorageConfig())
        message = str(refused.value)
        assert expected in message, message
        assert "weights_only" not in message and "Missing key(s)" not in message, message  # not torch's own advice, cut off


def test_torchvision_name_from_the_local_cache(fake_v1_checkpoint):
    path, sha = fake_v1_checkpoint
    resolved = resolve_weights(_model("IMAGENET1K_V1"), StorageConfig())
    assert resolved.model_id == "resnet18:IMAGENET1K_V1" and resolved.sha256 == sha
    assert resolved.categories == tuple(torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"])
    assert resolve_weights(_model("ResNet18_Weights.IMAGENET1K_V1"), StorageConfig()).sha256 == sha
    # A damaged cache file is caught (torch.hub itself checks only what it downloads).
    path.write_bytes(path.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(JobError, match="damaged"):
        resolve_weights(_model("IMAGENET1K_V1"), StorageConfig())


def test_name_without_cache_or_internet_lists_the_ways(offline_v1):
    with pytest.raises(JobError) as info:
        resolve_weights(_model("IMAGENET1K_V1"), StorageConfig())
    message = str(info.value)
    assert "not in the local torch cache" in message and "could not be downloaded" in message
    assert all(way in message for way in WAYS), message


def test_job_without_weights_stops_before_any_work(s3, offline_v1, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from vidbatch import pipeline

    bucket = s3.new_bucket("job")
    buffer = io.BytesIO()
    pq.write_table(pa.table({"video_id": ["a"], "uri": [f"s3://{bucket}/a.mp4"]}), buffer)
    s3.client.put_object(Bucket=bucket, Key="manifest.parquet", Body=buffer.getvalue())

    def no_work(*args, **kwargs):
        raise AssertionError("the job must stop before decoding")

    # A first run may start Ray while the weights resolve (the two overlap); it must not decode.
    monkeypatch.setattr(pipeline, "ensure_ray", lambda address: None)
    monkeypatch.setattr(pipeline, "_build_dataset", no_work)
    config = parse_job(
        {
            "name": "t",
            "manifest": f"s3://{bucket}/manifest.parquet",
            "output": f"s3://{bucket}/out",
            "model": {"arch": "resnet18", "weights": "IMAGENET1K_V1"},
        }
    )
    with pytest.raises(JobError, match="vidbatch weights stage"):
        pipeline.run_job(config, progress=lambda line: None)
    assert "Contents" not in s3.client.list_objects_v2(Bucket=bucket, Prefix="out/")  # nothing written


def test_weights_stage_copies_the_checkpoint_and_runs_recognise_it(s3, fake_v1_checkpoint, capsys):
    path, sha = fake_v1_checkpoint
    bucket = s3.new_bucket("staged")
    assert main(["weights", "stage", "ResNet18_Weights.IMAGENET1K_V1", "--to", f"s3://{bucket}/weights/"]) == 0
    lines = capsys.readouterr().out.splitlines()
    uri = f"s3://{bucket}/weights/{path.name}"
    assert lines[0] == uri and lines[1].startswith(f"sha256 {sha}")
    assert "--set model.arch=resnet18" in lines[2]
    stored = s3.client.get_object(Bucket=bucket, Key=f"weights/{path.name}")["Body"].read()
    assert stored == path.read_bytes()  # byte for byte: the same sha256 everywhere

    resolved = resolve_weights(_model(uri), StorageConfig())
    assert resolved.sha256 == sha and resolved.model_id == f"resnet18:sha256-{sha}"
    assert resolved.note == "a copy of torchvision's resnet18 IMAGENET1K_V1"

    # An explicit file name, and a local destination.
    assert main(["weights", "stage", "IMAGENET1K_V1", "--arch", "resnet18", "--to", f"s3://{bucket}/w/r18.pth"]) == 0
    assert capsys.readouterr().out.startswith(f"s3://{bucket}/w/r18.pth\n")


def test_weights_stage_without_weights_or_with_wrong_names(s3, offline_v1, capsys, tmp_path):
    assert main(["weights", "stage", "IMAGENET1K_V1", "--arch", "resnet18", "--to", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err
    assert "could not be downloaded" in err and "vidbatch weights stage" in err
    assert not (tmp_path / "w").exists()
    assert main(["weights", "stage", "IMAGENET1K_V9", "--arch", "resnet18", "--to", str(tmp_path)]) == 2
    assert "not a torchvision weights name for resnet18" in capsys.readouterr().err
    # The advice names the arch the weights are for, whichever way round the mismatch is.
    assert main(["weights", "stage", "ResNet18_Weights.IMAGENET1K_V1", "--arch", "resnet50", "--to", str(tmp_path)]) == 2
    assert "give --arch resnet18" in capsys.readouterr().err
    assert main(["weights", "stage", "ResNet50_Weights.IMAGENET1K_V2", "--arch", "resnet18", "--to", str(tmp_path)]) == 2
    assert "give --arch resnet50" in capsys.readouterr().err
    # Another model's weights: refused before any download, naming the models vidbatch runs.
    for argv in (["VGG16_Weights.IMAGENET1K_V1"], ["IMAGENET1K_V1", "--arch", "vgg16"]):
        assert main(["weights", "stage", *argv, "--to", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert "'vgg16'" in err and "resnet18, resnet34, resnet50, resnet101, resnet152" in err
        assert "download" not in err


def test_a_classifier_names_its_classes_from_a_categories_file(s3, tmp_path):
    """A 10-class fine-tune got class_0..class_9, and a 1000-class one ImageNet's names, with no way to say
    its own; model.categories names them (local or object storage), and the names go into model_id."""
    weights = tmp_path / "ten.pt"
    weights.write_bytes(saved(seeded_state_dict(num_classes=10)))
    names = [f"shot type {i}" for i in range(10)]
    local = tmp_path / "classes.txt"
    local.write_text("\n".join(names) + "\n\n")
    bucket = s3.new_bucket("names")
    s3.client.put_object(Bucket=bucket, Key="classes.txt", Body="\n".join(names).encode())
    plain = resolve_weights(ModelConfig(arch="resnet18", weights=str(weights)), StorageConfig())
    for where in (str(local), f"s3://{bucket}/classes.txt"):
        named = resolve_weights(ModelConfig(arch="resnet18", weights=str(weights), categories=where), StorageConfig())
        assert named.categories == tuple(names)
        assert named.model_id.startswith(plain.model_id + "+categories-") and named.model_id != plain.model_id
        assert named.note == f"class names from {where}"
    embed_only = ModelConfig(arch="resnet18", weights=str(weights), categories=str(local), task="embed")
    unnamed = resolve_weights(embed_only, StorageConfig())
    assert unnamed.model_id == plain.model_id  # embeddings only: no labels to name
    for text, message in (
        ("\n".join(names[:9]), r"names 9 classes, but the weights' fc has 10"),
        ("\n".join(names[:5] + names[:5]), r"'shot type 0', 'shot type 1', 'shot type 2' named twice"),
        ("\n".join(names[:4] + [""] + names[5:]), r"line 5 is empty"),
    ):
        local.write_text(text)
        with pytest.raises(JobError, match=message):
            resolve_weights(ModelConfig(arch="resnet18", weights=str(weights), categories=str(local)), StorageConfig())
    with pytest.raises(JobError, match=r"model.categories='.*nope.txt': no such file"):
        missing = ModelConfig(arch="resnet18", weights=str(weights), categories=str(tmp_path / "nope.txt"))
        resolve_weights(missing, StorageConfig())


def test_older_exports_without_batch_counters_a_bias_free_fc_and_a_config_under_model_load(tmp_path):
    """Review findings: a wrapped ResNet was found only with BatchNorm's num_batches_tracked (older
    exports lack it), Linear(bias=False) read as 'no fc layer', and {'model': <config>, 'state_dict': ...}
    took the config for the weights."""
    plain = seeded_state_dict()
    no_counters = {k: v for k, v in plain.items() if not k.endswith("num_batches_tracked")}
    bias_free = {k: v for k, v in plain.items() if k != "fc.bias"}
    cases = {
        "lightning-old.ckpt": {"state_dict": {f"model.{k}": v for k, v in no_counters.items()}},
        "bias-free.pt": bias_free,
        "config-under-model.pt": {"model": {"name": "resnet18", "depth": 18}, "state_dict": plain},
    }
    for name, content in cases.items():
        path = tmp_path / name
        path.write_bytes(saved(content))
        resolved = resolve_weights(_model(str(path)), StorageConfig())  # task both: labels too
        loaded = torch.load(io.BytesIO(resolved.state_dict_bytes), weights_only=True)
        assert torch.equal(loaded["layer3.0.conv2.weight"], plain["layer3.0.conv2.weight"]), name
        assert torch.equal(loaded["fc.weight"], plain["fc.weight"]), name
        expected_bias = torch.zeros(1000) if name == "bias-free.pt" else plain["fc.bias"]
        assert torch.equal(loaded["fc.bias"], expected_bias), name


def test_a_categories_file_from_a_windows_editor_and_the_other_notes_are_kept(tmp_path):
    """A byte-order mark became part of the first name, CRLF blank lines at the end were refused, and
    naming the classes dropped the other notes on the weights (review findings)."""
    path = tmp_path / "checkpoint.pt"
    state_dict = {f"_orig_mod.{k}": v for k, v in seeded_state_dict(num_classes=3).items()}
    path.write_bytes(saved({**state_dict, "proj.weight": torch.ones(2, 2)}))
    names = tmp_path / "names.txt"
    names.write_bytes("\ufeffcat\r\ndog\r\ncafe\u0301\r\n\r\n".encode())
    resolved = resolve_weights(ModelConfig(arch="resnet18", weights=str(path), categories=str(names)), StorageConfig())
    assert resolved.categories == ("cat", "dog", "caf\u00e9")  # and one Unicode form
    assert resolved.note == (
        f"the resnet18 found under '_orig_mod.' in the file; left out 1 tensors that are not resnet18's (proj.weight); "
        f"model.top_k=5 but the classifier has 3 classes: labels hold all 3; class names from {names}"
    )
