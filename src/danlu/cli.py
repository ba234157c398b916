"""`danlu <stage> ...`: the commands Snakemake rules call (and people run by hand).

Rules pass each stage's validated config section as JSON in `--params`; by
hand, `--config FILE` reads a danlu YAML config (defaults when omitted) and
flags override single keys. Unusable input exits 2 with one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from danlu.config import ConfigError, DatasetSpec, from_mapping, load_config
from danlu.models import ModelError


class UsageError(Exception):
    """Bad input or arguments: printed as one line, exit status 2."""


def stage_params(args, name: str) -> dict:
    """The stage's config section: `--params` JSON (a rule passes the keys it
    depends on; the schema's defaults fill the rest), else `--config`/defaults."""
    if getattr(args, "params", None):
        return {**load_config(None)[name], **json.loads(args.params)}
    return load_config(getattr(args, "config", None))[name]


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", help="the stage's config section as JSON (what rules pass)")
    p.add_argument("--config", help="a danlu YAML config to read the stage's section from")
    p.add_argument("--code", nargs="*", default=[],
                   help="source files the stage depends on (hashed into its manifest)")


def cmd_clean(args) -> None:
    from danlu.clean import clean_files
    from danlu.config import CleanConfig
    from danlu.stage import run_stage

    params = stage_params(args, "clean")
    cfg = from_mapping(CleanConfig, params)
    if args.dataset:
        specs = [from_mapping(DatasetSpec, json.loads(args.dataset))]
        if len(args.inputs) != 1 or Path(args.inputs[0]) != Path(specs[0].path):
            raise UsageError("--dataset describes exactly one input, given as INPUT")
    else:
        specs = [DatasetSpec(name=Path(p).name.split(".")[0], path=p, format=args.format,
                             columns={}, tags={}, encoding=args.encoding) for p in args.inputs]
    out = Path(args.out)
    outputs = [out / n for n in ("records.jsonl", "rejects.jsonl", "stats.json")]
    record = {"clean": params, "datasets": [s.__dict__ for s in specs]}
    stats = run_stage(
        "clean", record, lambda run: clean_files(specs, cfg, out),
        inputs=[*(s.path for s in specs), *args.code], outputs=outputs,
        manifest_path=out / "manifest.json",
        datasets=[(s.path, "raw") for s in specs] + [(str(outputs[0].as_posix()), "cleaned")],
    )
    print(f"clean: {stats['records_in']} in, {stats['records_kept']} kept, "
          f"{stats['records_rejected']} rejected {stats['rejected_by_reason']}, "
          f"PII masked {stats['pii_masked_by_type']}")


def cmd_combine(args) -> None:
    from danlu.clean import combine_parts
    from danlu.stage import run_stage

    parts = [Path(p) for p in args.parts]
    out = Path(args.out)
    outputs = [out / n for n in ("records.jsonl", "rejects.jsonl", "stats.json")]
    inputs = [p / n for p in parts for n in ("records.jsonl", "rejects.jsonl", "stats.json")]
    stats = run_stage(
        "clean_combine", {"parts": [p.as_posix() for p in parts]},
        lambda run: combine_parts(parts, out),
        inputs=inputs + args.code, outputs=outputs, manifest_path=out / "manifest.json",
        datasets=[(outputs[0].as_posix(), "cleaned")],
    )
    print(f"combine: {stats['records_in']} in, {stats['records_kept']} kept, "
          f"{stats['records_rejected']} rejected")


def cmd_demo_model(args) -> None:
    from danlu.demo import DemoModelShape, build_demo_model
    from danlu.outputs import atomic_dir
    from danlu.stage import run_stage

    params = stage_params(args, "demo")
    shape = DemoModelShape(**params["model"])
    out = Path(args.out)

    def work(run):
        with atomic_dir(out) as tmp:
            return build_demo_model(tmp, Path(args.corpus), shape)

    run_stage("demo_model", params, work, inputs=[args.corpus, *args.code], outputs=[out],
              manifest_path=Path(args.manifest))


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="base model: local directory or hub id")
    p.add_argument("--revision", help="hub revision to pin")
    p.add_argument("--template", default="chatml", help="chat template if the tokenizer has none")
    p.add_argument("--trust-remote-code", action="store_true")


