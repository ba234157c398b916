"""The train/val split: kept records that are still similar stay in one group,
and whole groups go to train or val by a seeded hash, so val never holds a
near copy of a train record and the split does not depend on file order."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np

from danlu.config import DedupConfig, from_mapping, stage_params
from danlu.data.minhash import (
    near_duplicate_pairs,
    representatives,
)
from danlu.data.readers import records_input
from danlu.data.records import dumps, rows_of_lines
from danlu.data.signatures import scan
from danlu.progress import Progress


def _group_unit(key: str, seed: int) -> float:
    """A stable pseudo-random number in [0, 1) for a group."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _val_groups(unit: dict[int, float], sizes: np.ndarray, val_size: float) -> set[int]:
    """Groups for val: whole groups in hash order up to a count (val_size >= 1),
    else those whose unit falls below the share."""
    if val_size < 1:
        return {g for g, u in unit.items() if u < val_size}
    val_groups, taken = set(), 0
    for g in sorted(unit, key=unit.get):
        if taken >= val_size:
            break
        val_groups.add(g)
        taken += int(sizes[g])
    return val_groups


def split_file(path: Path, cfg: DedupConfig, seed: int, out_dir: Path) -> dict:
    """train.jsonl / val.jsonl. Records still similar at `split_threshold`
    form a group (named by its earliest id) that goes wholly to one side;
    the side depends only on the group's name and the seed, so adding or
    removing other records moves no existing record."""
    from danlu.outputs import atomic_outputs, write_json

    found = scan(path, cfg, details=True, label="split signatures")
    params = cfg.minhash(cfg.split_threshold)
    groups = representatives(len(found.block.lines), near_duplicate_pairs(found.block.sig, params))
    sizes = np.bincount(groups, minlength=len(groups))
    # A group's earliest row is its representative: ascending = first seen.
    unit = {g: _group_unit(found.ids[g], seed) for g in np.flatnonzero(sizes).tolist()}
    val_groups = _val_groups(unit, sizes, cfg.val_size)
    side_of = [g in val_groups for g in groups.tolist()]
    canonical = found.canonical.tolist()
    counts = Counter()
    names = ("train.jsonl", "val.jsonl", "split_stats.json")
    with atomic_outputs([out_dir / n for n in names]) as (train_tmp, val_tmp, stats_tmp):
        with open(train_tmp, "w", encoding="utf-8") as train, \
                open(val_tmp, "w", encoding="utf-8") as val:
            progress = Progress("split write")
            for row, _n, line in rows_of_lines(path, found.block.lines):
                progress.add(1)
                if row is None:
                    continue
                side = "val" if side_of[row] else "train"
                (val if side_of[row] else train).write(
                    line if canonical[row] else dumps(json.loads(line)))
                counts[side] += 1
            progress.done()
        stats = {"train": counts["train"], "val": counts["val"], "groups": len(unit),
                 "groups_with_several_records": int((sizes > 1).sum()),
                 "val_size": cfg.val_size, "split_threshold": cfg.split_threshold, "seed": seed}
        write_json(stats_tmp, stats)
    return stats


def main(args) -> None:
    from danlu.stage import run_stage

    params = stage_params(args, "dedup")
    cfg = from_mapping(DedupConfig, params)
    source, out = records_input(args.input), Path(args.out)
    names = ("train.jsonl", "val.jsonl", "split_stats.json")
    stats = run_stage(
        "split", {"dedup": params, "seed": args.seed},
        lambda run: split_file(source, cfg, args.seed, out),
        inputs=[source, *args.code], outputs=[out / n for n in names],
        manifest_path=out / "split.manifest.json",
        datasets=[((out / "train.jsonl").as_posix(), "train"), ((out / "val.jsonl").as_posix(), "val")],
    )
    print(f"split: {stats['train']} train, {stats['val']} val in {stats['groups']} groups")
