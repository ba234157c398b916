"""danlu runs where it is installed, not where the repository happens to be:
Snakemake's rules find the danlu beside Snakemake without an activated venv,
and each command runs by hand from any directory with explicit arguments."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from workflow_utils import REPO, SNAKEMAKE, make_project, read_json

from danlu.cli import build_parser
from danlu.config import load_schema
from danlu.data.records import dumps

ALPACA = [{"instruction": f"问题{i}：什么是第{i}种基金？", "input": "", "output": f"第{i}种基金的回答。"}
          for i in range(4)]
HUB_ROWS = [{"instruction": f"Question {i} about bonds?", "output": f"Bond answer {i}."}
            for i in range(3)]
# Neither the venv nor anything else that holds a `danlu`.
BARE_PATH = os.pathsep.join(["/usr/local/bin", "/usr/bin", "/bin"])


@pytest.fixture(scope="module")
def bare_run(tmp_path_factory):
    """`.venv/bin/snakemake` by absolute path, the venv not on PATH (as after
    `make` in a fresh clone), running the clean jobs of a file, a file under
    `~` and a hub dataset."""
    assert Path(sys.executable).parent.as_posix() not in BARE_PATH.split(os.pathsep)
    root = tmp_path_factory.mktemp("bare")
    hub = root / "hub_repo" / "data"
    hub.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(HUB_ROWS), hub / "train-00000-of-00001.parquet")
    make_project(root, [
        {"name": "alp", "path": "data/alp.jsonl", "format": "alpaca"},
        {"name": "bonds", "hf_hub_url": str(root / "hub_repo"), "format": "alpaca"},
        {"name": "home", "path": "~/corpora/home.jsonl", "format": "alpaca"},
    ], {"tracking": {"enabled": False}})
    (root / "data" / "alp.jsonl").write_text("".join(dumps(r) for r in ALPACA), "utf-8")
    home = root / "home"
    (home / "corpora").mkdir(parents=True)
    (home / "corpora" / "home.jsonl").write_text("".join(dumps(r) for r in ALPACA[:2]), "utf-8")
    env = {"PATH": BARE_PATH, "HOME": str(home), "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_CACHE": str(root / "hf-cache"), "DANLU_KEY_DIR": str(root / ".keys")}
    proc = subprocess.run([SNAKEMAKE, "--profile", "profiles/default", "--cores", "1",
                           "results/clean/records.jsonl"], cwd=root, env=env,
                          capture_output=True, text=True)
    logs = "".join(p.read_text() for p in sorted((root / "logs").rglob("*.log")))
    assert proc.returncode == 0, proc.stdout + proc.stderr + logs
    return root


def test_rules_run_the_danlu_beside_snakemake(bare_run):
    stats = read_json(bare_run / "results/clean/stats.json")
    assert stats["records_in"] == len(ALPACA) + len(HUB_ROWS) + 2


def test_a_hub_dataset_is_cleaned_without_a_file_input(bare_run):
    part = bare_run / "results/clean/parts/bonds"
    manifest = read_json(part / "manifest.json")
    assert all(e["path"].startswith("src/danlu/") for e in manifest["inputs"])
    (facts,) = read_json(part / "stats.json")["files"].values()
    assert facts["rows"] == len(HUB_ROWS) and len(facts["rows_sha256"]) == 64


def test_dedup_by_hand_outside_the_repository(tmp_path):
    records = [{"id": f"r{i}", "messages": [{"role": "user", "content": f"第{i}个问题？"},
                                            {"role": "assistant", "content": f"第{i}个回答。"}]}
               for i in range(6)]
    (tmp_path / "records.jsonl").write_text("".join(dumps(r) for r in records), "utf-8")
    env = {**os.environ, "DANLU_TRACKING_DISABLED": "1"}
    proc = subprocess.run([str(Path(sys.executable).with_name("danlu")), "dedup", "records.jsonl",
                           "--out", "d"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "decontamination SKIPPED" in proc.stdout
    assert read_json(tmp_path / "d" / "stats.json")["records_kept"] == 6
    assert read_json(tmp_path / "d" / "manifest.json")["params"]["benchmarks"] is None


def test_no_default_names_the_shared_directory():
    """The demo config may point at ../shared; no default of code, rules or schema may."""
    sources = [*REPO.glob("src/danlu/**/*.py"), *REPO.glob("workflow/**/*.smk"),
               *REPO.glob("workflow/schemas/*.yaml"), *REPO.glob("profiles/**/*.yaml"),
               REPO / "Snakefile"]
    assert [p.relative_to(REPO).as_posix() for p in sources
            if "../shared" in p.read_text(encoding="utf-8")] == []
    defaults = [action.default for sub in _subparsers() for action in sub._actions]
    assert not [d for d in defaults if "shared" in str(d)]
    assert "shared" not in json.dumps(_schema_defaults(load_schema()))


def _subparsers():
    (choices,) = [a.choices for a in build_parser()._actions if getattr(a, "choices", None)]
    return list(choices.values())


def _schema_defaults(node):
    if isinstance(node, dict):
        found = [node["default"]] if "default" in node else []
        return found + [d for v in node.values() for d in _schema_defaults(v)]
    return [d for v in node for d in _schema_defaults(v)] if isinstance(node, list) else []


def test_the_demo_config_keeps_the_local_copy():
    """The demo stays offline: its config names the local C-Eval/CMMLU copy."""
    demo = yaml.safe_load((REPO / "config" / "config.yaml").read_text(encoding="utf-8"))
    assert demo["benchmarks"]["path"] == "../shared/benchmarks"
