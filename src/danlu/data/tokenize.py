"""Tokenize: render each canonical record with the model's chat template into
token ids and labels (every prompt token masked, -100), Arrow sets per split.

`build_example` is shared with training; `answer_spans` finds the answers, for
templates that rewrite history too. `truncate_example` is what training
applies at `cutoff_len`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from danlu.config import LengthsConfig, from_mapping, stage_params
from danlu.data.answer_spans import conversation_spans
from danlu.errors import UserError
from danlu.model.loading import model_facts, model_inputs

IGNORE_INDEX = -100


class NoRecordsError(UserError, ValueError):
    """A split with nothing to tokenise; one line."""


@dataclass(frozen=True)
class ExampleOptions:
    train_on_prompt: bool = False  # LLaMA-Factory's name: also learn the prompt tokens
    mask_history: bool = False  # LLaMA-Factory's name: learn only the last assistant turn
    enable_thinking: bool = True  # LLaMA-Factory's name: the final answer keeps its thoughts


def build_example(record: dict, tokenizer, options: ExampleOptions = ExampleOptions()) -> dict:
    """A canonical record -> {input_ids, labels, length, target_length, prompt_length}.

    Tokens are labelled by where their characters fall: a token belongs to an
    answer when its first character lies inside an answer span.
    """
    full, spans = conversation_spans(tokenizer, record["messages"], options.enable_thinking)
    if options.mask_history:
        spans = spans[-1:]
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids = enc["input_ids"]
    starts = np.fromiter((s for s, _ in enc["offset_mapping"]), dtype=np.int64, count=len(ids))
    trained = np.zeros(len(ids), dtype=bool)
    for begin, end in spans:
        trained |= (starts >= begin) & (starts < end)
    if options.train_on_prompt:
        trained[:] = True
    labels = np.where(trained, np.asarray(ids, dtype=np.int64), IGNORE_INDEX)
    first = int(np.argmax(trained)) if trained.any() else len(ids)
    return {
        "id": record["id"],
        "input_ids": ids,
        "labels": labels.tolist(),
        "length": len(ids),
        "target_length": int(trained.sum()),
        "prompt_length": first,
    }


def build_batch(batch: dict, tokenizer, options: ExampleOptions) -> dict:
    """`datasets.map(batched=True)` adapter around build_example."""
    rows = [build_example({"id": i, "messages": m}, tokenizer, options)
            for i, m in zip(batch["id"], batch["messages"], strict=True)]
    return {key: [r[key] for r in rows] for key in rows[0]} if rows else {}


def _budget(source: int, target: int, cutoff: int) -> tuple[int, int]:
    """How many prompt and answer tokens to keep (LLaMA-Factory's infer_seqlen):
    short answers are kept whole, else the two share the budget by size; at
    least one answer token survives whenever cutoff allows."""
    if target * 2 < cutoff:
        max_target = cutoff
    elif source * 2 < cutoff:
        max_target = cutoff - source
    else:
        max_target = int(cutoff * target / (source + target))
    new_target = min(max(max_target, 1), target)
    return min(max(cutoff - new_target, 0), source), new_target


def truncate_example(input_ids: Sequence[int], labels: Sequence[int], cutoff_len: int,
                     policy: str = "truncate") -> tuple[list[int], list[int], str]:
    """Fit one example into cutoff_len. Returns (ids, labels, outcome) with
    outcome `fit`, `truncated` or `dropped` (policy `drop`, or nothing left to
    learn); dropped examples return empty lists."""
    n = len(input_ids)
    if n <= cutoff_len:
        return list(input_ids), list(labels), "fit"
    if policy == "drop":
        return [], [], "dropped"
    trained = [i for i, lab in enumerate(labels) if lab != IGNORE_INDEX]
    if not trained:
        return [], [], "dropped"
    first = trained[0]
    if first < cutoff_len:  # the prompt fits: cut the tail
        keep = list(range(cutoff_len))
    else:  # the prompt alone is too long: keep its start and the answer's start
        keep_src, keep_tgt = _budget(first, n - first, cutoff_len)
        keep = list(range(keep_src)) + list(range(first, first + keep_tgt))
    ids = [input_ids[i] for i in keep]
    labs = [labels[i] for i in keep]
    if all(lab == IGNORE_INDEX for lab in labs):
        return [], [], "dropped"
    return ids, labs, "truncated"


def _blank(path) -> bool:
    """Whether a file holds nothing but whitespace (read until the first byte that is not)."""
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 16):
            if chunk.strip():
                return False
    return True


def tokenize_splits(splits: dict[str, str], tokenizer, options: ExampleOptions, out_dir,
                    num_proc: int = 1) -> dict:
    """Tokenise each split's records.jsonl into an Arrow set `out_dir/<split>`
    (`save_to_disk`), which training reads instead of tokenising again."""
    import tempfile
    from pathlib import Path

    import datasets

    from danlu.outputs import atomic_dir

    datasets.disable_progress_bars()
    stats = {}
    for name, path in splits.items():
        if _blank(path):  # load_dataset fails on it with a bare StopIteration
            raise NoRecordsError(f"{path}: no records to tokenise (all were rejected, removed as "
                                 "duplicates or put in the other split; see the stats beside it)")
        with tempfile.TemporaryDirectory() as cache, atomic_dir(Path(out_dir) / name) as tmp:
            ds = datasets.load_dataset("json", data_files=str(path), split="train",
                                       cache_dir=cache)
            ds = ds.map(build_batch, batched=True, batch_size=256, num_proc=num_proc or None,
                        remove_columns=ds.column_names, new_fingerprint=f"danlu-{name}",
                        fn_kwargs={"tokenizer": tokenizer, "options": options})
            ds.save_to_disk(str(tmp))
            stats[name] = {"examples": len(ds), "total_tokens": describe(ds["length"]),
                           "target_tokens": describe(ds["target_length"]),
                           "without_target": int(sum(1 for t in ds["target_length"] if t == 0))}
    return stats


def main(args) -> None:
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


PERCENTILES = (50, 90, 95, 99)

def describe(values: Sequence[int]) -> dict:
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        return {"count": 0}
    out = {"count": int(arr.size), "mean": round(float(arr.mean()), 3), "max": int(arr.max())}
    for p in PERCENTILES:
        out[f"p{p}"] = round(float(np.percentile(arr, p)), 3)
    return out
