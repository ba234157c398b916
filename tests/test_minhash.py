"""danlu.data.minhash: datasketch-identical signatures and LSH, found duplicates,
earliest-kept clusters, shard-independent signatures."""

from __future__ import annotations

import math

import numpy as np
import pytest
from datasketch import LeanMinHash, MinHash, MinHashLSH
from datasketch.hashfunc import sha1_hash32

from danlu.data import minhash as mh

RNG_SEED = 20240601


def chinese(rng: np.random.Generator, chars: int = 1200) -> str:
    cps = rng.integers(0x4E00, 0x4E00 + 2500, size=chars)
    cps[rng.random(chars) < 1 / 14] = 0x3002  # 。
    return "".join(map(chr, cps.tolist()))


VOCAB = [f"w{i}x{i * 7919 % 101}" for i in range(3000)]


def english(rng: np.random.Generator, words: int = 200) -> str:
    picked = [VOCAB[i] for i in rng.integers(0, len(VOCAB), size=words)]
    return " ".join(w.capitalize() if i % 12 == 0 else w for i, w in enumerate(picked)) + "."


def near_copy(rng: np.random.Generator, text: str, edits: int) -> str:
    """Replace `edits` characters (Chinese) or words (English), spread out."""
    if mh.shingle_kind(text) == "char":
        chars = list(text)
        for pos in rng.choice(np.arange(5, len(chars) - 5, 5), size=edits, replace=False):
            chars[pos] = chr(0x9000 + int(rng.integers(0, 500)))  # outside chinese()'s range
        return "".join(chars)
    words = text.split(" ")
    for pos in rng.choice(np.arange(3, len(words) - 3, 3), size=edits, replace=False):
        words[pos] = f"new{int(rng.integers(0, 10**6))}"
    return " ".join(words)


def true_jaccard(a: str, b: str, params: mh.MinHashParams) -> float:
    sa, sb = set(mh.shingles(a, params)), set(mh.shingles(b, params))
    return len(sa & sb) / len(sa | sb)


def datasketch_minhash(text: str, params: mh.MinHashParams) -> MinHash:
    m = MinHash(num_perm=params.num_perm, seed=params.seed, scheme=params.scheme)
    m.update_batch([s.encode("utf-8", "surrogatepass") for s in mh.shingles(text, params)])
    return m


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    """Chinese and English documents, near copies at several levels, exact
    copies, short, empty and mixed texts, and one long enough to span chunks."""
    rng = np.random.default_rng(RNG_SEED)
    texts = []
    for make, edit_levels in ((chinese, (3, 10, 25, 60)), (english, (1, 3, 6, 12))):
        for edits in edit_levels:
            base = make(rng)
            texts += [base, near_copy(rng, base, edits)]
        texts += [make(rng) for _ in range(6)]
    texts += [texts[0], texts[0], texts[9]]  # exact copies: a bucket of several
    texts += [
        "",
        "a",
        "短",
        "Hi",
        "hello world",
        "!!!",
        "Σίσυφος ΟΔΟΣ straße",
        "\ud800x",
        "中文\ud800中文",
    ]
    texts += ["央行 raised the LPR by 10bp; 市场 reacted: 债券收益率上升, stocks fell."]
    texts += [chinese(rng, 20_000)]
    return texts


# ---------------------------------------------------------------- params


@pytest.mark.parametrize(
    "bad",
    [
        {"num_perm": 1},
        {"threshold": 0.0},
        {"threshold": 1.5},
        {"char_ngram": 0},
        {"word_ngram": 0},
        {"seed": -1},
        {"scheme": "affine64"},
    ],
)
def test_params_reject_invalid_values(bad):
    with pytest.raises(ValueError):
        mh.MinHashParams(**bad)


# ---------------------------------------------------------------- shingles


def test_chinese_and_mixed_text_use_characters_latin_text_uses_words():
    rng = np.random.default_rng(RNG_SEED)
    assert mh.shingle_kind(chinese(rng)) == "char"
    assert mh.shingle_kind("央行 raised the LPR; 市场反应平淡, 债券收益率上升。") == "char"
    assert mh.shingle_kind("!!! ??? ...") == "char"  # no letters: characters still differ
    assert mh.shingle_kind(english(rng)) == "word"
    assert mh.shingle_kind("Guidance from Zhou Xiaochuan (周小川) on the yuan's path.") == "word"
    texts = [chinese(rng), english(rng), "", "混合 text"]
    assert mh.char_shingle_mask(texts).tolist() == [mh.shingle_kind(t) == "char" for t in texts]


