"""Training: reproducibility, resume after SIGKILL, masking, packing, the
AVX512-BF16 gradient trap, DDP on CPU, and the memory estimate."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from danlu.audit.tracking import StageRun
from danlu.config import TrainConfig, from_mapping, load_config
from danlu.data.tokenize import IGNORE_INDEX, ExampleOptions, tokenize_splits
from danlu.model.loading import load_tokenizer
from danlu.model.train import (
    COMPLETE_MARKER,
    attach_lora,
    load_base,
    make_collator,
    prepare_split,
    run_training,
)

BIN = Path(sys.executable).parent
CUTOFF = {"cutoff_len": 128, "overlength": "truncate"}


def train_cfg(**overrides) -> TrainConfig:
    base = {**load_config(None)["train"], "lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.0,
            "max_steps": 6, "per_device_train_batch_size": 4, "gradient_accumulation_steps": 1,
            "learning_rate": 1e-3, "eval_steps": 3, "save_steps": 2, "save_total_limit": 10,
            "warmup_ratio": 0.0}
    return from_mapping(TrainConfig, {**base, **overrides})


def _records(n: int) -> list[dict]:
    out = []
    for i in range(n):
        messages = [{"role": "user", "content": f"问题{i}：基金{i % 7}的风险如何？"},
                    {"role": "assistant", "content": f"回答{i}：风险等级为{i % 5}，收益率{i}%。"}]
        if i % 3 == 0:  # multi-turn
            messages += [{"role": "user", "content": "还有吗？"},
                         {"role": "assistant", "content": f"补充{i}：注意分散投资。"}]
        out.append({"id": f"r-{i}", "messages": messages})
    return out


@pytest.fixture(scope="module")
def arrow_dir(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("arrow")
    for name, n in (("train", 48), ("val", 8)):
        (root / f"{name}.jsonl").write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in _records(n)), "utf-8")
    tokenizer = load_tokenizer(tiny_model_dir)
    tokenize_splits({"train": root / "train.jsonl", "val": root / "val.jsonl"}, tokenizer,
                    ExampleOptions(), root / "lengths")
    return root / "lengths"


@pytest.fixture(autouse=True)
def _tracking_off(monkeypatch):
    monkeypatch.setenv("DANLU_TRACKING_DISABLED", "1")


def _no_tracking():
    return StageRun("train")


def train(out: Path, arrow_dir: Path, model_dir: Path, cfg: TrainConfig | None = None,
          seed: int = 42) -> dict:
    cfg = cfg or train_cfg()
    return run_training(arrow_dir=arrow_dir, cutoff=CUTOFF, model_dir=model_dir,
                        tokenizer=load_tokenizer(model_dir), cfg=cfg, seed=seed, out_dir=out,
                        run=_no_tracking(), fingerprint={"cfg": cfg.__dict__, "seed": seed})


def losses(out: Path) -> dict[int, float]:
    state = json.loads((out / "trainer_state.json").read_text())
    return {h["step"]: h["loss"] for h in state["log_history"] if "loss" in h}


def test_same_seed_gives_identical_losses_and_loss_falls(tmp_path, arrow_dir, tiny_model_dir):
    cfg = train_cfg(max_steps=12)
    train(tmp_path / "a", arrow_dir, tiny_model_dir, cfg)
    train(tmp_path / "b", arrow_dir, tiny_model_dir, cfg)
    a, b = losses(tmp_path / "a"), losses(tmp_path / "b")
    assert a == b and len(a) == 12
    assert a[12] < a[1]
    for name in ("adapter_config.json", "adapter_model.safetensors", "loss.png",
                 "train_metrics.json", "tokenizer.json"):
        assert (tmp_path / "a" / name).is_file()
    assert json.loads((tmp_path / "a" / "train_metrics.json").read_text())["target_tokens"] > 0


def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path, arrow_dir, tiny_model_dir):
    params = json.dumps({**train_cfg(max_steps=16, save_steps=2).__dict__})
    (tmp_path / "cutoff.json").write_text(json.dumps(CUTOFF))
    env = {**os.environ, "DANLU_TRACKING_DISABLED": "1"}

    def command(out):
        return [str(BIN / "danlu"), "train", "--data", str(arrow_dir), "--cutoff",
                str(tmp_path / "cutoff.json"), "--model", str(tiny_model_dir), "--out", str(out),
                "--params", params]

    subprocess.run(command(tmp_path / "full"), env=env, check=True, capture_output=True)
    out = tmp_path / "killed"
    proc = subprocess.Popen(command(out), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    marker = out / "checkpoints" / "checkpoint-4" / COMPLETE_MARKER
    deadline = time.time() + 300
    while not marker.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "adapter_model.safetensors").exists(), "run finished before the kill"
    # A checkpoint the kill caught half-written must be skipped, not resumed.
    partial = out / "checkpoints" / "checkpoint-14"
    partial.mkdir()
    (partial / "adapter_model.safetensors").write_bytes(b"half")
    done = subprocess.run(command(out), env=env, check=True, capture_output=True, text=True)
    assert "checkpoint-14: incomplete" in done.stdout
    resumed_from = json.loads((out / "train_metrics.json").read_text())["resumed_from_step"]
    assert resumed_from >= 4
    full, again = losses(tmp_path / "full"), losses(out)
    for step in range(resumed_from + 1, 17):
        assert again[step] == pytest.approx(full[step], abs=1e-4), step


def test_prompt_tokens_carry_no_loss(arrow_dir, tiny_model_dir):
    ds = prepare_split(arrow_dir / "train", 128, "truncate")
    tokenizer = load_tokenizer(tiny_model_dir)
    batch = make_collator(tokenizer, packing=True)([ds[i] for i in range(4)])
    ids, labels = batch["input_ids"][0], batch["labels"][0]
    trained = ids[labels != IGNORE_INDEX]
    text = tokenizer.decode(trained)
    assert "问题" not in text and "还有吗" not in text  # user turns
    assert "回答" in text and "<|im_end|>" in text  # answers and their end-of-turn


@pytest.mark.parametrize("quantization", ["nf4", "none"])
def test_packed_and_padded_batches_give_the_same_loss(arrow_dir, tiny_model_dir, quantization):
    ds = prepare_split(arrow_dir / "train", 128, "truncate")
    tokenizer = load_tokenizer(tiny_model_dir)
    cfg = train_cfg(quantization=quantization, gradient_checkpointing=False)
    model = attach_lora(load_base(tiny_model_dir, cfg), cfg, 0)
    model.train()
    feats = [ds[i] for i in range(6)]
    packed = model(**make_collator(tokenizer, True)(feats)).loss
    padded = model(**make_collator(tokenizer, False)(feats)).loss
    assert packed.item() == pytest.approx(padded.item(), abs=1e-5)


def test_packed_rows_hold_every_example_once_within_the_row_bound():
    from danlu.model.train import PackedRows

    rng = torch.Generator().manual_seed(0)
    lengths = torch.randint(5, 300, (40,), generator=rng).tolist()
    feats = [{"input_ids": list(range(1, n + 1)), "labels": list(range(1, n + 1))} for n in lengths]
    batch = PackedRows(512)(feats)
    ids, labels, pos = batch["input_ids"], batch["labels"], batch["position_ids"]
    assert ids.shape[1] <= 512
    starts = (pos == 0) & (ids != 0)  # each example starts at position 0
    assert int(starts.sum()) == len(lengths)
    assert bool((labels[starts] == -100).all())  # never predicted across examples
    assert int((labels != -100).sum()) == sum(n - 1 for n in lengths)
    assert int((ids != 0).sum()) == sum(lengths)


def _lora_grads_after(model, batch, eval_first: bool) -> dict[str, torch.Tensor]:
    with torch.no_grad():  # make B non-zero so every LoRA matrix gets a gradient
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.full_like(p, 0.01))
    if eval_first:
        model.eval()
        with torch.no_grad():
            model(**batch)
    model.train()
    model(**batch).loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()
            if "lora_" in n and p.grad is not None}


def _nonzero(grads) -> int:
    return sum(1 for g in grads.values() if g.abs().sum() > 0)


def test_eval_step_does_not_cost_lora_gradients_on_avx512bf16(arrow_dir, tiny_model_dir):
    import bitsandbytes as bnb
    import bitsandbytes.functional as F

    ds = prepare_split(arrow_dir / "train", 128, "truncate")
    batch = make_collator(load_tokenizer(tiny_model_dir), True)([ds[i] for i in range(4)])
    cfg = train_cfg(gradient_checkpointing=False)
    fresh = _lora_grads_after(attach_lora(load_base(tiny_model_dir, cfg), cfg, 0), batch, False)
    after_eval = _lora_grads_after(attach_lora(load_base(tiny_model_dir, cfg), cfg, 0), batch, True)
    assert _nonzero(after_eval) == _nonzero(fresh) == len(fresh) > 0
    for name, grad in fresh.items():
        assert torch.allclose(after_eval[name], grad, rtol=1e-4, atol=1e-7), name
    if F.has_avx512bf16():  # the trap is real on this CPU: unguarded, gradients go wrong
        model = attach_lora(load_base(tiny_model_dir, cfg), cfg, 0)
        for m in model.modules():
            if isinstance(m, bnb.nn.Linear4bit):
                m.support_avx512bf16_for_cpu = True
        broken = _lora_grads_after(model, batch, True)
        assert any(not torch.allclose(broken[n], g, rtol=1e-2, atol=1e-6) for n, g in fresh.items())


def test_estimate_on_a_local_model_config(tmp_path, tiny_model_dir, capsys):
    import yaml

    from danlu.cli import main

    base = {"base_model": str(tiny_model_dir), "train": {"per_device_train_batch_size": 4},
            "lengths": {"cutoff_len": 512}}
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(base))
    assert main(["estimate", "--config", str(config), "--json"]) == 0
    small = json.loads(capsys.readouterr().out)
    assert small["cutoff_len"] == 512 and small["per_device_gib"] > 0
    assert small["per_device_gib"] == pytest.approx(sum(small["terms_gib"].values()), abs=0.05)
    base["train"]["per_device_train_batch_size"] = 16  # more tokens, more activation memory
    config.write_text(yaml.safe_dump(base))
    assert main(["estimate", "--config", str(config), "--json"]) == 0
    big = json.loads(capsys.readouterr().out)
    assert big["terms_gib"]["activations"] > small["terms_gib"]["activations"]
    assert main(["estimate", "--config", str(config), "--shape", "qwen2.5-7b"]) == 0
    assert "peak per device" in capsys.readouterr().out


def test_nf4_weight_bytes_match_a_hand_calculation():
    """QLoRA (Dettmers et al. 2023, section 3): nf4 stores 4 bits per weight
    plus its block constants, one fp32 absmax per 64 weights (0.5 bits), or
    with double quantisation an 8-bit absmax per 64 weights and one fp32 per
    256 blocks (8/64 + 32/16384 = 0.127 bits)."""
    from danlu.model.estimate import Shape, estimate_memory

    shape = Shape(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                  num_attention_heads=32, num_key_value_heads=32, vocab_size=32000)
    linear = 32 * (4 * 4096 * 4096 + 3 * 4096 * 11008)  # 6,476,005,376 weights
    embed = 2 * 32000 * 4096 * 2  # embeddings and head in 16-bit
    common = dict(quantization="nf4", lora_r=8, lora_target="all-linear", batch_size=1,
                  cutoff_len=512, gradient_checkpointing=True, optim="adamw_torch",
                  packing=True)
    for double_quant, bits in ((True, 4.127), (False, 4.5)):
        got = estimate_memory(shape, double_quant=double_quant, **common)["terms_gib"]["weights"]
        by_hand = (linear * bits / 8 + embed) / 2**30
        assert got == pytest.approx(by_hand, abs=0.01), double_quant