def _model_inputs(name: str) -> list[str]:
    """A local model directory is an input (hashed into the manifest); a hub
    model is recorded by id and resolved revision instead."""
    return [name] if Path(name).exists() else []


def _model_facts(args, model_path: Path) -> dict:
    return {"base_model": args.model, "revision": args.revision,
            "resolved_path": model_path.as_posix() if Path(args.model).exists()
            else model_path.name}  # a hub snapshot directory is named by its commit


def cmd_tokenize(args) -> None:
    from danlu.config import LengthsConfig
    from danlu.lengths import ExampleOptions, tokenize_splits
    from danlu.models import load_tokenizer, resolve_model_path
    from danlu.stage import run_stage

    params = stage_params(args, "lengths")
    cfg = from_mapping(LengthsConfig, params)
    model_path = resolve_model_path(args.model, args.revision)
    tokenizer = load_tokenizer(model_path, args.template, args.trust_remote_code)
    options = ExampleOptions(cfg.train_on_prompt, cfg.mask_history)
    splits = {"train": args.train, **({"val": args.val} if args.val else {})}
    out = Path(args.out)
    record = {"lengths": params, "template": args.template, **_model_facts(args, model_path)}
    run_stage(
        "tokenize", record,
        lambda run: tokenize_splits(splits, tokenizer, options, out, args.num_proc),
        inputs=[*splits.values(), *_model_inputs(args.model), *args.code],
        outputs=[out / name for name in splits], manifest_path=Path(args.manifest),
        datasets=[(p, name) for name, p in splits.items()]
        + [((out / name).as_posix(), f"tokenized_{name}") for name in splits],
    )