def test_shingles_are_char_ngrams_or_lowercased_word_ngrams():
    params = mh.MinHashParams(char_ngram=3, word_ngram=2)
    assert mh.shingles("中文文本", params) == ["中文文", "文文本"]
    assert mh.shingles("The cat, the HAT!", params) == ["the cat", "cat the", "the hat"]


def test_texts_shorter_than_n_are_one_shingle_never_zero():
    params = mh.MinHashParams()
    assert mh.shingles("", params) == [""]
    assert mh.shingles("短文", params) == ["短文"]
    assert mh.shingles("Hello, world", params) == ["hello world"]
    sig = mh.signatures(["", "短文", "Hello, world", "a"], params)
    assert (sig != np.iinfo(np.uint32).max).any(axis=1).all()  # every row saw a shingle
    assert len({row.tobytes() for row in sig}) == 4


def test_fast_hashes_are_one_to_one_with_reference_shingles(corpus):
    """The vectorised hashes cover exactly the shingles `shingles` defines:
    per text as many distinct hashes as distinct shingles, and one hash per
    shingle string across all texts."""
    for params in (mh.MinHashParams(), mh.MinHashParams(char_ngram=1, word_ngram=1)):
        char_texts = [t for t in corpus if mh.shingle_kind(t) == "char"]
        word_texts = [t for t in corpus if mh.shingle_kind(t) == "word"]
        n = params.char_ngram
        cps, starts = mh._joined(char_texts, n, n - 1)
        by_kind = {
            "char": (char_texts, mh._char_ngram_hashes(cps, starts, mh._lengths(char_texts), n)),
            "word": (word_texts, mh._word_ngram_hashes(word_texts, params.word_ngram)),
        }
        hash_of: dict[tuple[str, str], int] = {}
        for kind, (texts, (hashes, counts)) in by_kind.items():
            ends = np.cumsum(counts)
            for text, start, end in zip(texts, ends - counts, ends, strict=True):
                reference = mh.shingles(text, params)
                mine = hashes[start:end].tolist()
                assert len(set(mine)) == len(set(reference)), text[:40]
                for shingle, value in zip(reference, mine, strict=False):  # then padding copies
                    assert hash_of.setdefault((kind, shingle), value) == value
        assert len(set(hash_of.values())) == len(hash_of)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 7, 8, 13, 16])
def test_window_hashes_are_the_polynomial_definition_across_chunks(n):
    """Short windows by repeated multiply-add, long ones by doubling: both
    equal sum(seq[i+k] * base**(n-k)) mod 2**64, including at chunk edges."""
    seq = np.random.default_rng(n).integers(0, 2**40, mh._WINDOW_CHUNK * 2 + 37, dtype=np.uint64)
    base = int(mh._CHAR_BASE)
    expected = [
        sum(int(seq[i + k]) * pow(base, n - k, 2**64) for k in range(n)) % 2**64
        for i in (0, 1, mh._WINDOW_CHUNK - 1, mh._WINDOW_CHUNK, len(seq) - n)
    ]
    windows = mh._window_hashes(seq, n, mh._CHAR_BASE)
    assert len(windows) == len(seq) - n + 1
    picked = windows[[0, 1, mh._WINDOW_CHUNK - 1, mh._WINDOW_CHUNK, len(seq) - n]]
    assert picked.tolist() == expected
    step = seq[: n + 5].copy()  # every window of a short sequence, one at a time
    assert mh._window_hashes(step, n, mh._CHAR_BASE).tolist() == [
        sum(int(step[i + k]) * pow(base, n - k, 2**64) for k in range(n)) % 2**64
        for i in range(6)
    ]


