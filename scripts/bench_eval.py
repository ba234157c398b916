"""danlu's evaluate stage against lm-evaluation-harness: same model, same questions,
one process. Prints one JSON object as its last line.

    PYTHONPATH=src python scripts/bench_eval.py                 # builds the demo model
    PYTHONPATH=src python scripts/bench_eval.py --model-dir results/train/merged \\
        --subjects 4 --per-subject 50 --batch-size 16

lm-eval runs its own installed `ceval-valid_<subject>` / `cmmlu_<subject>` task
YAMLs, unchanged except that the rows come from the local CSVs (datasets' csv
builder, one split per file). Both sides get the same batch size; lm-eval's time
covers `simple_evaluate` (task building, prompts, tokenising, model), danlu's
covers what `evaluate_model` does (loading, prompts, tokenising, model, writing
its files). They run subject by subject, alternately, so that other load on a
shared machine slows both alike.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from danlu.lm_eval_reference import lm_eval_task

REPO = Path(__file__).resolve().parents[1]
DEFAULT_BENCHMARKS = REPO.parent / "shared" / "benchmarks"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--model-dir",
        type=Path,
        help="a Hugging Face model directory (default: build the demo model)",
    )
    p.add_argument("--benchmarks-root", type=Path, default=DEFAULT_BENCHMARKS)
    p.add_argument("--subjects", type=int, default=8, help="first N subjects of each benchmark")
    p.add_argument("--per-subject", type=int, default=60, help="first N questions of each subject")
    p.add_argument("--num-fewshot", type=int, default=5, choices=(0, 5))
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads for both sides (0: torch's default). One by default: on a"
        " shared machine a busy neighbour stalls a multi-thread team at every op, which"
        " distorts timings far more than it slows a single thread",
    )
    return p.parse_args(argv)


def build_demo_model(out_dir: Path, benchmarks_root: Path) -> Path:
    """The project's demo Llama (default shape), its tokenizer trained on the dev-split
    question text, written to a temporary directory at run time."""
    from danlu.demo import build_demo_model as build

    texts = []
    for path in sorted(benchmarks_root.glob("*/**/dev/*.csv")):
        with open(path, encoding="utf-8-sig", newline="") as fh:
            texts += ["\n".join(v for k, v in row.items() if k and v) for row in csv.DictReader(fh)]
    corpus = out_dir / "corpus.txt"
    corpus.write_text("\n\n".join(texts), encoding="utf-8")
    build(out_dir / "model", corpus)
    return out_dir / "model"


def run_lm_eval(lm, manager, task: dict, args, limit: int) -> tuple[dict, float]:
    """lm-eval on one task: {doc_id: [four log-likelihoods]} and the seconds it took."""
    import lm_eval

    start = time.perf_counter()
    out = lm_eval.simple_evaluate(
        model=lm,
        tasks=[task],
        num_fewshot=args.num_fewshot,
        limit=limit,
        log_samples=True,
        bootstrap_iters=0,
        task_manager=manager,
    )
    seconds = time.perf_counter() - start
    (samples,) = out["samples"].values()
    return {s["doc_id"]: [r[0][0] for r in s["resps"]] for s in samples}, seconds


def run_danlu(model, tokenizer, config, root: Path) -> tuple[list, float]:
    from danlu.evaluate import load_selected, score_subjects

    start = time.perf_counter()
    data = [s for subjects in load_selected(config, root).values() for s in subjects]
    results = score_subjects(model, tokenizer, data, config)
    return results, time.perf_counter() - start


def main(argv=None) -> dict:
    args = parse_args(argv)
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from danlu.benchmarks import load_subjects
    from danlu.eval_report import write_outputs
    from danlu.evaluate import EvalConfig, config_facts

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir = args.model_dir or build_demo_model(tmp, args.benchmarks_root)
        model = AutoModelForCausalLM.from_pretrained(model_dir)
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        subjects = [
            (b, s)
            for b in ("ceval", "cmmlu")
            for s in sorted(load_subjects(b, args.benchmarks_root))[: args.subjects]
        ]
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=args.batch_size)
        manager = TaskManager(include_defaults=False)  # the task dicts are complete

        def danlu_config(names, limit):
            return EvalConfig(
                subjects=names,
                num_fewshot=args.num_fewshot,
                max_per_subject=limit,
                batch_size=args.batch_size,
            )

        # Warm-up: first-call costs (allocator, kernels) paid by neither timed run.
        first = lm_eval_task(*subjects[0], args.benchmarks_root, tmp / "datasets")
        run_lm_eval(lm, manager, first, args, limit=2)
        run_danlu(
            model,
            tokenizer,
            danlu_config([f"{subjects[0][0]}/{subjects[0][1]}"], 2),
            args.benchmarks_root,
        )

        # Subject by subject, alternating which goes first, so that load from other
        # processes on a shared machine falls on both about equally.
        results, theirs, seconds = [], {}, {"lm_eval": 0.0, "danlu": 0.0}
        for n, (benchmark, subject) in enumerate(subjects):
            task = lm_eval_task(benchmark, subject, args.benchmarks_root, tmp / "datasets")
            config = danlu_config([f"{benchmark}/{subject}"], args.per_subject)
            for side in ("lm_eval", "danlu") if n % 2 == 0 else ("danlu", "lm_eval"):
                if side == "lm_eval":
                    scores, took = run_lm_eval(lm, manager, task, args, args.per_subject)
                    theirs.update({(benchmark, subject, d): s for d, s in scores.items()})
                else:
                    part, took = run_danlu(model, tokenizer, config, args.benchmarks_root)
                    results += part
                seconds[side] += took
        start = time.perf_counter()  # danlu's report files are part of its stage
        write_outputs(
            results, config_facts(danlu_config(None, args.per_subject)), tmp / "out", "bench"
        )
        seconds["danlu"] += time.perf_counter() - start

    same, worst = 0, 0.0
    for r in results:
        four = theirs[(r.benchmark, r.subject, int(r.id))]
        same += r.prediction == "ABCD"[max(range(4), key=lambda i: (four[i], -i))]
        worst = max(worst, *(abs(a - b) for a, b in zip(r.scores, four, strict=True)))
    questions = len(results)
    summary = {
        "questions": questions,
        "subjects": len(subjects),
        "num_fewshot": args.num_fewshot,
        "batch_size": args.batch_size,
        "threads": torch.get_num_threads(),
        "model": "demo (built)" if args.model_dir is None else str(args.model_dir),
        "lm_eval_seconds": round(seconds["lm_eval"], 2),
        "danlu_seconds": round(seconds["danlu"], 2),
        "lm_eval_questions_per_s": round(questions / seconds["lm_eval"], 2),
        "danlu_questions_per_s": round(questions / seconds["danlu"], 2),
        "speedup": round(seconds["lm_eval"] / seconds["danlu"], 2),
        "agreement": round(same / questions, 4),
        "max_abs_loglik_diff": float(f"{worst:.3g}"),
    }
    print(json.dumps(summary, sort_keys=True))
    return summary


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
