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

Keys (`_key`, `digest_tag`): MLflow takes a key only if it is at most 250
characters of ASCII letters, digits and `_-. /`, and stays the same when read as
a file path (no `..` segment, no leading `/`). A project file's path fits, and
its tag stays readable: `danlu.sha256.output.results/clean/records.jsonl`. Any
other name (a file outside the project, named by its absolute path; Chinese or
other characters; a very long path) gets a sanitised stem plus 24 hex digits of
the sha256 of the exact name, so names that sanitise alike stay apart; for a
file digest the exact path is in a companion `danlu.path.*` tag. The writer and
`danlu verify` derive keys with these same functions.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from danlu.audit.manifest import combined_digest, rel

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
MAX_KEY = 250  # MLflow's MAX_ENTITY_KEY_LENGTH
MAX_DATASET_NAME = 500  # MLflow's MAX_DATASET_NAME_SIZE
HASHED = "path-sha256-"  # marks a key that names its text by hash (never in a kept key)
DIGEST_PREFIX, PATH_PREFIX = "danlu.sha256.", "danlu.path."
MANIFEST_TAG, MANIFEST_SHA_TAG = "danlu.manifest", "danlu.manifest.sha256"
# On the parent run: the audit log's head ("<seq> <sha256>") and its identity
# (the sha256 of its first line), both set under the log's lock (danlu.audit.log).
HEAD_TAG, LOG_TAG = "danlu.audit.head", "danlu.audit.log"
PARENT_TAG = "mlflow.parentRunId"


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


def _acceptable(key: str) -> bool:
    """Whether MLflow takes `key` as it is (see module docstring); names with the
    hash marker never are, so a kept name cannot equal another's hashed key."""
    return (0 < len(key) <= MAX_KEY and not _KEY_UNSAFE.search(key) and HASHED not in key
            and posixpath.normpath(key) == key and not key.startswith(("/", "..")))


def _key(text: str) -> str:
    """`text` as an MLflow key: as it is when MLflow takes it, else a sanitised
    stem (a hint for people) plus a hash of the exact text (what identifies it)."""
    if _acceptable(text):
        return text
    stem = posixpath.normpath(_KEY_UNSAFE.sub("_", text).replace("..", "__")).strip("/")
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]
    key = f"{stem[:200]}.{HASHED}{digest}"
    # A stem that still trips a rule (normpath's "." for an empty one) is dropped.
    return key if posixpath.normpath(key) == key and not key.startswith("..") else HASHED + digest


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
            tags[PARENT_TAG] = parent
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

        tags = [RunTag(MANIFEST_TAG, str(manifest_path)),
                RunTag(MANIFEST_SHA_TAG, manifest_sha256)]
        if manifest.get("code", {}).get("commit"):
            tags.append(RunTag("mlflow.source.git.commit", manifest["code"]["commit"]))
        for kind in ("inputs", "outputs"):
            for entry in manifest[kind]:
                key = digest_tag(kind[:-1], entry["path"])
                tags.append(RunTag(key, entry["sha256"]))
                if path_tag(key):  # the key names the file by hash: keep its exact path
                    tags.append(RunTag(path_tag(key), entry["path"]))
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

        path = rel(path)  # as the manifest names it (a raw path outside the project is absolute)
        files = [e for e in manifest["inputs"] + manifest["outputs"]
                 if e["path"] == path or e["path"].startswith(path.rstrip("/") + "/")]
        if not files:
            return None
        digest = files[0]["sha256"] if len(files) == 1 else combined_digest(files)
        profile = {"sha256": digest, "files": {e["path"]: e["sha256"] for e in files},
                   "bytes": sum(e["size"] for e in files)}
        name = path if len(path) <= MAX_DATASET_NAME else "…" + path[1 - MAX_DATASET_NAME:]
        dataset = Dataset(name=name, digest=digest[:DIGEST_CHARS], source_type="local",
                          source=json.dumps({"uri": path}), profile=json.dumps(profile))
        return DatasetInput(dataset, tags=[InputTag("mlflow.data.context", context)])

    def witness_head(self, entry: Mapping, line_sha256: str, log_sha256: str) -> None:
        """Tag the invocation's parent run with the audit log's new head (called
        by danlu.audit.log under the log's lock, so the tag follows the log's order)."""
        parent = os.environ.get(ENV_PARENT)
        if parent and not os.environ.get(ENV_DISABLED):
            self._guard("audit head", self._tag_head, parent,
                        f"{entry['seq']} {line_sha256}", log_sha256)

    def _tag_head(self, parent: str, head: str, log_sha256: str) -> None:
        from mlflow.entities import RunTag

        client = self._client or _client(self.uri)
        client.log_batch(parent, tags=[RunTag(HEAD_TAG, head), RunTag(LOG_TAG, log_sha256)])

    def report(self) -> str:
        if os.environ.get(ENV_DISABLED):
            return "tracking: disabled"
        if self.errors:
            return f"tracking: FAILED ({len(self.errors)} error(s), see warnings above)"
        return f"tracking: run {self.run_id} at {self.uri}"


