"""The whole DAG on reasoning models as users bring them: a tiny Qwen3 and a
tiny DeepSeek-R1-Distill-Qwen (exact chat templates) in a directory outside
the project reached through a symlink, reasoning data at an absolute path in a
folder named with a space and Chinese characters, the project itself three
levels below where they lie (so relative paths would be `../../..`)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from dag_projects import EVALUATED, FAMILIES
from workflow_utils import danlu, read_json

from danlu.audit.manifest import combined_digest, sha256_file

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=FAMILIES)
def external_run(request, external_runs):
    """One family's run (conftest's external_runs builds both side by side)."""
    return external_runs[request.param]


def test_the_final_answers_thoughts_are_learnt(external_run):
    import datasets

    from danlu.model.loading import load_tokenizer

    tokenizer = load_tokenizer(external_run.model)
    train = datasets.load_from_disk(str(external_run.root / "results/lengths/train"))
    for row in train.select(range(3)):
        ids, labels = np.array(row["input_ids"]), np.array(row["labels"])
        learnt = tokenizer.decode(ids[labels != -100].tolist())
        assert "先看" in learnt and "</think>" in learnt and "建议分散配置" in learnt, learnt
        assert "对保守型投资者意味着什么" not in learnt


def test_every_model_is_evaluated(external_run):
    for model in EVALUATED:
        summary = read_json(external_run.root / f"results/eval/{model}/summary.json")
        for benchmark in ("ceval", "cmmlu"):
            assert summary["benchmarks"][benchmark]["questions"] > 0, (model, benchmark)


def test_every_job_is_tracked_and_records_where_the_data_lies(external_run):
    logs = sorted((external_run.root / "logs").rglob("*.log"))
    assert logs
    failed = [p.name for p in logs if "tracking: FAILED" in p.read_text("utf-8", "replace")]
    assert failed == []
    part = read_json(external_run.root / "results/clean/parts/r1/manifest.json")
    assert external_run.data.resolve().as_posix() in {e["path"] for e in part["inputs"]}


def test_the_untouched_run_verifies(external_run):
    proc = danlu(external_run.root, "verify", "results", "--json")
    report = json.loads(proc.stdout)
    assert proc.returncode == 0 and report["ok"] and report["problems"] == [], proc.stdout
    assert report["checked"]["mlflow runs"] == report["checked"]["manifests"]


def test_model_cards_name_the_base_model_by_its_files(external_run):
    model = external_run.model
    files = {f.name: sha256_file(f) for f in model.iterdir()
             if f.is_file() and not f.name.startswith(".")}
    digest = combined_digest({"path": n, "sha256": s} for n, s in files.items())
    cards = sorted((external_run.root / "results/export").glob("*/README.md"))
    assert len(cards) == 4  # adapter, merged, gptq, awq
    for card in cards:
        text = card.read_text("utf-8")
        assert digest in text and os.fspath(model.resolve()) in text, card
        assert "hub revision" not in text
