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

Cost: dedup reads the file twice, a batch at a time. The first pass signs the
records (or checks them against the shards' signatures) and tests each batch
against the benchmark index (one lookup per n-gram and LSH band: linear in
the records, whatever the number of questions); the second writes, copying
lines that are already canonical without parsing them. What stays in memory
is per record: its signature (512 bytes at 128 permutations), sha256, line
number and a few bytes of decisions; never its text.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path

import numpy as np

from danlu.config import DedupConfig
from danlu.data.minhash import (
    BucketIndex,
    _ranges,
    char_shingle_mask,
    estimated_jaccard,
    find_duplicates,
    near_duplicate_pairs,
    representatives,
    same_row_labels,
    shingle_hash_groups,
    shingle_hashes,
    signatures,
    sorted_unique,
)
from danlu.data.records import dumps
from danlu.evaluation.benchmarks import Source
from danlu.progress import Progress

SIG_BATCH = 2048  # records per batch: bounded memory, whatever the corpus
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


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, line) for every non-blank line. A file that is not UTF-8
    is unusable as a whole: InputError (exit 2)."""
    from danlu.data.readers import InputError

    n = 0
    try:
        with open(path, encoding="utf-8") as fh:
            for n, line in enumerate(fh, start=1):
                if line.strip():
                    yield n, line
    except UnicodeDecodeError:
        raise InputError(path, f"not UTF-8 after line {n}") from None


def iter_records(path: Path) -> Iterator[tuple[int, dict | None, str | None, str]]:
    """(line number, record or None, problem, raw line) for every non-blank line."""
    for n, line in _lines(path):
        record, problem = parse_line(line)
        yield n, record, problem, line


def _line_bound(path: Path) -> int:
    """At least as many as the lines `open` yields (it also ends one at a lone
    CR): how many rows to reserve, so that arrays never grow by copying."""
    count = 1
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 24):
            count += chunk.count(b"\n") + chunk.count(b"\r")
    return count


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
        return cls.merge(len(blocks), lambda i: blocks[i], [b.lines for b in blocks])

    @classmethod
    def load_shards(cls, prefixes: Sequence[Path]) -> Block:
        """The shards saved at `prefixes`, merged in input order; one shard's
        signatures are in memory at a time besides the merged ones."""
        lines = [np.load(f"{p}.lines.npy", allow_pickle=False) for p in prefixes]
        return cls.merge(len(prefixes), lambda i: cls.load(prefixes[i]), lines)

    @classmethod
    def merge(cls, count: int, get, lines: Sequence[np.ndarray]) -> Block:
        """Blocks get(0) .. get(count - 1), whose line numbers are `lines`,
        scattered into arrays allocated once (not concatenated, then sorted)."""
        if not count:
            raise ValueError("no signature blocks to merge")
        every = np.concatenate(lines)
        order = np.argsort(every, kind="stable")
        position = np.empty_like(order)
        position[order] = np.arange(len(order))
        merged, at = None, 0
        for i in range(count):
            part = get(i)
            if merged is None:
                sig = np.empty((len(every), part.sig.shape[1]), dtype=part.sig.dtype)
                merged = cls(every[order], sig, np.empty((len(every), 32), dtype=np.uint8))
            where = position[at : at + len(part.lines)]
            merged.sig[where], merged.sha[where] = part.sig, part.sha
            at += len(part.lines)
        return merged


@dataclass
class Batch:
    """Up to SIG_BATCH valid records: line numbers, compared texts, and (when
    asked) their ids and whether each line is exactly `dumps(record)`, so a
    later pass may copy it without parsing it again."""

    lines: list[int] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    canonical: list[bool] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)


def _batches(path: Path, cfg: DedupConfig, *, shard: int = 0, shards: int = 1,
             details: bool = False) -> Iterator[Batch]:
    """The valid records of one shard (line number % shards == shard), in
    batches; another shard's lines are not even parsed."""
    batch = Batch()
    for n, line in _lines(path):
        if n % shards != shard:
            continue
        record, _problem = parse_line(line)
        if record is None:
            continue
        batch.lines.append(n)
        batch.texts.append(dedup_text(record, cfg.include_system))
        if details:
            batch.canonical.append(line == dumps(record))
            batch.ids.append(record["id"])
        if len(batch.lines) >= SIG_BATCH:
            yield batch
            batch = Batch()
    if batch.lines:
        yield batch


