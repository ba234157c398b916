"""Loading C-Eval and CMMLU: the real local copies, and broken copies built in tmp_path."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from workflow_utils import BENCHMARKS, needs_benchmarks  # noqa: E402

from danlu.benchmarks import (
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
