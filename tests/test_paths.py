"""Files anywhere: data and base models outside the project (absolute paths,
`~`, symlinks, odd characters) in manifests, MLflow tags, verify, model cards
and provenance; and the base model identified by its files."""

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from danlu.audit.manifest import (
    build_manifest,
    combined_digest,
    describe_files,
    find_producer,
    now,
    rel,
    sha256_file,
    write_manifest,
)

# Paths a manifest may name that cannot be tag keys as they are (MLflow refuses
# them, or danlu must sanitise them).
AWKWARD = [
    "/srv/data/外部/alp.jsonl",                       # absolute, outside the project
    "../../models/tiny/config.json",                  # a `..` path (manifests before the fix)
    "data/my data 数据/faq.csv",                       # spaces and Chinese characters
    "data/数据.jsonl",                                  # sanitises like the next one ...
    "data/资料.jsonl",                                  # ... and must still get its own key
    "data/" + "long-name/" * 40 + "x.jsonl",         # over MLflow's 250 characters
    "/home/someone/models/Qwen2.5 7B/model-00001-of-00004.safetensors",
]


# ---- MLflow tag keys -------------------------------------------------------


@pytest.mark.parametrize("path", AWKWARD + ["results/clean/records.jsonl"])
def test_digest_tag_is_a_key_mlflow_accepts(path):
    from mlflow.utils.validation import MAX_ENTITY_KEY_LENGTH, _validate_tag_name

    from danlu.audit.tracking import digest_tag, path_tag

    for key in filter(None, (digest_tag("input", path), path_tag(digest_tag("input", path)))):
        _validate_tag_name(key)  # raises on what the store would refuse
        assert len(key) <= MAX_ENTITY_KEY_LENGTH


def test_digest_tags_keep_project_paths_readable_and_others_apart():
    from danlu.audit.tracking import digest_tag, path_tag

    key = digest_tag("output", "results/clean/records.jsonl")
    assert key == "danlu.sha256.output.results/clean/records.jsonl" and path_tag(key) is None
    keys = {digest_tag("input", p) for p in AWKWARD}
    assert len(keys) == len(AWKWARD)  # no two paths share a key
    assert digest_tag("input", AWKWARD[0]) == digest_tag("input", AWKWARD[0])  # stable
    assert digest_tag("input", AWKWARD[0]) != digest_tag("output", AWKWARD[0])


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch):
    """A real SQLite MLflow store in tmp_path, set up the way a job sees it."""
    for name in ("DANLU_PARENT_RUN_ID", "DANLU_TRACKING_DISABLED"):
        monkeypatch.delenv(name, raising=False)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("DANLU_EXPERIMENT", "paths")
    monkeypatch.chdir(tmp_path)  # the local store's artifacts go to ./results/mlruns
    return uri


def _fake_manifest(paths):
    entries = [{"path": p, "sha256": hashlib.sha256(p.encode()).hexdigest(), "size": 1}
               for p in paths]
    return {"stage": "clean", "inputs": entries, "outputs": [], "code": {}}


def test_digest_tags_round_trip_through_a_real_store(mlflow_store, tmp_path):
    from mlflow.tracking import MlflowClient

    from danlu.audit.tracking import StageRun, digest_tag, path_tag, recorded_digests
    from danlu.audit.verify import Report, check_mlflow

    manifest = _fake_manifest(AWKWARD)
    manifest_path = tmp_path / "m.manifest.json"
    digest = write_manifest(manifest, manifest_path)
    with StageRun("clean", {"base_model_identity": {"files": {"模型.safetensors": "x"}}}) as run:
        run.finish(manifest, manifest_path, digest)
    assert run.errors == [] and "FAILED" not in run.report()

    recorded = recorded_digests(mlflow_store, run.run_id)
    for e in manifest["inputs"]:
        key = digest_tag("input", e["path"])
        assert recorded["files"][key] == e["sha256"]
        assert path_tag(key) is None or recorded["paths"][path_tag(key)] == e["path"]

    # verify reads the run back with the same keys: nothing to report ...
    latest = {"m.manifest.json": {"mlflow_run_id": run.run_id, "tracking_uri": mlflow_store,
                                  "manifest_sha256": digest}}
    report = Report()
    check_mlflow(tmp_path, {"m.manifest.json": manifest}, latest, report)
    assert report.problems == [] and report.checked == {"mlflow runs": 1}
    # ... until a hashed key's companion names another file.
    key = digest_tag("input", AWKWARD[0])
    MlflowClient(tracking_uri=mlflow_store).set_tag(run.run_id, path_tag(key), "/elsewhere")
    report = Report()
    check_mlflow(tmp_path, {"m.manifest.json": manifest}, latest, report)
    assert report.problems == [f"{AWKWARD[0]}: MLflow run {run.run_id} records another path "
                               f"under {path_tag(key)}"]


