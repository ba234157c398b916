"""Benchmark: danlu's training path against the plain recipe, same model, data and steps.

  baseline         transformers Trainer + peft LoRA on the same nf4 base
                   (prepare_model_for_kbit_training, gradient checkpointing),
                   padded batches, no packing;
  group_by_length  the same, with the Trainer's length-grouped sampler switched on
                   (`group_by_length=True`, in transformers 5
                   `train_sampling_strategy="group_by_length"`): the padding cure any
                   Trainer user has at hand;
  danlu            danlu.model.train: the same base and LoRA, padding-free packing, no KV
                   cache in training, Liger kernels where available.

All arms train on the same examples for the same number of optimizer steps (one
epoch: every example exactly once; group_by_length only reorders them). Throughput
counts only non-padding target tokens (labels != -100) of the steps after the first:
the first step (kernel warm-up) is excluded from both the time and the tokens, which
matters because the length-grouped sampler puts the longest batch first. Each run is
a fresh child process, so its peak memory (CUDA allocator peak, or the process's peak
RSS on CPU) is its own. The arms alternate (round 1: A B C, round 2: B C A, ...) and
repeat `--repeats` times, so that drifting load on a shared machine falls on all arms
and no arm always runs first; the summary gives each arm's median, min and max. The
last line is one JSON object.

    python scripts/bench_train.py                       # CPU, demo-sized model
    python scripts/bench_train.py --model-shape 7b      # GPU, 7B-shaped random Llama
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import queue as queues
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

ARMS = ("baseline", "group_by_length", "danlu")
SHAPES = {
    # the demo model's shape (src/danlu/model/demo.py)
    "demo": dict(
        vocab_size=6144,
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
    ),
    # the test suite's tiny model: only for checking that the script runs
    "tiny": dict(
        vocab_size=1024,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
    ),
}


def model_shape(name: str) -> dict:
    if name in SHAPES:
        return SHAPES[name]
    from danlu.model.estimate import SHAPES as KNOWN

    return KNOWN[name]


def build_model(shape: dict, out: Path, seed: int) -> None:
    """A random-weight Llama of this shape, saved as a Hugging Face directory."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        **shape,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
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


def schedule(repeats: int, arms=ARMS) -> list[tuple[int, str]]:
    """(round, arm) in run order: every round runs each arm once, and the starting
    arm rotates, so each arm takes each position in turn."""
    order = []
    for r in range(repeats):
        start = r % len(arms)
        order += [(r, arm) for arm in arms[start:] + arms[:start]]
    return order


# ---- one run (in a child process) -------------------------------------------------------


def train_config(arm: str, args):
    from danlu.config import TrainConfig, from_mapping, load_config

    return from_mapping(
        TrainConfig,
        {
            **load_config(None)["train"],
            "max_steps": args.steps,
            "lora_r": 16,
            "lora_alpha": 32,
            "lora_dropout": 0.0,
            "per_device_train_batch_size": args.batch_size,
            "gradient_accumulation_steps": 1,
            "save_steps": 10**6,
            "logging_steps": 10**6,
            "warmup_ratio": 0.0,
            "packing": arm == "danlu",
            "use_liger_kernel": "auto" if arm == "danlu" else "false",
        },
    )


