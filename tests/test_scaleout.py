"""Scale-out: the same DAG planned for SLURM, tracked on an MLflow server, and
dedup sharded across jobs with the same bytes as one job."""

import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from workflow_utils import SNAKEMAKE, TINY_RUN, make_project, snakemake

from danlu.audit.manifest import sha256_file

BIN = Path(sys.executable).parent
_CHARS = "股票债券基金利率贷款保险风险收益资产负债会计税务审计期权期货汇率通胀存款理财信托银行证券"


def _text(seed: int, n: int) -> str:
    """Deterministic, mutually dissimilar Chinese text (so the split has groups)."""
    rng = random.Random(seed)
    return "".join(rng.choice(_CHARS) for _ in range(n))


ALPACA = [{"instruction": f"问题{i}：{_text(i, 24)}？", "input": "", "output": f"{_text(1000 + i, 60)}。"}
          for i in range(30)]
SHAREGPT = [{"conversations": [{"from": "human", "value": f"Question {i}: {_text(2000 + i, 20)}?"},
                               {"from": "gpt", "value": f"Answer {i}: {_text(3000 + i, 40)}."}]}
            for i in range(18)]
DATASETS = [{"name": "alp", "path": "data/alp.jsonl", "format": "alpaca"},
            {"name": "sg", "path": "data/sg.json", "format": "sharegpt"}]


