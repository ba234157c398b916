"""MinHash signatures and LSH near-duplicate search, vectorised with numpy.

datasketch calls a Python hash function on every shingle, one document at a
time (1-2 thousand 1.2k-character documents a second on one core). This
module computes the same signatures over batches with array operations, and
stays datasketch-compatible so datasketch remains the reference the tests
compare against:

- the permutations are datasketch's own (`MinHash(num_perm, seed, scheme).permutations`),
  applied the way `MinHash.update_batch` applies them, so a signature loads
  into `datasketch.LeanMinHash(seed=..., hashvalues=..., scheme=...)`, and with
  datasketch's shingle hash (`hashfunc=sha1_hash32`) it is bit-identical to
  `datasketch.MinHash`;
- bands and rows come from `datasketch.MinHashLSH` itself and bucket keys are
  its byte-swapped slices, so candidate pairs equal `MinHashLSH.query`.

The steps talk only through arrays (signatures -> candidate pairs -> confirmed
pairs -> representatives), like datatrove's MinHash, so each can be its own
rule and shard. A signature depends only on the text and the parameters.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

ShingleKind = Literal["char", "word"]
Scheme = Literal["affine32", "legacy"]

# A document is shingled by characters once CJK ideographs are 1 in
# _CJK_ONE_IN of its letters: word splitting would treat a whole unspaced CJK
# run as one "word", while character shingles on mostly-Latin text only cost
# a few more shingles, so mixed text goes to characters. Same ideograph
# ranges as danlu.text.cjk_share, but counted among letters rather than all
# non-space characters, so punctuation does not dilute the share.
_CJK_ONE_IN = 10
_CJK_RANGES = ((0x3400, 0x9FFF), (0xF900, 0xFAFF))
_WORD = re.compile(r"\w+")

# Odd 64-bit multipliers for the polynomial shingle hashes (arbitrary, fixed
# forever: changing one changes every signature).
_CHAR_BASE = np.uint64(0x9E3779B97F4A7C15)
_LETTER_BASE = np.uint64(0xC2B2AE3D27D4EB4F)
_WORD_BASE = np.uint64(0x165667B19E3779F9)
_MERSENNE_61 = np.uint64((1 << 61) - 1)
_LOW_32 = np.uint64(0xFFFFFFFF)
# Permutations are applied to a block of _PERM_GROUP permutations x
# _CHUNK_SHINGLES shingles at a time: 1 MB of uint32, about an L2 cache, and
# rows long enough for numpy's fast broadcast loops (they are ~4x slower on
# rows shorter than ~4k; measured with numpy 2.4 on AVX-512).
_CHUNK_SHINGLES = 8192
_PERM_GROUP = 32


@dataclass(frozen=True)
class MinHashParams:
    """Arguments:
    num_perm: permutations per signature; the Jaccard estimate's standard
        error is sqrt(J(1-J)/num_perm), 0.035 at J=0.8 with 128.
    threshold: estimated Jaccard at or above which two documents are duplicates.
    char_ngram: characters per shingle for CJK and mixed text; 5 characters
        span about 3 Chinese words.
    word_ngram: words per shingle for Latin-script text; 3 words span about
        what 5 CJK characters do, so one threshold means a similar edit rate
        in both languages, and each edited word breaks only 3 shingles.
    seed: permutation seed (datasketch's default is 1).
    scheme: datasketch's permutation scheme. "affine32" is datasketch 2.x's
        default (uint32 signatures, 512 bytes per document at 128
        permutations); "legacy" is the pre-2.0 `(a*h+b) % (2**61-1)` family
        (uint64, about 4x slower here). "affine64" is not offered: shingle
        hashes are 32-bit.
    """

    num_perm: int = 128
    threshold: float = 0.8
    char_ngram: int = 5
    word_ngram: int = 3
    seed: int = 1
    scheme: Scheme = "affine32"

    def __post_init__(self) -> None:
        if not 2 <= self.num_perm <= 4096:
            raise ValueError(f"num_perm must be in [2, 4096], got {self.num_perm}")
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")
        for name in ("char_ngram", "word_ngram"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.seed < 2**32:
            raise ValueError(f"seed must be in [0, 2**32), got {self.seed}")
        if self.scheme not in ("affine32", "legacy"):
            raise ValueError(f"scheme must be 'affine32' or 'legacy', got {self.scheme!r}")
        try:  # fail here, not at the LSH step hours later
            lsh_bands(self)
        except ValueError as err:
            raise ValueError(f"no LSH bands for {self}: {err}") from err

    @property
    def dtype(self) -> type[np.unsignedinteger]:
        return np.uint32 if self.scheme == "affine32" else np.uint64


# ---------------------------------------------------------------- shingles


def _utf32(text: str) -> np.ndarray:
    """Code points of `text` (one per str index; lone surrogates pass through)."""
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")


def _lengths(texts: Sequence[str]) -> np.ndarray:
    return np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))


@functools.cache
def _code_point_tables() -> tuple[np.ndarray, np.ndarray]:
    """Per code point: whether `re` matches it with `\\w` (so the vectorised
    word split equals `_WORD.findall`), and its vote for character shingles:
    CJK ideograph +(_CJK_ONE_IN - 1), other letter -1, anything else 0. A
    text's votes sum to >= 0 exactly when ideographs are >= 1/_CJK_ONE_IN of
    its letters (ideographs included), and to 0 when it has no letters."""
    every_char = "".join(map(chr, range(0x110000)))
    is_word = np.zeros(0x110000, dtype=bool)
    is_word[[m.start() for m in re.finditer(r"\w", every_char)]] = True
    vote = np.where(is_word, np.int8(-1), np.int8(0))
    for lo, hi in _CJK_RANGES:
        vote[lo : hi + 1] = _CJK_ONE_IN - 1
    return is_word, vote


def _prefers_chars(cps: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Per text (texts start at `starts` in `cps`, each followed by >= 1 NUL)."""
    votes = np.take(_code_point_tables()[1], cps)
    return np.add.reduceat(votes, starts, dtype=np.int64) >= 0


def _joined(texts: Sequence[str], gap: int, tail: int) -> tuple[np.ndarray, np.ndarray]:
    """Code points of the texts, each followed by `gap` NULs, then `tail` more;
    and where each text starts."""
    step = _lengths(texts) + gap
    sep = "\0" * gap
    return _utf32(sep.join(texts) + sep + "\0" * tail), np.cumsum(step) - step


def char_shingle_mask(texts: Sequence[str]) -> np.ndarray:
    """For each text, whether it is shingled by characters (see shingle_kind)."""
    if not len(texts):
        return np.zeros(0, dtype=bool)
    return _prefers_chars(*_joined(texts, 1, 0))


def shingle_kind(text: str) -> ShingleKind:
    """Return "char" when CJK ideographs are >= 1/10 of the text's letters
    (Chinese, mixed text, or no letters at all), else "word" (Latin script)."""
    return "char" if char_shingle_mask([text])[0] else "word"


def shingles(text: str, params: MinHashParams) -> list[str]:
    """The shingles of one text as strings: the reference definition the fast
    hashes implement, and what datasketch is fed in tests and benchmarks.
    Character n-grams of the raw text, or n-grams of lowercased `\\w+` words
    joined by a space. A text shorter than n is one shingle, never zero."""
    if shingle_kind(text) == "char":
        n = params.char_ngram
        return [text[i : i + n] for i in range(len(text) - n + 1)] or [text]
    words = _WORD.findall(text.lower())
    n = params.word_ngram
    return [" ".join(words[i : i + n]) for i in range(len(words) - n + 1)] or [" ".join(words)]


def _ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenation of arange(s, s + c) for each (s, c)."""
    offsets = np.cumsum(counts) - counts
    return np.repeat(starts - offsets, counts) + np.arange(counts.sum())


def _window_hashes(seq: np.ndarray, n: int, base: np.uint64) -> np.ndarray:
    """Polynomial hash of every length-n window of uint64 `seq`,
    sum(seq[i+k] * base**(n-k)) mod 2**64. The final multiply makes windows
    that differ only in their last element differ in the high bits too."""
    count = len(seq) - n + 1
    h = seq[:count].copy()
    for k in range(1, n):
        h *= base
        h += seq[k : k + count]
    h *= base
    return h


def _segment_hashes(
    windows: np.ndarray, starts: np.ndarray, real: np.ndarray, span: np.ndarray
) -> np.ndarray:
    """High 32 bits of each text's windows. Text d owns windows[starts[d] :
    starts[d] + span[d]], of which the first real[d] are its shingles; the rest
    overlap padding, so they are overwritten with a copy of a real one, which
    leaves every minimum unchanged and spares a gather of all the real ones."""
    pads = span - real
    windows[_ranges(starts + real, pads)] = windows[np.repeat(starts + real - 1, pads)]
    return (windows >> np.uint64(32)).astype(np.uint32)


def _char_ngram_hashes(
    cps: np.ndarray, starts: np.ndarray, lengths: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """32-bit hashes of every character n-gram (plus harmless copies) and the
    count per text, from `_joined(texts, n, n - 1)`: n NULs after each text
    keep windows inside it, and make a text shorter than n (even an empty
    one) hash as itself padded with NULs, one shingle."""
    span = lengths + n
    windows = _window_hashes(cps.astype(np.uint64), n, _CHAR_BASE)[: span.sum()]
    return _segment_hashes(windows, starts, np.maximum(lengths - n + 1, 1), span), span


def _position_powers(size: int) -> tuple[np.ndarray, np.ndarray]:
    """_LETTER_BASE**i and its inverse mod 2**64 for i < size (the base is odd,
    so invertible). Batch-sized tables are kept; one for a huge text is not."""
    return _cached_powers(size) if size <= 4 * DEFAULT_BATCH_CHARS else _powers(size)


def _powers(size: int) -> tuple[np.ndarray, np.ndarray]:
    powers = []
    for base in (int(_LETTER_BASE), pow(int(_LETTER_BASE), -1, 2**64)):
        table = np.full(size, base, dtype=np.uint64)
        table[0] = 1
        np.multiply.accumulate(table, out=table)
        powers.append(table)
    return powers[0], powers[1]


_cached_powers = functools.lru_cache(maxsize=2)(_powers)


def _word_hashes(cps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start of every `\\w+` word in `cps` (which begins and ends with NUL)
    and its hash sum(c_j * B**(end - j)) mod 2**64, from one prefix sum of
    c_j * B**-j for all words at once."""
    is_word = np.take(_code_point_tables()[0], cps)
    edges = np.flatnonzero(is_word[1:] != is_word[:-1]) + 1  # bool: numpy's fast nonzero
    word_starts, word_ends = edges[0::2], edges[1::2]
    powers, inverse_powers = _position_powers(1 << len(cps).bit_length())
    prefix = np.cumsum(cps.astype(np.uint64) * inverse_powers[: len(cps)])
    word_hash = np.take(prefix, word_ends - 1) - np.take(prefix, word_starts - 1)
    word_hash *= np.take(powers, word_ends)
    return word_starts, word_hash


