"""Benchmark danlu's vectorised MinHash+LSH against datasketch and rensa.

    python scripts/bench_dedup.py [--docs 50000] [--seed 0]

Builds a synthetic Chinese/English corpus (~1,200 characters a document) with
planted near-duplicate pairs at several Jaccard levels and runs four arms on
one core, in this process, on exactly the same documents (each arm must sign
every one of them: checked, and their sha256 is in the JSON):

  danlu              danlu.data.minhash: numpy signatures over batches (its own fast
                     32-bit shingle hash), LSH with datasketch's bands and rows
  datasketch_sha1    datasketch as documented: MinHash.bulk with its default
                     hash (sha1_hash32), MinHashLSH insertion session + query
  datasketch_xxhash  the same with `hashfunc=` xxhash's 32-bit digest
                     (xxh32_intdigest), the faster hash datasketch's docs show
  rensa              rensa (Rust) as its README shows: RMinHash.update with the
                     shingles, RMinHashLSH(threshold, num_perm, num_bands=16)
                     insert + query (rensa needs bands dividing num_perm)

Every arm gets the same shingles (danlu.data.minhash.shingles: 5-character n-grams
of Chinese and mixed text, 3-word n-grams of Latin text; the Python arms get
them as strings, datasketch as UTF-8 bytes), 128 permutations, and keeps the
LSH candidate pairs whose estimated Jaccard is >= 0.8. Each arm runs once on
a few hundred documents first (imports, lazy tables), as a warm process
would. Ground truth is the exact Jaccard of the shingle sets: recall over the
planted pairs truly >= threshold, precision over the reported pairs. Prints
one JSON line last, with the arms under "arms".

Install the optional arms with `pip install -c requirements/constraints.txt
-e ".[bench]"`; an arm whose package is missing is reported as such.
"""

from __future__ import annotations

import os

# One core, and no BLAS or Rust threads hiding behind the arms: set before
# numpy (or rensa) loads.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS"):
    os.environ[_var] = "1"
if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from importlib import metadata  # noqa: E402

import numpy as np  # noqa: E402

from danlu.data import minhash  # noqa: E402

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


WARM_DOCS = 300  # documents each arm runs on first, untimed
RENSA_BANDS = 16  # rensa's README example; it requires bands dividing num_perm

ARMS = {
    "danlu": "danlu.data.minhash: numpy signatures over batches (own fast 32-bit shingle hash), "
    "LSH with datasketch's bands",
    "datasketch_sha1": "datasketch MinHash.bulk (default sha1_hash32) + MinHashLSH",
    "datasketch_xxhash": "datasketch MinHash.bulk(hashfunc=xxhash.xxh32_intdigest) + MinHashLSH",
    "rensa": f"rensa RMinHash.update(shingles) + RMinHashLSH(num_bands={RENSA_BANDS})",
}


def run_danlu(texts: list[str], params: minhash.MinHashParams):
    """Raw text to confirmed pairs: signatures, LSH + confirmation, clusters."""
    t0 = time.perf_counter()
    sig = minhash.signatures(texts, params)
    t1 = time.perf_counter()
    pairs = minhash.near_duplicate_pairs(sig, params)
    t2 = time.perf_counter()
    minhash.representatives(len(texts), pairs)
    t3 = time.perf_counter()
    phases = {"sign_s": t1 - t0, "lsh_confirm_s": t2 - t1, "cluster_s": t3 - t2}
    return {tuple(p) for p in pairs.tolist()}, len(sig), phases


def _xxh32(data: bytes) -> int:
    """datasketch's documented way to swap the hash: a function of the bytes."""
    import xxhash

    return xxhash.xxh32_intdigest(data)