def cmd_cutoff(args) -> None:
    from danlu.config import LengthsConfig
    from danlu.lengths import CutoffRule, decide_cutoff
    from danlu.models import max_positions, resolve_model_path
    from danlu.stage import run_stage

    params = stage_params(args, "lengths")
    cfg = from_mapping(LengthsConfig, params)
    rule = CutoffRule(cfg.cutoff_len, cfg.percentile, cfg.min_cutoff, cfg.max_cutoff)
    model_max = max_positions(resolve_model_path(args.model, args.revision))
    out, arrow = Path(args.out), Path(args.data)
    if cfg.cutoff_len != "auto" and model_max and int(cfg.cutoff_len) > model_max:
        raise ConfigError(f"lengths.cutoff_len {cfg.cutoff_len} exceeds the model's context ({model_max})")

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
    from danlu.config import TrainConfig
    from danlu.manifest import rel, sha256_file
    from danlu.models import load_tokenizer, max_positions, resolve_model_path
    from danlu.stage import run_stage
    from danlu.train import check_config, run_training

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
                   "model": _model_facts(args, model_path),
                   "data": {rel(f): sha256_file(f) for s in splits for f in sorted(s.rglob("*"))
                            if f.is_file()}}

    def outputs():  # the adapter, tokenizer and reports; not checkpoints/ or the manifest
        return sorted(p for p in out.iterdir() if p.is_file() and p.name != "manifest.json")

    def work(run):
        return run_training(arrow_dir=data, cutoff=cutoff, model_dir=args.model if Path(args.model).exists()
                            else model_path, tokenizer=tokenizer, cfg=cfg, seed=args.seed,
                            out_dir=out, run=run, fingerprint=fingerprint,
                            trust_remote_code=args.trust_remote_code)

    if int(os.environ.get("RANK", "0")) != 0:  # DDP: only rank 0 writes files and records
        from danlu.tracking import StageRun

        os.environ["DANLU_TRACKING_DISABLED"] = "1"
        work(StageRun("train"))
        return
    record = {"train": params, "seed": args.seed, **_model_facts(args, model_path)}
    run_stage(
        "train", record, work,
        inputs=[*splits, args.cutoff, *_model_inputs(args.model), *args.code],
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
    from danlu.estimate import SHAPES, Shape, estimate_memory
    from danlu.models import model_config, resolve_model_path

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


def _records_input(path: str) -> Path:
    """A canonical records.jsonl that exists and decodes, else exit 2."""
    from danlu.readers import InputError

    p = Path(path)
    if not p.is_file():
        raise InputError(p, "no such file")
    try:
        with open(p, encoding="utf-8") as fh:
            while fh.read(1 << 20):
                pass
    except UnicodeDecodeError as err:
        raise InputError(p, f"not UTF-8 at byte {err.start}") from None
    return p


def cmd_dedup_signatures(args) -> None:
    from danlu.config import DedupConfig
    from danlu.dedup import shard_signatures
    from danlu.stage import run_stage

    params = stage_params(args, "dedup")
    cfg = from_mapping(DedupConfig, params)
    source = _records_input(args.input)
    prefix = Path(args.out)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def work(run):
        block = shard_signatures(source, cfg, args.shard, args.shards)
        written.extend(block.save(prefix))
        return {"records": len(block.lines), "shard": args.shard, "shards": args.shards}

    run_stage("dedup_signatures", {"dedup": params, "shard": args.shard, "shards": args.shards},
              work, inputs=[source, *args.code], outputs=lambda: written,
              manifest_path=Path(f"{prefix}.manifest.json"), log_stats=False)


def cmd_dedup(args) -> None:
    from danlu.config import DedupConfig
    from danlu.dedup import Block, ContaminationIndex, benchmark_items, dedup_file, shard_signatures
    from danlu.stage import run_stage

    params = stage_params(args, "dedup")
    cfg = from_mapping(DedupConfig, params)
    source, out = _records_input(args.input), Path(args.out)
    prefixes = [Path(p) for p in args.signatures]
    shard_files = [Path(f"{p}.{n}.npy") for p in prefixes for n in ("lines", "sig", "sha")]

    def work(run):
        if prefixes:
            block = Block.concat([Block.load(p) for p in prefixes])
        else:
            shards = args.shards or cfg.shards
            block = Block.concat([shard_signatures(source, cfg, i, shards) for i in range(shards)])
        index = None
        if cfg.decontaminate and cfg.contamination_benchmarks:
            index = ContaminationIndex(benchmark_items(Path(args.benchmarks),
                                                       cfg.contamination_benchmarks), cfg)
        return dedup_file(source, block, cfg, out, index)

    names = ("records.jsonl", "removed.jsonl", "clusters.jsonl", "stats.json", "clusters.png")
    stats = run_stage(
        "dedup", {"dedup": params, "benchmarks": args.benchmarks}, work,
        inputs=[source, *shard_files, *args.code], outputs=[out / n for n in names],
        manifest_path=out / "manifest.json", artifacts=[out / "clusters.png"],
        datasets=[(source.as_posix(), "cleaned"), ((out / "records.jsonl").as_posix(), "deduplicated")],
    )
    print(f"dedup: {stats['records_in']} in, {stats['records_kept']} kept, "
          f"removed {stats['removed_by_reason']}")


def cmd_split(args) -> None:
    from danlu.config import DedupConfig
    from danlu.dedup import split_file
    from danlu.stage import run_stage

    params = stage_params(args, "dedup")
    cfg = from_mapping(DedupConfig, params)
    source, out = _records_input(args.input), Path(args.out)
    names = ("train.jsonl", "val.jsonl", "split_stats.json")
    stats = run_stage(
        "split", {"dedup": params, "seed": args.seed},
        lambda run: split_file(source, cfg, args.seed, out),
        inputs=[source, *args.code], outputs=[out / n for n in names],
        manifest_path=out / "split.manifest.json",
        datasets=[((out / "train.jsonl").as_posix(), "train"), ((out / "val.jsonl").as_posix(), "val")],
    )
    print(f"split: {stats['train']} train, {stats['val']} val in {stats['groups']} groups")


def cmd_demo_leak(args) -> None:
    from danlu.demo import benchmark_leak_records
    from danlu.outputs import atomic_outputs
    from danlu.records import dumps

    out = Path(args.out)
    with atomic_outputs([out]) as (tmp,):
        records = benchmark_leak_records(Path(args.benchmarks))
        tmp.write_text("".join(dumps(r) for r in records), encoding="utf-8")
    print(f"demo-leak: {len(records)} benchmark questions planted in {out}")


def cmd_evaluate(args) -> None:
    from danlu.evaluate import EvalConfig, evaluate_model
    from danlu.manifest import combined_digest, describe_files
    from danlu.models import load_model, load_tokenizer, resolve_model_path
    from danlu.stage import run_stage

    params = stage_params(args, "evaluate")
    cfg = EvalConfig(**{k: params[k] for k in ("benchmarks", "num_fewshot", "scoring",
                                               "max_per_subject", "subjects", "batch_size",
                                               "share_prefix", "max_length", "hub")})
    load = json.loads(args.load) if args.load else {}
    model_path = resolve_model_path(args.model, args.revision)
    # The adapter directory also holds checkpoints and reports: only the adapter counts.
    adapter_files = [str(p) for p in sorted(Path(args.adapter).glob("adapter_*"))] if args.adapter else []
    local = [p for p in (args.model,) if Path(p).exists()] + adapter_files
    digest = combined_digest(describe_files(local)) if local else f"{args.model}@{args.revision}"
    out = Path(args.out)

    def work(run):
        tokenizer = load_tokenizer(Path(args.adapter or model_path), args.template,
                                   args.trust_remote_code)
        model = load_model(model_path, trust_remote_code=args.trust_remote_code, **load)
        if args.adapter:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, args.adapter)
        stats = evaluate_model(model, tokenizer, cfg, benchmarks_root=Path(args.benchmarks),
                               out_dir=out, model_digest=digest)
        if args.val:
            from danlu.perplexity import perplexity
            from danlu.train import prepare_split

            cutoff = json.loads(Path(args.cutoff).read_text(encoding="utf-8"))
            val = prepare_split(Path(args.val), int(cutoff["cutoff_len"]), cutoff["overlength"])
            stats["val"] = perplexity(model, [val[i] for i in range(len(val))], cfg.batch_size)
            write_json(out / "perplexity.json", stats["val"])
        stats["model_bytes"] = sum(e["size"] for e in describe_files(local))
        write_json(out / "model.json", {
            "name": args.name, "bytes": stats["model_bytes"], "digest": digest, "load": load,
            "val_perplexity": stats.get("val", {}).get("val_perplexity")})
        return stats

    from danlu.outputs import write_json

    names = ["predictions.jsonl", "subjects.csv", "categories.csv", "summary.json", "model.json"]
    names += ["perplexity.json"] if args.val else []
    inputs = [*local, *([args.val, args.cutoff] if args.val else []), *args.code]
    stats = run_stage(f"evaluate_{args.name}", {"evaluate": params, "load": load, "model": args.name},
                      work, inputs=inputs, outputs=[out / n for n in names],
                      manifest_path=out / "manifest.json")
    for bench in cfg.benchmarks:
        b = stats[bench]
        print(f"evaluate {args.name}: {bench} micro {b['micro_accuracy']:.4f} "
              f"macro {b['macro_accuracy']:.4f} over {b['questions']} questions")


