"""A clean rerun reproduces every data artifact byte for byte and the CPU
training losses exactly; what cannot be byte-identical is named, with the
reason, in its manifest's `nondeterministic`."""

import json

import pytest
from workflow_utils import TINY_RUN, make_project, snakemake

from danlu.audit.verify import find_manifests

pytestmark = pytest.mark.slow

ALPACA = [{"instruction": f"第{i}个问题：债券{i}的久期是多少？", "output": f"答{i}：久期约为{i % 9 + 1}年。"}
          for i in range(24)]


def _run(root, key_dir):
    root.mkdir()
    make_project(root, [{"name": "alp", "path": "data/alp.jsonl", "format": "alpaca"}], TINY_RUN)
    (root / "data" / "alp.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ALPACA), "utf-8")
    snakemake(root, key_dir=key_dir)  # one signer, as on a user's machine
    outputs, excused = {}, {}
    for manifest in find_manifests(root / "results"):
        data = json.loads(manifest.read_text("utf-8"))
        excused.update(data["nondeterministic"])
        outputs.update({e["path"]: e["sha256"] for e in data["outputs"]})
    losses = [h["loss"] for h in json.loads(
        (root / "results/train/trainer_state.json").read_text())["log_history"] if "loss" in h]
    return outputs, excused, losses


def test_clean_rerun_reproduces_every_data_artifact_and_the_losses(tmp_path):
    first, excused, losses_a = _run(tmp_path / "a", tmp_path / "keys")
    second, _, losses_b = _run(tmp_path / "b", tmp_path / "keys")
    assert losses_a == losses_b and losses_a
    assert set(first) == set(second)
    differing = sorted(p for p in first if first[p] != second[p])
    assert [p for p in differing if p not in excused] == []
    for path in differing:  # every excuse gives its reason
        assert excused[path].strip()
