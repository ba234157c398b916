"""Benchmark danlu's vectorised MinHash+LSH against plain datasketch.

    python scripts/bench_dedup.py [--docs 50000] [--seed 0] [--baseline-docs 30000]

Builds a synthetic Chinese/English corpus (~1,200 characters a document) with
planted near-duplicate pairs at several Jaccard levels, runs both pipelines on
one core in this process with the same num_perm, n-grams and threshold, and
prints one JSON line last: docs/s, speedup, recall on planted pairs whose true
shingle Jaccard is >= threshold, precision of reported pairs, peak RSS.

Both pipelines go from raw text to confirmed pairs: shingle, sign, LSH
buckets, keep pairs whose estimated Jaccard is >= threshold. Ground truth is
the exact Jaccard of the shingle sets (danlu.minhash.shingles), so a pair is
"correct" when its true Jaccard is >= threshold.
"""

from __future__ import annotations

import os

# One core, and no BLAS threads hiding behind numpy: set before numpy loads.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"
if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from danlu import minhash  # noqa: E402

LEVELS = (0.95, 0.9, 0.85, 0.7)  # planted pairs' target Jaccard; 0.7 is below threshold
DOC_CHARS = 1200


def _zipf_cdf(size: int, exponent: float) -> np.ndarray:
    weights = 1.0 / np.arange(1, size + 1) ** exponent
    return np.cumsum(weights) / weights.sum()


