"""Cutoff: token-length statistics of the tokenised splits, their histogram,
and the choice of `cutoff_len` that training then uses."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from danlu.config import LengthsConfig, from_mapping, stage_params
from danlu.data.tokenize import IGNORE_INDEX, PERCENTILES, describe, truncate_example


@dataclass(frozen=True)
class CutoffRule:
    cutoff_len: int | str  # "auto" or a fixed integer
    percentile: float
    min_cutoff: int
    max_cutoff: int
    multiple_of: int = 64


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


def main(args) -> None:
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