def test_shingle_hashes_of_a_mixed_batch_are_each_texts_own(corpus):
    """Character- and word-shingled texts hashed together come back in text
    order, each exactly as when hashed alone."""
    for n in (5, 13):
        hashes, counts = mh.shingle_hashes(corpus, n, n)
        alone = [mh.shingle_hashes([t], n, n) for t in corpus]
        assert counts.tolist() == [int(c[0]) for _, c in alone]
        assert hashes.tolist() == np.concatenate([h for h, _ in alone]).tolist()
    assert {kind for kind in map(mh.shingle_kind, corpus)} == {"char", "word"}


# ---------------------------------------------------------------- signatures


@pytest.mark.parametrize(
    "params",
    [
        mh.MinHashParams(),
        mh.MinHashParams(scheme="legacy"),
        mh.MinHashParams(num_perm=100, seed=7, char_ngram=3, word_ngram=2),
    ],
    ids=["affine32", "legacy", "100perm-seed7"],
)
def test_signatures_with_sha1_hash32_are_identical_to_datasketch(corpus, params):
    sig = mh.signatures(corpus, params, hashfunc=sha1_hash32, batch_chars=5000)
    assert sig.dtype == MinHash(params.num_perm, scheme=params.scheme).hashvalues.dtype
    for text, row in zip(corpus, sig, strict=True):
        np.testing.assert_array_equal(row, datasketch_minhash(text, params).hashvalues)


def test_signatures_load_into_datasketch_lean_minhash(corpus):
    params = mh.MinHashParams()
    sig = mh.signatures(corpus[:4], params)
    lean = [LeanMinHash(seed=params.seed, hashvalues=row, scheme=params.scheme) for row in sig]
    assert lean[0].jaccard(lean[1]) == mh.estimated_jaccard(sig, np.array([[0, 1]]))[0]


def test_fast_hash_estimates_jaccard_like_datasketch():
    """Each estimate is a mean of num_perm indicators of P(equal) = J, so its
    standard error is sqrt(J(1-J)/num_perm) (0.035 at J=0.8). Per pair, our
    estimate and datasketch's are independent, so they differ by at most
    4 * sqrt(2) * that (false alarm ~1e-4 per pair); over all pairs, the mean
    error of ours must be within 4 standard errors of the mean of zero."""
    params = mh.MinHashParams()
    rng = np.random.default_rng(RNG_SEED + 1)
    pairs = []
    for make, edit_levels in ((chinese, (2, 8, 20, 45, 90)), (english, (1, 3, 7, 14, 25))):
        for edits in edit_levels * 4:
            base = make(rng)
            pairs.append((base, near_copy(rng, base, edits)))
    texts = [t for pair in pairs for t in pair]
    ours = mh.estimated_jaccard(mh.signatures(texts, params), np.arange(len(texts)).reshape(-1, 2))
    errors, variances = [], []
    for (a, b), mine in zip(pairs, ours, strict=True):
        truth = true_jaccard(a, b, params)
        theirs = datasketch_minhash(a, params).jaccard(datasketch_minhash(b, params))
        sd = math.sqrt(max(truth * (1 - truth), 0.01) / params.num_perm)
        assert abs(mine - theirs) <= 4 * math.sqrt(2) * sd, (truth, mine, theirs)
        errors.append(mine - truth)
        variances.append(sd**2)
    assert abs(np.mean(errors)) <= 4 * math.sqrt(np.sum(variances)) / len(errors)


def test_sharded_signatures_concatenate_to_the_single_run_byte_for_byte(corpus, tmp_path):
    params = mh.MinHashParams()
    whole = mh.signatures(corpus, params)
    cut = len(corpus) - 6
    shards = [
        mh.signatures(corpus[i : min(i + 5, cut)], params, batch_chars=2000)
        for i in range(0, cut, 5)
    ]
    streamed = mh.signature_blocks(iter(corpus[cut:]), params, batch_chars=3000)
    shards.append(np.concatenate(list(streamed)))
    assert np.concatenate(shards).tobytes() == whole.tobytes()
    for i in range(0, len(corpus), 11):  # a text alone, as in any other batch
        assert mh.signatures([corpus[i]], params).tobytes() == whole[i].tobytes()

    # the one on-disk format (signatures.Block) keeps them exactly
    from danlu.data.signatures import Block

    lines = np.arange(len(corpus), dtype=np.int64)
    Block(lines, whole, np.zeros((len(corpus), 32), dtype=np.uint8)).save(tmp_path / "shard-0")
    loaded = Block.load(tmp_path / "shard-0")
    assert loaded.sig.dtype == whole.dtype and loaded.sig.tobytes() == whole.tobytes()
    assert loaded.lines.tolist() == lines.tolist()


