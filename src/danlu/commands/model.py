"""Model commands: tokenize, cutoff, train, estimate, merge, quantize."""

from __future__ import annotations

import json
import os
from pathlib import Path

from danlu.commands.common import UsageError, model_facts, model_inputs, stage_params
from danlu.config import from_mapping, load_config
from danlu.model.loading import ModelError


def cmd_tokenize(args) -> None:
    from danlu.config import LengthsConfig
    from danlu.data.lengths import ExampleOptions, tokenize_splits
    from danlu.model.loading import load_tokenizer, resolve_model_path
    from danlu.stage import run_stage

    params = stage_params(args, "lengths")
    cfg = from_mapping(LengthsConfig, params)
    model_path = resolve_model_path(args.model, args.revision)
    tokenizer = load_tokenizer(model_path, args.template, args.trust_remote_code)
    options = ExampleOptions(cfg.train_on_prompt, cfg.mask_history, cfg.enable_thinking)
    splits = {"train": args.train, **({"val": args.val} if args.val else {})}
    out = Path(args.out)
    record = {"lengths": params, "template": args.template, **model_facts(args, model_path)}
    run_stage(
        "tokenize", record,
        lambda run: tokenize_splits(splits, tokenizer, options, out, args.num_proc),
        inputs=[*splits.values(), *model_inputs(args.model), *args.code],
        outputs=[out / name for name in splits], manifest_path=Path(args.manifest),
        datasets=[(p, name) for name, p in splits.items()]
        + [((out / name).as_posix(), f"tokenized_{name}") for name in splits],
    )


def cmd_cutoff(args) -> None:
    from danlu.config import LengthsConfig
    from danlu.data.lengths import CutoffRule, decide_cutoff
    from danlu.model.loading import max_positions, resolve_model_path
    from danlu.stage import run_stage

    params = stage_params(args, "lengths")
    cfg = from_mapping(LengthsConfig, params)
    rule = CutoffRule(cfg.cutoff_len, cfg.percentile, cfg.min_cutoff, cfg.max_cutoff)
    model_max = max_positions(resolve_model_path(args.model, args.revision))
    out, arrow = Path(args.out), Path(args.data)

    def work(run):
        result = decide_cutoff(arrow, rule, cfg.overlength, model_max, out)
        run.log_params({"cutoff_len": result["cutoff_len"]})
        return result

    splits = [arrow / s for s in ("train", "val") if (arrow / s).is_dir()]
    run_stage("cutoff", {"lengths": params, "model_max_position_embeddings": model_max}, work,
              inputs=[*splits, *args.code],
              outputs=[out / n for n in ("cutoff.json", "stats.json", "lengths.png")],
              manifest_path=Path(args.manifest), artifacts=[out / "lengths.png"])


def cmd_train(args) -> None:
    from danlu.audit.manifest import rel, sha256_file
    from danlu.config import TrainConfig
    from danlu.model.loading import load_tokenizer, max_positions, resolve_model_path
    from danlu.model.train import check_config, run_training
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


def cmd_estimate(args) -> None:
    from danlu.config import TrainConfig
    from danlu.model.estimate import SHAPES, Shape, estimate_memory
    from danlu.model.loading import model_config, resolve_model_path

    config = load_config(args.config)
    cfg = from_mapping(TrainConfig, config["train"])
    if args.shape:
        shape, source = Shape(**SHAPES[args.shape]), f"preset {args.shape}"
    else:
        model = "results/demo_model/model" if config["base_model"] == "demo" else config["base_model"]
        try:
            shape = Shape.from_config(model_config(resolve_model_path(model, config["base_model_revision"])))
        except ModelError as err:
            raise UsageError(f"{err}; pass --shape ({', '.join(SHAPES)}) to estimate offline") from None
        source = model
    cutoff = args.cutoff_len or _planned_cutoff(config)
    result = estimate_memory(
        shape, quantization=cfg.quantization, double_quant=cfg.double_quant, lora_r=cfg.lora_r,
        lora_target=cfg.lora_target, batch_size=cfg.per_device_train_batch_size,
        cutoff_len=cutoff, gradient_checkpointing=cfg.gradient_checkpointing,
        optim=cfg.optim if cfg.optim != "auto" else "paged_adamw_8bit", packing=cfg.packing,
        num_processes=cfg.num_processes,
        fsdp="fsdp" in (cfg.accelerate_config or ""),
    )
    result = {"model": source, "cutoff_len": cutoff, **result}
    if args.json:
        print(json.dumps(result, sort_keys=True))
        return
    print(f"danlu estimate: {source}, {result['base_parameters_b']} B parameters, "
          f"{cfg.quantization}, LoRA r={cfg.lora_r} ({result['lora_parameters_m']} M), "
          f"batch {cfg.per_device_train_batch_size} x cutoff_len {cutoff}")
    for term, gib in result["terms_gib"].items():
        print(f"  {term:<20} {gib:8.2f} GiB")
    print(f"  {'peak per device':<20} {result['per_device_gib']:8.2f} GiB")