class _BlockBuilder:
    """A Block filled batch by batch into arrays reserved once for an upper
    bound of rows: pages never written cost no memory, and the result is a
    view, so the signatures exist once (a list of batches concatenated at the
    end would hold them twice)."""

    def __init__(self, capacity: int, cfg: DedupConfig):
        self.params = cfg.minhash()
        self.lines = np.empty(capacity, dtype=np.int64)
        self.sig = np.empty((capacity, self.params.num_perm), dtype=self.params.dtype)
        self.sha = np.empty((capacity, 32), dtype=np.uint8)
        self.rows = 0

    def add(self, batch: Batch, by_char: np.ndarray | None = None) -> np.ndarray:
        """Sign the batch; returns its signatures."""
        rows = slice(self.rows, self.rows + len(batch.lines))
        self.lines[rows] = batch.lines
        self.sig[rows] = signatures(batch.texts, self.params, by_char=by_char)
        digests = b"".join(hashlib.sha256(t.encode("utf-8")).digest() for t in batch.texts)
        self.sha[rows] = np.frombuffer(digests, dtype=np.uint8).reshape(-1, 32)
        self.rows = rows.stop
        return self.sig[rows]

    def block(self) -> Block:
        n = self.rows
        return Block(self.lines[:n], self.sig[:n], self.sha[:n])


@dataclass
class Scan:
    """What one pass over a records file learnt, row by row (valid records in
    line order): their signatures, and when asked whether each line can be
    copied as is, the ids, and the benchmark questions each leaks."""

    block: Block
    canonical: np.ndarray  # bool per row
    ids: list[str]
    hits: dict[int, dict]