# ---------------------------------------------------------------- LSH


@pytest.mark.parametrize("threshold", [0.5, 0.8, 0.9])
def test_bands_and_bucket_keys_are_datasketchs(threshold):
    params = mh.MinHashParams(threshold=threshold)
    lsh = MinHashLSH(threshold=threshold, num_perm=params.num_perm)
    assert mh.lsh_bands(params) == (lsh.b, lsh.r)
    row = mh.signatures(["任意一段中文文本"], params)[0]
    assert mh.band_keys(row, params) == [lsh._H(row[s:e]) for s, e in lsh.hashranges]


def test_candidate_pairs_equal_datasketch_lsh_queries(corpus):
    params = mh.MinHashParams(threshold=0.7)
    sig = mh.signatures(corpus, params)
    lsh = MinHashLSH(threshold=params.threshold, num_perm=params.num_perm)
    lean = [LeanMinHash(seed=params.seed, hashvalues=row, scheme=params.scheme) for row in sig]
    for i, m in enumerate(lean):
        lsh.insert(i, m)
    expected = {(i, j) for i, m in enumerate(lean) for j in lsh.query(m) if i < j}
    found = mh.candidate_pairs(sig, params)
    assert {tuple(p) for p in found.tolist()} == expected
    assert len(expected) >= 10  # the near copies and exact copies do share buckets
    assert (found[:, 0] < found[:, 1]).all() and len(np.unique(found, axis=0)) == len(found)


@pytest.mark.parametrize("threshold", [0.5, 0.8])
def test_pairs_confirmed_band_by_band_are_all_candidates_above_threshold(corpus, threshold):
    """near_duplicate_pairs drops rejected candidates band by band; the result
    is still every candidate pair whose estimated Jaccard reaches the threshold."""
    params = mh.MinHashParams(threshold=threshold)
    sig = mh.signatures(corpus, params)
    candidates = mh.candidate_pairs(sig, params)
    expected = candidates[mh.estimated_jaccard(sig, candidates) >= threshold]
    np.testing.assert_array_equal(mh.near_duplicate_pairs(sig, params), expected)
    assert len(expected) >= 5


@pytest.mark.parametrize("chunk", [1, 3, 50, 1 << 20])
def test_bucket_pairs_come_in_pieces_but_all_exactly_once(chunk):
    """Pairs within buckets are produced a piece at a time (big buckets split
    by rows): together, every pair of rows sharing a label, once."""
    rng = np.random.default_rng(RNG_SEED + chunk)
    for _ in range(10):
        n = int(rng.integers(2, 300))
        raw = rng.integers(0, int(rng.integers(1, 8)), n).tolist()
        first: dict[int, int] = {}
        labels = np.array([first.setdefault(v, i) for i, v in enumerate(raw)])
        expected = [i * n + j for i in range(n) for j in range(i + 1, n) if labels[i] == labels[j]]
        pieces = list(mh._pairs_within_groups(labels, chunk))
        found = np.concatenate([np.zeros(0, dtype=np.int64), *pieces])
        assert sorted(found.tolist()) == expected and len(found) == len(expected)
        assert all(len(piece) <= chunk + n for piece in pieces)  # a piece: <= chunk + a row


def test_bucket_index_finds_the_cross_pairs_of_lsh_on_both_sets(corpus):
    """Querying an index of some signatures gives the pairs that LSH on both
    sets stacked would give between them, with the same Jaccard filter."""
    params = mh.MinHashParams(threshold=0.7)
    sig = mh.signatures(corpus, params)
    indexed, queries = sig[::2], sig[1::2]
    stacked = mh.near_duplicate_pairs(np.concatenate([indexed, queries]), params)
    cross = stacked[(stacked[:, 0] < len(indexed)) & (stacked[:, 1] >= len(indexed))]
    expected = {(i, j - len(indexed)) for i, j in cross.tolist()}
    found = mh.BucketIndex(indexed, params).near(queries)
    assert {tuple(p) for p in found.tolist()} == expected and expected
    assert len(mh.BucketIndex(indexed, params).near(queries[:0])) == 0


