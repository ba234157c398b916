"""Training on 2 processes (DDP over gloo on the CPU), launched the way the
train rule launches it when train.num_processes > 1: both ranks step, and
only rank 0 writes the adapter, the reports, the manifest and the records."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from danlu.config import load_config
from danlu.data.tokenize import ExampleOptions, tokenize_splits
from danlu.model.loading import load_tokenizer

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# Every file a rank-1 process opens for writing, creates, renames or removes
# under DANLU_TEST_OUT, appended to DANLU_TEST_WRITES (Python's audit hooks).
SITECUSTOMIZE = '''
import os, sys

if os.environ.get("RANK") == "1" and os.environ.get("DANLU_TEST_OUT"):
    _OUT = os.environ["DANLU_TEST_OUT"]
    _LOG = os.environ["DANLU_TEST_WRITES"]
    _WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

    def _hook(event, args):
        if event == "open":
            path, mode, flags = args
            writes = bool((flags or 0) & _WRITE) or any(c in str(mode or "") for c in "wax+")
        elif event in ("os.mkdir", "os.rename", "os.remove", "os.rmdir", "shutil.rmtree"):
            path, writes = args[0], True
        else:
            return
        if writes and isinstance(path, (str, bytes, os.PathLike)):
            path = os.path.abspath(os.fsdecode(path))
            if path.startswith(_OUT + os.sep) or path == _OUT:
                with open(_LOG, "a") as fh:
                    fh.write(f"{event} {os.path.relpath(path, _OUT)}\\n")

    sys.addaudithook(_hook)
'''


def _records(n: int, offset: int = 0) -> list[dict]:
    return [{"id": f"r-{offset + i}", "messages": [
        {"role": "user", "content": f"问题{offset + i}：基金{i % 7}的风险如何？"},
        {"role": "assistant", "content": f"回答{offset + i}：风险等级为{i % 5}，收益率{i}%。"}]}
        for i in range(n)]


@pytest.fixture(scope="module")
def arrow_dir(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("ddp_data")
    for name, n, offset in (("train", 32, 0), ("val", 4, 100)):
        (root / f"{name}.jsonl").write_text("".join(
            json.dumps(r, ensure_ascii=False) + "\n" for r in _records(n, offset)), "utf-8")
    tokenize_splits({"train": root / "train.jsonl", "val": root / "val.jsonl"},
                    load_tokenizer(tiny_model_dir), ExampleOptions(), root / "lengths")
    return root / "lengths"


def test_two_process_ddp_on_cpu_steps_on_both_ranks_and_writes_once(
        tmp_path, arrow_dir, tiny_model_dir):
    params = {**load_config(None)["train"], "max_steps": 4, "per_device_train_batch_size": 2,
              "gradient_accumulation_steps": 1, "save_steps": 2, "eval_steps": 2,
              "lora_r": 4, "lora_alpha": 8, "warmup_ratio": 0.0, "num_processes": 2,
              "accelerate_config": "config/accelerate/ddp.yaml"}  # nf4, as the rule runs it
    cutoff = tmp_path / "cutoff.json"
    cutoff.write_text(json.dumps({"cutoff_len": 128, "overlength": "truncate"}))
    out = tmp_path / "train"
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DANLU_", "MLFLOW_"))}
    env.update(
        PATH=f"{BIN}{os.pathsep}{env['PATH']}", PYTHONPATH=str(site), OMP_NUM_THREADS="1",
        DANLU_TEST_OUT=str(out), DANLU_TEST_WRITES=str(tmp_path / "rank1_writes.txt"),
        MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path}/mlflow.db",
        DANLU_AUDIT_LOG=str(tmp_path / "audit.jsonl"),
    )
    # What train_launcher() in workflow/rules/common.smk builds for these settings.
    launcher = ["accelerate", "launch", "--num_processes", "2",
                "--config_file", str(REPO / params["accelerate_config"]), "-m", "danlu.cli"]
    proc = subprocess.run(
        [*launcher, "train", "--data", str(arrow_dir), "--cutoff", str(cutoff),
         "--out", str(out), "--seed", "42", "--model", str(tiny_model_dir),
         "--params", json.dumps(params)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log

    # Both ranks stepped, in one world of two.
    assert "train: rank 0 of 2 finished 4 steps" in log, log
    assert "train: rank 1 of 2 finished 4 steps" in log, log
    assert '"world_size": 2' in log

    # Rank 0 wrote the outputs and recorded the job once.
    for name in ("adapter_model.safetensors", "adapter_config.json", "trainer_state.json",
                 "train_metrics.json", "loss.png", "manifest.json"):
        assert (out / name).is_file(), name
    assert log.count("train: manifest ") == 1
    audit = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [e["stage"] for e in audit] == ["train"]
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 4

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert [r.data.tags["danlu.stage"] for r in runs] == ["train"]

    # Rank 1 wrote nothing of danlu's: only the Trainer's per-rank RNG state in
    # each checkpoint (which resuming needs from every rank).
    writes = (tmp_path / "rank1_writes.txt")
    written = sorted(set(writes.read_text().splitlines())) if writes.exists() else []
    assert written, "the audit hook saw nothing: is it installed in rank 1?"
    assert all(line.split(" ", 1)[1].startswith("checkpoints") for line in written), written
    files = {line.split(" ", 1)[1] for line in written if line.startswith("open ")}
    assert files <= {f"checkpoints/checkpoint-{s}/rng_state_1.pth" for s in (2, 4)}, files
