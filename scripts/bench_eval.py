"""danlu's evaluate stage against lm-evaluation-harness: same model, same questions,
one process. Prints one JSON object as its last line.

    PYTHONPATH=src python scripts/bench_eval.py                 # the demo model (built)
    PYTHONPATH=src python scripts/bench_eval.py --shape 0.5b --subjects 2 --per-subject 4
    PYTHONPATH=src python scripts/bench_eval.py --model-dir results/train/merged \\
        --subjects 4 --per-subject 50 --batch-size 16

Each side runs the way its users run it:
  lm-eval  ONE `simple_evaluate` call over every selected subject, as
           `lm_eval --tasks ...` does: its installed `ceval-valid_<subject>` /
           `cmmlu_<subject>` task YAMLs, unchanged except that the rows come from the
           local CSVs (datasets' csv builder, one split per file), `log_samples` on (the
           per-question output danlu also writes), stderr bootstrap off.
  danlu    what `evaluate_model` does: load the subjects, score them, write its files.
Before timing, each side runs once over every subject (one question each): that builds
lm-eval's Arrow dataset cache and pays both sides' first-call costs, so the timed calls
run with warm caches. Both get the same model object, batch size and thread count.

Besides each side's total seconds, the model's forward calls are timed on both sides
(a wrapper around `model.forward`), so the JSON shows how much of each total is the
model and how much is the rest (`*_other_seconds`: prompts, tokenising, scoring, files;
for lm-eval also its log-softmax over every position's logits, which is how it scores,
and its environment report, which every call writes). `--repeats N` times the pair N times,
alternating which side goes first (other load on a shared machine falls on both
alike), and reports medians with every run listed.
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_BENCHMARKS = REPO.parent / "shared" / "benchmarks"
SIDES = ("lm_eval", "danlu")

# Qwen2-0.5B's published architecture (config.json of Qwen/Qwen2-0.5B): the width and
# depth, the 151,936-entry vocabulary (its logits are a large part of the cost) and tied
# embeddings. The weights are random and the tokenizer is the demo's; only speed is
# measured, and the speed of a forward pass does not depend on the weights' values.
QWEN2_0_5B = dict(
    vocab_size=151936,
    hidden_size=896,
    intermediate_size=4864,
    num_hidden_layers=24,
    num_attention_heads=14,
    num_key_value_heads=2,
    max_position_embeddings=32768,
    rope_theta=1_000_000.0,
    tie_word_embeddings=True,
)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--model-dir",
        type=Path,
        help="a Hugging Face model directory (default: build a model of --shape)",
    )
    p.add_argument(
        "--shape",
        choices=("demo", "0.5b"),
        default="demo",
        help="model built when no --model-dir: the demo Llama, or a random-weight"
        " Qwen2-0.5B-shaped model (about 0.5 billion parameters)",
    )
    p.add_argument("--benchmarks-root", type=Path, default=DEFAULT_BENCHMARKS)
    p.add_argument("--subjects", type=int, default=8, help="first N subjects of each benchmark")
    p.add_argument("--per-subject", type=int, default=60, help="first N questions of each subject")
    p.add_argument("--num-fewshot", type=int, default=5, choices=(0, 5))
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--repeats", type=int, default=1, help="timed runs of each side")
    p.add_argument(
        "--cache-requests",
        action="store_true",
        help="lm-eval's optional request cache (`--cache_requests true`): prompts built in"
        " the warm-up are reused by the timed call. Off by default, as in lm-eval",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads for both sides (0: torch's default). One by default: on a"
        " shared machine a busy neighbour stalls a multi-thread team at every op, which"
        " distorts timings far more than it slows a single thread",
    )
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    return args


# ---- the model ------------------------------------------------------------------------


def write_corpus(out_dir: Path, benchmarks_root: Path) -> Path:
    """The dev-split question text, to train the demo tokenizer on (held-out C-Eval
    text comes out at about 1.3 characters per token, near Qwen2's tokenizer)."""
    texts = []
    for path in sorted(benchmarks_root.glob("*/**/dev/*.csv")):
        with open(path, encoding="utf-8-sig", newline="") as fh:
            texts += ["\n".join(v for k, v in row.items() if k and v) for row in csv.DictReader(fh)]
    corpus = out_dir / "corpus.txt"
    corpus.write_text("\n\n".join(texts), encoding="utf-8")
    return corpus


def build_demo_model(out_dir: Path, benchmarks_root: Path) -> Path:
    """The project's demo Llama (default shape) in a temporary directory."""
    from danlu.model.demo import build_demo_model as build

    build(out_dir / "model", write_corpus(out_dir, benchmarks_root))
    return out_dir / "model"


def qwen2_0_5b_config(tokenizer):
    from transformers import Qwen2Config

    return Qwen2Config(
        **QWEN2_0_5B,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def build_qwen2_0_5b(out_dir: Path, benchmarks_root: Path):
    """A random-weight Qwen2-0.5B-shaped model in memory, with the demo tokenizer
    (nothing can be downloaded here). float32: this benchmark runs on the CPU."""
    import torch
    from transformers import Qwen2ForCausalLM

    from danlu.model.demo import train_tokenizer

    tokenizer = train_tokenizer(write_corpus(out_dir, benchmarks_root), 6144)
    tokenizer.model_max_length = QWEN2_0_5B["max_position_embeddings"]
    torch.manual_seed(0)
    return Qwen2ForCausalLM(qwen2_0_5b_config(tokenizer)).eval(), tokenizer


def load_model(args, tmp: Path):
    """(model, tokenizer, label) for --model-dir or --shape."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if args.model_dir is None and args.shape == "0.5b":
        return (*build_qwen2_0_5b(tmp, args.benchmarks_root), "qwen2-0.5b-shaped (random)")
    model_dir = args.model_dir or build_demo_model(tmp, args.benchmarks_root)
    label = "demo (built)" if args.model_dir is None else str(args.model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    return model, AutoTokenizer.from_pretrained(model_dir), label


class ForwardClock:
    """Wraps `model.forward` to add each call's wall time to the side now running.

    Both sides call the model through `model(...)`, which goes to `forward`, so the
    same wrapper times both. functools.wraps keeps the signature visible to
    `inspect.signature` (danlu checks it for `logits_to_keep`).
    """

    def __init__(self, model):
        self.seconds: dict[str, float] = defaultdict(float)
        self.side = "untimed"
        self._sync = _synchronizer(model)
        inner = model.forward

        @functools.wraps(inner)
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                self._sync()  # on a GPU the kernels are still running when forward returns
                self.seconds[self.side] += time.perf_counter() - start

        model.forward = timed

    def run(self, side: str, fn, *args, **kwargs):
        """fn(...) with its forward time booked to `side`; returns (result, total seconds)."""
        self.side = side
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs), time.perf_counter() - start
        finally:
            self.side = "untimed"


def _synchronizer(model):
    import torch

    if next(model.parameters()).device.type == "cuda":
        return torch.cuda.synchronize
    return lambda: None


# ---- the two sides ----------------------------------------------------------------------


def run_lm_eval(lm, manager, tasks: dict, args, limit: int, rewrite: bool = False) -> dict:
    """One simple_evaluate over all tasks ({name: (task dict, (benchmark, subject))}):
    {(benchmark, subject, doc_id): [four log-likelihoods]}."""
    import lm_eval

    out = lm_eval.simple_evaluate(
        model=lm,
        tasks=[task for task, _ in tasks.values()],
        num_fewshot=args.num_fewshot,
        limit=limit,
        log_samples=True,
        bootstrap_iters=0,
        cache_requests=args.cache_requests,
        rewrite_requests_cache=rewrite,
        task_manager=manager,
    )
    return {
        (*tasks[name][1], s["doc_id"]): [r[0][0] for r in s["resps"]]
        for name, samples in out["samples"].items()
        for s in samples
    }


def run_danlu(model, tokenizer, config, root: Path, out_dir: Path) -> list:
    """What danlu's evaluate_model does (load, score, write its report files),
    keeping the per-question results for the comparison."""
    from danlu.evaluation.evaluate import config_facts, load_selected, score_subjects
    from danlu.evaluation.report import write_outputs

    data = [s for subjects in load_selected(config, root).values() for s in subjects]
    results = score_subjects(model, tokenizer, data, config)
    write_outputs(results, config_facts(config), out_dir, "bench")
    return results


def compare(results: list, theirs: dict) -> tuple[int, int, float]:
    """(questions compared, same prediction, max |log-likelihood difference|)."""
    compared, same, worst = 0, 0, 0.0
    for r in results:
        if r.scores is None:  # skipped by danlu (answer outside A-D): nothing to compare
            continue
        four = theirs[(r.benchmark, r.subject, int(r.id))]
        compared += 1
        # lm-eval takes numpy's argmax: the first maximum on ties
        same += r.prediction == "ABCD"[max(range(4), key=lambda i: (four[i], -i))]
        worst = max(worst, *(abs(a - b) for a, b in zip(r.scores, four, strict=True)))
    return compared, same, worst


# ---- the run ------------------------------------------------------------------------------


def select_subjects(args) -> list[tuple[str, str]]:
    from danlu.evaluation.benchmarks import load_subjects

    return [
        (b, s)
        for b in ("ceval", "cmmlu")
        for s in sorted(load_subjects(b, args.benchmarks_root))[: args.subjects]
    ]


def lm_eval_tasks(subjects, root: Path, cache_dir: Path) -> dict:
    """{task name: (task dict, (benchmark, subject))}, to read the samples back by."""
    from danlu.evaluation.lm_eval_reference import lm_eval_task

    tasks = {}
    for benchmark, subject in subjects:
        task = lm_eval_task(benchmark, subject, root, cache_dir)
        tasks[task["task"]] = (task, (benchmark, subject))
    return tasks


def time_sides(args, model, tokenizer, subjects, tmp: Path) -> dict:
    """Warm up both sides, then time them `repeats` times, alternating the order."""
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from danlu.evaluation.evaluate import eval_config

    clock = ForwardClock(model)
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=args.batch_size)
    # The task dicts are complete. A default TaskManager would first index lm-eval's
    # thousands of installed YAMLs, as its CLI does on every call: seconds that would
    # only be added to lm-eval's time, so they are left out.
    manager = TaskManager(include_defaults=False)
    tasks = lm_eval_tasks(subjects, args.benchmarks_root, tmp / "datasets")

    def danlu_side(limit, out):
        config = eval_config(
            subjects=[f"{b}/{s}" for b, s in subjects],
            num_fewshot=args.num_fewshot,
            max_per_subject=limit,
            batch_size=args.batch_size,
        )
        return run_danlu(model, tokenizer, config, args.benchmarks_root, out)

    # Warm-up, untimed: lm-eval converts every subject's CSVs into its Arrow cache (and,
    # with --cache-requests, caches every prompt afresh); both sides pay their
    # first-call costs (allocator, lazy imports).
    clock.run("untimed", run_lm_eval, lm, manager, tasks, args, 1, rewrite=True)
    clock.run("untimed", danlu_side, 1, tmp / "warmup")
    runs = {side: {"seconds": [], "forward": [], "other": []} for side in SIDES}
    outputs = {}
    for n in range(args.repeats):
        for side in SIDES if n % 2 == 0 else SIDES[::-1]:
            forward_before = clock.seconds[side]
            if side == "lm_eval":
                call = (run_lm_eval, lm, manager, tasks, args, args.per_subject)
            else:
                call = (danlu_side, args.per_subject, tmp / f"out{n}")
            outputs[side], took = clock.run(side, *call)
            runs[side]["seconds"].append(took)
            runs[side]["forward"].append(clock.seconds[side] - forward_before)
            runs[side]["other"].append(took - runs[side]["forward"][-1])
    return {"runs": runs, "theirs": outputs["lm_eval"], "results": outputs["danlu"]}


def summarise(args, model, label, subjects, timed) -> dict:
    import torch

    compared, same, worst = compare(timed["results"], timed["theirs"])
    median = {
        side: {k: statistics.median(v) for k, v in timed["runs"][side].items()} for side in SIDES
    }
    questions = len(timed["results"])
    summary = {
        "questions": questions,
        "compared": compared,
        "subjects": len(subjects),
        "num_fewshot": args.num_fewshot,
        "batch_size": args.batch_size,
        "threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "model": label,
        "parameters": sum(p.numel() for p in model.parameters()),
        "lm_eval_cache_requests": args.cache_requests,
        "speedup": round(median["lm_eval"]["seconds"] / median["danlu"]["seconds"], 2),
        "forward_speedup": round(median["lm_eval"]["forward"] / median["danlu"]["forward"], 2),
        "agreement": round(same / compared, 4) if compared else None,
        "max_abs_loglik_diff": float(f"{worst:.3g}"),
    }
    for side in SIDES:
        seconds = median[side]["seconds"]
        summary |= {
            f"{side}_seconds": round(seconds, 2),
            f"{side}_forward_seconds": round(median[side]["forward"], 2),
            f"{side}_other_seconds": round(median[side]["other"], 2),
            f"{side}_questions_per_s": round(questions / seconds, 2),
            f"{side}_seconds_runs": [round(x, 2) for x in timed["runs"][side]["seconds"]],
            f"{side}_forward_seconds_runs": [round(x, 2) for x in timed["runs"][side]["forward"]],
        }
    return summary


def main(argv=None) -> dict:
    args = parse_args(argv)
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.cache_requests:  # lm-eval's default is a folder inside its installed package
            os.environ.setdefault("LM_HARNESS_CACHE_PATH", str(tmp / "lm_eval_cache"))
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        model, tokenizer, label = load_model(args, tmp)
        subjects = select_subjects(args)
        timed = time_sides(args, model, tokenizer, subjects, tmp)
    summary = summarise(args, model, label, subjects, timed)
    print(json.dumps(summary, sort_keys=True))
    return summary


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