def _planned_cutoff(config: dict) -> int:
    """The cutoff training will use: decided (results/lengths/cutoff.json),
    else fixed in config, else the upper clamp (the worst case)."""
    decided = Path("results/lengths/cutoff.json")
    if config["lengths"]["cutoff_len"] != "auto":
        return int(config["lengths"]["cutoff_len"])
    if decided.is_file():
        return int(json.loads(decided.read_text(encoding="utf-8"))["cutoff_len"])
    return int(config["lengths"]["max_cutoff"])


def _check_prompts(val_path: str, tokenizer, n: int, max_tokens: int = 128) -> list[list[int]]:
    """Token ids of the first n val records' prompts, for the merge check."""
    from danlu.data.records import read_jsonl

    prompts = []
    for record in read_jsonl(val_path):
        text = tokenizer.apply_chat_template(record["messages"][:-1], add_generation_prompt=True,
                                             tokenize=False)
        prompts.append(tokenizer(text, add_special_tokens=False)["input_ids"][:max_tokens])
        if len(prompts) == n:
            break
    return prompts


def cmd_merge(args) -> None:
    from danlu.model.loading import load_tokenizer, resolve_model_path
    from danlu.model.merge import merge_adapter
    from danlu.stage import run_stage

    params = stage_params(args, "export")
    model_path = resolve_model_path(args.model, args.revision)
    tokenizer = load_tokenizer(Path(args.adapter), args.template, args.trust_remote_code)
    prompts = _check_prompts(args.val, tokenizer, params["merge_check_prompts"])
    out = Path(args.out)
    adapter_files = sorted(str(p) for p in Path(args.adapter).glob("adapter_*"))
    run_stage(
        "merge", {"export": params, **model_facts(args, model_path)},
        lambda run: merge_adapter(model_path, Path(args.adapter), out, check_inputs=prompts,
                                  dtype=params["merge_dtype"], template=args.template,
                                  trust_remote_code=args.trust_remote_code),
        inputs=[*model_inputs(args.model), *adapter_files, args.val, *args.code],
        outputs=[out], manifest_path=Path(args.manifest),
    )


def cmd_quantize(args) -> None:
    from danlu.data.records import read_jsonl
    from danlu.model.loading import load_tokenizer
    from danlu.model.quantize import Gates, calibration_texts, quantize_model, read_gate_examples
    from danlu.stage import run_stage

    params = stage_params(args, "export")
    gates = from_mapping(Gates, params["gates"])
    tokenizer = load_tokenizer(Path(args.model), args.template, args.trust_remote_code)
    texts = calibration_texts(list(read_jsonl(args.train)), tokenizer,
                              params["calibration_samples"], args.seed)
    val_examples = read_gate_examples(Path(args.val), gates.val_examples, gates.max_tokens)
    out = Path(args.out)
    stats = run_stage(
        f"quantize_{args.method}", {"export": params, "method": args.method, "seed": args.seed},
        lambda run: quantize_model(
            Path(args.model), out, method=args.method, calibration_texts=texts, tokenizer=tokenizer,
            scheme=params["scheme"], group_size=params["group_size"],
            max_seq_length=params["calibration_max_length"],
            dampening_frac=params["dampening_frac"], val_examples=val_examples, gates=gates,
            trust_remote_code=args.trust_remote_code),
        inputs=[args.model, args.train, args.val, *args.code], outputs=[out],
        manifest_path=Path(args.manifest),
    )
    gate = stats["gate"]
    print(f"quantize {args.method}: passed export.gates on {gate['val_tokens']} val tokens: "
          f"top-1 agreement {gate['top1_agreement']:.4f} (min {gate['min_top1_agreement']}), "
          f"perplexity ratio {gate['ppl_ratio']:.4f} (max {gate['max_ppl_ratio']})")