# ---- manifest paths --------------------------------------------------------


@pytest.fixture
def layout(tmp_path):
    """A project two levels down, and files outside it (one behind a symlink)."""
    root = tmp_path / "work" / "deep" / "proj"
    (root / "data").mkdir(parents=True)
    outside = tmp_path / "外部 data"
    (outside / "models" / "tiny").mkdir(parents=True)
    (outside / "alp.jsonl").write_text('{"instruction": "问", "output": "答"}\n', "utf-8")
    (outside / "models" / "tiny" / "config.json").write_text("{}", "utf-8")
    (outside / "link").symlink_to(outside / "models")
    (root / "data" / "inside.jsonl").write_text("{}\n", "utf-8")
    return SimpleNamespace(root=root, outside=outside)


def test_inside_the_project_paths_stay_relative(layout):
    assert rel(layout.root / "data" / "inside.jsonl", layout.root) == "data/inside.jsonl"
    # A symlink inside the project keeps its project path, even when it leads outside.
    (layout.root / "data" / "ext").symlink_to(layout.outside)
    assert rel(layout.root / "data/ext/alp.jsonl", layout.root) == "data/ext/alp.jsonl"
    # So does a project named through a linked name.
    alias = layout.root.parent / "alias"
    alias.symlink_to(layout.root)
    assert rel(alias / "data" / "inside.jsonl", layout.root) == "data/inside.jsonl"


def test_outside_the_project_paths_are_absolute_and_resolved(layout, monkeypatch):
    real = (layout.outside / "models" / "tiny" / "config.json").resolve().as_posix()
    assert rel(layout.outside / "link" / "tiny" / "config.json", layout.root) == real
    monkeypatch.chdir(layout.root)
    assert rel("../../../外部 data/link/tiny/config.json") == real  # `..` never recorded
    monkeypatch.setenv("HOME", str(layout.outside))
    home = Path("~/alp.jsonl").expanduser()
    assert rel(home) == (layout.outside / "alp.jsonl").resolve().as_posix()


def test_verify_rehashes_an_external_input_where_it_lies(layout, monkeypatch):
    from danlu.audit.verify import Report, check_files

    monkeypatch.chdir(layout.root)
    data = layout.outside / "alp.jsonl"
    entries = describe_files([data, layout.outside / "link" / "tiny"])
    assert [e["path"] for e in entries] == sorted([
        data.resolve().as_posix(),
        (layout.outside / "models/tiny/config.json").resolve().as_posix()])
    assert find_producer(data) is None  # raw data: no manifest of this project made it
    manifests = {"results/m.manifest.json": {"inputs": entries, "outputs": []}}
    report = Report()
    check_files(layout.root, manifests, report)
    assert report.problems == []
    data.write_text('{"instruction": "改", "output": "答"}\n', "utf-8")
    report = Report()
    check_files(layout.root, manifests, report)
    assert len(report.problems) == 1
    assert report.problems[0].startswith(f"{data.resolve().as_posix()}: sha256 ")


def test_build_manifest_with_an_external_input(layout, monkeypatch):
    monkeypatch.chdir(layout.root)
    stray = {"outputs": [{"path": "alp.jsonl", "sha256": "0" * 64}]}  # not this project's
    (layout.outside / "manifest.json").write_text(json.dumps(stray), "utf-8")
    manifest = build_manifest("clean", [layout.outside / "alp.jsonl"], [], {}, now(),
                              manifest_path=layout.root / "results" / "manifest.json")
    assert manifest["inputs"][0]["path"] == (layout.outside / "alp.jsonl").resolve().as_posix()
    assert manifest["upstream_manifests"] == {}


# ---- base-model identity ---------------------------------------------------