def plain_lora(base, cfg):
    """The plain recipe, as peft's and transformers' docs write it."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    base = prepare_model_for_kbit_training(
        base, gradient_checkpointing_kwargs={"use_reentrant": False}
    )
    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=0.0,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(base, lora)


def group_by_length(targs) -> None:
    """Switch on the Trainer's LengthGroupedSampler. transformers 5 replaced the
    `group_by_length=True` flag with this sampler choice; older versions have the flag."""
    if hasattr(targs, "train_sampling_strategy"):
        targs.train_sampling_strategy = "group_by_length"
    else:
        targs.group_by_length = True


def step_clock(cuda: bool):
    """A TrainerCallback that notes the time and the target tokens seen so far at the end
    of step 1, so that the first step (kernel warm-up) is left out of both. Its `trainer`
    is set once the trainer exists."""
    import torch
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        started, tokens_at_start, trainer = None, 0, None

        def on_step_end(self, a, state, control, **kw):
            if state.global_step == 1:
                if cuda:
                    torch.cuda.synchronize()
                self.started = time.perf_counter()
                self.tokens_at_start = self.trainer.target_tokens

    return StepClock()


def run_arm(arm: str, model_dir: str, examples: list[dict], args, queue) -> None:
    import torch
    from transformers import Trainer

    from danlu.model.train import (
        _trainer_classes,
        attach_lora,
        load_base,
        make_collator,
        pack_row_tokens,
        training_arguments,
    )

    cuda = torch.cuda.is_available()
    cfg = train_config(arm, args)
    base = load_base(model_dir, cfg)
    if cuda:  # the peak of training, over the loaded weights
        torch.cuda.reset_peak_memory_stats()
    model = attach_lora(base, cfg, args.seed) if arm == "danlu" else plain_lora(base, cfg)
    with tempfile.TemporaryDirectory() as tmp:
        targs = training_arguments(cfg, args.seed, Path(tmp), has_eval=False)
        targs.save_strategy = "no"
        if arm == "group_by_length":
            group_by_length(targs)
        cls = _trainer_classes()[0] if arm == "danlu" else _counting(Trainer)
        rows = pack_row_tokens(model.config._attn_implementation, args.cutoff)
        clock = step_clock(cuda)
        trainer = cls(
            model=model,
            args=targs,
            train_dataset=_ListDataset(examples),
            data_collator=make_collator(_PadOnly(), arm == "danlu", rows),
            callbacks=[clock],
        )
        clock.trainer = trainer
        trainer.train()
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - clock.started
    queue.put(
        {
            "arm": arm,
            "tokens_per_s": (trainer.target_tokens - clock.tokens_at_start) / seconds,
            "peak_mem_mb": _peak_mem_mb(cuda),
            "target_tokens": trainer.target_tokens,
            "liger": bool(targs.use_liger_kernel),
            # which sampler ran, so the JSON shows the group_by_length arm really grouped
            "sampler": type(trainer._get_train_sampler()).__name__,
        }
    )


def _peak_mem_mb(cuda: bool) -> float:
    if cuda:
        import torch

        return torch.cuda.max_memory_allocated() / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


class _PadOnly:
    """What DataCollatorForSeq2Seq needs of a tokenizer for token-id data."""

    pad_token_id = 0
    padding_side = "right"

    def pad(
        self, features, padding=True, max_length=None, pad_to_multiple_of=None, return_tensors="pt"
    ):
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


# ---- the benchmark -------------------------------------------------------------------------


def run_child(ctx, arm: str, model_dir: Path, examples: list[dict], args) -> dict:
    """run_arm in a fresh process; fails (instead of waiting forever) if the child dies."""
    queue = ctx.Queue()
    proc = ctx.Process(target=run_arm, args=(arm, str(model_dir), examples, args, queue))
    proc.start()
    while True:
        try:
            result = queue.get(timeout=5)
            break
        except queues.Empty:
            if not proc.is_alive():
                raise RuntimeError(f"{arm} run died (exit code {proc.exitcode})") from None
    proc.join()
    return result


def summarise(runs: list[dict], args, device: str) -> dict:
    """The JSON summary: medians per arm (the keys users already read), each run,
    and min/max as the spread."""
    by_arm = {arm: [r for r in runs if r["arm"] == arm] for arm in ARMS}
    tokens = {r["target_tokens"] for r in runs}
    assert len(tokens) == 1, f"arms trained on different tokens: {sorted(tokens)}"
    speed = {arm: [r["tokens_per_s"] for r in by_arm[arm]] for arm in ARMS}
    mem = {arm: [r["peak_mem_mb"] for r in by_arm[arm]] for arm in ARMS}
    median = {arm: statistics.median(v) for arm, v in speed.items()}
    peak = {arm: max(v) for arm, v in mem.items()}  # a peak is the highest seen
    out = {
        "model_shape": args.model_shape,
        "device": device,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "target_tokens": tokens.pop(),
        "speedup": round(median["danlu"] / median["baseline"], 3),
        "speedup_vs_group_by_length": round(median["danlu"] / median["group_by_length"], 3),
        # per round: each ratio from runs next to each other in time
        "speedup_runs": _ratios(speed["danlu"], speed["baseline"]),
        "speedup_vs_group_by_length_runs": _ratios(speed["danlu"], speed["group_by_length"]),
        "mem_ratio": round(peak["danlu"] / peak["baseline"], 3),
        "mem_ratio_vs_group_by_length": round(peak["danlu"] / peak["group_by_length"], 3),
        "liger_kernel": by_arm["danlu"][0]["liger"],
    }
    for arm in ARMS:
        out |= {
            f"{arm}_tokens_per_s": round(median[arm], 1),
            f"{arm}_tokens_per_s_min": round(min(speed[arm]), 1),
            f"{arm}_tokens_per_s_max": round(max(speed[arm]), 1),
            f"{arm}_tokens_per_s_runs": [round(x, 1) for x in speed[arm]],
            f"{arm}_peak_mem_mb": round(peak[arm], 1),
            f"{arm}_peak_mem_mb_runs": [round(x, 1) for x in mem[arm]],
        }
    return out


def _ratios(ours: list[float], theirs: list[float]) -> list[float]:
    return [round(a / b, 3) for a, b in zip(ours, theirs, strict=True)]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model-shape", default="demo", help="demo, tiny, 7b, qwen2.5-7b, llama3-8b"
    )
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--cutoff", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each arm")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", help="where the random model is written (default: a temp dir)")
    args = parser.parse_args(argv)
    if args.steps < 2 or args.repeats < 1:
        parser.error("--steps must be at least 2 (the first is not timed), --repeats at least 1")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    import torch

    shape = model_shape(args.model_shape)
    examples = make_examples(
        args.steps * args.batch_size, shape["vocab_size"], args.cutoff, args.seed
    )
    ctx = mp.get_context("spawn")
    runs = []
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        model_dir = Path(tmp) / "model"
        started = time.perf_counter()
        build_model(shape, model_dir, args.seed)
        print(
            f"built {args.model_shape} model in {time.perf_counter() - started:.1f} s", flush=True
        )
        for n, arm in schedule(args.repeats):
            runs.append({"round": n, **run_child(ctx, arm, model_dir, examples, args)})
            print(json.dumps(runs[-1]), flush=True)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    summary = summarise(runs, args, device)
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
