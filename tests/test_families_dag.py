"""The whole DAG on reasoning models as users bring them: a tiny Qwen3 and a
tiny DeepSeek-R1-Distill-Qwen (exact chat templates) in a directory outside
the project reached through a symlink, reasoning data at an absolute path in a
folder named with a space and Chinese characters, the project itself three
levels below where they lie (so relative paths would be `../../..`)."""

from __future__ import annotations

import json
import os
import random
from types import SimpleNamespace

import numpy as np
import pytest
from families import build_family_model
from workflow_utils import TINY_RUN, danlu, make_project, read_json, snakemake_together

from danlu.audit.manifest import combined_digest, sha256_file

pytestmark = pytest.mark.slow
# The adapter as trained and a 4-bit export (GPTQ and AWQ load through the same
# compressed-tensors path); every model kind is evaluated in test_verify's run.
EVALUATED = ["tuned", "awq"]

TOPICS = ["国债", "可转债", "货币基金", "指数基金", "银行理财", "养老金", "黄金", "外汇", "房贷",
          "信用卡", "保险", "股票期权", "REITs", "ETF", "定期存款", "企业债"]
ASPECTS = ["久期", "信用风险", "流动性", "费率", "税收", "波动率", "回撤", "分红", "期限",
           "汇率风险", "通胀", "杠杆"]


def _reasoning_records(n: int) -> list[dict]:
    """Distinct questions (near-duplicates would be deduplicated away) whose
    answers hold a `<think>` trace."""
    rng = random.Random(3)
    rows = []
    for i in range(n):
        topic, a, b = rng.choice(TOPICS), *rng.sample(ASPECTS, 2)
        thought = f"先看{topic}的{a}，再看{b}；第{i}种情形下利率是{rng.randint(1, 9)}%。"
        level = rng.choice(["较低", "较高", "适中"])
        rows.append({"instruction": f"{topic}的{a}和{b}对保守型投资者意味着什么？（{i}）",
                     "input": "",
                     "output": f"<think>\n{thought}\n</think>\n\n{topic}的{a}{level}，"
                               f"{b}需要关注，建议分散配置{rng.randint(2, 30)}%。"})
    return rows


FAMILIES = ["qwen3", "deepseek-r1-distill-qwen"]


def _external_project(family: str, tmp_path_factory) -> SimpleNamespace:
    outside = tmp_path_factory.mktemp(f"{family}-outside")
    model_dir = build_family_model(family, outside / "store" / family)
    (outside / "models").symlink_to(outside / "store")
    data = outside / "raw data 原始" / "reasoning.jsonl"
    data.parent.mkdir()
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n"
                            for r in _reasoning_records(24)), "utf-8")
    root = tmp_path_factory.mktemp(f"{family}-project") / "deep" / "proj"
    root.mkdir(parents=True)
    make_project(root, [{"name": "r1", "path": str(data), "format": "alpaca"}],
                 {**TINY_RUN, "base_model": str(outside / "models" / family),
                  "evaluate": {**TINY_RUN["evaluate"], "models": EVALUATED}})
    return SimpleNamespace(family=family, root=root, data=data, model=model_dir)


@pytest.fixture(scope="module")
def external_runs(tmp_path_factory) -> dict[str, SimpleNamespace]:
    """Both families' projects, run side by side (workflow_utils.snakemake_together)."""
    runs = {family: _external_project(family, tmp_path_factory) for family in FAMILIES}
    snakemake_together(*(run.root for run in runs.values()))
    return runs


@pytest.fixture(scope="module", params=FAMILIES)
def external_run(request, external_runs):
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
