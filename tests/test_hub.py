"""Hub datasets in `datasets:`: read with datasets.load_dataset, revision and rows
digest recorded. Offline: `hf_hub_url` names a local directory that load_dataset
reads as it reads a hub repository (parquet files, a README.md declaring configs)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from danlu.cli import main
from danlu.config import ConfigError, DatasetSpec

ALPACA = [{"instruction": f"问题{i}：什么是第{i}种债券？", "input": "", "output": f"第{i}种债券的回答。"}
          for i in range(5)]


@pytest.fixture(autouse=True)
def _offline(hub_offline):
    """Every test here reads hub datasets from local directories only."""


def hub_repo(root: Path, splits: dict[str, list[dict]], subset: str | None = None) -> Path:
    """A directory laid out like a hub dataset repository: parquet shards per split,
    and for a named subset a README.md declaring the config, as the hub does."""
    folder = root / (subset or "data")
    folder.mkdir(parents=True)
    for split, rows in splits.items():
        pq.write_table(pa.Table.from_pylist(rows), folder / f"{split}-00000-of-00001.parquet")
    if subset:
        files = "".join(f"  - split: {s}\n    path: {subset}/{s}-*\n" for s in splits)
        (root / "README.md").write_text(
            f"---\nconfigs:\n- config_name: {subset}\n  data_files:\n{files}---\n", "utf-8")
    return root


def canonical_digest(rows: list[dict]) -> str:
    lines = "".join(json.dumps(r, sort_keys=True, ensure_ascii=False, separators=(",", ":")) + "\n"
                    for r in rows)
    return hashlib.sha256(lines.encode("utf-8")).hexdigest()


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


def test_clean_reads_a_hub_dataset_and_records_its_rows_digest(tmp_path):
    repo = hub_repo(tmp_path / "repo", {"train": ALPACA})
    entry = {"name": "bonds", "hf_hub_url": str(repo), "format": "alpaca"}
    assert main(["clean", "--dataset", json.dumps(entry), "--out", "out"]) == 0
    records = read_jsonl(tmp_path / "out" / "records.jsonl")
    assert [r["id"] for r in records] == [f"bonds-{i:07d}" for i in range(1, 6)]
    assert records[0]["source"] == {"file": f"{repo}:train", "row": 1}
    facts = json.loads((tmp_path / "out" / "stats.json").read_text())["files"][f"{repo}:train"]
    assert facts["rows"] == 5 and facts["rows_sha256"] == canonical_digest(ALPACA)
    assert (facts["hf_hub_url"], facts["split"], facts["revision"]) == (str(repo), "train", None)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["stats"]["files"][f"{repo}:train"]["rows_sha256"] == facts["rows_sha256"]
    assert manifest["inputs"] == []  # no data file: the rows digest stands for them


def test_subset_and_split_are_those_loaded(tmp_path):
    rows = {"train": ALPACA[:2], "test": ALPACA[2:]}
    repo = hub_repo(tmp_path / "repo", rows, subset="zh")
    entry = {"name": "t", "hf_hub_url": str(repo), "subset": "zh", "split": "test"}
    assert main(["clean", "--dataset", json.dumps(entry), "--out", "out"]) == 0
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    (source, facts), = stats["files"].items()
    assert source == f"{repo}:zh:test" and facts["format"] == "alpaca"
    assert facts["rows"] == 3 and facts["rows_sha256"] == canonical_digest(ALPACA[2:])


def test_resolved_commit_is_what_is_loaded_and_recorded(monkeypatch, tmp_path):
    """A hub id: the revision is resolved to its commit first, and that commit is
    loaded (stubbed: no network here)."""
    import datasets
    import huggingface_hub

    calls = []

    class Info:
        sha = "0123456789abcdef0123456789abcdef01234567"

    def dataset_info(self, repo_id, revision=None):
        calls.append(("info", repo_id, revision))
        return Info()

    def load_dataset(path, name=None, split=None, revision=None):
        calls.append(("load", path, name, split, revision))
        return datasets.Dataset.from_list(ALPACA)

    monkeypatch.setattr(huggingface_hub.HfApi, "dataset_info", dataset_info)
    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    entry = {"name": "gpt4", "hf_hub_url": "llamafactory/alpaca_gpt4_zh", "revision": "main"}
    assert main(["clean", "--dataset", json.dumps(entry), "--out", "out"]) == 0
    assert calls == [("info", "llamafactory/alpaca_gpt4_zh", "main"),
                     ("load", "llamafactory/alpaca_gpt4_zh", None, "train", Info.sha)]
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    facts = stats["files"]["hf://datasets/llamafactory/alpaca_gpt4_zh:train"]
    assert (facts["revision_requested"], facts["revision"], facts["revision_is_commit"]) == \
        ("main", Info.sha, True)


def test_unreachable_hub_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    import datasets

    def unreachable(*args, **kwargs):
        raise ConnectionError("no network\nsecond line")

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    entry = {"name": "x", "hf_hub_url": "no-such-owner/no-such-dataset"}
    assert main(["clean", "--dataset", json.dumps(entry), "--out", "out"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "hf://datasets/no-such-owner/no-such-dataset:train" in err
    assert "ConnectionError: no network" in err
    assert not list((tmp_path / "out").glob("*"))  # outputs appear only for usable input


@pytest.mark.parametrize("keys", [{}, {"path": "a.jsonl", "hf_hub_url": "o/n"}])
def test_an_entry_is_a_file_or_a_hub_dataset(keys):
    with pytest.raises(ConfigError, match="exactly one of them"):
        DatasetSpec(name="x", format="auto", columns={}, tags={}, encoding="auto",
                    **{"path": None, **keys})


def test_model_cards_and_provenance_name_the_hub_rows(tmp_path):
    """The card's data section (and the provenance materials built from it) list a
    hub dataset by its name at the commit read, with the rows digest."""
    from danlu.audit.export import pipeline_facts

    results = tmp_path / "results"
    part = results / "clean" / "parts" / "gpt4"
    part.mkdir(parents=True)
    (part / "manifest.json").write_text(json.dumps({"inputs": [{"path": "src/danlu/data/hub.py",
                                                                 "sha256": "c" * 64}]}))
    source = "hf://datasets/llamafactory/alpaca_gpt4_zh:train"
    facts = {"dataset": "gpt4", "records_in": 5, "records_kept": 5, "revision": "abc123",
             "rows_sha256": "d" * 64}
    (results / "clean" / "stats.json").write_text(json.dumps(
        {"records_in": 5, "records_kept": 5, "files": {source: facts}}))
    (results / "dedup").mkdir()
    (results / "dedup" / "stats.json").write_text(json.dumps({"records_kept": 5}))
    (results / "dedup" / "split_stats.json").write_text(json.dumps({"train": 4, "val": 1}))
    datasets = pipeline_facts(results, {"base_model": "demo", "seed": 1})["datasets"]
    assert datasets == [{"path": f"{source}@abc123", "sha256": "d" * 64}]