def run_datasketch(texts: list[str], params: minhash.MinHashParams, hashfunc=None):
    """The plain way: Python shingles, MinHash.bulk, MinHashLSH insert + query,
    then MinHash.jaccard >= threshold."""
    from datasketch import MinHash, MinHashLSH

    kwargs = {"num_perm": params.num_perm, "seed": params.seed}
    if hashfunc is not None:
        kwargs["hashfunc"] = hashfunc
    t0 = time.perf_counter()
    shingled = ([s.encode("utf-8") for s in minhash.shingles(t, params)] for t in texts)
    sketches = MinHash.bulk(shingled, **kwargs)
    t1 = time.perf_counter()
    lsh = MinHashLSH(threshold=params.threshold, num_perm=params.num_perm)
    with lsh.insertion_session() as session:
        for i, m in enumerate(sketches):
            session.insert(i, m, check_duplication=False)
    pairs = _confirmed_pairs(lsh, sketches, params.threshold)
    phases = {"shingle_sign_s": t1 - t0, "lsh_confirm_s": time.perf_counter() - t1}
    return pairs, len(sketches), phases


def _confirmed_pairs(lsh, sketches: list, threshold: float) -> set[tuple[int, int]]:
    """Each candidate pair an LSH index returns, kept when its estimated Jaccard
    reaches the threshold (datasketch's and rensa's query and jaccard read alike)."""
    pairs = set()
    for i, m in enumerate(sketches):
        for j in lsh.query(m):
            if j > i and m.jaccard(sketches[j]) >= threshold:
                pairs.add((i, j))
    return pairs


def run_rensa(texts: list[str], params: minhash.MinHashParams):
    """rensa as its README shows: an RMinHash per document fed the shingle
    strings, RMinHashLSH insert + query, then jaccard >= threshold."""
    from rensa import RMinHash, RMinHashLSH

    t0 = time.perf_counter()
    sketches = []
    for text in texts:
        m = RMinHash(num_perm=params.num_perm, seed=params.seed)
        m.update(minhash.shingles(text, params))
        sketches.append(m)
    t1 = time.perf_counter()
    lsh = RMinHashLSH(threshold=params.threshold, num_perm=params.num_perm, num_bands=RENSA_BANDS)
    for i, m in enumerate(sketches):
        lsh.insert(i, m)
    pairs = _confirmed_pairs(lsh, sketches, params.threshold)
    phases = {"shingle_sign_s": t1 - t0, "lsh_confirm_s": time.perf_counter() - t1}
    return pairs, len(sketches), phases


def arm_runners(params: minhash.MinHashParams) -> dict[str, Callable]:
    return {
        "danlu": lambda texts: run_danlu(texts, params),
        "datasketch_sha1": lambda texts: run_datasketch(texts, params),
        "datasketch_xxhash": lambda texts: run_datasketch(texts, params, hashfunc=_xxh32),
        "rensa": lambda texts: run_rensa(texts, params),
    }


def missing_package(arm: str) -> str | None:
    """Why an arm cannot run here, or None."""
    needed = {"datasketch_xxhash": "xxhash", "rensa": "rensa"}.get(arm)
    if needed is None:
        return None
    try:
        __import__(needed)
    except ImportError:
        return (f"{needed} is not installed "
                "(pip install -c requirements/constraints.txt -e '.[bench]')")
    return None


def timed_arm(run: Callable, texts: list[str]):
    """Warm up on the first documents, then time the whole corpus; the arm
    must sign every document it was given."""
    run(texts[:WARM_DOCS])
    t0 = time.perf_counter()
    pairs, signed, phases = run(texts)
    seconds = time.perf_counter() - t0
    assert signed == len(texts), f"an arm signed {signed} of {len(texts)} documents"
    return pairs, seconds, phases


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


