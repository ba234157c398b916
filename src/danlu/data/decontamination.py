"""Benchmark decontamination: which records leak a C-Eval/CMMLU question
(exact n-gram overlap or MinHash near-match), one lookup per n-gram and LSH
band, so the cost is linear in the records whatever the number of questions."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from danlu.config import DedupConfig
from danlu.data.minhash import (
    BucketIndex,
    _ranges,
    estimated_jaccard,
    shingle_hash_groups,
    shingle_hashes,
    signatures,
    sorted_unique,
)
from danlu.evaluation.benchmarks import Source


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

    def add_hits(self, hits: dict[int, dict], first_row: int, matches) -> None:
        """Record each row's strongest leak (the first item of equal overlap)."""
        for t, item, share, jac in matches:
            row = first_row + t
            if row not in hits or share > hits[row]["ngram_overlap"]:
                it = self.items[item]
                hits[row] = {"benchmark": it.benchmark, "subject": it.subject, "split": it.split,
                             "question_id": it.id, "ngram_overlap": share, "jaccard": jac}