def cmd_eval_compare(args) -> None:
    from danlu.eval_report import write_comparison
    from danlu.stage import run_stage

    summaries = {Path(p).parent.name: json.loads(Path(p).read_text(encoding="utf-8"))
                 for p in args.summaries}
    facts = {}
    for p in args.summaries:
        model = json.loads((Path(p).parent / "model.json").read_text(encoding="utf-8"))
        facts[Path(p).parent.name] = {"size_mb": round(model["bytes"] / 2**20, 3),
                                      "val_perplexity": model.get("val_perplexity")}
    out = Path(args.out)
    run_stage("eval_compare", {"models": list(summaries)},
              lambda run: {k: str(v) for k, v in
                           write_comparison(summaries, out, model_facts=facts).items()},
              inputs=[*args.summaries, *args.code],
              outputs=[out / "compare.csv", out / "compare.png", out / "compare.html"],
              manifest_path=out / "compare.manifest.json", artifacts=[out / "compare.png"],
              log_stats=False)


def cmd_audit(args) -> None:
    """Exports with model cards, signatures and the signed provenance statement."""
    from danlu import audit, provenance, signing
    from danlu.export import pipeline_facts, write_export
    from danlu.manifest import code_version, now, rel, sha256_file
    from danlu.outputs import write_json
    from danlu.stage import run_stage

    config = json.loads(args.config_json)
    results, out, exports_dir = Path(args.results), Path(args.out), Path(args.exports)
    sources = dict(item.split("=", 1) for item in args.export)
    started = now()

    def work(run):
        facts = pipeline_facts(results, config)
        files: dict[str, str] = {}
        private, public = signing.ensure_key_pair(signing.default_key_dir())
        (out / "signatures").mkdir(parents=True, exist_ok=True)
        for name, src in sources.items():
            dst = exports_dir / name
            if dst.exists():
                shutil.rmtree(dst)
            for f in write_export(name, Path(src), dst, results, facts):
                files[rel(f)] = sha256_file(f)
            signing.sign_model(dst, out / "signatures" / f"{name}.sig", private)
        materials = [{"uri": d["path"], "sha256": d["sha256"]} for d in facts["datasets"]]
        materials.append({"name": "base_model", "uri": config["base_model"],
                          "annotations": {"digest": facts["base_digest"]}})
        internal = {**provenance.internal_parameters(),
                    "auditLog": audit.head(out / "log.jsonl")}
        statement = provenance.build_statement(
            sorted(files.items()), materials=materials,
            build_type="urn:danlu:buildtype:snakemake-finetune:v1",
            parameters=config, builder_id=f"urn:danlu:builder:snakemake:danlu-{_version()}",
            invocation_id=os.environ.get("DANLU_PARENT_RUN_ID") or started,
            started=started, finished=now(), code=code_version(), internal=internal)
        statement_path = out / "provenance.intoto.json"
        statement_path.write_text(provenance.dumps_statement(statement), encoding="utf-8")
        signing.sign_file(statement_path, out / "provenance.sig", private)
        signing.copy_public_key(public, out / "public_key.pem")
        write_json(out / "exports.json", {n: rel(exports_dir / n) for n in sources})
        return {"exports": len(sources), "files": len(files),
                "public_key_sha256": signing.public_key_fingerprint(public)}

    def outputs():
        return [*(p for n in sources for p in sorted((exports_dir / n).rglob("*")) if p.is_file()),
                out / "provenance.intoto.json", out / "provenance.sig", out / "public_key.pem",
                out / "exports.json", *sorted((out / "signatures").glob("*.sig"))]

    run_stage("audit", {"exports": sources}, work, inputs=[*sources.values(), *args.code],
              outputs=outputs, manifest_path=out / "manifest.json", log_stats=False,
              nondeterministic={
                  rel(out / "provenance.intoto.json"): "records the time of the run",
                  rel(out / "provenance.sig"): "ECDSA signatures use a fresh random nonce",
                  **{rel(out / "signatures" / f"{n}.sig"): "ECDSA signatures use a fresh random nonce"
                     for n in sources},
              })
    print(f"audit: {len(sources)} exports signed; provenance in {out / 'provenance.intoto.json'}")


