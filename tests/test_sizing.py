"""How the pipeline sizes its actors from the cluster's resources (vidbatch.pipeline._actor_sizing).

A pure rule over what the cluster reports, so a plain object that reports fixed resources
stands in for the cluster here; the pipeline tests run the same rule on a real local Ray.
"""

from __future__ import annotations

from typing import Any

import pytest

from vidbatch.config import ResourcesConfig
from vidbatch.pipeline import _actor_sizing, _cap_decoders


class _Cluster:
    def __init__(self, cpus: float, gpus: float = 0.0) -> None:
        self.resources = {"CPU": cpus, **({"GPU": gpus} if gpus else {})}

    def cluster_resources(self) -> dict[str, float]:
        return dict(self.resources)

    def nodes(self) -> list[dict[str, Any]]:
        return [{"Alive": True, "Resources": dict(self.resources)}]


def test_cpu_only_default_shares_cores_and_the_model_waits_passively(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    sizing = _actor_sizing(_Cluster(cpus=2), ResourcesConfig(), 0.0, 1, 1)
    assert sizing["decoders_min"] == sizing["decoders_max"] == 2
    assert sizing["decode_threads"] == 1
    assert sizing["model_threads"] == 2
    # Cores shared with decoders: spinning OpenMP threads would take the decoders' time slices.
    assert sizing["model_env"] == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert sizing["decode_cpus"] * 2 + ResourcesConfig().model_cpus <= 2


def test_keys_written_as_null_are_unset_and_keep_the_cpu_only_sizing():
    """The README's job reference writes `decode_actors: null` and `decode_threads: null`; a job
    copied from it must size like a job that leaves them out."""
    written = ResourcesConfig.model_validate({"decode_actors": None, "decode_threads": None, "model_gpus": None})
    assert _actor_sizing(_Cluster(cpus=2), written, 0.0, 1, 1) == _actor_sizing(_Cluster(cpus=2), ResourcesConfig(), 0.0, 1, 1)
    assert ResourcesConfig().decode_threads is None  # shown as unset, not as 0 ("FFmpeg chooses")
    chosen = _actor_sizing(_Cluster(cpus=2), ResourcesConfig(decode_threads=0), 0.0, 1, 1)
    assert chosen["decode_threads"] == 0 and chosen["model_threads"] is None  # written: kept as written


def test_a_wait_policy_in_the_jobs_environment_wins(monkeypatch):
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert _actor_sizing(_Cluster(cpus=2), ResourcesConfig(), 0.0, 1, 1)["model_env"] == {}


def test_model_threads_are_capped_on_big_nodes():
    sizing = _actor_sizing(_Cluster(cpus=64), ResourcesConfig(), 0.0, 1, 1)
    assert sizing["decoders_min"] == 64 and sizing["model_threads"] == 4


def test_gpu_or_explicit_cpus_keep_the_configured_sizes_and_default_openmp():
    on_gpu = _actor_sizing(_Cluster(cpus=16, gpus=1), ResourcesConfig(), 1.0, 15, 15)
    explicit = _actor_sizing(_Cluster(cpus=8), ResourcesConfig(model_cpus=2), 0.0, 6, 6)
    for sizing in (on_gpu, explicit):
        assert sizing["model_env"] == {} and sizing["model_threads"] is None
    assert (on_gpu["decoders_min"], explicit["decoders_min"]) == (15, 6)


def test_never_more_decoders_than_videos():
    # A nightly run over three changed videos on a 64-CPU cluster: three decoders, not 64.
    assert _cap_decoders(64, 64, videos=3) == (3, 3)
    # An autoscaling pool: both ends capped, min never above max.
    assert _cap_decoders(4, 32, videos=10) == (4, 10)
    assert _cap_decoders(4, 32, videos=2) == (2, 2)
    assert _cap_decoders(2, 2, videos=16) == (2, 2)


def test_decoders_keep_their_cpu_share_when_capped():
    # The per-decoder reservation comes from the full pool (_actor_sizing), so a lone decoder
    # on a two-node cluster asks for a node's worth of CPUs at most, never the whole cluster.
    class _TwoNodes(_Cluster):
        def nodes(self) -> list[dict[str, Any]]:
            return [{"Alive": True, "Resources": {"CPU": 32}}, {"Alive": True, "Resources": {"CPU": 32}}]

    sizing = _actor_sizing(_TwoNodes(cpus=64), ResourcesConfig(), 0.0, 63, 63)
    assert _cap_decoders(sizing["decoders_min"], sizing["decoders_max"], videos=1) == (1, 1)
    assert sizing["decode_cpus"] <= 1


def test_an_empty_pool_is_a_bug_not_a_size():
    with pytest.raises(ValueError, match="videos=0"):
        _cap_decoders(2, 2, videos=0)


def test_the_input_falls_back_to_from_arrow_where_ray_has_no_from_blocks():
    """from_blocks is a Ray DeveloperAPI: a Ray without it still builds the input (the real one: test_pipeline)."""
    from types import SimpleNamespace

    from vidbatch.pipeline import _dataset_of

    calls: list[str] = []
    without = SimpleNamespace(data=SimpleNamespace(from_arrow=lambda blocks: calls.append("from_arrow") or blocks))
    with_it = SimpleNamespace(data=SimpleNamespace(
        from_arrow=lambda blocks: calls.append("from_arrow") or blocks,
        from_blocks=lambda blocks: calls.append("from_blocks") or blocks,
    ))
    assert _dataset_of(without, ["b"]) == ["b"] and calls == ["from_arrow"]
    assert _dataset_of(with_it, ["b"]) == ["b"] and calls == ["from_arrow", "from_blocks"]
