"""`vidbatch check`: what `vidbatch run` would refuse a job for, found without running it.

The same steps the run takes before any work (read the manifest, plan it, resolve the
weights, read the output's tables), plus a test that a local output can be created (an
empty directory made and removed at once). Nothing is left behind and no Ray is started.
Write access to an object store cannot be known without writing, so the run tests it when
it starts (started.json).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from vidbatch.config import JobConfig
from vidbatch.errors import JobError
from vidbatch.manifest import plan as make_plan
from vidbatch.manifest import read_manifest
from vidbatch.state import load_prior
from vidbatch.storage import is_local, local_path


@dataclass(frozen=True)
class Preflight:
    manifest_rows: int
    to_process: int
    refused: int
    duplicates: int
    model_id: str
    untrained: bool
    prior_videos: int
    output_checked: bool  # False: an object store, whose write access the run tests

    def lines(self) -> list[str]:
        lines = [
            f"manifest: {self.manifest_rows} rows: {self.to_process} to process, {self.refused} refused, "
            f"{self.duplicates} duplicate ids",
            f"weights: {self.model_id}" + (" (seeded random init: results are NOT meaningful)" if self.untrained else ""),
            f"output: {self.prior_videos} videos rows from earlier runs"
            if self.prior_videos
            else "output: no earlier runs (every video is new)",
        ]
        if not self.output_checked:
            lines.append("output: write access to the object store is tested when the run starts")
        return lines


def preflight(config: JobConfig) -> Preflight:
    """Raises JobError, naming the key and the value, for what `vidbatch run` would refuse."""
    from vidbatch.model import resolve_weights  # imports torch (seconds): only when checking this far

    plan = make_plan(read_manifest(config.manifest, config.storage), config.inputs)
    weights = resolve_weights(config.model, config.storage)
    prior = load_prior(config.output, config.storage)
    local = is_local(config.output)
    if local:
        _check_local_output(config.output)
    return Preflight(
        manifest_rows=plan.manifest_rows,
        to_process=plan.to_process.num_rows,
        refused=len(plan.refused),
        duplicates=plan.duplicates,
        model_id=weights.model_id,
        untrained=weights.untrained,
        prior_videos=len(prior.videos),
        output_checked=local,
    )


def _check_local_output(output: str) -> None:
    """The output directory, or the nearest existing one above it, takes a new entry."""
    path = Path(local_path(output)).absolute()
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise JobError(f"output {output!r} cannot be written: {str(existing)!r} is a file, not a directory")
    try:
        # A real attempt rather than os.access, which says yes to root on read-only or
        # virtual filesystems; the empty directory is removed at once.
        os.rmdir(tempfile.mkdtemp(prefix=".vidbatch-check-", dir=existing))
    except OSError as exc:
        raise JobError(f"output {output!r} cannot be written: {str(existing)!r}: {exc.strerror or exc}") from exc