def _version() -> str:
    from danlu import __version__

    return __version__


def cmd_verify(args) -> None:
    from danlu.verify import verify

    report = verify(Path(args.results), mlflow=not args.no_mlflow)
    if args.json:
        print(json.dumps({"ok": report.ok, "problems": report.problems, "checked": report.checked,
                          "notes": report.notes}, ensure_ascii=False, sort_keys=True))
    else:
        for problem in report.problems:
            print(f"PROBLEM {problem}")
        for note in report.notes if args.verbose else []:
            print(f"note    {note}")
        checked = ", ".join(f"{n} {what}" for what, n in sorted(report.checked.items()))
        verdict = "OK" if report.ok else f"FAILED: {len(report.problems)} problem(s)"
        print(f"danlu verify {args.results}: {verdict} ({checked})")
    if not report.ok:
        raise SystemExit(1)


def _check_prompts(val_path: str, tokenizer, n: int, max_tokens: int = 128) -> list[list[int]]:
    """Token ids of the first n val records' prompts, for the merge check."""
    from danlu.records import read_jsonl

    prompts = []
    for record in read_jsonl(val_path):
        text = tokenizer.apply_chat_template(record["messages"][:-1], add_generation_prompt=True,
                                             tokenize=False)
        prompts.append(tokenizer(text, add_special_tokens=False)["input_ids"][:max_tokens])
        if len(prompts) == n:
            break
    return prompts


def cmd_merge(args) -> None:
    from danlu.merge import merge_adapter
    from danlu.models import load_tokenizer, resolve_model_path
    from danlu.stage import run_stage

    params = stage_params(args, "export")
    model_path = resolve_model_path(args.model, args.revision)
    tokenizer = load_tokenizer(Path(args.adapter), args.template, args.trust_remote_code)
    prompts = _check_prompts(args.val, tokenizer, params["merge_check_prompts"])
    out = Path(args.out)
    adapter_files = sorted(str(p) for p in Path(args.adapter).glob("adapter_*"))
    run_stage(
        "merge", {"export": params, **_model_facts(args, model_path)},
        lambda run: merge_adapter(model_path, Path(args.adapter), out, check_inputs=prompts,
                                  dtype=params["merge_dtype"], template=args.template,
                                  trust_remote_code=args.trust_remote_code),
        inputs=[*_model_inputs(args.model), *adapter_files, args.val, *args.code],
        outputs=[out], manifest_path=Path(args.manifest),
    )