def digest_tag(kind: str, path: str) -> str:
    """The run tag holding a file's sha256 (`kind` is input or output; `path`
    as the manifest names it)."""
    return _key(f"{DIGEST_PREFIX}{kind}.{path}")


def path_tag(digest_key: str) -> str | None:
    """The companion tag holding the exact path of a digest tag whose key names
    the file by hash; None for a key that holds the path itself."""
    if HASHED not in digest_key:
        return None
    return PATH_PREFIX + digest_key.removeprefix(DIGEST_PREFIX)


def recorded_digests(uri: str, run_id: str) -> dict:
    """What a stage's run recorded: its manifest's sha256, the file digest tags
    and the companion path tags (read back for `danlu verify`)."""
    tags = _client(uri).get_run(run_id).data.tags
    return {"manifest": tags.get("danlu.manifest.sha256"),
            "files": {k: v for k, v in tags.items() if k.startswith(DIGEST_PREFIX)},
            "paths": {k: v for k, v in tags.items() if k.startswith(PATH_PREFIX)}}


def sqlite_path(uri: str | None) -> Path | None:
    """The file of a SQLite tracking store (None for any other store)."""
    if uri and uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///"))
    return None


@dataclass(frozen=True)
class RunView:
    """What `danlu verify` reads of a run."""
    run_id: str
    experiment_id: str
    status: str
    tags: Mapping[str, str]
    artifact_uri: str | None

    @property
    def parent(self) -> str | None:
        return self.tags.get(PARENT_TAG)

    @property
    def stage(self) -> str:
        return self.tags.get("danlu.stage", "?")


def _view(run) -> RunView:
    return RunView(run.info.run_id, run.info.experiment_id, run.info.status,
                   dict(run.data.tags), run.info.artifact_uri)


class StoreReader:
    """A tracking store opened for reading by `danlu verify`. It never creates a
    store: MLflow would write a fresh, empty database where a deleted or emptied
    SQLite file was, and so hide its loss and write into results/. `close` drops
    the pooled connections, so a later check in the same process reads the file
    as it is then (MLflow caches one engine per URI for the whole process)."""

    def __init__(self, uri: str):
        path = sqlite_path(uri)
        if path is not None:
            if not path.is_file():
                raise FileNotFoundError(f"{path} does not exist")
            with open(path, "rb") as fh:
                if fh.read(16) != b"SQLite format 3\x00":
                    raise ValueError(f"{path} is not an SQLite database")
        from mlflow.tracking import MlflowClient

        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)

    def run(self, run_id: str) -> RunView | None:
        """The run, or None if the store has no run of that id."""
        from mlflow.exceptions import MlflowException

        try:
            return _view(self.client.get_run(run_id))
        except MlflowException as err:
            if err.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise

    def runs_tagged(self, key: str, value: str) -> list[RunView]:
        """Every run, in any experiment, deleted or not, whose tag `key` is `value`
        (hex digests and run ids: no quoting needed)."""
        from mlflow.entities import ViewType

        experiments = [e.experiment_id
                       for e in self.client.search_experiments(view_type=ViewType.ALL)]
        runs, token = [], None
        while experiments:
            page = self.client.search_runs(experiments, f"tags.`{key}` = '{value}'",
                                           run_view_type=ViewType.ALL, max_results=1000,
                                           page_token=token)
            runs += [_view(r) for r in page]
            token = page.token
            if not token:
                break
        return runs

    def close(self) -> None:
        store = getattr(getattr(self.client, "_tracking_client", None), "store", None)
        engine = getattr(store, "engine", None)
        if engine is not None:
            engine.dispose()
