"""The one place that knows the order of the stages and the resources they get.

manifest -> plan -> DecodeStage (CPU actors) -> ModelStage (GPU/CPU actors)
         -> Collector (driver, streaming) -> Delta commit -> summary.json
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import os
import secrets
import signal
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from vidbatch.collect import Collector, Identity, ProgressPrinter
from vidbatch.commit import check_writable, commit_tables, write_summary
from vidbatch.config import DECODE_REVISION, JobConfig
from vidbatch.drain import SIGNAL_NAMES, drain, stopped_early
from vidbatch.errors import JobError, Stopped
from vidbatch.incremental import OLDER_DECODING, reason_counts
from vidbatch.manifest import plan as make_plan
from vidbatch.manifest import read_manifest
from vidbatch.preflight import refuse_gpus_missing_here
from vidbatch.ray_session import ensure_ray
from vidbatch.run_summary import build_summary, rewritten_line, size_said, utc_now_iso
from vidbatch.spill import SpillRoom, folder_bytes, remove_dead_runs_folders, spill_folder, spill_space_said
from vidbatch.stages import DecodeStage, ModelStage
from vidbatch.state import load_prior
from vidbatch.stop_signals import interrupts_held, stops_recorded
from vidbatch.uri_policy import redact_uri
from vidbatch.worklist import make_worklist

if TYPE_CHECKING:
    from vidbatch.model_weights import ResolvedWeights

log = logging.getLogger(__name__)

# One video per block keeps decode actors evenly loaded; past this many videos, blocks
# hold several so the scheduler's bookkeeping stays small.
_MAX_BLOCKS = 20_000
# Poison videos never reach these (the decode sandbox contains them); they are for lost
# nodes and killed actors, where Ray reports several quick failures before a node is
# declared dead, so a few retries would be spent in seconds.
_ACTOR_RESTARTS = 8
_TASK_RETRIES = 16
# The start of Ray Data's warning for options given through `**ray_remote_args` (Ray >= 2.60).
_REMOTE_ARGS_DEPRECATED = r"`ray_remote_args` is deprecated"


@dataclass(frozen=True)
class RunResult:
    run_id: str
    summary: dict[str, Any]
    summary_uri: str


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def run_job(
    config: JobConfig,
    *,
    address: str | None = None,
    progress: Callable[[str], None] | None = None,
    retry_failed: bool = False,
    redo_older_decoding: bool = False,
    allow_empty: bool = False,
) -> RunResult:
    """Run the whole job; returns once both tables are committed. Raises JobError before any work on bad input."""
    say = progress or (lambda line: print(line, file=sys.stderr, flush=True))
    started = time.monotonic()
    run_id = new_run_id()
    identity_sampling = config.sampling.sampling_id()

    timings: dict[str, float] = {}
    # GPUs a Ray started here would lack are refused now, not after Ray's start with a started.json
    # left behind. (Ray's modules it imports are imported here, before the weights' thread starts.)
    refuse_gpus_missing_here(config.resources, address)
    manifest = read_manifest(config.manifest, config.storage)
    plan = make_plan(manifest, config.inputs)
    # The weights (torch's import: seconds) resolve on a thread while the previous runs' state is
    # read. Both happen before anything is started or written, so bad weights (a missing file, an
    # unknown name, a state_dict of another arch) and an unreadable output are refused in seconds,
    # with no Ray started and nothing left in the output. (Starting a first run's Ray alongside
    # the weights would save ~1-2 s of its start-up, but a refusal would then come after Ray's
    # start and leave a started.json behind.)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="vidbatch-weights") as pool:
        resolving = pool.submit(_resolve_weights, config)
        prior = load_prior(config.output, config.storage)
        weights = resolving.result()
    del resolving  # its result would keep the weights' bytes alive (see _hand_over_weights)
    timings["to_weights_s"] = time.monotonic() - started
    check_writable(
        config.output,
        run_id,
        config.storage,
        {
            "run_id": run_id,
            "job": config.model_dump(mode="json"),
            "model_id": weights.model_id,
            "started_at": utc_now_iso(),
            "decode_revision": DECODE_REVISION,
        },
    )
    if weights.untrained:
        say(
            f"WARNING: model.weights is 'none': a seeded random init ({weights.model_id}); "
            "embeddings and labels are NOT meaningful"
        )
    try:
        worklist = make_worklist(
            config,
            plan,
            prior,
            model_id=weights.model_id,
            retry_failed=retry_failed,
            redo_older_decoding=redo_older_decoding,
            allow_empty=allow_empty,
            say=say,
        )
    except JobError:  # an empty manifest, a retyped column: refused before any work
        _forget_started(config, run_id)
        raise
    decision, work, refreshed = worklist.decision, worklist.work, worklist.refreshed
    say(f"run {run_id}: {worklist.counts_line()}; model {weights.model_id}")
    if weights.note and not weights.untrained:  # what was made of the file (a copy of torchvision's, tensors left out)
        say(f"  weights: {weights.note}")
    for warning in worklist.warnings(prior):
        say(warning)
    reasons = reason_counts(decision)
    if redone := worklist.redone_line():
        say(redone)

    patience = config.limits.no_progress_timeout_s
    identity = Identity(model_id=weights.model_id, sampling_id=identity_sampling, run_id=run_id)
    printer = ProgressPrinter(config.resources.progress_interval_s, say, written_up_front=len(work.refused))
    swept = remove_dead_runs_folders()
    if swept.folders:
        say(f"removed {swept.folders} spill folder(s) of runs killed earlier on this host ({swept.bytes / 1e6:.1f} MB)")
    # stop_scope holds the record of stop signals from the drain to the commit's hold (below), and the
    # hold itself until the spill folder is gone: entered first, it is left last.
    with contextlib.ExitStack() as stop_scope, spill_folder(run_id) as spill:
        collector = Collector(
            plan=work,
            identity=identity,
            categories=weights.categories,
            task=config.model.task,
            top_k=config.model.top_k,
            spill_dir=spill,
            on_progress=printer,
            sizes=worklist.sizes,
        )
        collector.add_refreshed(refreshed)
        room = SpillRoom(spill, min_free_bytes=config.limits.spill_min_free_mb * 2**20)
        if work.to_process.num_rows:
            if room.low():  # refused before any work, not a night later
                _forget_started(config, run_id)
                said = spill_space_said(spill.parent, room.free_bytes(), config.limits.spill_min_free_mb)
                raise JobError(f"{said}; nothing was done")
            with _timed(timings, "ray_start_s"):
                try:
                    ray = ensure_ray(address)  # a run with nothing to decode never starts Ray
                except JobError:  # no cluster at the address: refused before any work
                    _forget_started(config, run_id)
                    raise
            timings["to_pipeline_s"] = time.monotonic() - started
            state_dict_ref, weights = _hand_over_weights(ray, weights)
            try:
                dataset = _build_dataset(ray, config, work.to_process, weights, state_dict_ref)
            except JobError:  # the cluster lacks what the job asks for (_placement): refused before any work
                _forget_started(config, run_id)
                raise
            # From the drain to the commit's hold, a first Ctrl-C or SIGTERM is only recorded and a
            # second one stops at once: one that came after the drain had returned (while the rows of
            # the videos not done are written, a million on a big night's time limit) stopped the run
            # there, committing nothing, though the decoding was over.
            stops = stop_scope.enter_context(stops_recorded(second_stops=True))
            with _timed(timings, "pipeline_s"):
                ended = drain(
                    dataset,
                    collector,
                    no_progress_timeout_s=patience,
                    unreachable_in_a_row=config.limits.unreachable_in_a_row,
                    stop_at=started + config.limits.max_run_s if config.limits.max_run_s is not None else None,
                    spill_room=room,
                    say=say,
                    stops=stops,
                )
            if ended in SIGNAL_NAMES and not collector.done:
                # No video finished: a commit would only put `timeout` rows over the rows from before.
                if ended == "interrupted":
                    raise KeyboardInterrupt
                raise Stopped("stopped by SIGTERM")
        else:
            ended, stops = "finished", []
        # A signal the drain saw and said already; one recorded after it is said below.
        said_in_drain = ended in SIGNAL_NAMES
        if ended in ("time_limit", "spill_space", *SIGNAL_NAMES) and collector.all_finished:
            ended = "finished"  # the limit (or the stop) came as the last video came in: nothing was left out
        if ended == "finished":
            tally = collector.close("the pipeline returned no complete result for this video; rerun the job")
        else:
            said, not_done, error_type = stopped_early(ended, config, room)
            say(said)
            # An ok row redone only because an older vidbatch decoded it still holds its results: one
            # the run did not reach keeps it, not a `timeout` row with none (a first night of
            # --redo-older-decoding with a time limit, or a stop, emptied most of a library's rows).
            older = {video_id for video_id, reason in decision.reasons.items() if reason == OLDER_DECODING}
            tally = collector.close(not_done, lost_status="timeout", lost_type=error_type, keep=older)
            if collector.kept:
                n = len(collector.kept)
                say(
                    f"  {n} video{'s' if n != 1 else ''} decoded by an older vidbatch and not reached keep "
                    "their rows; --redo-older-decoding on a later run does them"
                )
        printer(tally, collector.total, force=True)
        if stops and not said_in_drain:  # it came after the drain: the decoding was over
            name = signal.Signals(stops[0]).name
            say(f"{name} after the decoding ended: committing what is done (a second one stops at once, committing nothing)")
        changes = {
            "new": decision.new,
            "changed": decision.changed,
            "retried": decision.retried,
            "removed": len(decision.removed),
            "unchanged": len(decision.skip),
            "refreshed": len(refreshed),
            # clip rows of a run that died between its commits, deleted by this one: a run whose
            # only work is this tidying still commits, and must not say it changed nothing
            "leftovers_removed": len({video_id for video_id, _ in prior.stale_clips}),  # videos, not (video, run) pairs
        }
        # A commit of a big night rewrites files for minutes (every file that holds a replaced video):
        # said, so that a log whose last line is the progress line does not look stalled.
        # The spill is what the commit writes to the output (on object storage, what it uploads), and
        # what the run's temporary folder needed (limits.spill_min_free_mb is set from it).
        spilled = folder_bytes(spill)
        if tally.videos or any(count for kind, count in changes.items() if kind != "unchanged"):
            say(_committing_line(tally.videos, tally.clips, changes, redact_uri(config.output), spill_bytes=spilled))
        # From the first commit to the end of the run (the summary written, the spill folder removed,
        # gigabytes on a big night), Ctrl-C and SIGTERM wait: a stopped run would otherwise say
        # "nothing was committed" about a run whose commit had landed, and maybe leave no summary.
        stop_scope.enter_context(interrupts_held(say))
        commit_started = time.monotonic()
        committed = commit_tables(
            config.output,
            spill,
            run_id=run_id,
            replace_ids=worklist.replaced_ids - collector.kept,
            storage=config.storage,
            stale_clips=prior.stale_clips,
            clip_video_ids=prior.clip_video_ids,
            videos_version=prior.videos_version,
            refreshed_ids={row["video_id"] for row in refreshed},
            void_clips=collector.void_clips,
            metadata={
                "vidbatch.statuses": json.dumps(tally.statuses, sort_keys=True),
                "vidbatch.changes": json.dumps(changes),
                "vidbatch.clips": str(tally.clips),
                "vidbatch.wall_time_s": f"{time.monotonic() - started:.3f}",
                "vidbatch.model_id": weights.model_id,
            },
        )
        timings["commit_s"] = time.monotonic() - commit_started
        if rewrote := rewritten_line(committed.summary()):
            say(rewrote)
        wall = time.monotonic() - started
        # rows written without decoding (from the plan, the stat, or for videos a stop cut off) are no throughput
        decoded = tally.videos - len(work.refused) - collector.lost
        summary = build_summary(config, run_id, weights, plan, tally, wall, committed.versions, decoded=decoded)
        # `precision: auto` is bf16 on some hosts and fp32 on others; the rows do not say which
        summary["model_precision"] = sorted(collector.precisions)
        # Why the run ended before every video was tried (a nightly check reads this, not the log).
        summary["stopped_early"] = None if ended == "finished" else ended
        summary["changes"] = changes
        # A first run over an empty manifest creates both tables, empty: a commit, though no change counts it.
        before = {"videos": prior.videos_version, "clips": prior.clips_version}
        summary["tables_created"] = [name for name, version in before.items() if version is None and name in committed.versions]
        summary["reasons"] = reasons
        # The whole videos table after this run, not only the rows it wrote: what a nightly
        # dashboard watches (how much of the library is ok, how much keeps failing).
        summary["table_statuses"] = worklist.table_statuses(prior, tally.statuses, kept=collector.kept)
        summary["timings_s"] = {key: round(value, 3) for key, value in timings.items()}
        summary["spill_bytes"] = spilled
        summary.update(committed.summary())  # rewritten_files, rewritten_bytes, rewritten_rows_kept: per table
        summary_uri = write_summary(config.output, run_id, summary, config.storage)
    return RunResult(run_id=run_id, summary=summary, summary_uri=summary_uri)


def _committing_line(
    videos: int, clips: int, changes: dict[str, int], output: str | None, *, spill_bytes: int | None = None
) -> str:
    """The line said as a commit starts. Kept rows rewritten with today's manifest columns and rows of
    videos gone from the manifest are rewrites too (a relabelled library rewrites every videos file):
    said, or a night of only those read "committing 0 videos rows and 0 clips" for minutes."""
    also = []
    if changes.get("refreshed"):
        n = changes["refreshed"]
        also.append(f"{n} kept row{'s' if n != 1 else ''} rewritten with changed manifest columns")
    if changes.get("removed"):
        n = changes["removed"]
        also.append(f"{n} row{'s' if n != 1 else ''} of videos gone from the manifest removed")
    if changes.get("leftovers_removed"):
        also.append(f"the clips an interrupted run left of {changes['leftovers_removed']} videos removed")
    extra = f" ({'; '.join(also)})" if also else ""
    size = f" ({size_said(spill_bytes)})" if spill_bytes else ""
    return f"committing {videos} videos rows and {clips} clips{size} to {output}{extra}"


def _hand_over_weights(ray: Any, weights: ResolvedWeights) -> tuple[Any, ResolvedWeights]:
    """The weights' bytes put in the object store once, shared with every model actor; and the
    weights without them, for the rest of the run.

    The driver's own copy (98 MB for resnet50) would otherwise stay until the run ends: through the
    drain and the commit, where a long video's run reaches its peak (a 60-minute 320x240 video at 1
    frame/s, resnet50: 638 MB against 613 for the driver's start-up, which every run pays).
    """
    return ray.put(weights.state_dict_bytes), replace(weights, state_dict_bytes=b"")


def _build_dataset(ray: Any, config: JobConfig, to_process: pa.Table, weights: ResolvedWeights, state_dict_ref: Any) -> Any:
    import ray.data

    resources = config.resources
    model_gpus, decoders_min, decoders_max = _placement(ray, resources)
    sizing = _actor_sizing(ray, resources, model_gpus, decoders_min, decoders_max)
    decoders_min, decoders_max = _cap_decoders(sizing["decoders_min"], sizing["decoders_max"], videos=to_process.num_rows)

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # our own progress line says videos done/total
    _quiet_progress_bar_hint()
    ctx.print_on_execution_start = False
    if ctx.target_max_block_size == _RAY_DEFAULT_BLOCK_BYTES:
        # A block per clip or so: the model starts on a video's first clips while the rest decodes.
        ctx.target_max_block_size = _CLIP_BLOCK_BYTES

    n = to_process.num_rows
    per_block = max(1, -(-n // _MAX_BLOCKS))
    blocks = [to_process.slice(i, per_block) for i in range(0, n, per_block)]
    spec = weights.preprocess

    # Poison videos are contained by the decode sandbox; these bound what is left (a node lost,
    # an actor killed) instead of Ray Data's default of restarting and retrying forever.
    restarts = _restart_bounds(ray.data.Dataset.map_batches)
    dataset = _dataset_of(ray, blocks)
    with warnings.catch_warnings():
        # Ray 2.60 deprecates `**ray_remote_args` without naming a parameter for restarts (see
        # _restart_bounds); its warning would point every run's log at this call.
        warnings.filterwarnings("ignore", message=_REMOTE_ARGS_DEPRECATED, category=DeprecationWarning)
        dataset = dataset.map_batches(
            DecodeStage,
            batch_size=1,
            batch_format="pyarrow",
            fn_constructor_kwargs={
                "sampling": config.sampling,
                "limits": config.limits,
                "storage": config.storage,
                "resize_size": spec.resize_size,
                "crop_size": spec.crop_size,
                "resize": config.model.resize,
                "threads": sizing["decode_threads"],
                # absolute as the driver sees them: a worker's current directory is another one
                "allowed_roots": tuple(os.path.abspath(root) for root in config.inputs.allowed_roots),
            },
            # Autoscaling pool: what fits now, growing to what the cluster's autoscaler can add.
            compute=ray.data.ActorPoolStrategy(min_size=decoders_min, max_size=decoders_max),
            num_cpus=sizing["decode_cpus"],
            **restarts,
        )
        return dataset.map_batches(
            ModelStage,
            batch_size=resources.batch_clips,
            batch_format="pyarrow",
            fn_constructor_kwargs={
                "arch": weights.arch,
                "state_dict_ref": state_dict_ref,
                "resize_size": spec.resize_size,
                "crop_size": spec.crop_size,
                "mean": spec.mean,
                "std": spec.std,
                "precision": config.model.precision,
                "batch_frames": resources.batch_frames,
                "want_probs": config.model.task != "embed",
                "threads": sizing["model_threads"],
                "compile": resources.model_compile,
                "device": _model_device(model_gpus),
            },
            compute=ray.data.ActorPoolStrategy(size=resources.model_actors),
            num_cpus=resources.model_cpus,
            num_gpus=model_gpus,
            **restarts,
            **({"runtime_env": {"env_vars": sizing["model_env"]}} if sizing["model_env"] else {}),
        )


class _DropProgressBarHint(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Progress bars disabled")


def _quiet_progress_bar_hint() -> None:
    """Ray Data warns, once per process, that its progress bars are off and how to turn them on.

    They are off on purpose (vidbatch prints its own progress line), so the hint would only
    send a person to the wrong switch. If Ray renames the logger this silently does nothing.
    """
    logger = logging.getLogger("ray.data._internal.progress")
    if not any(isinstance(f, _DropProgressBarHint) for f in logger.filters):
        logger.addFilter(_DropProgressBarHint())


def _restart_bounds(map_batches: Callable[..., Any]) -> dict[str, int]:
    """max_restarts / max_task_retries for map_batches, if this Ray's map_batches takes them.

    Ray 2.60 takes them only through `**ray_remote_args`, deprecated for removal in Ray 2.64;
    its named replacements (ray-project/ray#65227) cover label_selector, resources,
    runtime_env and the like, not restarts. A Ray that names them, or still takes keyword
    arguments, gets the bounds; one that takes neither would fail every run with a TypeError,
    so the bounds are left out there (Ray Data's default: restart and retry without end).
    """
    bounds = {"max_restarts": _ACTOR_RESTARTS, "max_task_retries": _TASK_RETRIES}
    params = inspect.signature(map_batches).parameters
    takes_any_keyword = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    if takes_any_keyword or all(name in params for name in bounds):
        return bounds
    log.warning(
        "this Ray's Dataset.map_batches takes no max_restarts/max_task_retries: stage actors restart "
        "and retry without a bound (Ray Data's default); a lost node can then take longer to report"
    )
    return {}


def _dataset_of(ray: Any, blocks: list[pa.Table]) -> Any:
    """The manifest rows to decode as a dataset of exactly these blocks, built on the driver.

    ray.data.from_arrow would send every block to a remote task for its metadata and wait for
    them: on a fresh local Ray that starts two worker processes only to be killed as idle
    seconds later, and it holds the pipeline's start until they answer. from_blocks reads the
    metadata here. Measured on 2 cores, fps 1/s, 16 x 60 s 720p, interleaved x3: run 46.2-48.8 s
    instead of 50.4-51.2 s, 6 worker processes started instead of 8. from_blocks is a Ray
    DeveloperAPI, hence the fallback.
    """
    from_blocks = getattr(ray.data, "from_blocks", None)
    return from_blocks(blocks) if from_blocks is not None else ray.data.from_arrow(blocks)


_RAY_DEFAULT_BLOCK_BYTES = 128 * 1024 * 1024
_CLIP_BLOCK_BYTES = 1024 * 1024
_CPU_ONLY_MAX_MODEL_THREADS = 4


def _actor_sizing(ray: Any, resources: Any, model_gpus: float, decoders_min: int, decoders_max: int) -> dict[str, Any]:
    """Decoder count, CPUs and FFmpeg threads per decoder, and the model actors' CPU threads.

    FFmpeg threads: one per CPU a decoder reserves (default 1), unless resources.decode_threads
    says otherwise. Frame threading costs ~15% more CPU per video (measured: 3.2 vs 2.8 s for
    a minute of 720p H.264), which only pays when a decoder has idle cores to itself; a pool of
    one decoder per core has none.

    CPU-only clusters (no GPU for the model): the model shares the cores with decoding, and the
    split that keeps them all busy depends on the sampling (fps 1 on 720p H.264, resnet50 bf16:
    ~65% decode, ~35% model). Rather than guess it, oversubscribe and let the OS share: one
    single-threaded decoder per CPU (together reserving the CPUs the model actors leave) and
    model actors with a thread per CPU of their node (at most 4). Measured on 2 cores with
    `vidbatch bench`: 1.9 cores busy instead of 1.7 with one decoder + one model actor, 10-15%
    less wall time (docs/performance.md). Explicit resources.decode_* / model_cpus settings,
    GPUs, or an autoscaling pool keep the configured sizes.
    """
    # A key written as null (`decode_actors: null`, as the README's reference shows it) is unset.
    explicit = {name for name in resources.model_fields_set if getattr(resources, name) is not None}
    configured = {
        "decoders_min": decoders_min,
        "decoders_max": decoders_max,
        "decode_cpus": resources.decode_cpus,
        "decode_threads": max(1, int(resources.decode_cpus)) if resources.decode_threads is None else resources.decode_threads,
        "model_threads": None,
        "model_env": {},
    }
    if model_gpus or explicit & {"decode_actors", "decode_cpus", "decode_threads", "model_cpus"} or decoders_max != decoders_min:
        return configured
    cpus = ray.cluster_resources().get("CPU", 0)
    node_cpus = max((node["Resources"].get("CPU", 0) for node in ray.nodes() if node.get("Alive")), default=0)
    left = cpus - resources.model_actors * resources.model_cpus
    decoders = int(cpus)
    if decoders < 1 or left <= 0:
        return configured
    return {
        "decoders_min": decoders,
        "decoders_max": decoders,
        "decode_cpus": int(left / decoders * 100) / 100,  # fractional: all of them fit beside the model
        "decode_threads": 1,
        "model_threads": max(1, min(int(node_cpus), _CPU_ONLY_MAX_MODEL_THREADS)),
        # The model's OpenMP threads share their cores with the decoders, so they sleep at
        # barriers instead of spinning: a spinning thread burns the time slice a decoder (or the
        # model thread it waits for) needs. Measured on 2 cores, fps 1/s, 16 x 60 s 720p:
        # 66-73 s spinning (GNU OpenMP's default) vs 52-57 s passive. Read when torch loads,
        # hence the actor's environment. A policy set in the job's own environment wins.
        "model_env": {} if "OMP_WAIT_POLICY" in os.environ else {"OMP_WAIT_POLICY": "PASSIVE"},
    }


def _cap_decoders(decoders_min: int, decoders_max: int, *, videos: int) -> tuple[int, int]:
    """The decode pool's size for `videos` videos: never more decoders than videos.

    A decoder takes one video at a time, so past one per video an actor would only start (a
    process, Ray Data's and FFmpeg's imports, its sandbox) and idle. A nightly run over a few
    changed videos on a big cluster starts a few decoders, not one per CPU. The CPUs each one
    reserves stay as sized for the full pool, so every decoder still fits on a node.
    """
    if videos < 1:
        raise ValueError(f"videos={videos}: a decode pool is only built for at least one video")
    return min(decoders_min, videos), min(decoders_max, videos)


def _model_device(model_gpus: float) -> str | None:
    """The model actors' device: "cpu" when they reserve no GPU, else None (the GPU Ray gave them).

    Ray hides GPUs only from workers it gives GPUs to (CUDA_VISIBLE_DEVICES set to theirs); an actor
    that reserves none still sees every GPU of its node. Left to itself, a model actor of a job with
    resources.model_gpus: 0 on a GPU node would run on GPU 0 unreserved, beside the actors that
    reserved it, and every such actor on that one GPU.
    """
    return "cpu" if not model_gpus else None


def _placement(ray: Any, resources: Any) -> tuple[float, int, int]:
    """GPUs per model actor, and the decode pool's min and max size.

    Model actors ask for GPUs when resources.model_gpus says so (default: 1 when the cluster
    has, or its autoscaler can add, GPU nodes). Decode actors ask for CPUs: the pool starts with
    one per CPU left now and grows to one per CPU left at the autoscaler's maximum (or to
    resources.decode_actors), so GPUs added later are not starved by too few decoders.
    """
    now = ray.cluster_resources()
    most = _autoscaler_max_resources()
    gpus = max(now.get("GPU", 0), most.get("GPU", 0))
    model_gpus = resources.model_gpus if resources.model_gpus is not None else (1.0 if gpus >= 1 else 0.0)
    if model_gpus > gpus:
        raise JobError(
            f"resources.model_gpus={model_gpus:g} but the cluster has {now.get('GPU', 0):g} GPUs and no autoscaler "
            "configured to add more; set resources.model_gpus: 0 to run the model on CPUs, or keep at least "
            "one GPU worker running (min replicas 1)"
        )
    model_cpus = resources.model_actors * resources.model_cpus
    fits_now = _default_decoders(now, model_cpus, resources.decode_cpus)
    fits_max = _default_decoders({"CPU": max(now.get("CPU", 1), most.get("CPU", 0))}, model_cpus, resources.decode_cpus)
    if resources.decode_actors:
        return model_gpus, min(resources.decode_actors, fits_now), resources.decode_actors
    return model_gpus, fits_now, max(fits_now, fits_max)


def _forget_started(config: JobConfig, run_id: str) -> None:
    """Remove the started.json of a run refused before any work, and its folders if that leaves them empty.

    Nothing else of the run exists yet; left behind, the file would look like a run that died.
    """
    from vidbatch.storage import filesystem, is_local, join_uri

    try:
        fs, path = filesystem(join_uri(config.output, "_runs", run_id, "started.json"), config.storage)
        fs.rm(path)
    except Exception as exc:  # the refusal is the news: a file that stays is only untidy
        log.warning("could not remove %s/_runs/%s/started.json: %s", config.output, run_id, exc)
        return
    if is_local(config.output):
        run_folder = os.path.dirname(path)
        for folder in (run_folder, os.path.dirname(run_folder)):  # <run_id>/, then _runs/ if no other run is there
            with contextlib.suppress(OSError):
                os.rmdir(folder)


def _autoscaler_max_resources() -> dict[str, float]:
    """The most CPUs/GPUs the cluster's autoscaler may bring ({} when unknown or not autoscaling)."""
    try:
        from ray._private.state import state

        return dict(state.get_max_resources_from_cluster_config() or {})
    except Exception:  # a private Ray API: absent or changed means "not known"
        return {}


def _default_decoders(cluster: dict[str, float], model_cpus: float, decode_cpus: float) -> int:
    free = cluster.get("CPU", 1) - model_cpus
    return max(1, int(free // decode_cpus))


def _resolve_weights(config: JobConfig) -> Any:
    from vidbatch.model_weights import resolve_weights  # imports torch (seconds): off the main thread, only when running

    # Only the weights' modules (torch, torchvision, fsspec) are imported on this thread. Ray's are
    # imported on the main thread only after it ends: two threads importing one package's mutually
    # dependent modules could deadlock on the import locks.
    return resolve_weights(config.model, config.storage)


@contextlib.contextmanager
def _timed(timings: dict[str, float], key: str) -> Iterator[None]:
    """Adds the block's wall time to timings[key] (for the summary: where a run's time went)."""
    began = time.monotonic()
    try:
        yield
    finally:
        timings[key] = timings.get(key, 0.0) + time.monotonic() - began
