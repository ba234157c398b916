"""Dedup: exact (sha256 of the normalised text) and near (MinHash LSH)
duplicates, benchmark decontamination, and the cluster-respecting split.

The steps talk through arrays and files, like datatrove's MinHash:
  signatures   per shard (records whose line number % shards == shard):
               line numbers, MinHash signatures, sha256 of the text;
  dedup        merge the shards in line order, find contaminated, exact and
               near duplicates, keep the earliest of each cluster;
  split        group kept records that are still similar and send whole
               groups to train or val by a seeded hash of the group.
Everything depends only on the input lines and the config, never on the
shard layout, so any number of shards gives byte-identical outputs.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from danlu.config import DedupConfig
from danlu.minhash import (
    estimated_jaccard,
    find_duplicates,
    near_duplicate_pairs,
    representatives,
    same_row_labels,
    signatures,
)
from danlu.records import dumps

SIG_BATCH = 2048  # records per signature batch: bounded memory, whatever the corpus


def dedup_text(record: dict, include_system: bool = False) -> str:
    """What two records are compared on: their user and assistant turns."""
    return "\n".join(m["content"] for m in record["messages"]
                     if include_system or m["role"] != "system")


def parse_line(line: str) -> tuple[dict | None, str | None]:
    """A canonical record, or (None, why) for a line a hand-made file got wrong."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        return None, f"invalid JSON: {err.msg}"
    if not isinstance(record, dict):
        return None, "not a JSON object"
    if not isinstance(record.get("id"), str):
        return None, "field 'id' missing or not a string"
    messages = record.get("messages")
    if not (isinstance(messages, list) and messages and all(
            isinstance(m, dict) and isinstance(m.get("content"), str)
            and isinstance(m.get("role"), str) for m in messages)):
        return None, "field 'messages' is not a list of {role, content}"
    return record, None


def iter_records(path: Path) -> Iterator[tuple[int, dict | None, str | None, str]]:
    """(line number, record or None, problem, raw line) for every non-blank line.
    A file that is not UTF-8 is unusable as a whole: InputError (exit 2)."""
    from danlu.readers import InputError

    n = 0
    try:
        with open(path, encoding="utf-8") as fh:
            for n, line in enumerate(fh, start=1):
                if line.strip():
                    record, problem = parse_line(line)
                    yield n, record, problem, line
    except UnicodeDecodeError:
        raise InputError(path, f"not UTF-8 after line {n}") from None


@dataclass
class Block:
    """Signatures of some records: their line numbers, MinHash rows, sha256s."""

    lines: np.ndarray  # int64 (n,)
    sig: np.ndarray  # (n, num_perm)
    sha: np.ndarray  # uint8 (n, 32)

    def save(self, prefix: Path) -> list[Path]:
        paths = [Path(f"{prefix}.{name}.npy") for name in ("lines", "sig", "sha")]
        for path, array in zip(paths, (self.lines, self.sig, self.sha), strict=True):
            with open(path, "wb") as fh:
                np.save(fh, np.ascontiguousarray(array), allow_pickle=False)
        return paths

    @classmethod
    def load(cls, prefix: Path) -> Block:
        return cls(*(np.load(f"{prefix}.{name}.npy", allow_pickle=False)
                     for name in ("lines", "sig", "sha")))

    @classmethod
    def concat(cls, blocks: Sequence[Block]) -> Block:
        """Blocks of any shards, back in input order."""
        lines = np.concatenate([b.lines for b in blocks])
        order = np.argsort(lines, kind="stable")
        return cls(lines[order], np.concatenate([b.sig for b in blocks])[order],
                   np.concatenate([b.sha for b in blocks])[order])


