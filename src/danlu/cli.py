"""`danlu <stage> ...`: the commands Snakemake rules call (and people run by hand).

Rules pass each stage's validated config section as JSON in `--params`; by
hand, `--config FILE` reads a danlu YAML config (defaults when omitted) and
flags override single keys. Unusable input exits 2 with one line on stderr.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from danlu.errors import UserError


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", help="the stage's config section as JSON (what rules pass)")
    p.add_argument("--config", help="a danlu YAML config to read the stage's section from")
    p.add_argument("--code", nargs="*", default=[],
                   help="source files the stage depends on (hashed into its manifest)")


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="base model: local directory or hub id")
    p.add_argument("--revision", help="hub revision to pin")
    p.add_argument("--template", default="chatml", help="chat template if the tokenizer has none")
    p.add_argument("--trust-remote-code", action="store_true")


def _benchmark_args(p: argparse.ArgumentParser, without: str) -> None:
    # No default path: a command run by hand reads only what it is given.
    p.add_argument("--benchmarks", metavar="DIR",
                   help="local C-Eval/CMMLU copy holding ceval/ and cmmlu/ (official layouts)")
    p.add_argument("--benchmark-hub", action="append", default=[], metavar="NAME=HUB_ID",
                   help=f"hub dataset of a benchmark, read when DIR is not given or not found; {without}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="danlu", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("clean", help="normalise, validate and PII-mask raw records")
    p.add_argument("inputs", nargs="*", metavar="INPUT", help="data files (none for a hub --dataset)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--dataset", help="one `datasets:` entry as JSON: a file (name, path, format, "
                                     "...) or a hub dataset (name, hf_hub_url, subset, split, revision)")
    p.add_argument("--format", default="auto", choices=["auto", "alpaca", "sharegpt", "messages"])
    p.add_argument("--encoding", default="auto")
    p.add_argument("--shard", type=int, default=0,
                   help="clean only this record range of the one INPUT (0-based; see --shards)")
    p.add_argument("--shards", type=int, default=1,
                   help="ranges the INPUT is split into; `danlu combine` of all of them in "
                        "order equals cleaning it whole")
    _add_common(p)
    p.set_defaults(func="danlu.data.clean:main")

    p = sub.add_parser("combine", help="concatenate per-file clean outputs in order")
    p.add_argument("parts", nargs="+", metavar="PART_DIR")
    p.add_argument("--out", required=True)
    p.add_argument("--code", nargs="*", default=[])
    p.set_defaults(func="danlu.data.combine:main")

    p = sub.add_parser("demo-model", help="build the tiny random demo Llama and its tokenizer")
    p.add_argument("--corpus", required=True, help="text file the tokenizer is trained on")
    p.add_argument("--out", required=True, help="model directory to write")
    p.add_argument("--manifest", required=True)
    _add_common(p)
    p.set_defaults(func="danlu.model.demo:main")
    p = sub.add_parser("demo-leak", help="plant benchmark questions in a demo data file")
    _benchmark_args(p, "default: ceval=ceval/ceval-exam, cmmlu=haonan-li/cmmlu")
    p.add_argument("--out", required=True)
    p.set_defaults(func="danlu.data.demo_leak:main")

    p = sub.add_parser("dedup-signatures", help="MinHash signatures of one shard of a records file")
    p.add_argument("input", metavar="INPUT")
    p.add_argument("--shard", type=int, default=0)
    p.add_argument("--shards", type=int, default=1)
    p.add_argument("--out", required=True, help="path prefix of the .npy files")
    _add_common(p)
    p.set_defaults(func="danlu.data.signatures:main")

    p = sub.add_parser("dedup", help="exact + near dedup and benchmark decontamination")
    p.add_argument("input", metavar="INPUT", help="canonical records.jsonl")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--signatures", nargs="*", default=[], help="shard prefixes (else computed here)")
    p.add_argument("--shards", type=int, help="compute signatures in this many shards")
    _benchmark_args(p, "with neither, decontamination is skipped (and logged)")
    _add_common(p)
    p.set_defaults(func="danlu.data.dedup:main")

    p = sub.add_parser("split", help="deterministic train/val split that keeps similar records together")
    p.add_argument("input", metavar="INPUT")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=42)
    _add_common(p)
    p.set_defaults(func="danlu.data.split:main")

    p = sub.add_parser("tokenize", help="tokenise splits under the chat template (Arrow sets)")
    p.add_argument("--train", required=True, help="train records.jsonl")
    p.add_argument("--val", help="val records.jsonl")
    p.add_argument("--out", required=True, help="directory for the Arrow sets")
    p.add_argument("--manifest", required=True)
    p.add_argument("--num-proc", type=int, default=1)
    _model_args(p)
    _add_common(p)
    p.set_defaults(func="danlu.data.tokenize:main")

    p = sub.add_parser("cutoff", help="token-length statistics and the choice of cutoff_len")
    p.add_argument("--data", required=True, help="directory holding the train/val Arrow sets")
    p.add_argument("--out", required=True)
    p.add_argument("--manifest", required=True)
    _model_args(p)
    _add_common(p)
    p.set_defaults(func="danlu.data.cutoff:main")

    p = sub.add_parser("train", help="QLoRA/LoRA fine-tuning with checkpoints and resume")
    p.add_argument("--data", required=True, help="directory holding the train/val Arrow sets")
    p.add_argument("--cutoff", required=True, help="cutoff.json from the lengths stage")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=42)
    _model_args(p)
    _add_common(p)
    p.set_defaults(func="danlu.model.train:main")
    p = sub.add_parser("merge", help="merge the LoRA adapter into the full-precision base, verified")
    p.add_argument("--adapter", required=True)
    p.add_argument("--val", required=True, help="val records.jsonl: prompts for the logit check")
    p.add_argument("--out", required=True)
    p.add_argument("--manifest", required=True)
    _model_args(p)
    _add_common(p)
    p.set_defaults(func="danlu.model.merge:main")

    p = sub.add_parser("quantize", help="GPTQ or AWQ W4A16 export with llm-compressor")
    p.add_argument("--method", required=True, choices=["gptq", "awq"])
    p.add_argument("--train", required=True, help="train records.jsonl: calibration samples")
    p.add_argument("--val", required=True,
                   help="tokenised val split (Arrow): the tokens export.gates are checked on")
    p.add_argument("--out", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--seed", type=int, default=42)
    _model_args(p)
    _add_common(p)
    p.set_defaults(func="danlu.model.quantize:main")

    p = sub.add_parser("evaluate", help="C-Eval/CMMLU (and val perplexity) of one model")
    p.add_argument("--name", required=True, help="label: base, tuned, merged, gptq, awq")
    p.add_argument("--adapter", help="a PEFT adapter to apply to --model")
    p.add_argument("--load", help="JSON of load settings (quantization, double_quant, compute_dtype)")
    _benchmark_args(p, "default: ceval=ceval/ceval-exam, cmmlu=haonan-li/cmmlu")
    p.add_argument("--val", help="tokenised val split (Arrow) for perplexity")
    p.add_argument("--cutoff", help="cutoff.json, with --val")
    p.add_argument("--out", required=True)
    _model_args(p)
    _add_common(p)
    p.set_defaults(func="danlu.evaluation.evaluate:main")

    p = sub.add_parser("eval-compare", help="compare.csv and chart over evaluated models")
    p.add_argument("summaries", nargs="+", metavar="SUMMARY_JSON")
    p.add_argument("--out", required=True)
    p.add_argument("--code", nargs="*", default=[])
    p.set_defaults(func="danlu.evaluation.report:main")

    p = sub.add_parser("audit", help="exports with model cards, signatures and provenance")
    p.add_argument("--results", default="results")
    p.add_argument("--export", action="append", default=[], metavar="NAME=DIR",
                   help="a model directory to ship (adapter, merged, gptq, awq)")
    p.add_argument("--exports", default="results/export", help="where export directories go")
    p.add_argument("--out", default="results/audit")
    p.add_argument("--config-json", required=True, help="the resolved config, as JSON")
    p.add_argument("--code", nargs="*", default=[])
    p.set_defaults(func="danlu.audit.export:main")

    p = sub.add_parser("verify", help="re-check every digest, the audit log, MLflow and signatures")
    p.add_argument("results", nargs="?", default="results")
    p.add_argument("--json", action="store_true", help="one JSON object for machines")
    p.add_argument("--no-mlflow", action="store_true", help="skip the MLflow cross-check")
    p.add_argument("--verbose", "-v", action="store_true", help="also print notes")
    p.set_defaults(func="danlu.audit.verify:main")

    p = sub.add_parser("estimate", help="expected peak GPU memory of the configured training")
    p.add_argument("--config", help="danlu config (default: defaults)")
    p.add_argument("--shape", help="a known model shape instead of reading config.json "
                                   "(7b, qwen2.5-7b, llama3-8b, qwen2.5-32b)")
    p.add_argument("--cutoff-len", type=int, help="override the cutoff to plan for")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func="danlu.model.estimate:main")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Each stage's module is imported only when its command runs: `danlu clean`
    # need not load torch.
    module, name = args.func.split(":")
    command = getattr(importlib.import_module(module), name)
    try:
        command(args)
    except UserError as err:
        print(f"danlu {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