class Corpus:
    """Random documents from Zipf vocabularies: Chinese as ideograph
    sequences with punctuation, English as pseudo-words with sentences."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.hanzi = rng.choice(np.arange(0x4E00, 0x9FA6), size=3000, replace=False)
        self.hanzi_cdf = _zipf_cdf(len(self.hanzi), 1.0)
        letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
        words = {"".join(rng.choice(letters, size=rng.integers(2, 11))) for _ in range(25000)}
        self.words = np.array(sorted(words, key=lambda w: (len(w), w)))  # frequent = short
        self.words_cdf = _zipf_cdf(len(self.words), 1.1)

    def _draw(self, values: np.ndarray, cdf: np.ndarray, size: int) -> np.ndarray:
        picks = np.searchsorted(cdf, self.rng.random(size), side="right")
        return values[np.minimum(picks, len(values) - 1)]

    def chinese(self) -> list[int]:
        cps = self._draw(self.hanzi, self.hanzi_cdf, DOC_CHARS)
        stops = self.rng.random(DOC_CHARS) < 1 / 14
        cps[stops] = self.rng.choice([0xFF0C, 0x3002], size=stops.sum())  # ， 。
        return cps.tolist()

    def english(self) -> list[str]:
        tokens = self._draw(self.words, self.words_cdf, DOC_CHARS // 2)
        chars = np.cumsum(np.char.str_len(tokens) + 1)
        return tokens[: np.searchsorted(chars, DOC_CHARS) + 1].tolist()

    @staticmethod
    def chinese_text(cps: list[int]) -> str:
        return "".join(map(chr, cps))

    @staticmethod
    def english_text(tokens: list[str]) -> str:
        sentences = [" ".join(tokens[i : i + 15]) for i in range(0, len(tokens), 15)]
        return ". ".join(s.capitalize() for s in sentences) + "."

    def near_copy(self, units: list, n: int, jaccard: float, pool: np.ndarray) -> list:
        """Substitute e units (characters or words) at least n apart, away from
        the ends, so each edit breaks exactly n of the shingles in each copy:
        J = (S - n e) / (S + n e), hence e = S (1 - J) / (n (1 + J))."""
        shingles = len(units) - n + 1
        edits = round(shingles * (1 - jaccard) / (n * (1 + jaccard)))
        copy = list(units)
        for pos in self.rng.choice(np.arange(n, len(units) - n, n), size=edits, replace=False):
            while (new := pool[self.rng.integers(len(pool))].item()) == copy[pos]:
                pass
            copy[pos] = new
        return copy

    def document(self, chinese: bool) -> str:
        return self.chinese_text(self.chinese()) if chinese else self.english_text(self.english())

    def pair(self, chinese: bool, level: float, params: minhash.MinHashParams) -> list[str]:
        if chinese:
            base = self.chinese()
            copy = self.near_copy(base, params.char_ngram, level, self.hanzi)
            return [self.chinese_text(base), self.chinese_text(copy)]
        base = self.english()
        copy = self.near_copy(base, params.word_ngram, level, self.words)
        return [self.english_text(base), self.english_text(copy)]


def build_corpus(docs: int, seed: int, params: minhash.MinHashParams):
    """Texts in random order and the planted pairs (i, j, level), i < j: half
    the corpus, so recall is measured on thousands of pairs (its standard
    error is about half a point at 50,000 documents)."""
    rng = np.random.default_rng(seed)
    corpus = Corpus(rng)
    texts: list[str] = []
    planted: list[tuple[int, int, float]] = []
    for level in LEVELS:
        for k in range(docs // 16):
            texts += corpus.pair(k % 2 == 0, level, params)
            planted.append((len(texts) - 2, len(texts) - 1, level))
    while len(texts) < docs:
        texts.append(corpus.document(len(texts) % 2 == 0))
    order = rng.permutation(len(texts))  # pair members end up far apart
    position = np.empty_like(order)
    position[order] = np.arange(len(order))
    shuffled = [texts[i] for i in order]
    planted = [(*sorted((int(position[i]), int(position[j]))), lvl) for i, j, lvl in planted]
    return shuffled, planted


def true_jaccard(a: str, b: str, params: minhash.MinHashParams) -> float:
    sa, sb = set(minhash.shingles(a, params)), set(minhash.shingles(b, params))
    return len(sa & sb) / len(sa | sb)


def run_danlu(texts: list[str], params: minhash.MinHashParams):
    t0 = time.perf_counter()
    sig = minhash.signatures(texts, params)
    t1 = time.perf_counter()
    pairs = minhash.near_duplicate_pairs(sig, params)
    t2 = time.perf_counter()
    minhash.representatives(len(texts), pairs)
    t3 = time.perf_counter()
    phases = {"signatures_s": t1 - t0, "lsh_confirm_s": t2 - t1, "cluster_s": t3 - t2}
    return {tuple(p) for p in pairs.tolist()}, t3 - t0, phases, sig.nbytes / len(texts)


def run_datasketch(texts: list[str], params: minhash.MinHashParams):
    """The plain way: Python shingles, MinHash.bulk (sha1_hash32), MinHashLSH
    insert + query, then MinHash.jaccard >= threshold."""
    from datasketch import MinHash, MinHashLSH

    t0 = time.perf_counter()
    shingled = ([s.encode("utf-8") for s in minhash.shingles(t, params)] for t in texts)
    sketches = MinHash.bulk(shingled, num_perm=params.num_perm, seed=params.seed)
    lsh = MinHashLSH(threshold=params.threshold, num_perm=params.num_perm)
    with lsh.insertion_session() as session:
        for i, m in enumerate(sketches):
            session.insert(i, m, check_duplication=False)
    pairs = set()
    for i, m in enumerate(sketches):
        for j in lsh.query(m):
            if j > i and m.jaccard(sketches[j]) >= params.threshold:
                pairs.add((i, j))
    return pairs, time.perf_counter() - t0


def score(reported, planted, texts, params, truth_cache):
    """Recall over planted pairs truly >= threshold (overall and per level),
    precision over reported pairs (true Jaccard computed when not planted)."""

    def truth(pair):
        if pair not in truth_cache:
            truth_cache[pair] = true_jaccard(texts[pair[0]], texts[pair[1]], params)
        return truth_cache[pair]

    positives = [(i, j) for i, j, _ in planted if truth((i, j)) >= params.threshold]
    found = [p in reported for p in positives]
    per_level = {}
    for level in LEVELS:
        members = [(i, j) for i, j, lvl in planted if lvl == level]
        per_level[str(level)] = round(sum(p in reported for p in members) / len(members), 4)
    correct = sum(truth(p) >= params.threshold for p in reported)
    return {
        "recall": sum(found) / max(len(positives), 1),
        "precision": correct / max(len(reported), 1),
        "reported_share_by_level": per_level,
        "positives": len(positives),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--baseline-docs",
        type=int,
        default=30_000,
        help="datasketch runs on this many documents: every planted pair plus random others",
    )
    args = parser.parse_args(argv)
    params = minhash.MinHashParams()  # threshold 0.8, 128 permutations, 5-char / 3-word shingles

    t0 = time.perf_counter()
    texts, planted = build_corpus(args.docs, args.seed, params)
    truth_cache: dict = {}
    for i, j, _ in planted:
        truth_cache[(i, j)] = true_jaccard(texts[i], texts[j], params)
    print(
        f"corpus: {len(texts)} docs, {len(planted)} planted pairs "
        f"({time.perf_counter() - t0:.1f}s)",
        file=sys.stderr,
    )

    # One-off per-process setup, outside the timings: the code point tables
    # (~0.1 s) and datasketch's band search (~10 ms, done by MinHashParams).
    minhash.char_shingle_mask(["warm-up"])
    danlu_pairs, danlu_s, phases, sig_bytes = run_danlu(texts, params)
    danlu_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"danlu: {danlu_s:.1f}s {phases}", file=sys.stderr)

    # datasketch runs ~20x slower, so by default it gets a subsample: every
    # planted pair's two documents plus random others. docs/s is its own
    # documents over its own time (the same kind of documents; LSH cost per
    # document barely depends on corpus size), and since the subsample holds
    # every planted pair, both recalls are over the same pairs.
    rng = np.random.default_rng(args.seed + 1)
    in_pairs = sorted({d for i, j, _ in planted for d in (i, j)})
    others = np.setdiff1d(np.arange(len(texts)), in_pairs)
    extra = max(0, min(args.baseline_docs - len(in_pairs), len(others)))
    sample = np.sort(np.concatenate([in_pairs, rng.choice(others, extra, replace=False)]))
    sample = sample.astype(np.int64)
    local_pairs, ds_s = run_datasketch([texts[i] for i in sample], params)
    ds_pairs = {(int(sample[i]), int(sample[j])) for i, j in local_pairs}
    print(f"datasketch: {ds_s:.1f}s on {len(sample)} docs", file=sys.stderr)
    # danlu again, after: the machine's load may drift, so danlu's rate is over
    # both runs, which bracket datasketch's in time.
    again_pairs, again_s, _, _ = run_danlu(texts, params)
    assert again_pairs == danlu_pairs, "danlu is deterministic"

    ours = score(danlu_pairs, planted, texts, params, truth_cache)
    theirs = score(ds_pairs, planted, texts, params, truth_cache)
    danlu_rate, ds_rate = 2 * len(texts) / (danlu_s + again_s), len(sample) / ds_s
    # Each recall is a mean over `positives` Bernoulli trials with independent
    # hashes, so their difference has this standard error.
    n = max(ours["positives"], 1)
    diff_se = np.sqrt(
        (ours["recall"] * (1 - ours["recall"]) + theirs["recall"] * (1 - theirs["recall"])) / n
    )
    result = {
        "docs": len(texts),
        "baseline_docs": int(len(sample)),
        "planted_pairs": len(planted),
        "pairs_above_threshold": ours["positives"],
        "danlu_docs_per_s": round(danlu_rate, 1),
        "datasketch_docs_per_s": round(ds_rate, 1),
        "speedup": round(danlu_rate / ds_rate, 1),
        "danlu_recall": round(ours["recall"], 4),
        "datasketch_recall": round(theirs["recall"], 4),
        "recall_diff_se": round(float(diff_se), 4),
        "danlu_precision": round(ours["precision"], 4),
        "datasketch_precision": round(theirs["precision"], 4),
        "danlu_reported_share_by_level": ours["reported_share_by_level"],
        "datasketch_reported_share_by_level": theirs["reported_share_by_level"],
        "danlu_phases_s": {k: round(v, 3) for k, v in phases.items()},
        "danlu_runs_s": [round(danlu_s, 3), round(again_s, 3)],
        "signature_bytes_per_doc": sig_bytes,
        "danlu_peak_rss_mb": round(danlu_rss, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "total_s": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