def shard_signatures(path: Path, cfg: DedupConfig, shard: int = 0, shards: int = 1) -> Block:
    """Signatures of this shard's valid records, streamed in batches."""
    params = cfg.minhash()
    lines, sigs, shas, texts, batch_lines = [], [], [], [], []

    def flush():
        if texts:
            sigs.append(signatures(texts, params))
            lines.extend(batch_lines)
            texts.clear()
            batch_lines.clear()

    for n, record, _problem, _raw in iter_records(path):
        if record is None or n % shards != shard:
            continue
        text = dedup_text(record, cfg.include_system)
        batch_lines.append(n)
        texts.append(text)
        shas.append(hashlib.sha256(text.encode("utf-8")).digest())
        if len(texts) >= SIG_BATCH:
            flush()
    flush()
    sig = np.concatenate(sigs) if sigs else np.zeros((0, params.num_perm), dtype=params.dtype)
    sha = np.frombuffer(b"".join(shas), dtype=np.uint8).reshape(-1, 32)
    return Block(np.asarray(lines, dtype=np.int64), sig, sha)


def duplicate_representatives(block: Block, cfg: DedupConfig, removed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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
    near = find_duplicates(block.sig[firsts], cfg.minhash())
    near_rep = firsts[near]
    rep[firsts] = near_rep
    rep[alive] = rep[rep[alive]]  # an exact copy follows its original's cluster
    return rep, exact


# --- decontamination ------------------------------------------------------------


@dataclass(frozen=True)
class BenchmarkItem:
    benchmark: str
    subject: str
    split: str
    id: str
    segments: tuple[str, ...]  # question, then options, each normalised

    @property
    def text(self) -> str:
        return "\n".join(self.segments)


def benchmark_items(root: Path, names: Sequence[str]) -> list[BenchmarkItem]:
    """Every question the evaluation uses (scored split and shot split)."""
    from danlu.benchmarks import layout, load_benchmark
    from danlu.text import normalize_text

    items = []
    for name in names:
        spec = layout(name)
        for data in load_benchmark(name, root):
            for split, questions in ((spec.shot_split, data.shots), (spec.eval_split, data.questions)):
                for q in questions:
                    segments = tuple(normalize_text(t) for t in (q.question, *q.options))
                    items.append(BenchmarkItem(name, data.subject.name, split, q.id, segments))
    return items


def _ngram_sets(texts: Sequence[str], n: int) -> list[np.ndarray]:
    """Sorted unique 32-bit hashes of each text's n-grams (characters for CJK
    text, lowercased words for Latin script, as the MinHash shingles)."""
    from danlu.minhash import shingle_hashes

    hashes, counts = shingle_hashes(texts, n, n)
    return [np.unique(h) for h in np.split(hashes, np.cumsum(counts)[:-1])] if len(texts) else []


def _exact_ngrams(text: str, n: int) -> set[str]:
    from danlu.minhash import MinHashParams, shingles

    return set(shingles(text, MinHashParams(char_ngram=n, word_ngram=n)))


def _item_pieces(item: BenchmarkItem, n: int) -> list[str]:
    """The parts of a question whose n-grams identify it: each segment long
    enough to have an n-gram, on its own, so a leak that words the option
    labels differently ("A、" or "(A)") still matches in full; the whole text
    when no segment is that long."""
    long_enough = [s for s in item.segments if len(s) >= n]
    return long_enough or [item.text]


class ContaminationIndex:
    """The n-grams and MinHash signatures of benchmark questions, to test
    training records against."""

    def __init__(self, items: Sequence[BenchmarkItem], cfg: DedupConfig):
        self.items, self.cfg = list(items), cfg
        n = cfg.contamination_ngram
        pieces = [_item_pieces(i, n) for i in self.items]
        piece_sets = _ngram_sets([p for item in pieces for p in item], n)
        sets, at = [], 0
        for item in pieces:
            sets.append(np.unique(np.concatenate(piece_sets[at : at + len(item)])))
            at += len(item)
        self.sizes = np.array([len(s) for s in sets], dtype=np.int64)
        hashes = np.concatenate(sets) if sets else np.zeros(0, dtype=np.uint32)
        owner = np.repeat(np.arange(len(sets)), self.sizes)
        order = np.argsort(hashes, kind="stable")
        self.hashes, self.owner = hashes[order], owner[order]
        self.sig = signatures([i.text for i in self.items], cfg.minhash())

    def matches(self, texts: Sequence[str], sig: np.ndarray) -> list[tuple[int, int, float, float]]:
        """(text index, item index, n-gram containment, estimated Jaccard) for
        every text that contains a benchmark item at or above the thresholds."""
        cfg, found = self.cfg, {}
        for t, grams in enumerate(_ngram_sets(texts, cfg.contamination_ngram)):
            lo = np.searchsorted(self.hashes, grams, side="left")
            hi = np.searchsorted(self.hashes, grams, side="right")
            hit = hi > lo
            if not hit.any():
                continue
            owners = np.concatenate([self.owner[a:b] for a, b in zip(lo[hit], hi[hit], strict=True)])
            items, counts = np.unique(owners, return_counts=True)
            share = counts / self.sizes[items]
            for item in items[share >= cfg.contamination_threshold]:
                exact = self._containment(texts[t], int(item))  # rules out 32-bit collisions
                if exact >= cfg.contamination_threshold:
                    found[(t, int(item))] = exact
        # Near copies by MinHash (a reworded question in a short record).
        both = np.concatenate([self.sig, sig])
        pairs = near_duplicate_pairs(both, cfg.minhash())
        cross = pairs[(pairs[:, 0] < len(self.items)) & (pairs[:, 1] >= len(self.items))]
        for item, t in cross.tolist():
            t -= len(self.items)
            found.setdefault((t, item), self._containment(texts[t], item))
        out = []
        for (t, item), share in sorted(found.items()):
            jac = float(estimated_jaccard(both, np.array([[item, len(self.items) + t]]))[0])
            out.append((t, item, round(share, 4), round(jac, 4)))
        return out

    def _containment(self, text: str, item: int) -> float:
        n = self.cfg.contamination_ngram
        grams = set().union(*(_exact_ngrams(p, n) for p in _item_pieces(self.items[item], n)))
        inside = _exact_ngrams(text, n)
        return len(grams & inside) / len(grams) if grams else 0.0


# --- the dedup job ------------------------------------------------------------------


def contaminated_rows(path: Path, block: Block, cfg: DedupConfig,
                      index: ContaminationIndex) -> dict[int, dict]:
    """Row -> what it leaks, for records containing a benchmark question."""
    row_of = {int(n): i for i, n in enumerate(block.lines)}
    hits: dict[int, dict] = {}
    texts, rows = [], []

    def flush():
        if not texts:
            return
        for t, item, share, jac in index.matches(texts, block.sig[rows]):
            row = rows[t]
            if row not in hits or share > hits[row]["ngram_overlap"]:
                it = index.items[item]
                hits[row] = {"benchmark": it.benchmark, "subject": it.subject, "split": it.split,
                             "question_id": it.id, "ngram_overlap": share, "jaccard": jac}
        texts.clear()
        rows.clear()

    for n, record, _problem, _raw in iter_records(path):
        if record is not None and n in row_of:
            texts.append(dedup_text(record, cfg.include_system))
            rows.append(row_of[n])
            if len(texts) >= SIG_BATCH:
                flush()
    flush()
    return hits


def dedup_file(path: Path, block: Block, cfg: DedupConfig, out_dir: Path,
               index: ContaminationIndex | None = None) -> dict:
    """Write records.jsonl (kept, input order), removed.jsonl, clusters.jsonl,
    stats.json and the cluster-size plot. Returns stats."""
    from danlu.outputs import atomic_outputs, write_json
    from danlu.plots import plot_histogram

    n = len(block.lines)
    contaminated = contaminated_rows(path, block, cfg, index) if index is not None else {}
    removed_mask = np.zeros(n, dtype=bool)
    removed_mask[list(contaminated)] = True
    rep, exact = duplicate_representatives(block, cfg, removed_mask)
    row_of = {int(line): i for i, line in enumerate(block.lines)}
    ids: dict[int, str] = {}
    reasons: Counter = Counter()
    per_subject: Counter = Counter()
    names = ("records.jsonl", "removed.jsonl", "clusters.jsonl", "stats.json", "clusters.png")
    with atomic_outputs([out_dir / name for name in names]) as tmp:
        with open(tmp[0], "w", encoding="utf-8") as kept, open(tmp[1], "w", encoding="utf-8") as gone:
            for line, record, problem, raw in iter_records(path):
                if record is None:
                    reasons["invalid"] += 1
                    gone.write(dumps({"line": line, "reason": "invalid", "detail": problem,
                                      "text": raw.rstrip("\n")}))
                    continue
                row = row_of[line]
                ids[row] = record["id"]
                if row in contaminated:
                    hit = contaminated[row]
                    reasons["contaminated"] += 1
                    per_subject[f"{hit['benchmark']}/{hit['subject']}"] += 1
                    gone.write(dumps({"id": record["id"], "line": line, "reason": "contaminated", **hit}))
                elif rep[row] != row:
                    reason = "exact" if exact[row] else "near"
                    reasons[reason] += 1
                    jac = float(estimated_jaccard(block.sig, np.array([[rep[row], row]]))[0])
                    gone.write(dumps({"id": record["id"], "line": line, "reason": reason,
                                      "duplicate_of": ids[int(rep[row])], "jaccard": round(jac, 4)}))
                else:
                    kept.write(dumps(record))
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
    """One line per cluster with more than one member; returns the size histogram."""
    members: dict[int, list[int]] = {}
    for row in np.flatnonzero(alive).tolist():
        members.setdefault(int(rep[row]), []).append(row)
    sizes: Counter = Counter()
    with open(path, "w", encoding="utf-8") as fh:
        for head, rows in sorted(members.items()):
            sizes[len(rows)] += 1
            if len(rows) > 1:
                fh.write(dumps({"kept": ids[head], "size": len(rows),
                                "members": [{"id": ids[r], "link": "exact" if exact[r] else "near"}
                                            for r in rows[1:]]}))
    return sizes


# --- the split ------------------------------------------------------------------------


def _group_unit(key: str, seed: int) -> float:
    """A stable pseudo-random number in [0, 1) for a group."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_file(path: Path, cfg: DedupConfig, seed: int, out_dir: Path) -> dict:
    """train.jsonl / val.jsonl. Records still similar at `split_threshold`
    form a group (named by its earliest id) that goes wholly to one side;
    the side depends only on the group's name and the seed, so adding or
    removing other records moves no existing record."""
    from danlu.outputs import atomic_outputs, write_json

    block = shard_signatures(path, cfg)
    params = cfg.minhash(cfg.split_threshold)
    groups = representatives(len(block.lines), near_duplicate_pairs(block.sig, params))
    first_ids: dict[int, str] = {}
    line_ids = []
    for _line, record, _problem, _raw in iter_records(path):
        if record is not None:
            line_ids.append(record["id"])
    for group in groups.tolist():
        first_ids.setdefault(group, line_ids[group])
    unit = {g: _group_unit(name, seed) for g, name in first_ids.items()}
    if cfg.val_size >= 1:  # a count: whole groups in hash order until it is reached
        sizes = Counter(groups.tolist())
        val_groups, taken = set(), 0
        for g in sorted(unit, key=unit.get):
            if taken >= cfg.val_size:
                break
            val_groups.add(g)
            taken += sizes[g]
    else:
        val_groups = {g for g, u in unit.items() if u < cfg.val_size}
    counts = Counter()
    names = ("train.jsonl", "val.jsonl", "split_stats.json")
    with atomic_outputs([out_dir / n for n in names]) as (train_tmp, val_tmp, stats_tmp):
        with open(train_tmp, "w", encoding="utf-8") as train, open(val_tmp, "w", encoding="utf-8") as val:
            row = 0
            for _line, record, _problem, _raw in iter_records(path):
                if record is None:
                    continue
                side = "val" if int(groups[row]) in val_groups else "train"
                (val if side == "val" else train).write(dumps(record))
                counts[side] += 1
                row += 1
        stats = {"train": counts["train"], "val": counts["val"], "groups": len(unit),
                 "groups_with_several_records": sum(1 for c in Counter(groups.tolist()).values() if c > 1),
                 "val_size": cfg.val_size, "split_threshold": cfg.split_threshold, "seed": seed}
        write_json(stats_tmp, stats)
    return stats