def scan(path: Path, cfg: DedupConfig, *, block: Block | None = None,
         index: ContaminationIndex | None = None, details: bool = False,
         shard: int = 0, shards: int = 1, label: str = "dedup") -> Scan:
    """One pass: sign the records (unless `block` already holds their
    signatures) and test them against `index`, a batch at a time."""
    from danlu.data.readers import InputError

    builder = _BlockBuilder(_line_bound(path) // shards + 1, cfg) if block is None else None
    canonical, ids, hits, row = bytearray(), [], {}, 0
    progress = Progress(label)
    for batch in _batches(path, cfg, shard=shard, shards=shards, details=details):
        by_char = None  # which texts are shingled by characters: asked once for both uses
        if builder is not None or index is not None:
            by_char = char_shingle_mask(batch.texts)
        if builder is not None:
            sig = builder.add(batch, by_char)
        else:
            rows = slice(row, row + len(batch.lines))
            if not np.array_equal(block.lines[rows], batch.lines):
                raise InputError(path, "the signatures given are not this file's "
                                       f"(line {batch.lines[0]})")
            sig = block.sig[rows]
        if index is not None:
            _add_hits(hits, row, index.matches(batch.texts, sig, by_char), index)
        canonical += bytes(batch.canonical)
        ids += batch.ids
        row += len(batch.lines)
        progress.add(len(batch.lines))
    progress.done()
    if builder is not None:
        block = builder.block()
    elif row != len(block.lines):
        raise InputError(path, "the signatures given are not this file's (more records)")
    return Scan(block, np.frombuffer(canonical, dtype=bool), ids, hits)


def shard_signatures(path: Path, cfg: DedupConfig, shard: int = 0, shards: int = 1) -> Block:
    """Signatures of this shard's valid records, streamed in batches."""
    return scan(path, cfg, shard=shard, shards=shards, label="dedup signatures").block


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


def benchmark_items(source: Source, names: Sequence[str]) -> list[BenchmarkItem]:
    """Every question the evaluation uses (scored split and shot split), from a
    local copy or the hub (`benchmarks.find_source`)."""
    from danlu.data.text import normalize_text
    from danlu.evaluation.benchmarks import layout, load_benchmark

    items = []
    for name in names:
        spec = layout(name)
        for data in load_benchmark(name, source.root, hub_id=source.hub_id(name)):
            for split, questions in ((spec.shot_split, data.shots), (spec.eval_split, data.questions)):
                for q in questions:
                    segments = tuple(normalize_text(t) for t in (q.question, *q.options))
                    items.append(BenchmarkItem(name, data.subject.name, split, q.id, segments))
    return items


def _exact_ngrams(text: str, n: int) -> set[str]:
    from danlu.data.minhash import MinHashParams, shingles

    return set(shingles(text, MinHashParams(char_ngram=n, word_ngram=n)))


def _item_pieces(item: BenchmarkItem, n: int) -> list[str]:
    """The parts of a question whose n-grams identify it: each segment long
    enough to have an n-gram, on its own, so a leak that words the option
    labels differently ("A、" or "(A)") still matches in full; the whole text
    when no segment is that long."""
    long_enough = [s for s in item.segments if len(s) >= n]
    return long_enough or [item.text]


class HashSet:
    """A set of 32-bit hashes (the benchmark n-grams) for testing the n-grams
    of many records at once. Two tables of a flag per slot (8 slots a member,
    4 MB for C-Eval + CMMLU, so they stay near cache), one on the top bits of
    the hash and one on the top bits of a multiple of it, rule out ~99% of
    non-members with a gather each; the rest are looked up in the sorted
    members, sorted themselves first (binary search then walks memory
    forward, ~5x faster)."""

    _MIX = np.uint32(0x9E3779B1)  # odd: a multiple's top bits are a second hash

    def __init__(self, members: np.ndarray):
        self.members = sorted_unique(members.astype(np.uint32))
        bits = int(np.clip(np.ceil(np.log2(8 * max(len(self.members), 1))), 16, 26))
        self.shift = np.uint32(32 - bits)
        self.top = np.zeros(1 << bits, dtype=bool)
        self.top[self.members >> self.shift] = True
        self.mixed = np.zeros(1 << bits, dtype=bool)
        self.mixed[(self.members * self._MIX) >> self.shift] = True

    def __len__(self) -> int:
        return len(self.members)

    def find(self, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(positions in `hashes` of members, their index in self.members), in
        no particular order."""
        maybe = np.flatnonzero(np.take(self.top, (hashes >> self.shift).astype(np.intp)))
        mixed = (hashes[maybe] * self._MIX) >> self.shift
        maybe = maybe[np.take(self.mixed, mixed.astype(np.intp))]
        maybe = maybe[np.argsort(hashes[maybe])]  # not stable: ~10x faster, and order is moot
        values = hashes[maybe]
        at = np.minimum(np.searchsorted(self.members, values), max(len(self.members) - 1, 0))
        hit = self.members[at] == values if len(self.members) else np.zeros(len(values), bool)
        return maybe[hit], at[hit]


class ContaminationIndex:
    """The n-grams and MinHash signatures of benchmark questions, to test
    training records against. Work per record is one lookup per n-gram and
    per LSH band, never a comparison with each question: decontaminating N
    records costs O(N), whatever the number of questions."""

    def __init__(self, items: Sequence[BenchmarkItem], cfg: DedupConfig):
        self.items, self.cfg = list(items), cfg
        n = cfg.contamination_ngram
        owner, gram = self._item_grams(n)
        self.sizes = np.bincount(owner, minlength=len(self.items))
        self.grams = HashSet(gram)
        # The questions holding grams.members[k] are owner[starts[k]:starts[k + 1]].
        order = np.argsort(gram, kind="stable")
        self.owner = owner[order]
        self.starts = np.append(np.searchsorted(gram[order], self.grams.members), len(order))
        self.sig = signatures([i.text for i in self.items], cfg.minhash())
        self.buckets = BucketIndex(self.sig, cfg.minhash())
        print(f"dedup: {len(self.items):,} benchmark questions indexed "
              f"({len(self.grams):,} distinct {n}-grams)", file=sys.stderr, flush=True)

    def _item_grams(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(question, n-gram hash) for each question's distinct n-grams over
        all its pieces, sorted by question, then hash."""
        pieces = [_item_pieces(i, n) for i in self.items]
        hashes, counts = shingle_hashes([p for item in pieces for p in item], n, n)
        piece_owner = np.repeat(np.arange(len(pieces)),
                                np.array([len(p) for p in pieces], dtype=np.int64))
        owner = np.repeat(piece_owner, counts).astype(np.uint64)
        pairs = sorted_unique((owner << np.uint64(32)) | hashes.astype(np.uint64))
        return (pairs >> np.uint64(32)).astype(np.int64), pairs.astype(np.uint32)

    def matches(self, texts: Sequence[str], sig: np.ndarray,
                by_char: np.ndarray | None = None) -> list[tuple[int, int, float, float]]:
        """(text index, item index, n-gram containment, estimated Jaccard) for
        every text that contains a benchmark item at or above the thresholds
        (`by_char`: the texts' char_shingle_mask, if the caller has it)."""
        found = self._ngram_matches(texts, by_char)
        # Near copies by MinHash (a reworded question in a short record).
        for item, t in self.buckets.near(sig).tolist():
            found.setdefault((t, item), self._containment(texts[t], item))
        keys = sorted(found)
        pairs = np.array(keys, dtype=np.int64).reshape(-1, 2)[:, ::-1]  # (item, text)
        jaccard = estimated_jaccard(self.sig, pairs, other=sig)
        return [(t, item, round(found[(t, item)], 4), round(float(jac), 4))
                for (t, item), jac in zip(keys, jaccard, strict=True)]

    def _ngram_matches(self, texts: Sequence[str],
                       by_char: np.ndarray | None = None) -> dict[tuple[int, int], float]:
        """(text, item) -> exact containment, for texts holding at least the
        threshold share of an item's n-gram hashes and, checked on the strings
        (which rules out 32-bit collisions), of its n-grams."""
        threshold = self.cfg.contamination_threshold
        text, item, share = self._shares(*self._hits(texts, by_char))
        found = {}
        for t, i in zip(text[share >= threshold].tolist(), item[share >= threshold].tolist(),
                        strict=True):
            exact = self._containment(texts[t], i)
            if exact >= threshold:
                found[(t, i)] = exact
        return found

    def _hits(self, texts: Sequence[str], by_char: np.ndarray | None) -> tuple[np.ndarray, ...]:
        """(text, n-gram) for each distinct n-gram of a text that some
        question holds (the n-gram as its index in self.grams.members)."""
        n = self.cfg.contamination_ngram
        text, gram = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.int64)]
        for rows, hashes, counts in (shingle_hash_groups(texts, n, n, by_char) if texts else []):
            at, member = self.grams.find(hashes)
            text.append(rows[np.searchsorted(np.cumsum(counts), at, side="right")])
            gram.append(member)
        grams = max(len(self.grams), 1)
        code = sorted_unique(np.concatenate(text) * grams + np.concatenate(gram))
        return code // grams, code % grams

    def _shares(self, text: np.ndarray, gram: np.ndarray) -> tuple[np.ndarray, ...]:
        """(text, item, share of the item's n-grams in the text) for every
        pair sharing an n-gram: each hit counts once for each item holding it."""
        holders = self.starts[gram + 1] - self.starts[gram]
        item = self.owner[_ranges(self.starts[gram], holders)]
        items = max(len(self.items), 1)
        code, shared = np.unique(np.repeat(text, holders) * items + item, return_counts=True)
        text, item = code // items, code % items
        return text, item, shared / self.sizes[item]

    def _containment(self, text: str, item: int) -> float:
        n = self.cfg.contamination_ngram
        grams = set().union(*(_exact_ngrams(p, n) for p in _item_pieces(self.items[item], n)))
        inside = _exact_ngrams(text, n)
        return len(grams & inside) / len(grams) if grams else 0.0


