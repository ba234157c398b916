"""Dedup: exact (sha256 of the normalised text) and near (MinHash LSH)
duplicates, and benchmark decontamination (`decontamination.py`).

The steps talk through arrays and files, like datatrove's MinHash:
  signatures   per shard (records whose line number % shards == shard):
               line numbers, MinHash signatures, sha256 of the text
               (`signatures.py`, its own job);
  dedup        here: merge the shards in line order, find contaminated, exact
               and near duplicates, keep the earliest of each cluster;
  split        then group kept records that are still similar and send whole
               groups to train or val (`split.py`, its own job).
Everything depends only on the input lines and the config, never on the
shard layout, so any number of shards gives byte-identical outputs.

Cost: dedup reads the file twice, a batch at a time. The first pass signs the
records (or checks them against the shards' signatures) and tests each batch
against the benchmark index (one lookup per n-gram and LSH band: linear in
the records, whatever the number of questions); the second writes, copying
lines that are already canonical without parsing them. What stays in memory
is per record: its signature (512 bytes at 128 permutations), sha256, line
number and a few bytes of decisions; never its text.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from danlu.config import DedupConfig, from_mapping, stage_params
from danlu.data.decontamination import ContaminationIndex, benchmark_items
from danlu.data.minhash import (
    estimated_jaccard,
    find_duplicates,
    same_row_labels,
)
from danlu.data.readers import records_input
from danlu.data.records import dumps, parse_line, rows_of_lines
from danlu.data.signatures import (
    Block,
    Scan,
    scan,
    shard_signatures,
)
from danlu.evaluation.benchmarks import benchmark_source
from danlu.progress import Progress


def duplicate_representatives(block: Block, cfg: DedupConfig,
                              removed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """rep[i] (row of the earliest record i duplicates, i itself if kept) and
    whether the link is exact, for rows not already `removed`."""
    n = len(block.lines)
    rep = np.arange(n)
    exact = np.zeros(n, dtype=bool)
    alive = np.flatnonzero(~removed)
    if len(alive) == 0:
        return rep, exact
    same = same_row_labels(block.sha[alive].view(np.uint64))  # identical sha256
    rep[alive] = alive[same]
    exact[alive] = same != np.arange(len(alive))
    firsts = alive[same == np.arange(len(alive))]
    near = find_duplicates(block.sig, cfg.minhash(), rows=firsts)  # no copy of the signatures
    rep[firsts] = firsts[near]
    rep[alive] = rep[rep[alive]]  # an exact copy follows its original's cluster
    return rep, exact


# --- the dedup job ------------------------------------------------------------------


# What the writing pass does with a valid record's line.
_COPY, _REWRITE, _CONTAMINATED, _EXACT, _NEAR = range(5)


@dataclass
class _Plan:
    """Every decision, made before the writing pass."""

    action: list[int]  # per row, one of the codes above
    rep: np.ndarray  # the row a removed duplicate duplicates
    hits: dict[int, dict]  # row -> the benchmark question it leaks
    jaccard: dict[int, float]  # duplicate row -> estimated Jaccard with its rep


def _plan(found: Scan, rep: np.ndarray, exact: np.ndarray, removed: np.ndarray) -> _Plan:
    """A kept record's line is copied without parsing when it is already
    `dumps(record)` and no cluster names it; any other row is parsed again
    (for its id, or to rewrite it)."""
    n = len(rep)
    alive = ~removed
    in_cluster = alive & (np.bincount(rep[alive], minlength=n)[rep] > 1)
    action = np.where(found.canonical & ~in_cluster, _COPY, _REWRITE).astype(np.uint8)
    dup = rep != np.arange(n)
    action[dup & exact] = _EXACT
    action[dup & ~exact] = _NEAR
    action[removed] = _CONTAMINATED
    rows = np.flatnonzero(dup)
    jaccard = estimated_jaccard(found.block.sig, np.stack([rep[rows], rows], axis=1))
    by_row = dict(zip(rows.tolist(), jaccard.tolist(), strict=True))
    return _Plan(action.tolist(), rep, found.hits, by_row)


def _write_records(path: Path, lines: np.ndarray, plan: _Plan,
                   kept, gone) -> tuple[Counter, Counter, dict]:
    """The writing pass: kept lines to `kept`, the others with their reason to
    `gone`. Returns reasons, contaminations per subject, the ids read."""
    ids: dict[int, str] = {}
    reasons: Counter = Counter()
    per_subject: Counter = Counter()
    progress = Progress("dedup write")
    for row, n, line in rows_of_lines(path, lines):
        progress.add(1)
        if row is None:
            _record, problem = parse_line(line)
            reasons["invalid"] += 1
            gone.write(dumps({"line": n, "reason": "invalid", "detail": problem,
                              "text": line.rstrip("\n")}))
            continue
        action = plan.action[row]
        if action == _COPY:
            kept.write(line)
            continue
        record = json.loads(line)  # valid: the scan parsed it
        ids[row] = record["id"]
        if action == _REWRITE:
            kept.write(dumps(record))
        elif action == _CONTAMINATED:
            hit = plan.hits[row]
            reasons["contaminated"] += 1
            per_subject[f"{hit['benchmark']}/{hit['subject']}"] += 1
            gone.write(dumps({"id": record["id"], "line": n, "reason": "contaminated", **hit}))
        else:
            reason = "exact" if action == _EXACT else "near"
            reasons[reason] += 1
            gone.write(dumps({"id": record["id"], "line": n, "reason": reason,
                              "duplicate_of": ids[int(plan.rep[row])],
                              "jaccard": round(plan.jaccard[row], 4)}))
    progress.done()
    return reasons, per_subject, ids


def dedup_file(path: Path, block: Block | None, cfg: DedupConfig, out_dir: Path,
               index: ContaminationIndex | None = None) -> dict:
    """Write records.jsonl (kept, input order), removed.jsonl, clusters.jsonl,
    stats.json and the cluster-size plot. Returns stats. Two passes over the
    file: one signs the records (unless `block` holds their signatures) and
    tests them against `index`, the other writes."""
    from danlu.outputs import atomic_outputs, write_json
    from danlu.plots import plot_histogram

    found = scan(path, cfg, block=block, index=index, details=True,
                 label="dedup read" if block is not None else "dedup signatures")
    n = len(found.block.lines)
    removed_mask = np.zeros(n, dtype=bool)
    removed_mask[list(found.hits)] = True
    started = time.monotonic()
    rep, exact = duplicate_representatives(found.block, cfg, removed_mask)
    plan = _plan(found, rep, exact, removed_mask)
    print(f"dedup: duplicates of {n:,} records found in {time.monotonic() - started:.1f} s",
          file=sys.stderr, flush=True)
    names = ("records.jsonl", "removed.jsonl", "clusters.jsonl", "stats.json", "clusters.png")
    with atomic_outputs([out_dir / name for name in names]) as tmp:
        with open(tmp[0], "w", encoding="utf-8") as kept, \
                open(tmp[1], "w", encoding="utf-8") as gone:
            reasons, per_subject, ids = _write_records(path, found.block.lines, plan, kept, gone)
        clusters = _write_clusters(tmp[2], rep, exact, ~removed_mask, ids)
        stats = {
            "records_in": n + reasons["invalid"],
            "records_kept": int(((rep == np.arange(n)) & ~removed_mask).sum()),
            "removed_by_reason": dict(sorted(reasons.items())),
            "contaminated_by_subject": dict(sorted(per_subject.items())),
            "cluster_sizes": {str(k): v for k, v in sorted(clusters.items())},
            "threshold": cfg.threshold,
            "num_perm": cfg.num_perm,
        }
        assert stats["records_in"] == stats["records_kept"] + sum(reasons.values()), stats
        write_json(tmp[3], stats)
        plot_histogram(clusters, tmp[4], "records per duplicate cluster",
                       "Duplicate clusters (size 1 = unique)")
    return stats


def _write_clusters(path: Path, rep: np.ndarray, exact: np.ndarray, alive: np.ndarray,
                    ids: dict[int, str]) -> Counter:
    """One line per cluster with more than one member, by its kept (earliest)
    row; returns the size histogram. Grouped with arrays: a Python list per
    cluster would cost ~100 bytes a record."""
    rows = np.flatnonzero(alive)
    heads = rep[rows]
    size = np.bincount(heads, minlength=len(rep))
    values, counts = np.unique(size[size > 0], return_counts=True)
    sizes = Counter(dict(zip(values.tolist(), counts.tolist(), strict=True)))
    several = size[heads] > 1
    order = np.argsort(heads[several], kind="stable")  # by head, rows ascending within
    members = rows[several][order].tolist()
    links = ["exact" if e else "near" for e in exact[rows[several][order]].tolist()]
    starts = np.flatnonzero(np.diff(heads[several][order], prepend=-1)).tolist()
    ends = [*starts[1:], len(members)] if starts else []
    with open(path, "w", encoding="utf-8") as fh:
        for a, b in zip(starts, ends, strict=True):
            fh.write(dumps({"kept": ids[members[a]], "size": b - a,
                            "members": [{"id": ids[r], "link": link}
                                        for r, link in zip(members[a + 1 : b], links[a + 1 : b],
                                                           strict=True)]}))
    return sizes


def main(args) -> None:
    from danlu.stage import run_stage

    params = stage_params(args, "dedup")
    cfg = from_mapping(DedupConfig, params)
    source, out = records_input(args.input), Path(args.out)
    prefixes = [Path(p) for p in args.signatures]
    shard_files = [Path(f"{p}.{n}.npy") for p in prefixes for n in ("lines", "sig", "sha")]
    benchmarks = None
    if cfg.decontaminate and cfg.contamination_benchmarks:
        # By hand, no benchmarks means no decontamination (said in the log), not a
        # download: the hub is read only when --benchmark-hub names it.
        benchmarks = benchmark_source(args, default_hub=False)
        if benchmarks is None:
            print("dedup: decontamination SKIPPED: give --benchmarks DIR or "
                  "--benchmark-hub NAME=HUB_ID to remove benchmark questions")

    def work(run):
        shards = args.shards or cfg.shards
        if prefixes:  # signed by the workflow's shard jobs
            block = Block.load_shards(prefixes)
        elif shards > 1:  # as those jobs would, in this process (the same outputs)
            block = Block.concat([shard_signatures(source, cfg, i, shards) for i in range(shards)])
        else:  # signed by dedup_file's first pass, which also decontaminates
            block = None
        index = None
        if benchmarks is not None:
            index = ContaminationIndex(benchmark_items(benchmarks, cfg.contamination_benchmarks),
                                       cfg)
        return dedup_file(source, block, cfg, out, index)

    names = ("records.jsonl", "removed.jsonl", "clusters.jsonl", "stats.json", "clusters.png")
    stats = run_stage(
        "dedup", {"dedup": params, "benchmarks": _describe(benchmarks, cfg)}, work,
        inputs=[source, *shard_files, *args.code], outputs=[out / n for n in names],
        manifest_path=out / "manifest.json", artifacts=[out / "clusters.png"],
        datasets=[(source.as_posix(), "cleaned"), ((out / "records.jsonl").as_posix(), "deduplicated")],
    )
    print(f"dedup: {stats['records_in']} in, {stats['records_kept']} kept, "
          f"removed {stats['removed_by_reason']}")


def _describe(benchmarks, cfg) -> str | None:
    """What the manifest records as the decontamination source (None: skipped)."""
    return benchmarks.describe(cfg.contamination_benchmarks) if benchmarks else None
