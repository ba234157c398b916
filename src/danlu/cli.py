"""`danlu <stage> ...`: the commands Snakemake rules call (and people run by hand).

Rules pass each stage's validated config section as JSON in `--params`; by
hand, `--config FILE` reads a danlu YAML config (defaults when omitted) and
flags override single keys. Unusable input exits 2 with one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from danlu.config import ConfigError, DatasetSpec, from_mapping, load_config


class UsageError(Exception):
    """Bad input or arguments: printed as one line, exit status 2."""


def stage_params(args, name: str) -> dict:
    """The stage's config section: `--params` JSON, else from `--config`/defaults."""
    if getattr(args, "params", None):
        return json.loads(args.params)
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
    cfg = from_mapping(LengthsConfig, {**_lengths_defaults(), **params})
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


def _lengths_defaults() -> dict:
    return load_config(None)["lengths"]


def cmd_cutoff(args) -> None:
    from danlu.config import LengthsConfig
    from danlu.lengths import CutoffRule, decide_cutoff
    from danlu.models import max_positions, resolve_model_path
    from danlu.stage import run_stage

    params = stage_params(args, "lengths")
    cfg = from_mapping(LengthsConfig, {**_lengths_defaults(), **params})
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
    return parser


def main(argv: list[str] | None = None) -> int:
    from danlu.lengths import TemplateError
    from danlu.models import ModelError
    from danlu.readers import InputError

    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (InputError, ConfigError, UsageError, ModelError, TemplateError) as err:
        print(f"danlu {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
