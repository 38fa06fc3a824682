"""The files under cluster/ parse and carry what their tools require.

No Kubernetes or cloud here, so this checks structure: the fields KubeRay, Kubernetes and
`ray up` refuse to start without, and the ones vidbatch relies on (a GPU group that asks
for nvidia.com/gpu, token auth on every Ray container, the job file mounted, an entrypoint
that runs vidbatch, a deterministic id for the nightly run).
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from vidbatch.config import load_job

CLUSTER = Path(__file__).resolve().parent.parent / "cluster"
JOBS = CLUSTER.parent / "jobs"


def load(name: str) -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all((CLUSTER / name).read_text()) if d is not None]
    assert len(docs) == 1, name
    return docs[0]


def containers(pod_template: dict[str, Any]) -> list[dict[str, Any]]:
    found = pod_template["spec"]["containers"]
    assert found, "a pod template needs containers"
    return found


def env_names(container: dict[str, Any]) -> set[str]:
    return {e["name"] for e in container.get("env", [])}


def check_ray_container(container: dict[str, Any]) -> None:
    assert container["name"] and container["image"], container
    assert "vidbatch" in container["image"]
    assert {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN"} <= env_names(container)
    token = next(e for e in container["env"] if e["name"] == "RAY_AUTH_TOKEN")
    assert "secretKeyRef" in token["valueFrom"] and "value" not in token  # from a Secret, never inline
    for key in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][key]), container["name"]


def check_raycluster_spec(spec: dict[str, Any]) -> None:
    assert spec["rayVersion"].startswith("2.")
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"  # the head runs the driver, not the work
    for c in containers(head["template"]):
        check_ray_container(c)
    head_container = containers(head["template"])[0]
    assert {p["containerPort"] for p in head_container["ports"]} >= {6379, 8265}
    assert any(m["mountPath"] == "/etc/vidbatch/jobs" for m in head_container["volumeMounts"])

    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    assert set(groups) == {"cpu-decode", "gpu-model"}
    for group in groups.values():
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        assert int(group["rayStartParams"]["num-cpus"]) > 0
        for c in containers(group["template"]):
            check_ray_container(c)
            assert c["resources"]["requests"]["cpu"] == group["rayStartParams"]["num-cpus"]
    cpu = containers(groups["cpu-decode"]["template"])[0]
    assert "nvidia.com/gpu" not in cpu["resources"]["limits"]
    gpu_group = groups["gpu-model"]
    gpu = containers(gpu_group["template"])[0]
    for key in ("requests", "limits"):
        assert gpu["resources"][key]["nvidia.com/gpu"] == gpu_group["rayStartParams"]["num-gpus"] == "1"
    assert gpu["image"].endswith("-gpu")
    assert gpu_group["minReplicas"] >= 1  # vidbatch checks for a GPU when the run starts
    assert spec["enableInTreeAutoscaling"] is True


def test_raycluster():
    doc = load("kuberay/raycluster.yaml")
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayCluster"
    assert doc["metadata"]["name"] == "vidbatch"  # the CronJob talks to vidbatch-head-svc
    check_raycluster_spec(doc["spec"])


def test_rayjob_runs_the_job_file_on_its_own_cluster():
    doc = load("kuberay/rayjob.yaml")
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayJob"
    spec = doc["spec"]
    argv = shlex.split(spec["entrypoint"])
    assert argv[:4] == ["python", "-m", "vidbatch.cli", "run"]
    assert argv[4].startswith("/etc/vidbatch/jobs/") and (JOBS / Path(argv[4]).name).is_file()
    assert spec["shutdownAfterJobFinishes"] is True and spec["activeDeadlineSeconds"] > 0
    submitter = containers(spec["submitterPodTemplate"])[0]
    assert {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN"} <= env_names(submitter)
    check_raycluster_spec(spec["rayClusterSpec"])
    # The operator polls the Jobs API for the RayJob's status: it sends a token only with authOptions,
    # and it must be the Secret the containers use, or the operator and the cluster hold two tokens.
    head = containers(spec["rayClusterSpec"]["headGroupSpec"]["template"])[0]
    token = next(e for e in head["env"] if e["name"] == "RAY_AUTH_TOKEN")
    secret = token["valueFrom"]["secretKeyRef"]["name"]
    assert spec["rayClusterSpec"].get("authOptions") == {"mode": "token", "secretName": secret}


def test_nightly_cronjob_submits_with_a_date_based_id():
    doc = load("kuberay/nightly-cronjob.yaml")
    assert doc["apiVersion"] == "batch/v1" and doc["kind"] == "CronJob"
    spec = doc["spec"]
    assert len(spec["schedule"].split()) == 5 and spec["concurrencyPolicy"] == "Forbid"
    pod = spec["jobTemplate"]["spec"]["template"]
    assert pod["spec"]["restartPolicy"] in ("Never", "OnFailure")
    container = containers(pod)[0]
    argv = container["command"]
    assert argv[:2] == ["vidbatch", "submit"] and "--wait" in argv
    assert argv[argv.index("--id") + 1] == "{name}-{date}"
    assert argv[argv.index("--address") + 1] == "http://vidbatch-head-svc:8265"
    timeout = float(argv[argv.index("--timeout") + 1])
    assert timeout < spec["jobTemplate"]["spec"]["activeDeadlineSeconds"]
    assert (JOBS / Path(argv[2]).name).is_file()
    assert "RAY_AUTH_TOKEN" in env_names(container)
    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & env_names(container)

    from vidbatch.submit import expand_id

    job = load_job(JOBS / Path(argv[2]).name)
    assert expand_id(argv[argv.index("--id") + 1], job.name).startswith("nightly-tagging-20")


def test_ray_up_config_has_cpu_and_gpu_node_types_that_autoscale():
    doc = load("ray-up/aws.yaml")
    for key in ("cluster_name", "provider", "auth", "available_node_types", "head_node_type", "max_workers"):
        assert key in doc, key
    assert doc["provider"]["type"] == "aws" and doc["provider"]["region"]
    types = doc["available_node_types"]
    assert doc["head_node_type"] in types
    assert types[doc["head_node_type"]]["resources"]["CPU"] == 0
    workers = {name: t for name, t in types.items() if name != doc["head_node_type"]}
    assert {t["resources"].get("GPU", 0) > 0 for t in workers.values()} == {True, False}
    for name, t in workers.items():
        assert 0 <= t["min_workers"] <= t["max_workers"], name
        assert t["node_config"]["InstanceType"] and t["resources"]["CPU"] > 0
    assert sum(t["max_workers"] for t in workers.values()) == doc["max_workers"]
    gpu = next(t for t in workers.values() if t["resources"].get("GPU"))
    assert gpu["min_workers"] >= 1 and gpu["docker"]["worker_image"].endswith("-gpu")
    assert "vidbatch" in doc["docker"]["image"]
    starts = " ".join(doc["head_start_ray_commands"] + doc["worker_start_ray_commands"])
    assert starts.count("RAY_AUTH_MODE=token ray start") == 2
    assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in starts


def test_dockerfile_pins_ray_and_installs_vidbatch():
    text = (CLUSTER / "Dockerfile").read_text()
    assert "rayproject/ray:2.60.0" in text and "pip install" in text and "/opt/vidbatch" in text


@pytest.mark.parametrize(
    "name", ["kuberay/raycluster.yaml", "kuberay/rayjob.yaml", "kuberay/nightly-cronjob.yaml", "ray-up/aws.yaml"]
)
def test_no_secret_values_in_configs(name):
    text = (CLUSTER / name).read_text()
    for word in ("aws_secret_access_key", "AKIA", "password:"):
        assert word.lower() not in text.lower()
