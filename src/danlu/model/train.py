"""Train: QLoRA (or plain LoRA) with the transformers Trainer, packing,
checkpoints that survive `kill -9`, and live metrics.

Design, in the spirit of nanoGPT's flat files:
  - the data are the Arrow sets the lengths stage wrote, cut to `cutoff_len`
    with the same `truncate_example` whose effect cutoff.json predicted;
  - the model is the base in nf4 (bitsandbytes, double quantisation) with
    peft LoRA on `lora_target`; `quantization: none` gives full-precision LoRA;
  - the loop is the stock Trainer, subclassed only to count target tokens.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch

from danlu.config import ConfigError, TrainConfig, from_mapping, stage_params
from danlu.data.tokenize import build_example, truncate_example  # noqa: F401  (one builder, shared)
from danlu.model.loading import (
    load_model,
    model_facts,
    model_inputs,
    resolve_dtype,
    sharded_training,
)

COMPLETE_MARKER = "danlu_complete.json"
FINGERPRINT = "danlu_fingerprint.json"


# --- checks before any weight loads ------------------------------------------------


def linear_module_names(model_dir: Path, trust_remote_code: bool = False) -> set[str]:
    """Leaf names of the model's Linear layers, from its config on the meta
    device (no weights read), to check `lora_target` before loading."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    return {name.rsplit(".", 1)[-1] for name, m in model.named_modules()
            if isinstance(m, torch.nn.Linear)}


def check_config(cfg: TrainConfig, model_dir: Path, cutoff_len: int, model_max: int | None,
                 trust_remote_code: bool = False) -> None:
    """One-line ConfigErrors for what would otherwise fail after minutes of loading."""
    if model_max and cutoff_len > model_max:
        raise ConfigError(f"train: cutoff_len {cutoff_len} exceeds the model's context ({model_max})")
    if cfg.lora_target != "all-linear":
        targets = [cfg.lora_target] if isinstance(cfg.lora_target, str) else list(cfg.lora_target)
        known = linear_module_names(model_dir, trust_remote_code)
        unknown = [t for t in targets if t not in known]
        if unknown:
            raise ConfigError(f"train: lora_target {unknown} not in the model's linear layers "
                              f"({', '.join(sorted(known))})")
    if cfg.quantization == "nf4":
        reason = four_bit_unavailable()
        if reason:
            raise ConfigError(f"train: quantization nf4 is not possible here: {reason}; "
                              "set train.quantization: none for full-precision LoRA")


def four_bit_unavailable() -> str | None:
    """Why bitsandbytes 4-bit cannot run here, or None if it can."""
    try:
        import bitsandbytes  # noqa: F401
    except Exception as err:  # noqa: BLE001 - any import failure means no 4-bit
        return f"bitsandbytes does not import ({err.__class__.__name__})"
    if not torch.cuda.is_available():
        from packaging.version import Version

        if Version(bitsandbytes.__version__) < Version("0.48"):
            return f"bitsandbytes {bitsandbytes.__version__} has no CPU 4-bit kernels (need >= 0.48)"
    return None


# --- model ----------------------------------------------------------------------------


def load_base(model_dir: Path | str, cfg: TrainConfig, trust_remote_code: bool = False):
    """The base model as training needs it (see models.load_model)."""
    return load_model(model_dir, quantization=cfg.quantization, double_quant=cfg.double_quant,
                      compute_dtype=cfg.compute_dtype, attn_implementation=cfg.attn_implementation,
                      trust_remote_code=trust_remote_code)


def keep_4bit_trainable(model) -> int:
    """Stop bitsandbytes from repacking 4-bit weights into its inference-only
    CPU kernel (AVX512-BF16) during eval: after that repack, backward silently
    loses most LoRA gradients. Returns the number of layers switched."""
    try:
        import bitsandbytes as bnb
    except ImportError:
        return 0
    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    for layer in layers:
        layer.support_avx512bf16_for_cpu = False
    return len(layers)


