"""`vidbatch check`: what `vidbatch run` would refuse a job for, found without running it.

The same steps the run takes before any work (read the manifest, plan it, resolve the
weights, read the output's tables, decide every row: vidbatch.worklist), plus a test that a
local output can be created (an empty directory made and removed at once). Nothing is left
behind and no Ray is started.
Write access to an object store cannot be known without writing, so the run tests it when
it starts (started.json). GPUs asked for that this machine lacks are a note, not a refusal:
`check` has no --address, and the job may be meant for a cluster.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from vidbatch.config import JobConfig, ResourcesConfig
from vidbatch.errors import JobError
from vidbatch.manifest import Refusal, read_manifest
from vidbatch.manifest import plan as make_plan
from vidbatch.output_refusals import refuse_file_output
from vidbatch.spill import SpillRoom, spill_space_said
from vidbatch.state import load_prior
from vidbatch.storage import is_local, local_path
from vidbatch.worklist import make_worklist


@dataclass(frozen=True)
class Preflight:
    manifest_rows: int
    to_process: int  # to decode: new, changed or retried, with a file that is there
    unchanged: int
    removed: int  # the output's rows whose video is gone from the manifest
    refused: int
    duplicates: int
    model_id: str
    untrained: bool
    prior_videos: int
    output_checked: bool  # False: an object store, whose write access the run tests
    output: str = ""  # where the run would write: a local output as an absolute path
    counts: str = ""  # the counts line the run would print
    notes: tuple[str, ...] = ()
    weights_note: str | None = None

    def lines(self) -> list[str]:
        lines = [
            f"a run now: {self.counts}",
            f"weights: {self.model_id}"
            + (" (seeded random init: results are NOT meaningful)" if self.untrained else "")
            + (f" ({self.weights_note})" if self.weights_note and not self.untrained else ""),
            f"output {self.output}: {self.prior_videos} videos rows from earlier runs"
            if self.prior_videos
            else f"output {self.output}: no earlier runs (every video is new)",
        ]
        if not self.output_checked:
            lines.append("output: write access to the object store is tested when the run starts")
        return lines + list(self.notes)


def preflight(
    config: JobConfig, *, allow_empty: bool = False, retry_failed: bool = False, redo_older_decoding: bool = False
) -> Preflight:
    """Raises JobError, naming the key and the value, for what `vidbatch run` would refuse."""
    from vidbatch.model_weights import resolve_weights  # imports torch (seconds): only when checking this far

    plan = make_plan(read_manifest(config.manifest, config.storage), config.inputs)
    weights = resolve_weights(config.model, config.storage)
    prior = load_prior(config.output, config.storage)
    local = is_local(config.output)
    if local:
        _check_local_output(config.output)
    worklist = make_worklist(
        config,
        plan,
        prior,
        model_id=weights.model_id,
        retry_failed=retry_failed,
        redo_older_decoding=redo_older_decoding,
        allow_empty=allow_empty,
    )
    # `check` has no --address: the job may be meant for a cluster, so GPUs missing here are a note.
    missing_gpus = gpus_missing_here(config.resources, address=None)
    room = SpillRoom(Path(tempfile.gettempdir()), min_free_bytes=config.limits.spill_min_free_mb * 2**20)
    spill_note = (
        f"{spill_space_said(room.folder, room.free_bytes(), config.limits.spill_min_free_mb)}: "
        "`vidbatch run` here would refuse the run"
        if worklist.work.to_process.num_rows and room.low()
        else None
    )
    precision_note = _slow_precision_note(config) or _auto_precision_note(config)
    gpus_note = (
        f"gpus: {missing_gpus}: `vidbatch run` here would refuse it; a run on a cluster (--address, RAY_ADDRESS, "
        "vidbatch submit) checks the cluster's GPUs when it connects"
    )
    return Preflight(
        manifest_rows=plan.manifest_rows,
        to_process=worklist.work.to_process.num_rows,
        unchanged=len(worklist.decision.skip),
        removed=len(worklist.decision.removed),
        refused=len(plan.refused),
        duplicates=plan.duplicates,
        model_id=weights.model_id,
        untrained=weights.untrained,
        weights_note=weights.note,
        prior_videos=len(prior.videos),
        output_checked=local,
        # a relative output is read from the current folder: said in full, so a check run from
        # another folder (that sees no earlier runs) is seen to look elsewhere
        output=os.path.abspath(local_path(config.output)) if local else config.output,
        counts=worklist.counts_line(),
        notes=(
            *filter(None, [worklist.redone_line()]),  # as the run says it, under its counts line
            *worklist.warnings(prior),
            *_refusal_lines(plan.refused),
            *([gpus_note] if missing_gpus else []),
            *filter(None, [spill_note, precision_note]),
        ),
    )


def _slow_precision_note(config: JobConfig) -> str | None:
    """fp16 asked for a model that runs on CPUs like this one, which cannot pack it for oneDNN: it runs,
    several times slower than fp32, and only the model actor's log said so."""
    import torch

    from vidbatch.model import cpu_has_fast_fp16

    on_cpus = config.resources.model_gpus == 0 or (config.resources.model_gpus is None and not torch.cuda.is_available())
    if config.model.precision != "fp16" or not on_cpus or cpu_has_fast_fp16():
        return None
    return (
        "model.precision: fp16 on CPUs like this machine's, which lack fp16 matrix instructions (AVX512-FP16, "
        "AMX-FP16): the model runs unpacked, several times slower than fp32; on CPUs use auto or fp32 (`vidbatch plan` "
        "measures both)"
    )