def test_duplicates_of_a_subset_of_rows_need_no_copy(corpus):
    """find_duplicates over sig[rows] given as `rows` equals it on the copy."""
    params = mh.MinHashParams(threshold=0.7)
    sig = mh.signatures(corpus, params)
    rows = np.array([i for i in range(len(sig)) if i % 7 != 3])
    np.testing.assert_array_equal(mh.find_duplicates(sig, params, rows=rows),
                                  mh.find_duplicates(sig[rows], params))
    np.testing.assert_array_equal(mh.same_row_labels(sig, rows), mh.same_row_labels(sig[rows]))


def test_sorted_unique_is_numpys_unique():
    values = np.random.default_rng(RNG_SEED).integers(0, 50, 1000).astype(np.uint64)
    assert mh.sorted_unique(values).tolist() == np.unique(values).tolist()
    assert mh.sorted_unique(values[:0]).tolist() == []


def test_row_grouping_stays_exact_when_row_keys_collide(monkeypatch):
    rng = np.random.default_rng(RNG_SEED)
    block = rng.integers(0, 3, size=(200, 2), dtype=np.uint32)
    expected = {}
    labels_expected = [expected.setdefault(row.tobytes(), i) for i, row in enumerate(block)]
    monkeypatch.setattr(mh, "_row_keys", lambda b: np.zeros(len(b), dtype=np.uint64))
    assert mh.same_row_labels(block).tolist() == labels_expected
    rows = np.arange(1, 200, 2)  # a subset given by index: labels index `rows`
    seen = {}
    subset_expected = [seen.setdefault(block[r].tobytes(), i) for i, r in enumerate(rows)]
    assert mh.same_row_labels(block, rows).tolist() == subset_expected


def test_planted_near_duplicate_is_found_and_unrelated_pair_is_not():
    params = mh.MinHashParams()
    rng = np.random.default_rng(RNG_SEED + 2)
    zh, en = chinese(rng), english(rng)
    texts = [zh, english(rng), near_copy(rng, zh, 6), chinese(rng), en, near_copy(rng, en, 2)]
    assert true_jaccard(texts[0], texts[2], params) > 0.9
    assert true_jaccard(texts[4], texts[5], params) > 0.9
    pairs = {
        tuple(p) for p in mh.near_duplicate_pairs(mh.signatures(texts, params), params).tolist()
    }
    assert pairs == {(0, 2), (4, 5)}


# ---------------------------------------------------------------- clusters


def test_cluster_representative_is_the_earliest_document():
    pairs = np.array([[5, 3], [5, 1], [8, 7], [9, 8]])
    assert mh.representatives(10, pairs).tolist() == [0, 1, 2, 1, 4, 1, 6, 7, 7, 7]
    assert mh.representatives(3, np.zeros((0, 2), dtype=np.int64)).tolist() == [0, 1, 2]


def test_find_duplicates_keeps_earliest_copy_whatever_the_batching():
    params = mh.MinHashParams()
    rng = np.random.default_rng(RNG_SEED + 3)
    base = chinese(rng)
    texts = [
        english(rng),
        near_copy(rng, base, 4),
        base,
        base,
        english(rng),
        near_copy(rng, base, 3),
    ]
    results = {
        batch: mh.find_duplicates(mh.signatures(texts, params, batch_chars=batch), params).tolist()
        for batch in (1, 2500, 1 << 20)
    }
    assert results == {batch: [0, 1, 1, 1, 4, 1] for batch in (1, 2500, 1 << 20)}


def test_collapsing_identical_signatures_changes_no_cluster(corpus):
    params = mh.MinHashParams(threshold=0.7)
    sig = mh.signatures(corpus, params)
    direct = mh.representatives(len(sig), mh.near_duplicate_pairs(sig, params))
    np.testing.assert_array_equal(mh.find_duplicates(sig, params), direct)
    assert (direct != np.arange(len(sig))).sum() >= 5
