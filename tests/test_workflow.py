"""The real DAG on tiny data: outputs, manifests, MLflow, and partial reruns."""

import json

import pytest
from workflow_utils import (
    WORKFLOW_ALPACA,
    edited_config,
    planned,
    read_json,
    snakemake,
)

from danlu.audit.manifest import sha256_file

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def project(workflow_project):
    """The session's workflow project (conftest): its first build is also what
    test_reproducible's clean rerun is compared with."""
    return workflow_project.root


def test_clean_outputs_and_manifest_digests(project):
    stats = read_json(project / "results/clean/stats.json")
    assert stats["records_in"] == 8 + 1 + 6 + 4
    assert stats["records_in"] == stats["records_kept"] + stats["records_rejected"]
    assert stats["rejected_by_reason"] == {"empty_conversation": 1, "unparseable": 1}
    assert stats["pii_masked_by_type"] == {"phone": 8}
    for manifest_path in [project / "results/clean/manifest.json",
                          *project.glob("results/clean/parts/*/manifest.json")]:
        manifest = read_json(manifest_path)
        for entry in manifest["inputs"] + manifest["outputs"]:
            assert sha256_file(project / entry["path"]) == entry["sha256"], entry["path"]
    combined = read_json(project / "results/clean/manifest.json")
    assert sorted(combined["upstream_manifests"]) == [
        f"results/clean/parts/{n}/manifest.json" for n in ("alp", "msg", "sg")]
    part = read_json(project / "results/clean/parts/alp/manifest.json")
    assert "data/alp.jsonl" in {e["path"] for e in part["inputs"]}
    assert "src/danlu/data/clean.py" in {e["path"] for e in part["inputs"]}


def test_mlflow_parent_and_children_with_full_digests(project):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{project}/results/mlflow.db")
    exp = client.get_experiment_by_name("test")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    stages = sorted(r.data.tags["danlu.stage"] for r in children)
    assert stages == sorted(["clean"] * 3 + ["clean_combine", "demo_model", "dedup_signatures",
                                             "dedup", "split", "tokenize", "cutoff", "train",
                                             "evaluate_base", "evaluate_tuned", "eval_compare",
                                             "merge", "quantize_gptq", "quantize_awq", "audit"])
    combine = next(r for r in children if r.data.tags["danlu.stage"] == "clean_combine")
    digest = sha256_file(project / "results/clean/records.jsonl")
    assert combine.data.tags["danlu.sha256.output.results/clean/records.jsonl"] == digest
    dataset = combine.inputs.dataset_inputs[0].dataset
    assert json.loads(dataset.profile)["sha256"] == digest
    assert combine.data.metrics["records_kept"] == read_json(
        project / "results/clean/stats.json")["records_kept"]


def test_second_run_is_a_no_op(project):
    assert planned(project) == {}


def test_touching_a_data_file_without_change_reruns_nothing(project):
    (project / "data/sg.json").touch()
    assert planned(project) == {}


def test_unused_key_change_reruns_nothing(project):
    with edited_config(project, {"tracking": {"experiment": "renamed"}}):
        assert planned(project) == {}


def test_editing_a_data_file_reruns_its_clean_job_and_downstream(project):
    path = project / "data/alp.jsonl"
    original = path.read_bytes()
    path.write_bytes(original + b'{"instruction": "new", "output": "record"}\n')
    try:
        jobs = planned(project)
        assert jobs["clean"] == 1 and jobs["clean_combine"] == 1 and jobs["dedup"] == 1
        assert "demo_model" not in jobs
    finally:
        path.write_bytes(original)


def test_editing_clean_code_reruns_clean(project):
    path = project / "src/danlu/data/clean.py"
    original = path.read_text("utf-8")
    path.write_text(original + "\n# an edit\n", "utf-8")
    try:
        jobs = planned(project)
        assert jobs["clean"] == 3 and jobs["clean_combine"] == 1 and jobs["train"] == 1
    finally:
        path.write_text(original, "utf-8")


def test_changing_a_clean_key_reruns_clean_only(project):
    with edited_config(project, {"clean": {"min_chars": 3}}):
        jobs = planned(project)
        assert jobs["clean"] == 3 and "demo_model" not in jobs


def test_unknown_config_key_fails_in_one_line_before_any_job(project):
    with edited_config(project, {"clean": {"min_char": 3}}):
        proc = snakemake(project, "-n", check=False)
        assert proc.returncode != 0
        out = proc.stdout + proc.stderr
        assert "config: clean: unknown key 'min_char'" in out
        assert "Job stats" not in out


def test_training_outputs_and_loss(project):
    metrics = read_json(project / "results/train/train_metrics.json")
    assert metrics["switches"]["quantization"] == "nf4" and metrics["switches"]["packing"]
    assert (project / "results/train/adapter_model.safetensors").is_file()
    cutoff = read_json(project / "results/lengths/cutoff.json")["cutoff_len"]
    assert metrics["switches"]["cutoff_len"] == cutoff and cutoff % 64 == 0