def _auto_precision_note(config: JobConfig) -> str | None:
    """What `precision: auto` runs in on CPUs like this machine's. Each model actor picks it on its own
    host, the rows do not record it (only the run's summary does, in `model_precision`), and bf16
    embeddings differ from fp32 ones by up to ~1e-3 under the same `model_id`: said before the run."""
    import torch

    from vidbatch.model import cpu_has_fast_bf16

    on_cpus = config.resources.model_gpus == 0 or (config.resources.model_gpus is None and not torch.cuda.is_available())
    if config.model.precision != "auto" or not on_cpus:
        return None
    runs = "bfloat16 (the CPU has bf16 matrix instructions)" if cpu_has_fast_bf16() else "float32 (no bf16 matrix instructions)"
    return (
        f"model.precision: auto runs the model in {runs} on CPUs like this machine's; hosts of another kind pick "
        "their own, the rows do not say which (the summary's model_precision does), and both keep one model_id: "
        "set fp32 or bf16 for embeddings that must all come from one precision"
    )


def _refusal_lines(refused: Sequence[Refusal], *, per_status: int = 3) -> list[str]:
    """Why rows are refused: a few examples per status (a library may refuse thousands alike)."""
    by_status: dict[str, list[Refusal]] = {}
    for refusal in refused:
        by_status.setdefault(refusal.status, []).append(refusal)
    lines = []
    for status, rows in sorted(by_status.items()):
        lines.append(f"refused {status}: {len(rows)} rows" + (f", e.g. (first {per_status})" if len(rows) > per_status else ""))
        lines += [f"  {r.video_id!r}: {r.message}" for r in rows[:per_status]]
    return lines


def refuse_gpus_missing_here(resources: ResourcesConfig, address: str | None) -> None:
    """`vidbatch run`: GPUs asked for that a local Ray would not have are refused before anything is written."""
    missing = gpus_missing_here(resources, address)
    if missing:
        raise JobError(f"{missing}; set resources.model_gpus: 0 to run the model on CPUs, or run it on a cluster with GPUs")


def gpus_missing_here(resources: ResourcesConfig, address: str | None) -> str | None:
    """What is wrong when resources.model_gpus asks for more GPUs than the Ray a run would start here has.

    Known up front only for a run that starts its own Ray on this machine (no address, no
    RAY_ADDRESS, no Ray running in this process or started on this host by `ray start`); a
    cluster's GPUs, and its autoscaler's, are known once connected (pipeline._placement).
    """
    wanted = resources.model_gpus
    if not wanted or address or os.environ.get("RAY_ADDRESS"):
        return None
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        return None
    gpus = local_gpus()
    if gpus is None or wanted <= gpus:
        return None
    return (
        f"resources.model_gpus={wanted:g} but this machine has {gpus:g} GPUs, and a run here starts its own Ray "
        "(no --address or RAY_ADDRESS)"
    )


def local_gpus() -> float | None:
    """The GPUs a Ray started here by ray.init() would have, found the way Ray finds them; None when unknown.

    Ray counts them through its accelerator managers (NVML for NVIDIA, and AMD, Intel, ...), capped
    by CUDA_VISIBLE_DEVICES (or the vendor's variable), unless RAY_OVERRIDE_RESOURCES says how many.
    torch.cuda.device_count() would say 0 on a GPU machine with a CPU build of torch, where Ray
    still offers the GPUs. These are Ray's private APIs: if they change, the check is left to
    the run's placement, after Ray starts.
    """
    try:
        from ray._private import accelerators, services

        if services.find_bootstrap_address(None) is not None:
            return None  # ray.init() would join the cluster `ray start` runs on this host
        override = json.loads(os.environ.get("RAY_OVERRIDE_RESOURCES") or "{}").get("GPU")
        if override is not None:
            return float(override)
        manager = accelerators.get_accelerator_manager_for_resource("GPU")
        if manager is None:
            return 0.0
        count = manager.get_current_node_num_accelerators()
        visible = manager.get_current_process_visible_accelerator_ids()
        return float(count if visible is None else min(count, len(visible)))
    except Exception:
        return None


def _check_local_output(output: str) -> None:
    """The output directory, or the nearest existing one above it, takes a new entry."""
    refuse_file_output(output)
    path = Path(local_path(output)).absolute()
    existing = next(p for p in (path, *path.parents) if p.exists())
    try:
        # A real attempt rather than os.access, which says yes to root on read-only or
        # virtual filesystems; the empty directory is removed at once.
        os.rmdir(tempfile.mkdtemp(prefix=".vidbatch-check-", dir=existing))
    except OSError as exc:
        raise JobError(
            f"output {output!r} cannot be written: a folder could not be made in {str(existing)!r} "
            f"({exc.strerror or exc}); choose an output on a writable file system"
        ) from exc
