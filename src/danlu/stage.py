"""The shell every stage job runs in: time it, do the work, write the
manifest, report to MLflow. Stage modules stay pure; `run_stage` does the rest."""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from danlu.audit.log import record_job
from danlu.audit.manifest import build_manifest, now, write_manifest
from danlu.audit.tracking import StageRun


def numeric_items(stats: Mapping, prefix: str = "") -> dict[str, float]:
    """The numbers in a (nested) stats dict, as MLflow metrics."""
    out = {}
    for key, value in stats.items():
        if isinstance(value, Mapping):
            out.update(numeric_items(value, f"{prefix}{key}."))
        elif isinstance(value, numbers.Number) and not isinstance(value, bool):
            out[f"{prefix}{key}"] = float(value)
    return out


def run_stage(
    stage: str,
    params: Mapping,
    work: Callable[[StageRun], dict],
    *,
    inputs: Iterable[str | Path],
    outputs: Iterable[str | Path] | Callable[[], Iterable[str | Path]],
    manifest_path: Path,
    datasets: Iterable[tuple[str, str]] = (),
    artifacts: Iterable[Path] = (),
    nondeterministic: Mapping[str, str] | None = None,
    log_stats: bool = True,
) -> dict:
    """Run `work(run)` (which returns a stats dict) and record the job.
    `outputs` may be a callable, for outputs only known once the work is done."""
    started = now()
    with StageRun(stage, params) as run:
        stats = work(run)
        manifest = build_manifest(
            stage, inputs, outputs() if callable(outputs) else outputs, params, started, manifest_path=manifest_path,
            nondeterministic=nondeterministic, extra={"stats": stats},
        )
        digest = write_manifest(manifest, manifest_path)
        if log_stats:
            run.log_metrics(numeric_items(stats))
        run.finish(manifest, manifest_path, digest, datasets, artifacts)
        record_job(stage=stage, manifest_path=manifest_path, manifest_sha256=digest, run=run)
        print(f"{stage}: manifest {manifest_path} sha256 {digest}")
        print(run.report())
    return stats