def _write_data(root: Path) -> None:
    (root / "data" / "alp.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ALPACA), "utf-8")
    (root / "data" / "sg.json").write_text(json.dumps(SHAREGPT, ensure_ascii=False), "utf-8")


# --- SLURM: the plan, with each job's resources ------------------------------------------


def _planned_jobs(text: str) -> list[dict]:
    """The jobs of a dry run's output: rule, wildcards, threads, resources, shell."""
    jobs = []
    for block in re.split(r"\n(?=rule \w+:\n)", text):
        m = re.match(r"rule (\w+):\n", block)
        if not m:
            continue
        job = {"rule": m.group(1), "threads": 1, "resources": {}, "wildcards": {}, "shell": ""}
        for line in block.splitlines():
            key, _, value = line.strip().partition(": ")
            if key == "threads":
                job["threads"] = int(value)
            elif key in ("resources", "wildcards"):
                job[key] = dict(item.split("=", 1) for item in value.split(", "))
            elif key == "Shell command":
                job["shell"] = value
        jobs.append(job)
    return jobs


@pytest.fixture(scope="module")
def slurm_plan(tmp_path_factory):
    root = make_project(tmp_path_factory.mktemp("slurm"), DATASETS, {
        **TINY_RUN,
        "dedup": {"shards": 3},
        "train": {**TINY_RUN["train"], "num_processes": 2},
        "resources": {"default": {"slurm_partition": "short", "mem_mb": 4000},
                      "dedup_signatures": {"mem_mb": 16000},
                      "train": {"slurm_partition": "gpu-a100", "mem_mb": 64000, "runtime": 720}},
    })
    _write_data(root)
    # No sbatch, sinfo or sacctmgr on PATH: the virtualenv's commands and `which`
    # (the plugin asks `which sacct` to choose its status command).
    tools = tmp_path_factory.mktemp("bin")
    (tools / "which").symlink_to(shutil.which("which"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DANLU_", "MLFLOW_"))}
    env["PATH"] = os.pathsep.join([str(BIN), str(tools)])
    proc = subprocess.run([SNAKEMAKE, "--profile", "profiles/slurm", "-n", "-F"],
                          cwd=root, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return _planned_jobs(proc.stdout + proc.stderr)


def test_slurm_dry_run_plans_the_whole_dag(slurm_plan):
    rules = {j["rule"] for j in slurm_plan}
    assert {"clean", "clean_combine", "dedup_signatures", "dedup", "split", "tokenize",
            "cutoff", "train", "evaluate", "all"} <= rules
    shards = sorted(j["wildcards"]["shard"] for j in slurm_plan if j["rule"] == "dedup_signatures")
    assert shards == ["0", "1", "2"]


def test_slurm_jobs_carry_partition_memory_and_gpus_from_config(slurm_plan):
    train = next(j for j in slurm_plan if j["rule"] == "train")
    # `gpu` is the resource the SLURM plugin turns into --gpus=N.
    assert train["resources"]["gpu"] == "2"
    assert train["resources"]["slurm_partition"] == "gpu-a100"
    assert train["resources"]["mem_mb"] == "64000" and train["resources"]["runtime"] == "720"
    assert train["shell"].startswith("accelerate launch --num_processes 2 ")
    for job in slurm_plan:
        if job["rule"] in ("clean", "dedup_signatures", "dedup", "split"):
            assert job["resources"]["slurm_partition"] == "short", job
            assert "gpu" not in job["resources"], job
    signatures = [j for j in slurm_plan if j["rule"] == "dedup_signatures"]
    assert {j["resources"]["mem_mb"] for j in signatures} == {"16000"}
    # Rules with no value in config fall back to the profile's defaults.
    assert all(j["resources"]["runtime"] == "120" for j in signatures)


# --- MLflow: a shared tracking server ------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path_factory):
    """`mlflow server` on 127.0.0.1 with a SQLite backend and a local artifact
    root, as docs/scaling.md starts it; stopped when the module's tests end."""
    root = tmp_path_factory.mktemp("mlflow_server")
    port = _free_port()
    with open(root / "server.log", "w") as log:
        proc = subprocess.Popen(
            [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1", "--backend-store-uri", f"sqlite:///{root}/mlflow.db",
             "--artifacts-destination", str(root / "artifacts")],
            cwd=root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise AssertionError((root / "server.log").read_text())
            time.sleep(0.5)
        yield url, root / "artifacts"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and the workers it started
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.slow
def test_runs_and_manifests_land_on_the_tracking_server(tmp_path, mlflow_server):
    from mlflow.tracking import MlflowClient

    url, artifact_root = mlflow_server
    root = make_project(tmp_path, DATASETS,
                        {"tracking": {"tracking_uri": url, "experiment": "scaleout"}})
    _write_data(root)
    snakemake(root, "results/clean/records.jsonl")

    client = MlflowClient(tracking_uri=url)
    exp = client.get_experiment_by_name("scaleout")
    assert exp.artifact_location.startswith("mlflow-artifacts:")  # the server's, not a local path
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    assert sorted(r.data.tags["danlu.stage"] for r in children) == ["clean", "clean", "clean_combine"]

    combine = next(r for r in children if r.data.tags["danlu.stage"] == "clean_combine")
    tags = combine.data.tags
    for name in ("records.jsonl", "rejects.jsonl", "stats.json"):
        path = f"results/clean/{name}"
        assert tags[f"danlu.sha256.output.{path}"] == sha256_file(root / path)
    assert tags["danlu.manifest.sha256"] == sha256_file(root / "results/clean/manifest.json")
    # The manifest went through the server into its artifact root, byte for byte.
    assert [a.path for a in client.list_artifacts(combine.info.run_id)] == ["manifest.json"]
    stored = artifact_root / exp.experiment_id / combine.info.run_id / "artifacts" / "manifest.json"
    assert stored.read_bytes() == (root / "results/clean/manifest.json").read_bytes()
    # Nothing was tracked locally.
    assert not (root / "results" / "mlflow.db").exists()
    assert not (root / "results" / "mlruns").exists()


# --- dedup across shards -----------------------------------------------------------------

DEDUP_OUTPUTS = ["records.jsonl", "removed.jsonl", "clusters.jsonl", "stats.json",
                 "train.jsonl", "val.jsonl", "split_stats.json"]


def _dedup_project(root: Path, shards: int) -> Path:
    root.mkdir()
    make_project(root, DATASETS, {"dedup": {"shards": shards, "val_size": 0.25},
                                  "tracking": {"enabled": False}})
    _write_data(root)
    # Planted duplicates: exact copies and one-character edits of long records.
    with open(root / "data" / "alp.jsonl", "a", encoding="utf-8") as fh:
        for i in (3, 11, 17):
            fh.write(json.dumps(ALPACA[i], ensure_ascii=False) + "\n")
            near = {**ALPACA[i], "output": ALPACA[i]["output"].replace("。", "！")}
            fh.write(json.dumps(near, ensure_ascii=False) + "\n")
    snakemake(root, *(f"results/dedup/{name}" for name in DEDUP_OUTPUTS))
    return root


@pytest.mark.slow
def test_three_dedup_shards_give_the_bytes_of_one(tmp_path):
    one = _dedup_project(tmp_path / "one", shards=1)
    three = _dedup_project(tmp_path / "three", shards=3)
    assert len(list((three / "results/dedup/signatures").glob("shard-*.sig.npy"))) == 3
    assert len(list((one / "results/dedup/signatures").glob("shard-*.sig.npy"))) == 1
    stats = json.loads((one / "results/dedup/stats.json").read_text("utf-8"))
    assert stats["removed_by_reason"] == {"exact": 3, "near": 3}  # the planted ones
    assert (one / "results/dedup/val.jsonl").stat().st_size > 0
    for name in DEDUP_OUTPUTS:
        assert (three / "results/dedup" / name).read_bytes() == \
            (one / "results/dedup" / name).read_bytes(), name

