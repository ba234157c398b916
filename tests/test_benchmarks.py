"""Loading C-Eval and CMMLU: the real local copies, and broken copies built in tmp_path."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from workflow_utils import BENCHMARKS, needs_benchmarks  # noqa: E402

from danlu.evaluation.benchmarks import (
    BenchmarkError,
    Question,
    lm_eval_question,
    load_benchmark,
    load_subjects,
    official_question,
)


@needs_benchmarks
def test_ceval_layout_loads_val_with_dev_shots():
    data = load_benchmark("ceval", BENCHMARKS)
    assert len(data) == 52
    assert sum(len(d.questions) for d in data) == 1346
    assert all(len(d.shots) == 5 for d in data)
    questions = [q for d in data for q in d.questions]
    # CRLF files: nothing of the line ending may leak into the last column.
    assert all(q.is_scorable for q in questions)
    accountant = next(d for d in data if d.subject.name == "accountant")
    assert (accountant.subject.name_zh, accountant.subject.category) == ("注册会计师", "Other")
    assert accountant.questions[0].id == "0"


@needs_benchmarks
def test_cmmlu_layout_loads_test_with_dev_shots_and_overlay():
    data = load_benchmark("cmmlu", BENCHMARKS)
    assert len(data) == 67
    assert sum(len(d.questions) for d in data) == 11582
    assert sum(len(d.shots) for d in data) == 335
    subjects = load_subjects("cmmlu", BENCHMARKS)
    assert subjects["ancient_chinese"].category == "Social Science"
    assert subjects["ancient_chinese"].overlays == ("China specific",)
    assert subjects["anatomy"].category == "STEM" and subjects["anatomy"].overlays == ()
    assert subjects["agronomy"].name_zh == "农学"
    # the unnamed first column is the question id
    assert [q.id for q in data[0].questions[:3]] == ["0", "1", "2"]


@needs_benchmarks
def test_subject_selection_and_limit():
    data = load_benchmark("cmmlu", BENCHMARKS, subjects=["virology", "agronomy"], max_per_subject=3)
    assert [d.subject.name for d in data] == ["agronomy", "virology"]
    assert all(len(d.questions) == 3 for d in data)


# ---- broken copies ------------------------------------------------------------------


def _write_csv(path: Path, header: str, rows: list[str], newline: str = "\n") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(newline.join([header, *rows, ""]).encode("utf-8"))


def _mini_layout(root: Path) -> Path:
    """A two-benchmark copy in the official layouts, with made-up questions."""
    (root / "ceval").mkdir(parents=True)
    (root / "ceval" / "subject_mapping.json").write_text(
        json.dumps({"logic": ["Logic", "逻辑学", "Humanities"]}), encoding="utf-8"
    )
    exam = root / "ceval" / "ceval-exam"
    _write_csv(
        exam / "dev" / "logic_dev.csv",
        "id,question,A,B,C,D,answer,explanation",
        [f"{i},问{i},甲,乙,丙,丁,A,因为" for i in range(5)],
        newline="\r\n",
    )
    _write_csv(
        exam / "val" / "logic_val.csv",
        "id,question,A,B,C,D,answer",
        ['0," 前后有空格 ",甲,乙,丙,丁,B', '1,"两行\r\n问题",1,2,3,4,E', "2,问,甲,乙,丙,丁,"],
        newline="\r\n",
    )
    (root / "cmmlu").mkdir()
    (root / "cmmlu" / "subject_mapping.json").write_text(
        json.dumps(
            {
                "name_en2zh": {"arts": "艺术学"},
                "subject_to_categories": {"arts": ["Humanities", "China specific"]},
            }
        ),
        encoding="utf-8",
    )
    for split in ("dev", "test"):
        _write_csv(
            root / "cmmlu" / "data" / split / "arts.csv",
            ",Question,A,B,C,D,Answer",
            [f"{i},题{i},a,b,c,d,D" for i in range(5)],
        )
    return root


def test_mini_layouts_load(tmp_path):
    root = _mini_layout(tmp_path)
    (ceval,) = load_benchmark("ceval", root)
    assert [q.answer for q in ceval.questions] == ["B", "E", ""]
    assert [q.is_scorable for q in ceval.questions] == [True, False, False]
    assert ceval.questions[1].question == "两行\r\n问题"  # quoted newline kept as written
    (cmmlu,) = load_benchmark("cmmlu", root)
    assert cmmlu.subject.overlays == ("China specific",) and len(cmmlu.questions) == 5


def _one_line_error(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def test_missing_benchmark_directory(tmp_path):
    with pytest.raises(BenchmarkError) as excinfo:
        load_benchmark("ceval", tmp_path)
    message = _one_line_error(excinfo)
    assert "ceval" in message and str(tmp_path / "ceval") in message


def test_missing_subject_file(tmp_path):
    root = _mini_layout(tmp_path)
    (root / "cmmlu" / "data" / "test" / "arts.csv").unlink()
    with pytest.raises(BenchmarkError) as excinfo:
        load_benchmark("cmmlu", root)
    assert "missing subject file" in _one_line_error(excinfo)
    assert str(Path("data") / "test" / "arts.csv") in str(excinfo.value)


def test_missing_column_names_file_and_column(tmp_path):
    root = _mini_layout(tmp_path)
    path = root / "ceval" / "ceval-exam" / "val" / "logic_val.csv"
    _write_csv(path, "id,question,A,B,C,D", ["0,问,甲,乙,丙,丁"])
    with pytest.raises(BenchmarkError) as excinfo:
        load_benchmark("ceval", root)
    message = _one_line_error(excinfo)
    assert "'answer'" in message and "logic_val.csv" in message


def test_broken_or_missing_mapping(tmp_path):
    root = _mini_layout(tmp_path)
    (root / "cmmlu" / "subject_mapping.json").write_text('{"name_en2zh": {"arts": "艺术学"}}')
    with pytest.raises(BenchmarkError) as excinfo:
        load_subjects("cmmlu", root)
    assert "subject_mapping.json" in _one_line_error(excinfo)
    (root / "ceval" / "subject_mapping.json").unlink()
    with pytest.raises(BenchmarkError) as excinfo:
        load_subjects("ceval", root)
    assert "subject mapping not found" in _one_line_error(excinfo)


def test_unknown_subject_and_benchmark(tmp_path):
    root = _mini_layout(tmp_path)
    with pytest.raises(BenchmarkError, match="unknown subject.*geology"):
        load_benchmark("ceval", root, subjects=["geology"])
    with pytest.raises(BenchmarkError, match="unknown benchmark 'mmlu'"):
        load_benchmark("mmlu", root)


@needs_benchmarks
def test_broken_copy_of_real_file(tmp_path):
    """A real subject copied to tmp_path with its `Answer` column renamed."""
    root = tmp_path / "bench"
    shutil.copytree(
        BENCHMARKS / "cmmlu",
        root / "cmmlu",
        ignore=lambda d, names: [n for n in names if n.endswith(".csv") and n != "arts.csv"],
    )
    path = root / "cmmlu" / "data" / "test" / "arts.csv"
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace(",Answer", ",Correct", 1), encoding="utf-8")
    with pytest.raises(BenchmarkError) as excinfo:
        load_benchmark("cmmlu", root, subjects=["arts"])
    message = _one_line_error(excinfo)
    assert "'Answer'" in message and "arts.csv" in message


def test_hub_rows_through_datasets(tmp_path, monkeypatch):
    """A hub id reads rows with datasets.load_dataset (stubbed here: no network)."""
    import datasets

    root = _mini_layout(tmp_path)
    calls = []

    def fake_load_dataset(path, name, split):
        calls.append((path, name, split))
        rows = [
            {"Question": f"题{i}", "A": "a", "B": "b", "C": "c", "D": "d", "Answer": "C"}
            for i in range(5 if split == "dev" else 2)
        ]
        return datasets.Dataset.from_list(rows)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    (arts,) = load_benchmark("cmmlu", root, hub_id="haonan-li/cmmlu")
    assert calls == [("haonan-li/cmmlu", "arts", "dev"), ("haonan-li/cmmlu", "arts", "test")]
    assert [q.id for q in arts.questions] == ["0", "1"] and arts.questions[0].answer == "C"

    def failing_load_dataset(path, name, split):
        raise ConnectionError("no network\nsecond line")

    monkeypatch.setattr(datasets, "load_dataset", failing_load_dataset)
    with pytest.raises(BenchmarkError) as excinfo:
        load_benchmark("cmmlu", root, hub_id="haonan-li/cmmlu")
    assert "haonan-li/cmmlu" in _one_line_error(excinfo)


def test_question_formats():
    q = Question("7", "  题干____。\n", ("甲 ", "乙", "丙", "丁"), "B")
    # lm-eval strips the question only; the official CMMLU format strips nothing.
    assert lm_eval_question(q) == "题干____。\nA. 甲 \nB. 乙\nC. 丙\nD. 丁\n答案："
    assert (
        official_question(q, "B")
        == "题目：  题干____。\n\nA. 甲 \nB. 乙\nC. 丙\nD. 丁\n答案是：B\n\n"
    )


# ---- the benchmark scripts (scripts/bench_eval.py, scripts/bench_train.py) ---------------

REPO = Path(__file__).resolve().parents[1]
LEGACY_TRAIN_KEYS = {
    "model_shape",
    "device",
    "steps",
    "batch_size",
    "target_tokens",
    "baseline_tokens_per_s",
    "danlu_tokens_per_s",
    "speedup",
    "baseline_peak_mem_mb",
    "danlu_peak_mem_mb",
    "mem_ratio",
    "liger_kernel",
}
TINY_TRAIN = "--model-shape tiny --steps 2 --batch-size 2 --cutoff 64"


def _script(name: str):
    """A script under scripts/ imported as a module (they are not part of the package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@needs_benchmarks
def test_bench_eval_calls_lm_eval_once_and_agrees(tiny_model_dir, monkeypatch):
    """One simple_evaluate per timed run (plus the warm-up), same predictions as danlu,
    and both sides' forward time inside their totals."""
    lm_eval = pytest.importorskip("lm_eval")
    calls = []
    real = lm_eval.simple_evaluate

    def counting(*args, **kwargs):
        calls.append([t["task"] for t in kwargs["tasks"]])
        return real(*args, **kwargs)

    monkeypatch.setattr(lm_eval, "simple_evaluate", counting)
    bench = _script("bench_eval")
    flags = ["--subjects", "1", "--per-subject", "2", "--batch-size", "4", "--repeats", "2"]
    out = bench.main(["--model-dir", str(tiny_model_dir), *flags])
    assert len(calls) == 3 and all(len(tasks) == 2 for tasks in calls)  # ceval + cmmlu
    assert out["questions"] == out["compared"] == 4 and out["subjects"] == 2
    assert out["agreement"] == 1.0 and out["max_abs_loglik_diff"] < 1e-4
    assert out["parameters"] > 0 and out["repeats"] == 2
    for side in ("lm_eval", "danlu"):
        assert len(out[f"{side}_seconds_runs"]) == 2
        assert 0 < out[f"{side}_forward_seconds"] <= out[f"{side}_seconds"]
        assert out[f"{side}_questions_per_s"] > 0


def test_bench_eval_0_5b_shape_is_qwen2_0_5b():
    """The --shape 0.5b model has Qwen2-0.5B's published parameter count (built on the
    meta device here: no memory, no time)."""
    import types

    import torch
    from transformers import Qwen2ForCausalLM

    config = _script("bench_eval").qwen2_0_5b_config(
        types.SimpleNamespace(eos_token_id=2, pad_token_id=0)
    )
    with torch.device("meta"):
        model = Qwen2ForCausalLM(config)
    assert sum(p.numel() for p in model.parameters()) == 494_032_768


def test_bench_train_arms_alternate_and_rotate():
    bench = _script("bench_train")
    order = bench.schedule(3)
    assert [arm for _, arm in order[:3]] == ["baseline", "group_by_length", "danlu"]
    assert [arm for _, arm in order[3:6]] == ["group_by_length", "danlu", "baseline"]
    for r in range(3):  # every round runs every arm once
        assert sorted(arm for n, arm in order if n == r) == sorted(bench.ARMS)


def test_bench_train_summary_medians_spread_and_legacy_keys():
    bench = _script("bench_train")
    args = bench.parse_args(["--repeats", "3"])
    speeds = {"baseline": [10, 30, 20], "group_by_length": [15, 25, 20], "danlu": [40, 60, 50]}
    runs = [
        {
            "arm": arm,
            "tokens_per_s": v,
            "peak_mem_mb": 100.0 + n,
            "target_tokens": 7,
            "liger": False,
        }
        for arm, values in speeds.items()
        for n, v in enumerate(values)
    ]
    out = bench.summarise(runs, args, "cpu")
    assert set(out) >= LEGACY_TRAIN_KEYS
    assert out["baseline_tokens_per_s"] == 20 and out["danlu_tokens_per_s"] == 50
    assert (out["baseline_tokens_per_s_min"], out["baseline_tokens_per_s_max"]) == (10, 30)
    assert out["speedup"] == 2.5 and out["speedup_vs_group_by_length"] == 2.5
    assert out["speedup_runs"] == [4.0, 2.0, 2.5]
    assert out["danlu_tokens_per_s_runs"] == [40, 60, 50] and out["danlu_peak_mem_mb"] == 102
    runs[0]["target_tokens"] = 8
    with pytest.raises(AssertionError, match="different tokens"):
        bench.summarise(runs, args, "cpu")


def test_bench_train_arms_train_on_the_same_tokens(tmp_path):
    """Each arm in this process on a tiny model: the same target tokens, and the
    group_by_length arm really samples by length."""
    import queue

    bench = _script("bench_train")
    args = bench.parse_args(TINY_TRAIN.split())
    bench.build_model(bench.model_shape("tiny"), tmp_path / "model", 0)
    examples = bench.make_examples(4, 1024, 64, 0)
    results = queue.Queue()
    for arm in bench.ARMS:
        bench.run_arm(arm, str(tmp_path / "model"), examples, args, results)
    runs = {r["arm"]: r for r in (results.get() for _ in bench.ARMS)}
    assert len({r["target_tokens"] for r in runs.values()}) == 1
    assert runs["group_by_length"]["sampler"] == "LengthGroupedSampler"
    assert runs["baseline"]["sampler"] == "RandomSampler"
    assert all(r["tokens_per_s"] > 0 for r in runs.values())


@pytest.mark.slow
def test_bench_train_cli_prints_the_summary_last():
    """As users run it: child processes per run, one JSON object on the last line."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    script = str(REPO / "scripts" / "bench_train.py")
    proc = subprocess.run(
        [sys.executable, script, *TINY_TRAIN.split(), "--repeats", "1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=True,
    )
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(out) >= LEGACY_TRAIN_KEYS and out["repeats"] == 1
    assert len(out["group_by_length_tokens_per_s_runs"]) == 1
    assert out["speedup_vs_group_by_length"] > 0
