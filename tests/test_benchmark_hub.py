"""C-Eval and CMMLU without a local copy: the hub datasets, one config per subject.

Offline: the hub id names a directory built in tmp_path like the hub repositories
(`<subject>/<split>-00000-of-00001.parquet` and a README.md declaring a config
per subject), from a few subjects of the local copy read at test time (the
benchmarks' licence is non-commercial: nothing of them is kept in the repository).
"""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from workflow_utils import BENCHMARKS, needs_benchmarks

from danlu.cli import main
from danlu.data.records import dumps
from danlu.evaluation import benchmarks
from danlu.evaluation.benchmarks import Source, find_source, layout, load_benchmark, load_subjects
from danlu.evaluation.evaluate import eval_config, load_selected

SUBJECTS = {"ceval": ["accountant", "college_physics"], "cmmlu": ["agronomy", "arts"]}
SPLITS = {"ceval": ["dev", "val", "test"], "cmmlu": ["dev", "test"]}

pytestmark = needs_benchmarks


@pytest.fixture(autouse=True)
def _offline(hub_offline):
    """Every test here reads hub datasets from local directories only."""


def _csv_rows(path: Path) -> list[dict]:
    with open(path, encoding="utf-8-sig", newline="") as fh:
        return list(csv.DictReader(fh))


def hub_copy(root: Path, benchmark: str) -> Path:
    """`root` laid out like the hub repository of `benchmark`, for SUBJECTS only.
    C-Eval's ids are integers there; CMMLU's rows have no index column."""
    spec = layout(benchmark)
    configs = []
    for subject in SUBJECTS[benchmark]:
        (root / subject).mkdir(parents=True)
        for split in SPLITS[benchmark]:
            rows = _csv_rows(spec.csv_path(BENCHMARKS, subject, split))
            for row in rows:
                if benchmark == "ceval":
                    row["id"] = int(row["id"])
                row.pop("", None)
            pq.write_table(pa.Table.from_pylist(rows),
                           root / subject / f"{split}-00000-of-00001.parquet")
        files = "".join(f"  - split: {s}\n    path: {subject}/{s}-*\n" for s in SPLITS[benchmark])
        configs.append(f"- config_name: {subject}\n  data_files:\n{files}")
    (root / "README.md").write_text("---\nconfigs:\n" + "".join(configs) + "---\n", "utf-8")
    return root


@pytest.fixture
def hub(tmp_path) -> dict[str, str]:
    return {b: str(hub_copy(tmp_path / "hub" / b, b)) for b in SUBJECTS}


def test_packaged_subject_table_equals_the_official_mappings():
    for name in ("ceval", "cmmlu"):
        assert load_subjects(name, None) == load_subjects(name, BENCHMARKS)


@pytest.mark.parametrize("benchmark", ["ceval", "cmmlu"])
def test_hub_gives_the_questions_of_the_local_copy(hub, benchmark):
    from_hub = load_benchmark(benchmark, None, subjects=SUBJECTS[benchmark], hub_id=hub[benchmark])
    local = load_benchmark(benchmark, BENCHMARKS, subjects=SUBJECTS[benchmark])
    assert [len(d.questions) for d in from_hub] == [len(d.questions) for d in local]
    assert from_hub == local  # subjects, shots and questions, ids and answers included


def test_no_local_copy_reads_the_configured_hub_ids(hub, tmp_path):
    source, why = find_source(tmp_path / "missing", hub)
    assert source == Source(None, hub) and "not found" in why
    assert source.hub_id("ceval") == hub["ceval"]
    assert Source(None).hub_id("cmmlu") == "haonan-li/cmmlu"  # the official id by default
    assert find_source(BENCHMARKS, hub)[0] == Source(BENCHMARKS)
    assert find_source(None, {}, default_hub=False) == (None, "no local copy given")
    config = eval_config(subjects=["ceval/accountant", "cmmlu/arts"], max_per_subject=3, hub=hub)
    assert load_selected(config, None) == load_selected(replace(config, hub={}), BENCHMARKS)


def test_dedup_decontaminates_against_the_hub(hub, tmp_path, monkeypatch):
    # Only SUBJECTS are in the hub copy: the packaged table names just those.
    table = json.loads(benchmarks.SUBJECTS_FILE.read_text(encoding="utf-8"))
    small = {b: {s: table[b][s] for s in SUBJECTS[b]} for b in SUBJECTS}
    (tmp_path / "subjects.json").write_text(json.dumps(small, ensure_ascii=False), "utf-8")
    monkeypatch.setattr(benchmarks, "SUBJECTS_FILE", tmp_path / "subjects.json")
    q = load_benchmark("cmmlu", BENCHMARKS, subjects=["arts"])[0].questions[3]
    leak = {"id": "leak", "messages": [
        {"role": "user", "content": q.question + "\n" + "\n".join(q.options)},
        {"role": "assistant", "content": f"答案：{q.answer}"}]}
    clean = [{"id": f"r{i}", "messages": [{"role": "user", "content": f"第{i}个理财问题是什么？"},
                                          {"role": "assistant", "content": f"回答{i}：分散投资。"}]}
             for i in range(5)]
    (tmp_path / "in.jsonl").write_text("".join(dumps(r) for r in [*clean, leak]), "utf-8")
    args = ["dedup", "in.jsonl", "--out", "out", "--benchmarks", str(tmp_path / "missing")]
    args += [f"--benchmark-hub={b}={i}" for b, i in hub.items()]
    assert main(args) == 0
    removed = [json.loads(line) for line in (tmp_path / "out" / "removed.jsonl").open()]
    assert [(r["id"], r["reason"], r["benchmark"], r["subject"]) for r in removed] == [
        ("leak", "contaminated", "cmmlu", "arts")]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert hub["cmmlu"] in manifest["params"]["benchmarks"]


def test_evaluate_by_hand_without_a_local_copy_reads_the_hub(hub, tmp_path, tiny_model_dir):
    params = {"benchmarks": ["ceval", "cmmlu"], "subjects": ["accountant", "cmmlu/arts"],
              "max_per_subject": 2}
    args = ["evaluate", "--name", "base", "--model", str(tiny_model_dir), "--out", "eval",
            "--params", json.dumps(params), *(f"--benchmark-hub={b}={i}" for b, i in hub.items())]
    assert main(args) == 0
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert {b: s["questions"] for b, s in summary["benchmarks"].items()} == {"ceval": 2, "cmmlu": 2}
    manifest = json.loads((tmp_path / "eval" / "manifest.json").read_text())
    assert hub["ceval"] in manifest["params"]["benchmarks"]
