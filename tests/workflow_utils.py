"""Run the real Snakemake workflow on tiny data in a scratch copy of the project."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO.parent / "shared" / "benchmarks"
# C-Eval/CMMLU are read in place (non-commercial licence), never copied here.
needs_benchmarks = pytest.mark.skipif(
    not (BENCHMARKS / "ceval").is_dir() or not (BENCHMARKS / "cmmlu").is_dir(),
    reason=f"local C-Eval/CMMLU copies not found at {BENCHMARKS}",
)
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))

# A demo model small enough to build, train and quantise in seconds.
TINY_MODEL = {"vocab_size": 1024, "hidden_size": 128, "intermediate_size": 256,
              "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
              "max_position_embeddings": 1024, "seed": 0}


# Enough training to exercise every step (checkpoints, eval) in seconds.
TINY_RUN = {
    "lengths": {"min_cutoff": 64},
    "train": {"max_steps": 4, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1,
              "save_steps": 2, "eval_steps": 2, "lora_r": 4, "lora_alpha": 8},
    "dedup": {"val_size": 0.25},
    "evaluate": {"max_per_subject": 2, "subjects": ["ceval/accountant", "ceval/college_physics",
                                                    "cmmlu/agronomy", "cmmlu/marketing"]},
}


def make_project(root: Path, datasets: list[dict], extra_config: dict | None = None) -> Path:
    """Copy the workflow and code into `root`, write tiny data and a config."""
    for item in ("Snakefile", "workflow", "profiles"):
        src = REPO / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, root / item)
    shutil.copytree(REPO / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "config").mkdir()
    (root / "data").mkdir()
    corpus = root / "data" / "corpus.txt"
    corpus.write_text(_corpus_text(), encoding="utf-8")
    config = {
        "base_model": "demo",
        "datasets": datasets,
        "demo": {"corpus": "data/corpus.txt", "model": TINY_MODEL},
        "benchmarks": {"path": str(BENCHMARKS)},
        "tracking": {"experiment": "test"},
    }
    merge_config(config, extra_config or {})
    (root / "config" / "config.yaml").write_text(yaml.safe_dump(config, allow_unicode=True), "utf-8")
    return root


@contextlib.contextmanager
def edited_config(root: Path, changes: dict):
    """The project's config with `changes` merged in, restored afterwards."""
    path = root / "config" / "config.yaml"
    original = path.read_text(encoding="utf-8")
    config = yaml.safe_load(original)
    merge_config(config, changes)
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    try:
        yield
    finally:
        path.write_text(original, encoding="utf-8")


def merge_config(base: dict, extra: dict) -> dict:
    """What `snakemake --configfile` does: mappings merge key by key, the rest is
    replaced. Merges into `base` and returns it."""
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge_config(base[key], value)
        else:
            base[key] = value
    return base


def _corpus_text() -> str:
    words = ("股票 债券 基金 利率 贷款 保险 风险 收益 资产 负债 会计 税 "
             "stock bond fund rate loan risk return asset equity A B C D 答案：")
    return "\n".join(words for _ in range(200))


def _snakemake_call(root: Path, args: tuple[str, ...], key_dir: Path | None,
                    tracked: bool = True):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DANLU_", "MLFLOW_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    env["DANLU_KEY_DIR"] = str(key_dir or root / ".keys")  # never the user's real signing key
    if not tracked:
        env["DANLU_TRACKING_DISABLED"] = "1"
    return [SNAKEMAKE, "--profile", "profiles/default", "--cores", "2", *args], env


def _checked(proc: subprocess.CompletedProcess, args) -> subprocess.CompletedProcess:
    if proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def snakemake(root: Path, *args: str, check: bool = True,
              key_dir: Path | None = None) -> subprocess.CompletedProcess:
    cmd, env = _snakemake_call(root, args, key_dir)
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
    return _checked(proc, args) if check else proc


