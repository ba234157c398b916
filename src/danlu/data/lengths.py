"""Lengths: one example builder (shared with training), token-length statistics,
and the choice of `cutoff_len`.

`build_example` renders a canonical record with the model's chat template and
returns token ids and labels in which every prompt token is masked (-100), so
only assistant turns are trained (`answer_spans` finds them, for templates
that rewrite history too). `truncate_example` is what training applies at
`cutoff_len`. `choose_cutoff` turns measured lengths into the cutoff decision.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from danlu.data.answer_spans import TemplateError, conversation_spans  # noqa: F401  (re-exported)
from danlu.errors import UserError

IGNORE_INDEX = -100


class NoRecordsError(UserError, ValueError):
    """A split with nothing to tokenise; one line."""

PERCENTILES = (50, 90, 95, 99)


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


@dataclass(frozen=True)
class CutoffRule:
    cutoff_len: int | str  # "auto" or a fixed integer
    percentile: float
    min_cutoff: int
    max_cutoff: int
    multiple_of: int = 64


def describe(values: Sequence[int]) -> dict:
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        return {"count": 0}
    out = {"count": int(arr.size), "mean": round(float(arr.mean()), 3), "max": int(arr.max())}
    for p in PERCENTILES:
        out[f"p{p}"] = round(float(np.percentile(arr, p)), 3)
    return out


RULE_TEXT = ("the configured percentile of total tokens per training example, rounded up "
             "to a multiple of 64, clamped to [min_cutoff, max_cutoff] and to the model's "
             "max_position_embeddings")


def choose_cutoff(lengths: Sequence[int], rule: CutoffRule, model_max: int | None) -> dict:
    """The cutoff decision: the percentile of total lengths rounded up to a
    multiple of 64, clamped to [min_cutoff, max_cutoff] and the model's context.

    Returns {"decision": ..., "config": ...}: `decision` depends only on the
    chosen value (it goes into cutoff.json, which training reads, so another
    percentile that picks the same cutoff changes no byte of it); `config`
    names the percentile and its value (it goes into stats.json)."""
    value = float(np.percentile(np.asarray(lengths, dtype=np.float64), rule.percentile))
    rounded = max(rule.multiple_of, math.ceil(value / rule.multiple_of) * rule.multiple_of)
    upper = min(rule.max_cutoff, model_max) if model_max else rule.max_cutoff
    decided = min(max(rounded, rule.min_cutoff), upper)
    decision = {
        "method": "percentile",
        "rule": RULE_TEXT,
        "min_cutoff": rule.min_cutoff,
        "max_cutoff": rule.max_cutoff,
        "model_max_position_embeddings": model_max,
        "clamped": decided != rounded,
        "cutoff_len": decided,
    }
    config = {"percentile": rule.percentile, "percentile_value": round(value, 3),
              "rounded": rounded, "decided_cutoff_len": decided}
    if rule.cutoff_len != "auto":
        override = int(rule.cutoff_len)
        if model_max and override > model_max:
            from danlu.config import ConfigError

            raise ConfigError(f"lengths.cutoff_len {override} exceeds the model's context ({model_max})")
        decision = {"method": "override", "cutoff_len": override,
                    "model_max_position_embeddings": model_max}
    return {"decision": decision, "config": config}


def truncation_effect(examples, cutoff_len: int, policy: str) -> dict:
    """What training will do at cutoff_len: outcomes and target tokens lost."""
    outcomes: Counter = Counter()
    target_total = target_kept = 0
    for ids, labels in examples:
        before = sum(1 for lab in labels if lab != IGNORE_INDEX)
        _, kept_labels, outcome = truncate_example(ids, labels, cutoff_len, policy)
        outcomes[outcome] += 1
        target_total += before
        target_kept += sum(1 for lab in kept_labels if lab != IGNORE_INDEX)
    n = sum(outcomes.values())
    return {
        "outcomes": {k: outcomes.get(k, 0) for k in ("fit", "truncated", "dropped")},
        "share_truncated": round(outcomes["truncated"] / n, 6) if n else 0.0,
        "share_dropped": round(outcomes["dropped"] / n, 6) if n else 0.0,
        "share_target_tokens_lost": round(1 - target_kept / target_total, 6) if target_total else 0.0,
    }


# --- I/O shell -------------------------------------------------------------------


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


def _effect(ds, cutoff_len: int, policy: str) -> dict:
    """truncation_effect, touching token lists only for the examples that overflow."""
    long_rows = [i for i, n in enumerate(ds["length"]) if n > cutoff_len]
    subset = ds.select(long_rows)
    effect = truncation_effect(zip(subset["input_ids"], subset["labels"], strict=True),
                               cutoff_len, policy)
    n = len(ds)
    outcomes = effect["outcomes"]
    outcomes["fit"] += n - len(long_rows)
    target_total = sum(ds["target_length"])
    lost = effect["share_target_tokens_lost"] * sum(subset["target_length"])
    return {
        "outcomes": outcomes,
        "share_truncated": round(outcomes["truncated"] / n, 6),
        "share_dropped": round(outcomes["dropped"] / n, 6),
        "share_target_tokens_lost": round(lost / target_total, 6) if target_total else 0.0,
    }


def decide_cutoff(arrow_dir, rule: CutoffRule, overlength: str, model_max: int | None,
                  out_dir) -> dict:
    """Write cutoff.json (the decision; nothing time- or percentile-dependent),
    stats.json (the percentile used, outcomes per split) and lengths.png;
    return cutoff.json's content."""
    from pathlib import Path

    import datasets

    from danlu.outputs import write_json
    from danlu.plots import plot_lengths

    out_dir, arrow_dir = Path(out_dir), Path(arrow_dir)
    train = datasets.load_from_disk(str(arrow_dir / "train"))
    chosen = choose_cutoff(train["length"], rule, model_max)
    decision = chosen["decision"]
    cutoff = decision["cutoff_len"]
    effects = {"overlength": overlength, "cutoff_len": cutoff, "decision": chosen["config"]}
    for split in ("train", "val"):
        if (arrow_dir / split).is_dir():
            ds = train if split == "train" else datasets.load_from_disk(str(arrow_dir / split))
            effects[split] = _effect(ds, cutoff, overlength)
    result = {
        "cutoff_len": cutoff,
        "decision": decision,
        "total_tokens": describe(train["length"]),
        "target_tokens": describe(train["target_length"]),
        "overlength": overlength,
        "share_truncated": effects["train"]["share_truncated"],
        "share_target_tokens_lost": effects["train"]["share_target_tokens_lost"],
    }
    write_json(out_dir / "cutoff.json", result)
    write_json(out_dir / "stats.json", effects)
    marks = {f"p{p}": result["total_tokens"][f"p{p}"] for p in PERCENTILES}
    plot_lengths(train["length"], marks, cutoff, out_dir / "lengths.png")
    return result