def sort_adapter_targets(config_path: Path) -> None:
    """peft keeps target_modules as a set and writes it in hash order, which
    changes between processes; sorted, the file is the same on every rerun."""
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if isinstance(config.get("target_modules"), list):
        config["target_modules"] = sorted(config["target_modules"])
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def attach_lora(model, cfg: TrainConfig, seed: int):
    """prepare_model_for_kbit_training (4-bit) + a peft LoRA adapter."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import set_seed

    # With a KV cache transformers cannot see packed sequences in position_ids
    # and lets packed examples attend to each other; training never needs one.
    model.config.use_cache = False
    if cfg.quantization == "nf4" and sharded_training():
        # FSDP flattens parameters of one dtype: no fp32 layer norms (as TRL does).
        keep_4bit_trainable(model)
        if cfg.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.enable_input_require_grads()
    elif cfg.quantization == "nf4":
        keep_4bit_trainable(model)
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=cfg.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    elif cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    set_seed(seed)  # LoRA's A matrices are random: same seed, same start
    lora = LoraConfig(
        r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
        target_modules=cfg.lora_target, use_dora=cfg.use_dora, use_rslora=cfg.use_rslora,
        modules_to_save=cfg.modules_to_save or None, task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


# --- data ------------------------------------------------------------------------------


def prepare_split(arrow_dir: Path, cutoff_len: int, overlength: str):
    """Load a tokenised split and cut it to cutoff_len; dropped examples leave."""
    import datasets

    datasets.disable_progress_bars()
    ds = datasets.load_from_disk(str(arrow_dir))

    def cut(batch):
        ids, labels, keep = [], [], []
        for i, lab in zip(batch["input_ids"], batch["labels"], strict=True):
            new_ids, new_labels, outcome = truncate_example(i, lab, cutoff_len, overlength)
            ids.append(new_ids)
            labels.append(new_labels)
            keep.append(outcome != "dropped")
        return {"input_ids": ids, "labels": labels, "keep": keep}

    ds = ds.map(cut, batched=True, remove_columns=[c for c in ds.column_names
                                                  if c not in ("input_ids", "labels")],
                new_fingerprint=f"cut-{cutoff_len}-{overlength}-{ds._fingerprint}")
    return ds.filter(lambda k: k, input_columns="keep").remove_columns("keep")


class PackedRows:
    """Padding-free packing into rows of at most `row_tokens` tokens.

    Examples are placed first-fit-decreasing into rows; inside a row they are
    concatenated, position ids restart at each example (so transformers masks
    attention between them) and the first label of each is -100 (it would
    otherwise be predicted from the previous example). Only row ends are padded.
    With one row this is transformers' DataCollatorWithFlattening; bounding the
    row keeps SDPA/eager attention, which is quadratic in the row, cheap
    (flash-attention's varlen kernels need no bound).
    """

    def __init__(self, row_tokens: int | None, pad_id: int = 0):
        self.row_tokens, self.pad_id = row_tokens, pad_id

    def rows(self, lengths: list[int]) -> list[list[int]]:
        cap = self.row_tokens or sum(lengths)
        rows: list[list[int]] = []
        space: list[int] = []
        for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
            slot = next((r for r, free in enumerate(space) if free >= lengths[i]), None)
            if slot is None:
                rows.append([])
                space.append(max(cap, lengths[i]))
                slot = len(rows) - 1
            rows[slot].append(i)
            space[slot] -= lengths[i]
        return [sorted(r) for r in rows]  # input order inside a row: deterministic

    def __call__(self, features: list[dict]) -> dict:
        rows = self.rows([len(f["input_ids"]) for f in features])
        width = max(sum(len(features[i]["input_ids"]) for i in r) for r in rows)
        width = -(-width // 64) * 64  # few distinct shapes: GPU kernels are chosen once per shape
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        positions = torch.zeros((len(rows), width), dtype=torch.long)
        for r, members in enumerate(rows):
            at = 0
            for i in members:
                n = len(features[i]["input_ids"])
                ids[r, at : at + n] = torch.as_tensor(features[i]["input_ids"])
                labels[r, at + 1 : at + n] = torch.as_tensor(features[i]["labels"][1:])
                positions[r, at : at + n] = torch.arange(n)
                at += n
            positions[r, at:] = torch.arange(width - at)  # the padding is a sequence of its own
        return {"input_ids": ids, "labels": labels, "position_ids": positions}


def make_collator(tokenizer, packing: bool, row_tokens: int | None = None):
    """Packing (see PackedRows; `row_tokens` None = one row per batch) or
    classic padded batches."""
    from transformers import DataCollatorForSeq2Seq

    if packing:
        return PackedRows(row_tokens, tokenizer.pad_token_id or 0)
    return DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100,
                                  pad_to_multiple_of=8, return_tensors="pt")


def pack_row_tokens(attn_implementation: str, cutoff_len: int) -> int | None:
    """Rows as long as cutoff_len for quadratic attention kernels; one row for
    flash-attention, whose varlen kernels cost only what each example costs."""
    return None if attn_implementation.startswith("flash_attention") else cutoff_len


# --- checkpoints -----------------------------------------------------------------------


def latest_complete_checkpoint(ckpt_dir: Path, fingerprint: dict) -> tuple[Path | None, list[str]]:
    """The newest checkpoint marked complete by this same configuration; moves
    incomplete ones (a kill during saving) and stale ones (another config)
    aside, and returns what it did for the log."""
    notes: list[str] = []
    if not ckpt_dir.is_dir():
        return None, notes
    stamp = ckpt_dir / FINGERPRINT
    if stamp.is_file() and json.loads(stamp.read_text()) != fingerprint:
        for old in ckpt_dir.glob("checkpoint-*"):
            old.rename(ckpt_dir / f"stale-{old.name}-{int(time.time())}")
            notes.append(f"{old.name}: made by another config or data; set aside, not resumed")
    complete = []
    for ckpt in ckpt_dir.glob("checkpoint-*"):
        if (ckpt / COMPLETE_MARKER).is_file():
            complete.append(ckpt)
        else:
            ckpt.rename(ckpt_dir / f"incomplete-{ckpt.name}-{int(time.time())}")
            notes.append(f"{ckpt.name}: incomplete (killed while saving); ignored")
    if not complete:
        return None, notes
    return max(complete, key=lambda p: int(p.name.split("-")[1])), notes


# --- the Trainer -------------------------------------------------------------------------


def peak_memory_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _trainer_classes():
    """Trainer and callbacks, defined lazily so importing danlu stays light."""
    from transformers import Trainer, TrainerCallback

    class DanluTrainer(Trainer):
        """The stock Trainer, counting the target tokens it trains on."""

        target_tokens = 0

        def training_step(self, model, inputs, num_items_in_batch=None):
            self.target_tokens += int((inputs["labels"] != -100).sum())
            return super().training_step(model, inputs, num_items_in_batch)

    class LiveMetrics(TrainerCallback):
        """Every log step to the stage's MLflow run, with tokens/s and peak memory."""

        def __init__(self, run, trainer_ref):
            self.run, self.trainer_ref = run, trainer_ref
            self.started = time.perf_counter()
            self.tokens_at_start = 0

        def on_train_begin(self, args, state, control, **kwargs):
            self.started = time.perf_counter()
            self.tokens_at_start = self.trainer_ref[0].target_tokens

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs:
                return
            elapsed = max(time.perf_counter() - self.started, 1e-9)
            tokens = self.trainer_ref[0].target_tokens - self.tokens_at_start
            metrics = {k: v for k, v in logs.items() if isinstance(v, int | float)}
            metrics["target_tokens_per_s"] = tokens / elapsed
            metrics["peak_memory_mb"] = peak_memory_mb()
            self.run.log_metrics(metrics, step=state.global_step)

    class CheckpointMarker(TrainerCallback):
        """Mark a checkpoint complete once the Trainer has fully written it."""

        def on_save(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
                (ckpt / COMPLETE_MARKER).write_text(json.dumps({"step": state.global_step}))

    return DanluTrainer, LiveMetrics, CheckpointMarker


def training_arguments(cfg: TrainConfig, seed: int, output_dir: Path, has_eval: bool):
    from transformers import TrainingArguments

    cuda = torch.cuda.is_available()
    dtype = resolve_dtype(cfg.compute_dtype)
    # paged 8-bit AdamW saves memory on one GPU; peft documents it failing to
    # save under FSDP, so sharded runs take plain AdamW.
    paged = cuda and not sharded_training()
    optim = cfg.optim if cfg.optim != "auto" else ("paged_adamw_8bit" if paged else "adamw_torch")
    return TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        per_device_eval_batch_size=cfg.per_device_eval_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler_type,
        warmup_steps=cfg.warmup_ratio,  # < 1 means a ratio in transformers 5
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        num_train_epochs=cfg.num_epochs,
        max_steps=cfg.max_steps,
        optim=optim,
        bf16=dtype == torch.bfloat16,
        fp16=dtype == torch.float16,
        use_cpu=not cuda,
        logging_steps=cfg.logging_steps,
        eval_strategy="steps" if has_eval else "no",
        eval_steps=cfg.eval_steps,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        seed=seed,
        data_seed=seed,
        report_to="none",
        remove_unused_columns=False,
        label_names=["labels"],
        disable_tqdm=True,
        dataloader_num_workers=0,
        use_liger_kernel=use_liger(cfg),
        ddp_find_unused_parameters=False,
    )


def use_liger(cfg: TrainConfig) -> bool:
    """Liger kernels only where they run (CUDA, package installed)."""
    if cfg.use_liger_kernel == "false":
        return False
    import importlib.util

    available = torch.cuda.is_available() and importlib.util.find_spec("liger_kernel") is not None
    if cfg.use_liger_kernel == "true" and not available:
        raise ConfigError("train: use_liger_kernel is true but liger-kernel/CUDA is not available")
    return available


def run_training(*, arrow_dir: Path, cutoff: dict, model_dir: Path | str, tokenizer,
                 cfg: TrainConfig, seed: int, out_dir: Path, run, fingerprint: dict,
                 trust_remote_code: bool = False) -> dict:
    """Train, resume if a complete checkpoint of this same setup exists, and
    write the adapter and reports into out_dir. Returns train metrics."""
    from danlu.outputs import write_json
    from danlu.plots import plot_loss

    DanluTrainer, LiveMetrics, CheckpointMarker = _trainer_classes()
    cutoff_len, overlength = int(cutoff["cutoff_len"]), cutoff["overlength"]
    train_ds = prepare_split(arrow_dir / "train", cutoff_len, overlength)
    eval_ds = None
    if (arrow_dir / "val").is_dir():
        eval_ds = prepare_split(arrow_dir / "val", cutoff_len, overlength)
        eval_ds = eval_ds if len(eval_ds) else None
    model = attach_lora(load_base(model_dir, cfg, trust_remote_code), cfg, seed)
    args = training_arguments(cfg, seed, out_dir / "checkpoints", eval_ds is not None)
    switches = {"quantization": cfg.quantization, "packing": cfg.packing,
                "pack_row_tokens": pack_row_tokens(model.config._attn_implementation, cutoff_len)
                if cfg.packing else None,
                "attn_implementation": model.config._attn_implementation,
                "compute_dtype": str(resolve_dtype(cfg.compute_dtype)).removeprefix("torch."),
                "liger_kernel": args.use_liger_kernel, "optim": args.optim,
                "gradient_checkpointing": cfg.gradient_checkpointing,
                "world_size": args.world_size, "cutoff_len": cutoff_len}
    print("train: switches " + json.dumps(switches, sort_keys=True), flush=True)
    run.log_params({"switch": switches})
    trainer_ref: list = []
    trainer = DanluTrainer(
        model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
        data_collator=make_collator(
            tokenizer, cfg.packing,
            pack_row_tokens(model.config._attn_implementation, cutoff_len)),
        processing_class=tokenizer,
        callbacks=[LiveMetrics(run, trainer_ref), CheckpointMarker()],
    )
    trainer_ref.append(trainer)
    ckpt_dir = out_dir / "checkpoints"
    resume, notes = (None, [])
    if trainer.is_world_process_zero():
        resume, notes = latest_complete_checkpoint(ckpt_dir, fingerprint)
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        write_json(ckpt_dir / FINGERPRINT, fingerprint)
    resume = _broadcast(resume)
    for note in notes:
        print(f"train: checkpoint {note}", flush=True)
    if resume:
        print(f"train: resuming from {resume}", flush=True)
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    seconds = time.perf_counter() - started
    print(f"train: rank {args.process_index} of {args.world_size} finished "
          f"{trainer.state.global_step} steps", flush=True)
    metrics = {
        **result.metrics,
        "target_tokens": trainer.target_tokens,
        "target_tokens_per_s": trainer.target_tokens / seconds if seconds else 0.0,
        "peak_memory_mb": peak_memory_mb(),
        "resumed_from_step": int(resume.name.split("-")[1]) if resume else 0,
        "train_examples": len(train_ds),
        "eval_examples": len(eval_ds) if eval_ds is not None else 0,
        "switches": switches,
    }
    if eval_ds is not None:
        evals = [h for h in trainer.state.log_history if "eval_loss" in h]
        if not evals or evals[-1]["step"] != trainer.state.global_step:
            trainer.evaluate()  # the val loss of the final adapter, logged like the others
            evals = [h for h in trainer.state.log_history if "eval_loss" in h]
        metrics["final_eval_loss"] = evals[-1]["eval_loss"]
    if sharded_training():  # gathering FSDP/ZeRO-3 shards needs every rank (untested here: no GPUs)
        if trainer.is_fsdp_enabled:
            trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
        trainer.save_model(str(out_dir))
    if trainer.is_world_process_zero():
        if not sharded_training():
            trainer.model.save_pretrained(out_dir)
        sort_adapter_targets(out_dir / "adapter_config.json")
        tokenizer.save_pretrained(out_dir)
        trainer.state.save_to_json(str(out_dir / "trainer_state.json"))
        write_json(out_dir / "train_metrics.json", metrics)
        plot_loss(trainer.state.log_history, out_dir / "loss.png")
    return metrics


def _broadcast(value):
    """Rank 0's value on every rank (the resume decision must be shared)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        holder = [value]
        torch.distributed.broadcast_object_list(holder, src=0)
        return holder[0]
    return value


def main(args) -> None:
    from danlu.audit.manifest import rel, sha256_file
    from danlu.model.loading import load_tokenizer, max_positions, resolve_model_path
    from danlu.stage import run_stage

    params = stage_params(args, "train")
    cfg = from_mapping(TrainConfig, params)
    model_path = resolve_model_path(args.model, args.revision)
    cutoff = json.loads(Path(args.cutoff).read_text(encoding="utf-8"))
    check_config(cfg, model_path, int(cutoff["cutoff_len"]), max_positions(model_path),
                 args.trust_remote_code)
    tokenizer = load_tokenizer(model_path, args.template, args.trust_remote_code)
    data, out = Path(args.data), Path(args.out)
    splits = [data / s for s in ("train", "val") if (data / s).is_dir()]
    fingerprint = {"train": params, "seed": args.seed, "cutoff": cutoff,
                   "model": model_facts(args, model_path),
                   "data": {rel(f): sha256_file(f) for s in splits for f in sorted(s.rglob("*"))
                            if f.is_file()}}

    def outputs():  # the adapter, tokenizer and reports; not checkpoints/ or the manifest
        return sorted(p for p in out.iterdir() if p.is_file() and p.name != "manifest.json")

    def work(run):
        return run_training(arrow_dir=data, cutoff=cutoff, model_dir=model_path,
                            tokenizer=tokenizer, cfg=cfg, seed=args.seed,
                            out_dir=out, run=run, fingerprint=fingerprint,
                            trust_remote_code=args.trust_remote_code)

    if int(os.environ.get("RANK", "0")) != 0:  # DDP: only rank 0 writes files and records
        from danlu.audit.tracking import StageRun

        os.environ["DANLU_TRACKING_DISABLED"] = "1"
        work(StageRun("train"))
        return
    record = {"train": params, "seed": args.seed, **model_facts(args, model_path)}
    run_stage(
        "train", record, work,
        inputs=[*splits, args.cutoff, *model_inputs(args.model), *args.code],
        outputs=outputs,
        manifest_path=out / "manifest.json", artifacts=[out / "loss.png"],
        datasets=[(s.as_posix(), s.name) for s in splits],
        nondeterministic={
            rel(out / "trainer_state.json"): "holds wall-clock throughput (train_runtime, samples/s)",
            rel(out / "train_metrics.json"): "holds wall-clock throughput and peak memory",
        },
    )
