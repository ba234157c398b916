"""MLflow tracking. The only module that imports mlflow.

One parent run per `snakemake` invocation (the Snakefile's `onstart` creates it
and exports its id in DANLU_PARENT_RUN_ID), one child run per stage job. A child
logs its params, the full sha256 of every input and output as tags, its
manifest as an artifact, and its data sets as MLflow dataset inputs.

Tracking must never cost a stage its outputs: every call here is guarded, and
a failure is printed as a warning on stderr (the job's log) and returned.

MLflow caps a dataset's `digest` at 36 characters (MAX_DATASET_DIGEST_SIZE), too
short for a sha256 in any printable encoding; the digest field holds its first
32 hex characters and the dataset's `profile` and the run's tags hold it whole.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from danlu.manifest import combined_digest

ENV_PARENT = "DANLU_PARENT_RUN_ID"
ENV_URI = "MLFLOW_TRACKING_URI"
ENV_EXPERIMENT = "DANLU_EXPERIMENT"
ENV_DISABLED = "DANLU_TRACKING_DISABLED"
DEFAULT_URI = "sqlite:///results/mlflow.db"
DEFAULT_ARTIFACTS = "results/mlruns"
DEFAULT_EXPERIMENT = "danlu"
DIGEST_CHARS = 32
_RETRIES = 6
_KEY_UNSAFE = re.compile(r"[^0-9A-Za-z_\-. /]")


def warn(message: str) -> None:
    print(f"WARNING danlu.tracking: {message}", file=sys.stderr, flush=True)


def resolve_uri(configured: str | None = None) -> str:
    """Config value, else MLFLOW_TRACKING_URI, else the project's SQLite file."""
    return configured or os.environ.get(ENV_URI) or DEFAULT_URI


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=uri)