def versions() -> dict[str, str]:
    out = {}
    for package in ("numpy", "datasketch", "xxhash", "rensa"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = "not installed"
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--arms", default=",".join(ARMS), help="comma-separated subset of arms")
    args = parser.parse_args(argv)
    params = minhash.MinHashParams()  # threshold 0.8, 128 permutations, 5-char / 3-word shingles
    wanted = [a for a in args.arms.split(",") if a]
    unknown = sorted(set(wanted) - set(ARMS))
    if unknown:
        parser.error(f"unknown arm(s): {', '.join(unknown)}")

    t0 = time.perf_counter()
    texts, planted = build_corpus(args.docs, args.seed, params)
    docs_sha256 = hashlib.sha256("\0".join(texts).encode("utf-8", "surrogatepass")).hexdigest()
    truth_cache: dict = {}
    for i, j, _ in planted:
        truth_cache[(i, j)] = true_jaccard(texts[i], texts[j], params)
    print(f"corpus: {len(texts)} docs, {len(planted)} planted pairs "
          f"({time.perf_counter() - t0:.1f}s)", file=sys.stderr)

    runners = arm_runners(params)
    arms: dict[str, dict] = {}
    found: dict[str, set] = {}
    danlu_runs: list[float] = []
    # danlu runs first and again last: the machine's load may drift, so its
    # rate is over both runs, which bracket the others in time.
    order = [a for a in ARMS if a in wanted] + (["danlu"] if "danlu" in wanted else [])
    for arm in order:
        why = missing_package(arm)
        if why is not None:
            arms[arm] = {"what": ARMS[arm], "error": why}
            print(f"{arm}: skipped, {why}", file=sys.stderr)
            continue
        pairs, seconds, phases = timed_arm(runners[arm], texts)
        print(f"{arm}: {seconds:.1f}s {phases}", file=sys.stderr)
        if arm == "danlu":
            danlu_runs.append(seconds)
            if arm in found:
                assert pairs == found[arm], "danlu is deterministic"
                continue
        found[arm] = pairs
        arms[arm] = {"what": ARMS[arm], "docs": len(texts),
                     "phases_s": {k: round(v, 3) for k, v in phases.items()}, "seconds": seconds}
    for arm, pairs in found.items():
        seconds = sum(danlu_runs) / len(danlu_runs) if arm == "danlu" else arms[arm]["seconds"]
        quality = score(pairs, planted, texts, params, truth_cache)
        arms[arm].update({
            "docs_per_s": round(len(texts) / seconds, 1),
            "seconds": round(seconds, 3),
            "recall": round(quality["recall"], 4),
            "precision": round(quality["precision"], 4),
            "reported_pairs": len(pairs),
            "reported_share_by_level": quality["reported_share_by_level"],
        })
    positives = score(set(), planted, texts, params, truth_cache)["positives"]
    # What the Python arms spend making shingle strings (in their sign phase),
    # so their hashing and LSH can be told apart from it.
    started = time.perf_counter()
    for text in texts:
        minhash.shingles(text, params)
    python_shingles_s = time.perf_counter() - started
    result = {
        "docs": len(texts),
        "docs_sha256": docs_sha256,
        "planted_pairs": len(planted),
        "pairs_above_threshold": positives,
        "params": {"num_perm": params.num_perm, "threshold": params.threshold,
                   "char_ngram": params.char_ngram, "word_ngram": params.word_ngram,
                   "datasketch_bands_rows": list(minhash.lsh_bands(params)),
                   "rensa_bands": RENSA_BANDS},
        "arms": arms,
        "danlu_speedup": {arm: round(arms["danlu"]["docs_per_s"] / arms[arm]["docs_per_s"], 1)
                          for arm in found if arm != "danlu" and "danlu" in found},
        # Each recall is a mean over `positives` Bernoulli trials: the standard
        # error of a difference between two arms is at most this.
        "recall_diff_se_max": round(float(np.sqrt(0.5 / max(positives, 1))), 4),
        "danlu_runs_s": [round(s, 3) for s in danlu_runs],
        "python_shingles_s": round(python_shingles_s, 3),
        "signature_bytes_per_doc": params.num_perm * np.dtype(params.dtype).itemsize,
        "versions": versions(),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "total_s": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