def test_percentile_change_with_same_cutoff_does_not_retrain(project):
    cutoff = project / "results/lengths/cutoff.json"
    before = cutoff.read_bytes()
    import datasets
    import numpy as np

    decision = read_json(project / "results/lengths/stats.json")["decision"]
    lengths = datasets.load_from_disk(str(project / "results/lengths/train"))["length"]
    # another percentile whose value rounds up to the same multiple of 64
    other = next(q for q in np.arange(50, 100, 0.5) if q != decision["percentile"]
                 and -(-np.percentile(lengths, q) // 64) * 64 == decision["rounded"])
    with edited_config(project, {"lengths": {"percentile": float(other)}}):
        assert planned(project, "results/lengths/cutoff.json") == {"cutoff": 1}
        snakemake(project, "results/lengths/cutoff.json")
        assert cutoff.read_bytes() == before
        # nothing is retrained or re-evaluated; only the provenance, which
        # records the whole config, is written anew
        assert set(planned(project)) <= {"audit", "all"}
    snakemake(project, "results/lengths/cutoff.json")


# Which command each rule runs (its shell line): the rule's code inputs are
# that command's import closure.
RULE_COMMANDS = {"demo_model": "demo-model", "clean": "clean", "clean_combine": "combine",
                 "dedup_signatures": "dedup-signatures", "dedup": "dedup", "split": "split",
                 "tokenize": "tokenize", "cutoff": "cutoff", "train": "train",
                 "evaluate": "evaluate", "eval_compare": "eval-compare", "merge": "merge",
                 "quantize": "quantize", "audit": "audit"}


def _code_inputs_by_rule(root) -> dict[str, set[str]]:
    """The src/danlu files each rule lists as inputs, from a forced dry run."""
    import re as _re

    proc = snakemake(root, "-n", "--forceall")
    found: dict[str, set[str]] = {}
    for block in _re.split(r"\n(?=(?:local)?rule \w+:)", proc.stdout + proc.stderr):
        head = _re.match(r"(?:local)?rule (\w+):", block)
        inputs = _re.search(r"^\s+input: (.*)$", block, _re.M)
        if head and inputs:
            files = {f.strip() for f in inputs.group(1).split(",")}
            found.setdefault(head.group(1), set()).update(
                f for f in files if f.startswith("src/danlu/"))
    return found


def test_every_rule_lists_exactly_the_code_its_command_runs(project, monkeypatch):
    from danlu.code_inputs import command_code

    monkeypatch.chdir(project)
    listed = _code_inputs_by_rule(project)
    assert set(RULE_COMMANDS) <= set(listed)
    for rule, command in RULE_COMMANDS.items():
        assert listed[rule] == set(command_code(command, project)), rule


# module edited -> rules that must rerun, rules that must not
EDITS = {
    "data/answer_spans.py": ({"tokenize", "train", "evaluate"}, {"clean", "dedup", "split"}),
    "model/train.py": ({"train", "evaluate"}, {"tokenize", "clean"}),
    "data/pii.py": ({"clean", "clean_combine"}, set()),
    "data/decontamination.py": ({"dedup"}, {"dedup_signatures", "clean", "clean_combine"}),
    "data/split.py": ({"split"}, {"dedup_signatures", "dedup", "clean"}),
    "model/quantize.py": ({"quantize"}, {"train", "merge", "clean", "tokenize"}),
    "evaluation/report.py": ({"evaluate", "eval_compare"}, {"train", "clean"}),
    "audit/export.py": ({"audit"}, {"train", "evaluate", "clean"}),
    "stage.py": ({"clean", "dedup", "train", "evaluate", "audit"}, set()),
    # at least one module of every rule's own (what follows a rerun is planned too)
    "model/demo.py": ({"demo_model"}, {"clean", "dedup", "split"}),
    "data/minhash.py": ({"dedup_signatures", "dedup", "split"}, {"clean", "clean_combine"}),
    "data/cutoff.py": ({"cutoff"}, {"tokenize", "clean", "dedup"}),
    "model/merge.py": ({"merge"}, {"train", "tokenize", "clean"}),
}


@pytest.mark.parametrize("module", sorted(EDITS))
def test_editing_a_module_reruns_the_rules_that_run_it_and_no_other(project, module):
    must, must_not = EDITS[module]
    path = project / "src" / "danlu" / module
    original = path.read_bytes()
    path.write_bytes(original + b"\n# an edit\n")
    try:
        jobs = set(planned(project))
        assert must <= jobs and not must_not & jobs, jobs
    finally:
        path.write_bytes(original)  # the same bytes: checksummed inputs rerun nothing


def test_val_size_reruns_split_and_what_follows_not_the_signatures(project):
    with edited_config(project, {"dedup": {"val_size": 0.4}}):
        jobs = planned(project)
    assert jobs["split"] == 1 and jobs["tokenize"] == 1
    assert not {"dedup_signatures", "dedup", "clean", "clean_combine"} & set(jobs)


def test_appending_a_duplicate_changes_no_split_and_does_not_retrain(project):
    """Runs last: it leaves the appended record in place."""
    split = {n: (project / f"results/dedup/{n}.jsonl").read_bytes() for n in ("train", "val")}
    path = project / "data/alp.jsonl"
    path.write_bytes(path.read_bytes() + (json.dumps(WORKFLOW_ALPACA[2], ensure_ascii=False) + "\n").encode())
    jobs = planned(project)
    assert jobs["clean"] == 1 and jobs["dedup"] == 1
    snakemake(project, "results/dedup/train.jsonl", "results/dedup/val.jsonl")
    assert {n: (project / f"results/dedup/{n}.jsonl").read_bytes() for n in split} == split
    assert read_json(project / "results/dedup/stats.json")["removed_by_reason"]["exact"] >= 1
    assert planned(project) == {}
