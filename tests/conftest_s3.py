"""Fixtures for the object-storage tests (loaded by `pytest_plugins = ["conftest_s3"]`).

One moto server per session (a subprocess on 127.0.0.1), reached the way a real job
reaches S3: credentials and endpoint in the standard AWS environment variables, never
in the job file. The credentials are canaries: tests grep outputs and logs for them.
Ray, when a test needs it, starts after that environment is set, so its workers
inherit it the way they would on a cluster node.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from s3server import FaultProxy, MotoServer, s3_client

# Variables that could point botocore or deltalake somewhere else during the tests.
_CLEARED = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ENDPOINT_URL_S3",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
)


@dataclass(frozen=True)
class S3Env:
    endpoint: str
    access_key_id: str
    secret_access_key: str = field(repr=False)  # kept out of pytest's failure reports
    client: Any = field(repr=False)  # boto3 S3 client for setting up buckets

    def new_bucket(self, prefix: str = "vb") -> str:
        name = f"{prefix}-{secrets.token_hex(4)}"
        self.client.create_bucket(Bucket=name)
        return name

    def delta_options(self) -> dict[str, str]:
        """Written out here (not vidbatch's helper) so reading back is an independent check."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ALLOW_HTTP": "true", "AWS_REGION": "us-east-1"}


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Env]:
    log = tmp_path_factory.mktemp("moto") / "moto_server.log"
    canary_id = "AKIACANARY" + secrets.token_hex(5).upper()
    canary_secret = "canary/" + secrets.token_urlsafe(30)
    names = (*_CLEARED, "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL")
    saved = {key: os.environ.get(key) for key in (*names, "AWS_EC2_METADATA_DISABLED")}
    with MotoServer(log_path=log) as server:
        for key in _CLEARED:
            os.environ.pop(key, None)
        os.environ.update(
            AWS_ACCESS_KEY_ID=canary_id,
            AWS_SECRET_ACCESS_KEY=canary_secret,
            AWS_DEFAULT_REGION="us-east-1",
            AWS_ENDPOINT_URL=server.endpoint,
            AWS_EC2_METADATA_DISABLED="true",
        )
        try:
            yield S3Env(server.endpoint, canary_id, canary_secret, s3_client(server.endpoint))
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


@pytest.fixture(scope="session")
def fault_proxy(s3: S3Env) -> Iterator[FaultProxy]:
    with FaultProxy(s3.endpoint) as proxy:
        yield proxy


@pytest.fixture()
def proxy(fault_proxy: FaultProxy) -> FaultProxy:
    """The session's fault proxy with no rules and empty stats."""
    fault_proxy.reset()
    return fault_proxy


@pytest.fixture(scope="session")
def ray_s3(s3: S3Env) -> Iterator[Any]:
    """A local Ray (2 CPUs) whose workers inherit the S3 environment above.

    Reuses a Ray that is already running if its workers see that environment (a session
    Ray started after the `s3` fixture); restarts one started before it.
    """
    import ray

    from vidbatch.ray_leftovers import stop_local_ray

    started = False
    if ray.is_initialized() and not _workers_see(ray, s3):
        stop_local_ray(ray)  # its workers were forked before the S3 environment existed
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
        started = True
    try:
        yield ray
    finally:
        if started:
            stop_local_ray(ray)


def _workers_see(ray: Any, s3: S3Env) -> bool:
    @ray.remote(num_cpus=0)
    def endpoint() -> str | None:
        return os.environ.get("AWS_ENDPOINT_URL")

    return bool(ray.get(endpoint.remote(), timeout=60) == s3.endpoint)