def snakemake_together(*roots: Path, key_dir: Path | None = None,
                       untracked: tuple[Path, ...] = ()) -> None:
    """Whole runs of several projects at once. A tiny DAG keeps one core busy
    most of the time (its jobs form a chain), so two of them side by side
    take little longer than one. With `key_dir`, one signer for all: its key
    pair is made first, so no two audit jobs race to create it. Projects in
    `untracked` run with MLflow tracking off."""
    if key_dir is not None:
        from danlu.audit.signing import ensure_key_pair

        ensure_key_pair(key_dir)
    procs = []
    for root in roots:
        cmd, env = _snakemake_call(root, (), key_dir, tracked=root not in untracked)
        procs.append(subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    for proc in procs:
        out, err = proc.communicate()
        _checked(subprocess.CompletedProcess(proc.args, proc.returncode, out, err), ())


def danlu(root: Path, *args: str) -> subprocess.CompletedProcess:
    """Run the danlu command in the project, as a user would."""
    return subprocess.run([str(Path(sys.executable).with_name("danlu")), *args], cwd=root,
                          capture_output=True, text=True)


def planned(root: Path, *targets: str) -> Counter:
    """Jobs a dry run would execute, by rule name."""
    proc = snakemake(root, "-n", *targets)
    text = proc.stdout + proc.stderr
    jobs: Counter = Counter()
    if "Nothing to be done" in text:
        return jobs
    table = text.split("Job stats:", 1)[1]
    for line in table.splitlines()[3:]:
        m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if not m:
            break
        if m.group(1) != "total":
            jobs[m.group(1)] = int(m.group(2))
    return jobs


def read_json(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


# --- the workflow project, shared by test_workflow and test_reproducible ----------------

WORKFLOW_ALPACA = [{"instruction": f"问题{i}：什么是第{i}种基金？", "input": "",
                    "output": f"第{i}种基金是一种集合投资工具，电话13912345678。"} for i in range(8)]
WORKFLOW_SHAREGPT = [{"conversations": [{"from": "human", "value": f"Question {i} about bonds?"},
                                        {"from": "gpt", "value": f"Bond answer number {i}."}]}
                     for i in range(5)] + [{"conversations": []}]
WORKFLOW_MESSAGES = [[{"role": "user", "content": f"利率问题{i}"},
                      {"role": "assistant", "content": f"利率回答{i}"}] for i in range(4)]


def make_workflow_project(root: Path) -> Path:
    """Three formats in three file types (one broken line, one empty
    conversation), the whole DAG configured by TINY_RUN; not yet run."""
    import pandas as pd

    root.mkdir(parents=True, exist_ok=True)
    make_project(root, [
        {"name": "alp", "path": "data/alp.jsonl", "format": "alpaca"},
        {"name": "sg", "path": "data/sg.json"},
        {"name": "msg", "path": "data/msg.parquet", "format": "messages"},
    ], TINY_RUN)
    (root / "data" / "alp.jsonl").write_text(_jsonl(WORKFLOW_ALPACA, ("{broken",)), "utf-8")
    (root / "data" / "sg.json").write_text(json.dumps(WORKFLOW_SHAREGPT, ensure_ascii=False), "utf-8")
    pd.DataFrame({"messages": WORKFLOW_MESSAGES}).to_parquet(root / "data" / "msg.parquet")
    return root


def run_record(root: Path):
    """What a finished run made: {path: sha256} of every manifest's outputs,
    {path: reason} of those excused as nondeterministic, and the training losses."""
    from types import SimpleNamespace

    from danlu.audit.verify import find_manifests

    outputs, excused = {}, {}
    for manifest in find_manifests(root / "results"):
        data = json.loads(manifest.read_text("utf-8"))
        excused.update(data["nondeterministic"])
        outputs.update({e["path"]: e["sha256"] for e in data["outputs"]})
    losses = [h["loss"] for h in json.loads(
        (root / "results/train/trainer_state.json").read_text())["log_history"] if "loss" in h]
    return SimpleNamespace(outputs=outputs, excused=excused, losses=losses)


# --- one audited run, shared by test_verify and test_tamper ------------------------------

AUDITED_ALPACA = [{"instruction": f"问题{i}：基金{i}的风险？", "output": f"回答{i}：风险等级{i % 5}，注意分散。"}
                  for i in range(24)]


def _jsonl(records: list, extra_lines: tuple[str, ...] = ()) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records) + \
        "".join(line + "\n" for line in extra_lines)


# The final data: 24 records, plus an exact duplicate (dedup removes it) and two
# the clean stage rejects, so rejects.jsonl and removed.jsonl are not empty.
AUDITED_DATA = _jsonl(AUDITED_ALPACA + [AUDITED_ALPACA[3], {"instruction": "空回答", "output": ""}],
                      ("{broken",))
# What the data was at first: fewer records, another duplicate, one reject.
EARLIER_DATA = _jsonl(AUDITED_ALPACA[:20] + [AUDITED_ALPACA[5]], ("{broken",))


def build_audited_run(root: Path, snapshots: Path):
    """A tiny project as it lives, in three snakemake invocations:

    1. the first data, up to the length cutoff (the data stages and the demo model);
    2. the final data, the whole DAG with every model evaluated (the data stages
       rerun, the rest run for the first time);
    3. `--forcerun audit`: the audit job again (new signatures, a new provenance).

    So the run verifies across partial reruns and several MLflow parent runs, and
    `snapshots/first` (results/ and data/ after 1) and `snapshots/second`
    (results/ after 2) hold earlier versions of its files for test_tamper.
    Returns SimpleNamespace(root, first, second)."""
    from types import SimpleNamespace

    every_model = {"models": ["base", "tuned", "merged", "gptq", "awq"]}
    make_project(root, [{"name": "alp", "path": "data/alp.jsonl", "format": "alpaca"}],
                 TINY_RUN | {"evaluate": TINY_RUN["evaluate"] | every_model})
    data = root / "data" / "alp.jsonl"
    data.write_text(EARLIER_DATA, "utf-8")
    snakemake(root, "results/lengths/cutoff.json")
    first, second = snapshots / "first", snapshots / "second"
    shutil.copytree(root / "results", first / "results", symlinks=True)
    shutil.copytree(root / "data", first / "data")
    data.write_text(AUDITED_DATA, "utf-8")
    snakemake(root)
    shutil.copytree(root / "results", second / "results", symlinks=True)
    snakemake(root, "--forcerun", "audit")
    return SimpleNamespace(root=root, first=first, second=second)


def audited_run_at(base: Path):
    """build_audited_run in `base` (project/, earlier/), or the one already built
    there: for scripts/tamper_matrix.py, and for tests with $DANLU_AUDITED_RUN
    (reusing a run saves its 7 minutes while working on verify; tampering tests
    put every byte back)."""
    from types import SimpleNamespace

    run = SimpleNamespace(root=base / "project", first=base / "earlier" / "first",
                          second=base / "earlier" / "second")
    if (run.root / "results" / "audit" / "provenance.intoto.json").is_file() \
            and run.second.is_dir():
        return run
    if base.exists():
        shutil.rmtree(base)  # a build cut short: start again
    run.root.mkdir(parents=True)
    return build_audited_run(run.root, base / "earlier")


def finance_records(n: int, seed: int, id_prefix: str = "r") -> list[dict]:
    """Seeded single-turn finance Q&A records in canonical form (quantisation
    calibration and gate tests)."""
    import random

    rng = random.Random(seed)
    topics = ["养老金", "基金定投", "最大回撤", "信用卡分期", "国债", "汇率", "ETF", "房贷利率"]
    records = []
    for i in range(n):
        topic, amount = rng.choice(topics), rng.randint(1000, 99999)
        rate, years, result = rng.randint(2, 9), rng.randint(1, 30), rng.randint(1000, 99999)
        records.append({"id": f"{id_prefix}{i}", "messages": [
            {"role": "user", "content": f"请解释{topic}，第{i}个问题：金额{amount}元。"},
            {"role": "assistant",
             "content": f"{topic}要看期限和风险。按{rate}%估算，{years}年后约为{result}元。"},
        ]})
    return records
