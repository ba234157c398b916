"""Benchmark: danlu's training path against the plain recipe, same model, data and steps.

  baseline  transformers Trainer + peft LoRA on the same nf4 base
            (prepare_model_for_kbit_training, gradient checkpointing),
            padded batches, no packing;
  danlu     danlu.train: the same base and LoRA, padding-free packing, no KV
            cache in training, Liger kernels where available.

Both see the same examples in the same order for the same number of optimizer
steps; throughput counts only non-padding target tokens (labels != -100), the
first step of each arm (kernel warm-up) excluded. Each arm runs in a fresh
child process so its peak memory (CUDA allocator peak, or the process's peak
RSS on CPU) is its own. The last line is one JSON object.

    python scripts/bench_train.py                       # CPU, demo-sized model
    python scripts/bench_train.py --model-shape 7b      # GPU, 7B-shaped random Llama
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import tempfile
import time
from pathlib import Path

import numpy as np

SHAPES = {
    # the demo model's shape (src/danlu/demo.py)
    "demo": dict(vocab_size=6144, hidden_size=256, intermediate_size=512, num_hidden_layers=4,
                 num_attention_heads=4, num_key_value_heads=2),
}


def model_shape(name: str) -> dict:
    if name in SHAPES:
        return SHAPES[name]
    from danlu.estimate import SHAPES as KNOWN

    return KNOWN[name]


def build_model(shape: dict, out: Path, seed: int) -> None:
    """A random-weight Llama of this shape, saved as a Hugging Face directory."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**shape, max_position_embeddings=4096, tie_word_embeddings=False,
                         pad_token_id=0, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    with torch.device(device):
        model = LlamaForCausalLM(config).to(dtype)
    model.save_pretrained(out)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()  # the arms' processes need the memory