def _word_ngram_hashes(texts: Sequence[str], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Same for n-grams of the lowercased words: words are hashed, then
    windowed like characters, with n zero words after each text."""
    lowered = [t.lower() for t in texts]
    step = _lengths(lowered) + 1
    word_starts, word_hash = _word_hashes(_utf32("\0" + "\0".join(lowered) + "\0"))
    first_word = np.searchsorted(word_starts, np.cumsum(step) - step + 1)
    words_per_text = np.diff(np.append(first_word, len(word_starts)))
    padded = np.zeros(len(word_hash) + n * len(texts) + n - 1, dtype=np.uint64)
    text_of_word = np.repeat(np.arange(len(texts)), words_per_text)
    padded[np.arange(len(word_hash)) + n * text_of_word] = word_hash
    span = words_per_text + n
    windows = _window_hashes(padded, n, _WORD_BASE)[: span.sum()]
    starts = np.cumsum(span) - span
    return _segment_hashes(windows, starts, np.maximum(words_per_text - n + 1, 1), span), span


# ---------------------------------------------------------------- signatures


@functools.cache
def _permutations(num_perm: int, seed: int, scheme: Scheme) -> tuple[np.ndarray, np.ndarray]:
    """datasketch's (a, b) for these settings, as read-only column vectors."""
    from datasketch import MinHash

    dtype = np.uint64 if scheme == "legacy" else np.uint32
    a, b = (np.array(p, dtype=dtype) for p in MinHash(num_perm, seed, scheme=scheme).permutations)
    for column in (a, b):
        column.setflags(write=False)
    return a[:, None], b[:, None]


def _fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's finalizer: datasketch's affine32 pre-mix of each input hash."""
    h = h ^ (h >> np.uint32(16))
    h *= np.uint32(0x85EBCA6B)
    h ^= h >> np.uint32(13)
    h *= np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def _min_hash_into(
    sig: np.ndarray, rows: np.ndarray, hashes: np.ndarray, counts: np.ndarray, params: MinHashParams
) -> None:
    """sig[rows[d]] = per-permutation minimum over text d's shingle hashes
    (`hashes` holds each text's counts[d] >= 1 hashes in turn).

    Shingles go through in fixed-size chunks whatever the text lengths, each
    as (permutation group x chunk) blocks: multiply, add, then
    minimum.reduceat over the pieces of texts in the chunk; a text cut by
    chunk edges is reduced once more over its pieces at the end. Repeated
    shingles are not removed first: they cannot change a minimum, and sorting
    costs more than the few percent of repeats in real text would save."""
    a, b = _permutations(params.num_perm, params.seed, params.scheme)
    legacy = params.scheme == "legacy"
    values = hashes.astype(np.uint64) if legacy else _fmix32(hashes.astype(np.uint32))
    text_starts = np.cumsum(counts) - counts
    chunk_starts = np.arange(0, len(values), _CHUNK_SHINGLES)
    piece_starts = np.union1d(text_starts, chunk_starts)
    chunk_pieces = np.append(np.searchsorted(piece_starts, chunk_starts), len(piece_starts))
    piece_min = np.empty((params.num_perm, len(piece_starts)), dtype=params.dtype)
    buf = np.empty((_PERM_GROUP, min(_CHUNK_SHINGLES, len(values))), dtype=params.dtype)
    for c, lo in enumerate(chunk_starts.tolist()):
        chunk = values[lo : lo + _CHUNK_SHINGLES]
        first, stop = chunk_pieces[c], chunk_pieces[c + 1]
        cuts = piece_starts[first:stop] - lo
        for k in range(0, params.num_perm, _PERM_GROUP):
            block = buf[: len(a[k : k + _PERM_GROUP]), : len(chunk)]
            np.multiply(a[k : k + _PERM_GROUP], chunk, out=block)  # wraps like datasketch
            block += b[k : k + _PERM_GROUP]
            if legacy:  # x % (2**61 - 1) without division: fold the top 3 bits back in
                top = block >> np.uint64(61)
                block &= _MERSENNE_61
                block += top
                np.subtract(block, _MERSENNE_61, out=block, where=block >= _MERSENNE_61)
                block &= _LOW_32
            np.minimum.reduceat(block, cuts, axis=1, out=piece_min[k : k + _PERM_GROUP, first:stop])
    text_pieces = np.searchsorted(piece_starts, text_starts)
    sig[rows] = np.minimum.reduceat(piece_min, text_pieces, axis=1).T


def _signature_block(
    texts: Sequence[str], params: MinHashParams, hashfunc: Callable[[bytes], int] | None
) -> np.ndarray:
    sig = np.full((len(texts), params.num_perm), np.iinfo(np.uint32).max, dtype=params.dtype)
    if not texts:
        return sig
    if hashfunc is not None:  # the slow, exact-datasketch path (tests, audits)
        per_text = [
            [hashfunc(s.encode("utf-8", "surrogatepass")) for s in shingles(t, params)]
            for t in texts
        ]
        counts = np.array([len(h) for h in per_text], dtype=np.int64)
        hashes = np.array([h for text in per_text for h in text], dtype=np.uint32)
        _min_hash_into(sig, np.arange(len(texts)), hashes, counts, params)
        return sig
    n = params.char_ngram
    cps, starts = _joined(texts, n, n - 1)
    by_char = _prefers_chars(cps, starts)
    char_rows, word_rows = np.flatnonzero(by_char), np.flatnonzero(~by_char)
    if len(char_rows):
        if len(word_rows):  # a mixed batch: join the character-shingled texts alone
            cps, starts = _joined([texts[i] for i in char_rows], n, n - 1)
        hashes, counts = _char_ngram_hashes(cps, starts, _lengths(texts)[char_rows], n)
        _min_hash_into(sig, char_rows, hashes, counts, params)
    if len(word_rows):
        hashes, counts = _word_ngram_hashes([texts[i] for i in word_rows], params.word_ngram)
        _min_hash_into(sig, word_rows, hashes, counts, params)
    return sig


# Characters per batch: ~400 documents of 1.2k characters, so per-batch
# Python overhead vanishes while the batch's arrays (8 bytes a character, a
# few at a time) stay near cache; 256k-1M measured about equally fast. A
# longer text makes a batch of its own.
DEFAULT_BATCH_CHARS = 1 << 19


def _batches(texts: Iterable[str], batch_chars: int) -> Iterator[list[str]]:
    batch: list[str] = []
    chars = 0
    for text in texts:
        batch.append(text)
        chars += len(text) + 1
        if chars >= batch_chars:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


def signature_blocks(
    texts: Iterable[str],
    params: MinHashParams,
    *,
    hashfunc: Callable[[bytes], int] | None = None,
    batch_chars: int = DEFAULT_BATCH_CHARS,
) -> Iterator[np.ndarray]:
    """Stream signatures as (batch, num_perm) blocks, for inputs that do not
    fit in memory; the blocks concatenate to `signatures(texts)`."""
    for batch in _batches(texts, batch_chars):
        yield _signature_block(batch, params, hashfunc)


def signatures(
    texts: Sequence[str],
    params: MinHashParams,
    *,
    hashfunc: Callable[[bytes], int] | None = None,
    batch_chars: int = DEFAULT_BATCH_CHARS,
) -> np.ndarray:
    """(len(texts), num_perm) MinHash signatures of dtype params.dtype. Row i
    depends only on texts[i] and params, so shards concatenate to the
    unsharded result. With `hashfunc` (e.g. datasketch.hashfunc.sha1_hash32,
    called on each shingle's UTF-8 bytes, lone surrogates passed through)
    rows equal datasketch.MinHash exactly, one Python call per shingle;
    without it, a vectorised 32-bit hash of the same shingles."""
    sig = np.empty((len(texts), params.num_perm), dtype=params.dtype)
    row = 0
    for block in signature_blocks(texts, params, hashfunc=hashfunc, batch_chars=batch_chars):
        sig[row : row + len(block)] = block
        row += len(block)
    return sig


def save_signatures(path: str | Path, sig: np.ndarray) -> None:
    """Write a signature block as .npy (exact; no suffix is added to `path`)."""
    with open(path, "wb") as fh:
        np.save(fh, np.ascontiguousarray(sig), allow_pickle=False)


def load_signatures(path: str | Path, *, mmap: bool = False) -> np.ndarray:
    """Read a block written by save_signatures; `mmap` maps it read-only."""
    return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)


# ---------------------------------------------------------------- LSH


@functools.cache
def lsh_bands(params: MinHashParams) -> tuple[int, int]:
    """(bands, rows) exactly as datasketch.MinHashLSH picks them for
    params.threshold and num_perm with its default weights (0.5, 0.5)."""
    from datasketch import MinHashLSH

    lsh = MinHashLSH(threshold=params.threshold, num_perm=params.num_perm)
    return lsh.b, lsh.r


def band_keys(signature: np.ndarray, params: MinHashParams) -> list[bytes]:
    """One signature's bucket keys, byte for byte datasketch's MinHashLSH keys."""
    bands, rows = lsh_bands(params)
    return [signature[i * rows : (i + 1) * rows].byteswap().tobytes() for i in range(bands)]


def _row_keys(block: np.ndarray) -> np.ndarray:
    """A 64-bit mix of each row, to sort rows into equal groups cheaply."""
    key = np.full(len(block), 0x243F6A8885A308D3, dtype=np.uint64)
    for column in block.T:
        key ^= column
        key *= _WORD_BASE
        key ^= key >> np.uint64(29)
    return key


def same_row_labels(block: np.ndarray) -> np.ndarray:
    """label[i] = the first row equal to row i (exact: equal 64-bit keys are
    checked, and a key collision is split with np.unique)."""
    n = len(block)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    keys = _row_keys(block)
    order = np.argsort(keys, kind="stable")
    keys = keys[order]
    run_starts = np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1]]))
    run_of = np.repeat(np.arange(len(run_starts)), np.diff(np.append(run_starts, n)))
    first = order[run_starts[run_of]]  # stable sort: the earliest row of each run
    labels = np.empty(n, dtype=np.int64)
    labels[order] = first
    shared = np.flatnonzero(np.diff(np.append(run_starts, n))[run_of] >= 2)
    unequal = (block[order[shared]] != block[first[shared]]).any(axis=1)
    for run in np.unique(run_of[shared[unequal]]):  # practically never: a 64-bit collision
        members = order[run_starts[run] : (np.append(run_starts, n))[run + 1]]
        _, inverse = np.unique(block[members], axis=0, return_inverse=True)
        earliest = np.full(inverse.max() + 1, n, dtype=np.int64)
        np.minimum.at(earliest, inverse, members)
        labels[members] = earliest[inverse]
    return labels


def _pairs_within_groups(labels: np.ndarray) -> np.ndarray:
    """Every (i, j), i < j, with labels[i] == labels[j], encoded i * n + j."""
    n = len(labels)
    grouped = np.flatnonzero(np.bincount(labels, minlength=n)[labels] >= 2)
    order = grouped[np.lexsort((grouped, labels[grouped]))]
    run_starts = np.flatnonzero(np.diff(labels[order], prepend=-1))
    sizes = np.diff(np.append(run_starts, len(order)))
    codes = [np.zeros(0, dtype=np.int64)]
    for size in np.unique(sizes):
        members = order[_ranges(run_starts[sizes == size], np.full((sizes == size).sum(), size))]
        members = members.reshape(-1, size)
        left, right = np.triu_indices(size, 1)
        codes.append((members[:, left] * n + members[:, right]).ravel())
    return np.concatenate(codes)


def candidate_pairs(sig: np.ndarray, params: MinHashParams) -> np.ndarray:
    """(P, 2) int64 pairs i < j of rows sharing an LSH bucket in any band,
    sorted: the same pairs datasketch.MinHashLSH.query reports. A bucket of m
    rows yields m(m-1)/2 pairs; find_duplicates collapses identical
    signatures first so exact copies do not blow this up."""
    bands, rows = lsh_bands(params)
    codes = [
        _pairs_within_groups(same_row_labels(sig[:, i * rows : (i + 1) * rows]))
        for i in range(bands)
    ]
    unique = np.unique(np.concatenate(codes))
    return np.stack([unique // len(sig), unique % len(sig)], axis=1)


def estimated_jaccard(sig: np.ndarray, pairs: np.ndarray, *, chunk: int = 1 << 16) -> np.ndarray:
    """Share of equal signature values for each pair (datasketch's MinHash.jaccard)."""
    out = np.empty(len(pairs), dtype=np.float64)
    for lo in range(0, len(pairs), chunk):
        p = pairs[lo : lo + chunk]
        equal = np.count_nonzero(sig[p[:, 0]] == sig[p[:, 1]], axis=1)
        out[lo : lo + chunk] = equal / np.float64(sig.shape[1])
    return out


def near_duplicate_pairs(sig: np.ndarray, params: MinHashParams) -> np.ndarray:
    """Candidate pairs whose estimated Jaccard is >= params.threshold."""
    pairs = candidate_pairs(sig, params)
    return pairs[estimated_jaccard(sig, pairs) >= params.threshold]


def representatives(num_docs: int, pairs: np.ndarray) -> np.ndarray:
    """rep[i] = the earliest document connected to i through `pairs` (union-find
    semantics via scipy's connected components), so the result is the same
    however documents were batched or sharded. rep[i] == i keeps document i."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    graph = coo_matrix(
        (np.ones(len(pairs), dtype=np.int8), (pairs[:, 0], pairs[:, 1])), shape=(num_docs,) * 2
    )
    n_components, component = connected_components(graph, directed=False)
    earliest = np.full(n_components, num_docs, dtype=np.int64)
    np.minimum.at(earliest, component, np.arange(num_docs))
    return earliest[component]


def find_duplicates(sig: np.ndarray, params: MinHashParams) -> np.ndarray:
    """Representatives (see `representatives`) of the near-duplicate clusters
    in `sig`. Rows with identical signatures are joined directly (estimated
    Jaccard 1) and only one of them goes through LSH; this gives the same
    clusters as running LSH on all rows, without a bucket of m copies costing
    m(m-1)/2 pairs."""
    same = same_row_labels(sig)
    distinct = np.flatnonzero(same == np.arange(len(sig)))
    near = near_duplicate_pairs(sig if len(distinct) == len(sig) else sig[distinct], params)
    copies = np.flatnonzero(same != np.arange(len(sig)))
    pairs = np.concatenate([distinct[near], np.stack([same[copies], copies], axis=1)])
    return representatives(len(sig), pairs)


def shingle_hashes(
    texts: Sequence[str], char_ngram: int, word_ngram: int
) -> tuple[np.ndarray, np.ndarray]:
    """The fast 32-bit hashes of each text's shingles (as `shingles` defines
    them, character or word n-grams per text), concatenated in text order,
    and the count per text. Padding copies of a real shingle may appear; a
    set of a text's hashes is exact up to 32-bit collisions."""
    if not len(texts):
        return np.zeros(0, dtype=np.uint32), np.zeros(0, dtype=np.int64)
    per_text: list = [None] * len(texts)
    by_char = char_shingle_mask(texts)
    for rows, kind in ((np.flatnonzero(by_char), "char"), (np.flatnonzero(~by_char), "word")):
        if not len(rows):
            continue
        sub = [texts[i] for i in rows]
        if kind == "char":
            cps, starts = _joined(sub, char_ngram, char_ngram - 1)
            hashes, counts = _char_ngram_hashes(cps, starts, _lengths(sub), char_ngram)
        else:
            hashes, counts = _word_ngram_hashes(sub, word_ngram)
        for row, chunk in zip(rows.tolist(), np.split(hashes, np.cumsum(counts)[:-1]), strict=True):
            per_text[row] = chunk
    counts = np.array([len(h) for h in per_text], dtype=np.int64)
    return np.concatenate(per_text).astype(np.uint32, copy=False), counts