def _add_hits(hits: dict[int, dict], first_row: int, matches, index: ContaminationIndex) -> None:
    """Record each row's strongest leak (the first item of equal overlap)."""
    for t, item, share, jac in matches:
        row = first_row + t
        if row not in hits or share > hits[row]["ngram_overlap"]:
            it = index.items[item]
            hits[row] = {"benchmark": it.benchmark, "subject": it.subject, "split": it.split,
                         "question_id": it.id, "ngram_overlap": share, "jaccard": jac}


# --- the dedup job ------------------------------------------------------------------


def _rows_of_lines(path: Path, valid: np.ndarray) -> Iterator[tuple[int | None, int, str]]:
    """(row, line number, line) for each non-blank line of a file scanned
    before, whose valid records are at line numbers `valid`; row is None for
    a line that is not a valid record."""
    expected = chain.from_iterable(valid[lo : lo + 65536].tolist()
                                   for lo in range(0, len(valid), 65536))
    row, want = 0, next(expected, None)
    for n, line in _lines(path):
        if n == want:
            yield row, n, line
            row, want = row + 1, next(expected, None)
        else:
            yield None, n, line


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
    for row, n, line in _rows_of_lines(path, lines):
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


# --- the split ------------------------------------------------------------------------


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
            for row, _n, line in _rows_of_lines(path, found.block.lines):
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