def make_examples(n: int, vocab: int, cutoff: int, seed: int) -> list[dict]:
    """Chat-like examples: log-normal prompt and answer lengths (a long tail,
    as in real instruction data), prompt tokens masked."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        prompt = int(np.clip(rng.lognormal(4.6, 0.7), 8, cutoff // 2))
        answer = int(np.clip(rng.lognormal(4.8, 0.8), 4, cutoff - prompt))
        ids = rng.integers(3, vocab, size=prompt + answer).tolist()
        out.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:]})
    return out


def run_arm(arm: str, model_dir: str, examples: list[dict], args, queue) -> None:
    import torch
    from transformers import Trainer, TrainerCallback

    from danlu.config import TrainConfig, from_mapping, load_config
    from danlu.train import (
        _trainer_classes,
        attach_lora,
        load_base,
        make_collator,
        pack_row_tokens,
        training_arguments,
    )

    cuda = torch.cuda.is_available()
    cfg = from_mapping(TrainConfig, {
        **load_config(None)["train"], "max_steps": args.steps, "lora_r": 16, "lora_alpha": 32,
        "lora_dropout": 0.0, "per_device_train_batch_size": args.batch_size,
        "gradient_accumulation_steps": 1, "save_steps": 10**6, "logging_steps": 10**6,
        "warmup_ratio": 0.0, "packing": arm == "danlu",
        "use_liger_kernel": "auto" if arm == "danlu" else "false",
    })
    tokenizer = _PadOnly()
    base = load_base(model_dir, cfg)
    if cuda:  # the peak of training, over the loaded weights
        torch.cuda.reset_peak_memory_stats()
    if arm == "danlu":
        model = attach_lora(base, cfg, args.seed)
    else:  # the plain recipe, as peft's and transformers' docs write it
        from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

        base = prepare_model_for_kbit_training(
            base, gradient_checkpointing_kwargs={"use_reentrant": False})
        model = get_peft_model(base, LoraConfig(
            r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
            target_modules="all-linear", task_type="CAUSAL_LM"))
    with tempfile.TemporaryDirectory() as tmp:
        targs = training_arguments(cfg, args.seed, Path(tmp), has_eval=False)
        targs.save_strategy = "no"

        class Clock(TrainerCallback):
            started = None

            def on_step_end(self, a, state, control, **kw):
                if state.global_step == 1:  # exclude the first step's kernel warm-up
                    if cuda:
                        torch.cuda.synchronize()
                    Clock.started = time.perf_counter()

        danlu_trainer = _trainer_classes()[0]
        cls = danlu_trainer if arm == "danlu" else _counting(Trainer)
        rows = pack_row_tokens(model.config._attn_implementation, args.cutoff)
        trainer = cls(model=model, args=targs, train_dataset=_ListDataset(examples),
                      data_collator=make_collator(tokenizer, arm == "danlu", rows),
                      callbacks=[Clock()])
        trainer.train()
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - Clock.started
    per_step = trainer.target_tokens / args.steps  # same examples each step in both arms
    if cuda:
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put({"arm": arm, "tokens_per_s": per_step * (args.steps - 1) / seconds,
               "peak_mem_mb": peak, "target_tokens": trainer.target_tokens,
               "liger": bool(targs.use_liger_kernel)})


class _PadOnly:
    """What DataCollatorForSeq2Seq needs of a tokenizer for token-id data."""

    pad_token_id = 0
    padding_side = "right"

    def pad(self, features, padding=True, max_length=None, pad_to_multiple_of=None,
            return_tensors="pt"):
        import torch

        width = max(len(f["input_ids"]) for f in features)
        if pad_to_multiple_of:
            width = -(-width // pad_to_multiple_of) * pad_to_multiple_of
        ids = torch.zeros((len(features), width), dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, f in enumerate(features):
            ids[i, : len(f["input_ids"])] = torch.tensor(f["input_ids"])
            mask[i, : len(f["input_ids"])] = 1
        return {"input_ids": ids, "attention_mask": mask}


def _counting(trainer_cls):
    class Counting(trainer_cls):
        target_tokens = 0

        def training_step(self, model, inputs, num_items_in_batch=None):
            self.target_tokens += int((inputs["labels"] != -100).sum())
            return super().training_step(model, inputs, num_items_in_batch)

    return Counting


class _ListDataset:
    def __init__(self, rows):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-shape", default="demo", help="demo, 7b, qwen2.5-7b, llama3-8b")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--cutoff", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", help="where the random model is written (default: a temp dir)")
    args = parser.parse_args()

    import torch

    shape = model_shape(args.model_shape)
    examples = make_examples(args.steps * args.batch_size, shape["vocab_size"], args.cutoff,
                             args.seed)
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        started = time.perf_counter()
        build_model(shape, Path(tmp) / "model", args.seed)
        print(f"built {args.model_shape} model in {time.perf_counter() - started:.1f} s", flush=True)
        results = {}
        for arm in ("baseline", "danlu"):
            queue = ctx.Queue()
            proc = ctx.Process(target=run_arm, args=(arm, str(Path(tmp) / "model"), examples,
                                                     args, queue))
            proc.start()
            results[arm] = queue.get()
            proc.join()
            print(json.dumps(results[arm]), flush=True)
    base, ours = results["baseline"], results["danlu"]
    assert base["target_tokens"] == ours["target_tokens"], "arms trained on different tokens"
    print(json.dumps({
        "model_shape": args.model_shape,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "steps": args.steps,
        "batch_size": args.batch_size,
        "target_tokens": ours["target_tokens"],
        "baseline_tokens_per_s": round(base["tokens_per_s"], 1),
        "danlu_tokens_per_s": round(ours["tokens_per_s"], 1),
        "speedup": round(ours["tokens_per_s"] / base["tokens_per_s"], 3),
        "baseline_peak_mem_mb": round(base["peak_mem_mb"], 1),
        "danlu_peak_mem_mb": round(ours["peak_mem_mb"], 1),
        "mem_ratio": round(ours["peak_mem_mb"] / base["peak_mem_mb"], 3),
        "liger_kernel": ours["liger"],
    }))


if __name__ == "__main__":
    main()
