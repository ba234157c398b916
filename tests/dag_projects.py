"""The whole-DAG projects the slow tests share, built in the background.

Each takes minutes, yet keeps little more than one of the two cores busy (a
tiny DAG is mostly a chain of jobs: tokenize, cutoff, train, merge, quantize).
So as soon as collection ends, conftest starts every one that the selected
tests use (`start`), and each session fixture waits only for its own (`built`).
What runs in-process (writing a project, building a family's model) happens
then, in the main thread; threads only wait on snakemake processes, which get
the environment the session began with (workflow_utils).

- workflow: the three-format project of test_workflow, and the same project
  again in another directory for test_reproducible, signed by one key;
- families: Qwen3 and DeepSeek-R1-Distill-Qwen as users bring them (see
  test_families_dag);
- audited: workflow_utils.build_audited_run, for test_verify and test_tamper
  (or the one kept in $DANLU_AUDITED_RUN).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

from families import build_family_model
from workflow_utils import (
    TINY_RUN,
    audited_run_at,
    make_project,
    make_workflow_project,
    run_record,
    snakemake_together,
    stop_snakemake_runs,
)

# What a user of these models deploys; base and merged are evaluated in test_verify's run.
EVALUATED = ["tuned", "gptq", "awq"]
FAMILIES = ["qwen3", "deepseek-r1-distill-qwen"]

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


def _external_project(family: str, base: Path) -> SimpleNamespace:
    """The model outside the project behind a symlink, the data at an absolute
    path in a folder named with a space and Chinese characters, the project
    three levels below them."""
    outside = base / f"{family}-outside"
    model_dir = build_family_model(family, outside / "store" / family)
    (outside / "models").symlink_to(outside / "store")
    data = outside / "raw data 原始" / "reasoning.jsonl"
    data.parent.mkdir()
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n"
                            for r in _reasoning_records(24)), "utf-8")
    root = base / f"{family}-project" / "deep" / "proj"
    root.mkdir(parents=True)
    make_project(root, [{"name": "r1", "path": str(data), "format": "alpaca"}],
                 {**TINY_RUN, "base_model": str(outside / "models" / family),
                  "evaluate": {**TINY_RUN["evaluate"], "models": EVALUATED}})
    return SimpleNamespace(family=family, root=root, data=data, model=model_dir)


def _workflow(base: Path, pool: ThreadPoolExecutor) -> Future:
    root, again = make_workflow_project(base / "project"), make_workflow_project(base / "again")
    keys = base / "keys"

    def run():
        snakemake_together(root, again, key_dir=keys)
        # Later runs in the project (test_workflow's) sign with the same key.
        shutil.copytree(keys, root / ".keys")
        return SimpleNamespace(root=root, first=run_record(root), rerun=run_record(again),
                               key_dir=keys)

    return pool.submit(run)


def _families(base: Path, pool: ThreadPoolExecutor) -> Future:
    runs = {family: _external_project(family, base) for family in FAMILIES}

    def run():
        snakemake_together(*(r.root for r in runs.values()))
        return runs

    return pool.submit(run)


def _audited(base: Path, pool: ThreadPoolExecutor) -> Future:
    kept = os.environ.get("DANLU_AUDITED_RUN")
    return pool.submit(audited_run_at, Path(kept) if kept else base)


BUILDERS = {"workflow_project": _workflow, "external_runs": _families, "audited_run": _audited}


class Builds:
    """The background builds of one session."""

    def __init__(self):
        self._pool = ThreadPoolExecutor(max_workers=len(BUILDERS))
        self._futures: dict[str, Future] = {}
        self._base: Path | None = None

    def start(self, fixture: str) -> None:
        if fixture in self._futures:
            return
        if self._base is None:
            self._base = Path(tempfile.mkdtemp(prefix="danlu-dag-"))
        base = self._base / fixture
        base.mkdir()
        self._futures[fixture] = BUILDERS[fixture](base, self._pool)

    def built(self, fixture: str):
        """The fixture's project, once built (started now if it was not)."""
        self.start(fixture)
        return self._futures[fixture].result()

    def close(self) -> None:
        """Stop what is still running, and remove the projects."""
        if any(not f.done() for f in self._futures.values()):
            stop_snakemake_runs()
        self._pool.shutdown(wait=True, cancel_futures=True)
        if self._base is not None:
            shutil.rmtree(self._base, ignore_errors=True)
