"""`danlu <stage> ...`: the commands Snakemake rules call (and people run by hand).

Rules pass each stage's validated config section as JSON in `--params`; by
hand, `--config FILE` reads a danlu YAML config (defaults when omitted) and
flags override single keys. Unusable input exits 2 with one line on stderr.
"""

from __future__ import annotations

import argparse
import json
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
    return parser


def main(argv: list[str] | None = None) -> int:
    from danlu.readers import InputError

    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (InputError, ConfigError, UsageError) as err:
        print(f"danlu {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