def _experiment_id(client, name: str, uri: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    # A local store keeps artifacts under results/; a server decides its own.
    location = None
    if uri.startswith(("sqlite:", "file:")) or "://" not in uri:
        location = Path(DEFAULT_ARTIFACTS).absolute().as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except Exception:  # created by a concurrent job in the meantime
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def start_parent_run(uri: str, experiment: str, run_name: str, tags: Mapping[str, str]) -> str | None:
    """Create the parent run of one workflow invocation; None if tracking failed."""
    try:
        client = _client(uri)
        run = client.create_run(_experiment_id(client, experiment, uri), run_name=run_name,
                                tags=dict(tags))
        return run.info.run_id
    except Exception as err:  # noqa: BLE001 - tracking must not stop the workflow
        warn(f"could not start the parent run at {uri}: {err}")
        return None


def end_run(uri: str, run_id: str | None, status: str = "FINISHED") -> None:
    if not run_id:
        return
    try:
        _client(uri).set_terminated(run_id, status)
    except Exception as err:  # noqa: BLE001
        warn(f"could not end run {run_id}: {err}")


def flatten(params: Mapping, prefix: str = "") -> dict[str, str]:
    """{"a": {"b": 1}} -> {"a.b": "1"}; lists as JSON."""
    flat = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return flat


def _key(text: str) -> str:
    return _KEY_UNSAFE.sub("_", text)[:250]


class StageRun:
    """The child run of one stage job. Use as a context manager; call
    `log_metrics` while the stage runs and `finish` with its manifest."""

    def __init__(self, stage: str, params: Mapping | None = None):
        self.stage = stage
        self.params = dict(params or {})
        self.run_id: str | None = None
        self.errors: list[str] = []
        self.uri = resolve_uri()
        self._client = None
        if os.environ.get(ENV_DISABLED):
            return
        self._guard("start", self._start)

    def _guard(self, what: str, fn, *args):
        for attempt in range(_RETRIES + 1):
            try:
                return fn(*args)
            except Exception as err:  # noqa: BLE001 - tracking must not cost the outputs
                # Parallel jobs share one SQLite file; a writer may find it locked.
                if "locked" in str(err) and attempt < _RETRIES:
                    time.sleep(0.2 * 2**attempt)
                    continue
                message = f"{self.stage}: {what} failed: {err.__class__.__name__}: {err}"
                self.errors.append(message)
                warn(message)
                return None

    def _start(self) -> None:
        from mlflow.entities import Param

        client = _client(self.uri)
        experiment = os.environ.get(ENV_EXPERIMENT, DEFAULT_EXPERIMENT)
        tags = {"danlu.stage": self.stage, "mlflow.runName": self.stage}
        parent = os.environ.get(ENV_PARENT)
        if parent:
            tags["mlflow.parentRunId"] = parent
            experiment_id = client.get_run(parent).info.experiment_id
        else:
            experiment_id = _experiment_id(client, experiment, self.uri)
        run = client.create_run(experiment_id, run_name=self.stage, tags=tags)
        self._client, self.run_id = client, run.info.run_id
        params = [Param(_key(k), str(v)[:6000]) for k, v in flatten(self.params).items()]
        for i in range(0, len(params), 100):
            client.log_batch(self.run_id, params=params[i : i + 100])

    def __enter__(self) -> StageRun:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.run_id:
            status = "FINISHED" if exc_type is None else "FAILED"
            self._guard("end", self._client.set_terminated, self.run_id, status)

    @property
    def active(self) -> bool:
        return self.run_id is not None

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        if self.active:
            self._guard("log_metrics", self._log_metrics, metrics, step)

    def _log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        batch = [Metric(_key(k), float(v), stamp, step) for k, v in metrics.items()
                 if v is not None]
        for i in range(0, len(batch), 1000):
            self._client.log_batch(self.run_id, metrics=batch[i : i + 1000])

    def log_params(self, params: Mapping) -> None:
        if self.active:
            self._guard("log_params", self._log_params, params)

    def _log_params(self, params: Mapping) -> None:
        from mlflow.entities import Param

        batch = [Param(_key(k), str(v)[:6000]) for k, v in flatten(params).items()]
        for i in range(0, len(batch), 100):
            self._client.log_batch(self.run_id, params=batch[i : i + 100])

    def finish(self, manifest: Mapping, manifest_path: Path, manifest_sha256: str,
               datasets: Iterable[tuple[str, str]] = (), artifacts: Iterable[Path] = ()) -> None:
        """Log digests, the manifest and the data sets. `datasets` are
        (path, context) pairs naming manifest inputs/outputs."""
        if self.active:
            self._guard("finish", self._finish, manifest, manifest_path, manifest_sha256,
                        list(datasets), list(artifacts))

    def _finish(self, manifest, manifest_path, manifest_sha256, datasets, artifacts) -> None:
        from mlflow.entities import RunTag

        tags = [RunTag("danlu.manifest", str(manifest_path)),
                RunTag("danlu.manifest.sha256", manifest_sha256)]
        if manifest.get("code", {}).get("commit"):
            tags.append(RunTag("mlflow.source.git.commit", manifest["code"]["commit"]))
        for kind in ("inputs", "outputs"):
            for entry in manifest[kind]:
                tags.append(RunTag(digest_tag(kind[:-1], entry["path"]), entry["sha256"]))
        for i in range(0, len(tags), 100):
            self._client.log_batch(self.run_id, tags=tags[i : i + 100])
        self._client.log_artifact(self.run_id, str(manifest_path))
        for path in artifacts:
            self._client.log_artifact(self.run_id, str(path))
        inputs = [self._dataset_input(manifest, path, context) for path, context in datasets]
        inputs = [d for d in inputs if d is not None]
        if inputs:
            self._client.log_inputs(self.run_id, datasets=inputs)

    @staticmethod
    def _dataset_input(manifest, path: str, context: str):
        from mlflow.entities import Dataset, DatasetInput, InputTag

        files = [e for e in manifest["inputs"] + manifest["outputs"]
                 if e["path"] == path or e["path"].startswith(path.rstrip("/") + "/")]
        if not files:
            return None
        digest = files[0]["sha256"] if len(files) == 1 else combined_digest(files)
        profile = {"sha256": digest, "files": {e["path"]: e["sha256"] for e in files},
                   "bytes": sum(e["size"] for e in files)}
        dataset = Dataset(name=path, digest=digest[:DIGEST_CHARS], source_type="local",
                          source=json.dumps({"uri": path}), profile=json.dumps(profile))
        return DatasetInput(dataset, tags=[InputTag("mlflow.data.context", context)])

    def report(self) -> str:
        if os.environ.get(ENV_DISABLED):
            return "tracking: disabled"
        if self.errors:
            return f"tracking: FAILED ({len(self.errors)} error(s), see warnings above)"
        return f"tracking: run {self.run_id} at {self.uri}"


def digest_tag(kind: str, path: str) -> str:
    """The run tag holding a file's sha256 (`kind` is input or output)."""
    return _key(f"danlu.sha256.{kind}.{path}")


def recorded_digests(uri: str, run_id: str) -> dict:
    """What a stage's run recorded: its manifest's sha256 and the file digest
    tags (read back for `danlu verify`)."""
    tags = _client(uri).get_run(run_id).data.tags
    return {"manifest": tags.get("danlu.manifest.sha256"),
            "files": {k: v for k, v in tags.items() if k.startswith("danlu.sha256.")}}