def cmd_quantize(args) -> None:
    from danlu.models import load_tokenizer
    from danlu.quantize import calibration_texts, quantize_model
    from danlu.records import read_jsonl
    from danlu.stage import run_stage

    params = stage_params(args, "export")
    tokenizer = load_tokenizer(Path(args.model), args.template, args.trust_remote_code)
    texts = calibration_texts(list(read_jsonl(args.train)), tokenizer,
                              params["calibration_samples"], args.seed)
    out = Path(args.out)
    run_stage(
        f"quantize_{args.method}", {"export": params, "method": args.method, "seed": args.seed},
        lambda run: quantize_model(
            Path(args.model), out, method=args.method, calibration_texts=texts, tokenizer=tokenizer,
            scheme=params["scheme"], group_size=params["group_size"],
            max_seq_length=params["calibration_max_length"],
            dampening_frac=params["dampening_frac"], trust_remote_code=args.trust_remote_code),
        inputs=[args.model, args.train, *args.code], outputs=[out],
        manifest_path=Path(args.manifest),
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="danlu", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("clean", help="normalise, validate and PII-mask raw records")
    p.add_argument("inputs", nargs="+", metavar="INPUT")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--dataset", help="the dataset entry as JSON (name, path, format, ...)")
    p.add_argument("--format", default="auto", choices=["auto", "alpaca", "sharegpt", "messages"])
    p.add_argument("--encoding", default="auto")
    _add_common(p)
    p.set_defaults(func=cmd_clean)

    p = sub.add_parser("combine", help="concatenate per-file clean outputs in order")
    p.add_argument("parts", nargs="+", metavar="PART_DIR")
    p.add_argument("--out", required=True)
    p.add_argument("--code", nargs="*", default=[])
    p.set_defaults(func=cmd_combine)

    p = sub.add_parser("demo-model", help="build the tiny random demo Llama and its tokenizer")
    p.add_argument("--corpus", required=True, help="text file the tokenizer is trained on")
    p.add_argument("--out", required=True, help="model directory to write")
    p.add_argument("--manifest", required=True)
    _add_common(p)
    p.set_defaults(func=cmd_demo_model)
    p = sub.add_parser("demo-leak", help="plant benchmark questions in a demo data file")
    p.add_argument("--benchmarks", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_demo_leak)

    p = sub.add_parser("dedup-signatures", help="MinHash signatures of one shard of a records file")
    p.add_argument("input", metavar="INPUT")
    p.add_argument("--shard", type=int, default=0)
    p.add_argument("--shards", type=int, default=1)
    p.add_argument("--out", required=True, help="path prefix of the .npy files")
    _add_common(p)
    p.set_defaults(func=cmd_dedup_signatures)

    p = sub.add_parser("dedup", help="exact + near dedup and benchmark decontamination")
    p.add_argument("input", metavar="INPUT", help="canonical records.jsonl")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--signatures", nargs="*", default=[], help="shard prefixes (else computed here)")
    p.add_argument("--shards", type=int, help="compute signatures in this many shards")
    p.add_argument("--benchmarks", default="../shared/benchmarks",
                   help="C-Eval/CMMLU directory for decontamination")
    _add_common(p)
    p.set_defaults(func=cmd_dedup)

    p = sub.add_parser("split", help="deterministic train/val split that keeps similar records together")
    p.add_argument("input", metavar="INPUT")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=42)
    _add_common(p)
    p.set_defaults(func=cmd_split)

    p = sub.add_parser("tokenize", help="tokenise splits under the chat template (Arrow sets)")
    p.add_argument("--train", required=True, help="train records.jsonl")
    p.add_argument("--val", help="val records.jsonl")
    p.add_argument("--out", required=True, help="directory for the Arrow sets")
    p.add_argument("--manifest", required=True)
    p.add_argument("--num-proc", type=int, default=1)
    _model_args(p)
    _add_common(p)
    p.set_defaults(func=cmd_tokenize)

    p = sub.add_parser("cutoff", help="token-length statistics and the choice of cutoff_len")
    p.add_argument("--data", required=True, help="directory holding the train/val Arrow sets")
    p.add_argument("--out", required=True)
    p.add_argument("--manifest", required=True)
    _model_args(p)
    _add_common(p)
    p.set_defaults(func=cmd_cutoff)

    p = sub.add_parser("train", help="QLoRA/LoRA fine-tuning with checkpoints and resume")
    p.add_argument("--data", required=True, help="directory holding the train/val Arrow sets")
    p.add_argument("--cutoff", required=True, help="cutoff.json from the lengths stage")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=42)
    _model_args(p)
    _add_common(p)
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("merge", help="merge the LoRA adapter into the full-precision base, verified")
    p.add_argument("--adapter", required=True)
    p.add_argument("--val", required=True, help="val records.jsonl: prompts for the logit check")
    p.add_argument("--out", required=True)
    p.add_argument("--manifest", required=True)
    _model_args(p)
    _add_common(p)
    p.set_defaults(func=cmd_merge)

    p = sub.add_parser("quantize", help="GPTQ or AWQ W4A16 export with llm-compressor")
    p.add_argument("--method", required=True, choices=["gptq", "awq"])
    p.add_argument("--train", required=True, help="train records.jsonl: calibration samples")
    p.add_argument("--out", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--seed", type=int, default=42)
    _model_args(p)
    _add_common(p)
    p.set_defaults(func=cmd_quantize)

    p = sub.add_parser("evaluate", help="C-Eval/CMMLU (and val perplexity) of one model")
    p.add_argument("--name", required=True, help="label: base, tuned, merged, gptq, awq")
    p.add_argument("--adapter", help="a PEFT adapter to apply to --model")
    p.add_argument("--load", help="JSON of load settings (quantization, double_quant, compute_dtype)")
    p.add_argument("--benchmarks", default="../shared/benchmarks")
    p.add_argument("--val", help="tokenised val split (Arrow) for perplexity")
    p.add_argument("--cutoff", help="cutoff.json, with --val")
    p.add_argument("--out", required=True)
    _model_args(p)
    _add_common(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("eval-compare", help="compare.csv and chart over evaluated models")
    p.add_argument("summaries", nargs="+", metavar="SUMMARY_JSON")
    p.add_argument("--out", required=True)
    p.add_argument("--code", nargs="*", default=[])
    p.set_defaults(func=cmd_eval_compare)

    p = sub.add_parser("audit", help="exports with model cards, signatures and provenance")
    p.add_argument("--results", default="results")
    p.add_argument("--export", action="append", default=[], metavar="NAME=DIR",
                   help="a model directory to ship (adapter, merged, gptq, awq)")
    p.add_argument("--exports", default="results/export", help="where export directories go")
    p.add_argument("--out", default="results/audit")
    p.add_argument("--config-json", required=True, help="the resolved config, as JSON")
    p.add_argument("--code", nargs="*", default=[])
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser("verify", help="re-check every digest, the audit log, MLflow and signatures")
    p.add_argument("results", nargs="?", default="results")
    p.add_argument("--json", action="store_true", help="one JSON object for machines")
    p.add_argument("--no-mlflow", action="store_true", help="skip the MLflow cross-check")
    p.add_argument("--verbose", "-v", action="store_true", help="also print notes")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("estimate", help="expected peak GPU memory of the configured training")
    p.add_argument("--config", help="danlu config (default: defaults)")
    p.add_argument("--shape", help="a known model shape instead of reading config.json "
                                   "(7b, qwen2.5-7b, llama3-8b, qwen2.5-32b)")
    p.add_argument("--cutoff-len", type=int, help="override the cutoff to plan for")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_estimate)
    return parser


def main(argv: list[str] | None = None) -> int:
    from danlu.benchmarks import BenchmarkError
    from danlu.lengths import TemplateError
    from danlu.merge import MergeError
    from danlu.quantize import QuantizeError
    from danlu.readers import InputError

    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (InputError, ConfigError, UsageError, ModelError, TemplateError, BenchmarkError,
            MergeError, QuantizeError) as err:
        print(f"danlu {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
