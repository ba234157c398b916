"""Shared fixtures. Each one builds what it needs inside the test session."""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import pytest

# The C-Eval/CMMLU copies sit beside the repository (non-commercial licence: read
# from there at test time, never copied into the repository).
_BENCHMARKS = Path(__file__).resolve().parents[1].parent / "shared" / "benchmarks"


def _tokenizer_corpus() -> str:
    """Question text of the benchmarks' dev splits when the local copies are there
    (so prompt lengths are realistic), else generated text with Chinese punctuation."""
    files = sorted(_BENCHMARKS.glob("ceval/ceval-exam/dev/*.csv"))
    files += sorted(_BENCHMARKS.glob("cmmlu/data/dev/*.csv"))
    texts = []
    for path in files:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            for row in csv.DictReader(fh):
                texts.append("\n".join(v for k, v in row.items() if k and v))
    if not texts:
        texts = [
            f"以下是关于第{i}题的单项选择题，请选出答案。\nA. 选项{i}\nB. {i * 7}\n答案：C"
            for i in range(2000)
        ]
    return "\n\n".join(texts)


# The session's whole-DAG projects, and the test modules that use them, in two
# groups: under xdist each group runs on one worker (the Qwen3/R1 pair, then
# the workflow pair; the audited run), and the other tests fill the gaps. A
# tiny DAG is mostly a chain of jobs, so two or three at once use 2 cores well;
# all five at once did not (1,452 s against 986 s for the serial suite), and
# two workers using one project would each build it. Measured on 2 cores: the
# serial suite about 1,000 s, one whole-DAG group 877 s, these two 726 s.
# The modules are named, not found, because xdist's controller sees only node
# ids; pytest_runtest_setup checks the list.
WHOLE_DAG_FIXTURES = {"external_runs": "families-workflow",
                      "workflow_project": "families-workflow", "audited_run": "audited"}
WHOLE_DAG_GROUPS = {"test_families_dag.py": "families-workflow",
                    "test_reproducible.py": "families-workflow",
                    "test_workflow.py": "families-workflow",
                    "test_tamper.py": "audited", "test_verify.py": "audited"}


def _module(nodeid: str) -> str:
    return nodeid.split("::", 1)[0].rsplit("/", 1)[-1]


def pytest_runtest_setup(item):
    group = WHOLE_DAG_GROUPS.get(_module(item.nodeid))
    for fixture in WHOLE_DAG_FIXTURES.keys() & set(item.fixturenames):
        if group != WHOLE_DAG_FIXTURES[fixture]:
            pytest.fail(f"{item.nodeid} uses the whole-DAG project {fixture}: map "
                        f"{_module(item.nodeid)} to {WHOLE_DAG_FIXTURES[fixture]!r} in "
                        "WHOLE_DAG_GROUPS (tests/conftest.py)", pytrace=False)


def pytest_xdist_make_scheduler(config, log):
    """`--dist loadgroup`, with WHOLE_DAG_GROUPS as groups: the largest units,
    so xdist hands them out first, and more work to their workers only when
    they are nearly done. Not `xdist_group` marks: pytest 9.2 drops the node-id
    suffix that xdist 3.8 groups by (pytest-dev/pytest-xdist#1386)."""
    if config.getoption("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    class WholeDagGroup(LoadGroupScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return WHOLE_DAG_GROUPS.get(_module(nodeid)) or super()._split_scope(nodeid)

    return WholeDagGroup(config, log)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random-weight Llama (2 layers, 128 wide) with a byte-level BPE
    tokenizer, saved as an ordinary Hugging Face directory."""
    from danlu.model.demo import DemoModelShape, build_demo_model

    root = tmp_path_factory.mktemp("tiny_model")
    corpus = root / "corpus.txt"
    corpus.write_text(_tokenizer_corpus(), encoding="utf-8")
    shape = DemoModelShape(
        vocab_size=2048,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    build_demo_model(root / "model", corpus, shape)
    return root / "model"


@pytest.fixture(scope="session")
def audited_run(tmp_path_factory):
    """One finished, audited tiny run (workflow_utils.build_audited_run), built
    once per session for test_verify and test_tamper, or kept in and reused from
    $DANLU_AUDITED_RUN. Tests that change it must put every byte back
    (test_tamper does), or work on a copy (test_verify)."""
    from workflow_utils import audited_run_at

    kept = os.environ.get("DANLU_AUDITED_RUN")
    return audited_run_at(Path(kept) if kept else tmp_path_factory.mktemp("audited"))


@pytest.fixture(scope="session")
def workflow_project(tmp_path_factory):
    """The tiny three-format project (workflow_utils.make_workflow_project), run
    once per session, and the record of that first run (run_record), taken
    before test_workflow starts editing and rerunning it; beside it, built at
    the same time, the same project again in another directory (`rerun`),
    signed by the same key and with tracking off, for test_reproducible."""
    from types import SimpleNamespace

    from workflow_utils import make_workflow_project, run_record, snakemake_together

    base = tmp_path_factory.mktemp("wf")
    root, again = make_workflow_project(base / "project"), make_workflow_project(base / "again")
    # The rerun is untracked: every file it makes must be the same without MLflow
    # (and its jobs skip MLflow's import, 2.6 s each).
    snakemake_together(root, again, key_dir=base / "keys", untracked=(again,))
    # Later runs in the project (test_workflow's) sign with the same key.
    shutil.copytree(base / "keys", root / ".keys")
    return SimpleNamespace(root=root, first=run_record(root), rerun=run_record(again),
                           key_dir=base / "keys")


@pytest.fixture
def hub_offline(monkeypatch, tmp_path):
    """No hub access, tracking off, a fresh datasets cache, cwd in tmp_path."""
    import datasets
    import huggingface_hub

    monkeypatch.setenv("DANLU_TRACKING_DISABLED", "1")
    # Both libraries read HF_HUB_OFFLINE at import: set what they consult at call time.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    monkeypatch.chdir(tmp_path)