def _fake_model(directory: Path) -> Path:
    directory.mkdir(parents=True)
    for name, text in {"config.json": "{}", "model.safetensors": "weights",
                       "tokenizer.json": "{}", "chat_template.jinja": "{{ x }}"}.items():
        (directory / name).write_text(text, "utf-8")
    (directory / ".cache" / "huggingface").mkdir(parents=True)  # hf download's bookkeeping
    (directory / ".cache" / "huggingface" / "x.metadata").write_text("time", "utf-8")
    return directory


def test_local_model_identity_is_its_files(tmp_path, monkeypatch):
    from danlu.model.loading import model_identity

    monkeypatch.chdir(tmp_path)
    model = _fake_model(tmp_path / "models" / "tiny")
    (tmp_path / "link").symlink_to(tmp_path / "models")
    identity = model_identity(str(tmp_path / "link" / "tiny"), None, tmp_path / "link" / "tiny")
    files = {n: sha256_file(model / n) for n in
             ("chat_template.jinja", "config.json", "model.safetensors", "tokenizer.json")}
    assert identity == {
        "source": "local", "path": "link/tiny", "files": files,  # as named inside the project
        "sha256": combined_digest({"path": n, "sha256": s} for n, s in files.items())}
    # Named with `~` (a quoted argument arrives unexpanded): the same model, found.
    from danlu.model.loading import model_inputs, resolve_model_path

    monkeypatch.setenv("HOME", str(tmp_path))
    home = model_identity("~/models/tiny", None, resolve_model_path("~/models/tiny"))
    assert home["sha256"] == identity["sha256"] and home["path"] == "models/tiny"
    assert model_inputs("~/models/tiny") == [str(tmp_path / "models" / "tiny")]
    # The same files elsewhere are the same model; one changed byte is another.
    copy = _fake_model(tmp_path / "copy")
    assert model_identity(str(copy), None, copy)["sha256"] == identity["sha256"]
    (copy / "model.safetensors").write_text("weightz", "utf-8")
    assert model_identity(str(copy), None, copy)["sha256"] != identity["sha256"]


def test_hub_model_identity_names_the_resolved_commit(tmp_path):
    from danlu.model.loading import model_facts

    commit = "a" * 40
    snapshot = _fake_model(tmp_path / "hub" / "models--Qwen--Qwen2.5-7B" / "snapshots" / commit)
    facts = model_facts(SimpleNamespace(model="Qwen/Qwen2.5-7B", revision="main"), snapshot)
    identity = facts["base_model_identity"]
    assert facts["base_model"] == "Qwen/Qwen2.5-7B"
    assert {k: identity[k] for k in ("source", "id", "revision", "commit")} == {
        "source": "hub", "id": "Qwen/Qwen2.5-7B", "revision": "main", "commit": commit}
    assert len(identity["files"]) == 4


def test_model_card_and_provenance_carry_the_identity(tmp_path):
    from danlu.audit.export import base_model_lines
    from danlu.audit.provenance import base_model_material, build_statement
    from danlu.model.loading import model_identity

    commit = "b" * 40
    snapshot = _fake_model(tmp_path / "snapshots" / commit)
    hub = model_identity("Qwen/Qwen2.5-7B", None, snapshot)
    card = "\n".join(base_model_lines("Qwen/Qwen2.5-7B", hub))
    assert "hub id `Qwen/Qwen2.5-7B`, revision `main`, commit `" + commit in card
    assert hub["sha256"] in card and "hub revision main" not in card
    local = model_identity(str(snapshot), None, snapshot)
    assert f"local directory `{local['path']}`" in "\n".join(base_model_lines("m", local))

    statement = build_statement(
        [("results/export/merged/model.safetensors", "c" * 64)],
        materials=[base_model_material("Qwen/Qwen2.5-7B", hub)], build_type="urn:test",
        parameters={}, builder_id="urn:test", invocation_id="1", started="2026-01-01T00:00:00Z",
        finished="2026-01-01T00:00:01Z", code={"commit": None})
    base = statement["predicate"]["buildDefinition"]["resolvedDependencies"][0]
    assert base["uri"] == "Qwen/Qwen2.5-7B" and base["digest"] == {"gitCommit": commit}
    assert base["annotations"]["sha256"] == hub["sha256"]
    assert base["annotations"]["files"] == hub["files"]


# The real DAG with data and model outside the project (through a symlink, in
# folders with spaces and Chinese characters) runs in tests/test_families_dag.py.
