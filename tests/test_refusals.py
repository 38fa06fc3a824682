"""Refusals that name the fix: a Ray address where nothing answers (ray.init would retry it for ever), weights advice."""

import socket

import pytest

from vidbatch.errors import JobError
from vidbatch.ray_session import refuse_unreachable


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("form", ["127.0.0.1:{port}", "ray://127.0.0.1:{port}"])
def test_nothing_answering_at_the_address_is_refused_naming_it(form):
    address = form.format(port=_closed_port())
    with pytest.raises(JobError, match="nothing answers at the Ray address") as raised:
        refuse_unreachable(address, timeout_s=2.0)
    assert repr(address) in str(raised.value) and "ray status" in str(raised.value)


def test_a_listening_address_and_ray_s_own_forms_pass():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        refuse_unreachable(f"127.0.0.1:{server.getsockname()[1]}", timeout_s=2.0)
    for address in (None, "", "auto", "local"):
        refuse_unreachable(address)


def test_weights_advice_names_weights_the_arch_has():
    from torchvision.models import get_model_weights

    from vidbatch.model_weights import ways_to_provide

    for arch in ("resnet18", "resnet50"):
        advice = ways_to_provide(arch)
        name = get_model_weights(arch).DEFAULT._name_
        assert f"stage {name} --arch {arch}" in advice
    assert "IMAGENET1K_V2" not in ways_to_provide("resnet18")


def test_manifest_build_without_credentials_says_so_instead_of_a_traceback(monkeypatch, tmp_path):
    # botocore's NoCredentialsError is not an OSError: it used to escape as a traceback.
    from vidbatch.config import StorageConfig
    from vidbatch.manifest_build import list_videos

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    storage = StorageConfig(endpoint_url=f"http://127.0.0.1:{_closed_port()}")
    with pytest.raises(JobError, match="source 's3://bucket/videos/' cannot be listed") as raised:
        list_videos("s3://bucket/videos/", storage)
    assert "no credentials were found" in str(raised.value)
    # `manifest build` has no job file: the advice names its own options
    assert "--endpoint-url" in str(raised.value) and "storage.endpoint_url" not in str(raised.value)
