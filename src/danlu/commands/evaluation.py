"""Evaluation commands: evaluate one model, compare them all."""

from __future__ import annotations

import json
from pathlib import Path

from danlu.commands.common import stage_params


def cmd_evaluate(args) -> None:
    from danlu.audit.manifest import combined_digest, describe_files
    from danlu.commands.data import benchmark_source
    from danlu.evaluation.evaluate import EvalConfig, evaluate_model
    from danlu.model.loading import load_model, load_tokenizer, local_model_dir, resolve_model_path
    from danlu.outputs import write_json
    from danlu.stage import run_stage

    params = stage_params(args, "evaluate")
    # Without a local copy the questions come from the hub (official ids by default).
    source = benchmark_source(args, default_hub=True)
    cfg = EvalConfig(**{k: params[k] for k in ("benchmarks", "num_fewshot", "scoring",
                                               "max_per_subject", "subjects", "batch_size",
                                               "share_prefix", "max_length")},
                     hub={} if source.root else {b: source.hub_id(b) for b in params["benchmarks"]})
    load = json.loads(args.load) if args.load else {}
    model_path = resolve_model_path(args.model, args.revision)
    # The adapter directory also holds checkpoints and reports: only the adapter counts.
    adapter_files = [str(p) for p in sorted(Path(args.adapter).glob("adapter_*"))] if args.adapter else []
    local = [str(p) for p in (local_model_dir(args.model),) if p] + adapter_files
    described = describe_files(local)  # hashed once: a model may be many GB
    digest = combined_digest(described) if local else f"{args.model}@{args.revision}"
    out = Path(args.out)

    def work(run):
        tokenizer = load_tokenizer(Path(args.adapter or model_path), args.template,
                                   args.trust_remote_code)
        model = load_model(model_path, trust_remote_code=args.trust_remote_code, **load)
        if args.adapter:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, args.adapter)
        stats = evaluate_model(model, tokenizer, cfg, benchmarks_root=source.root,
                               out_dir=out, model_digest=digest)
        if args.val:
            from danlu.evaluation.perplexity import perplexity
            from danlu.model.train import prepare_split

            cutoff = json.loads(Path(args.cutoff).read_text(encoding="utf-8"))
            val = prepare_split(Path(args.val), int(cutoff["cutoff_len"]), cutoff["overlength"])
            stats["val"] = perplexity(model, [val[i] for i in range(len(val))], cfg.batch_size)
            write_json(out / "perplexity.json", stats["val"])
        stats["model_bytes"] = sum(e["size"] for e in described)
        write_json(out / "model.json", {
            "name": args.name, "bytes": stats["model_bytes"], "digest": digest, "load": load,
            "val_perplexity": stats.get("val", {}).get("val_perplexity")})
        return stats

    names = ["predictions.jsonl", "subjects.csv", "categories.csv", "summary.json", "model.json"]
    names += ["perplexity.json"] if args.val else []
    inputs = [*local, *([args.val, args.cutoff] if args.val else []), *args.code]
    record = {"evaluate": params, "load": load, "model": args.name,
              "benchmarks": source.describe(cfg.benchmarks)}
    stats = run_stage(f"evaluate_{args.name}", record,
                      work, inputs=inputs, outputs=[out / n for n in names],
                      manifest_path=out / "manifest.json")
    for bench in cfg.benchmarks:
        b = stats[bench]
        print(f"evaluate {args.name}: {bench} micro {b['micro_accuracy']:.4f} "
              f"macro {b['macro_accuracy']:.4f} over {b['questions']} questions")


def cmd_eval_compare(args) -> None:
    from danlu.evaluation.report import write_comparison
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
