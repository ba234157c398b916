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
from typing import Literal

import numpy as np

ShingleKind = Literal["char", "word"]
Scheme = Literal["affine32", "legacy"]

# A document is shingled by characters once CJK ideographs are 1 in
# _CJK_ONE_IN of its letters: word splitting would treat a whole unspaced CJK
# run as one "word", while character shingles on mostly-Latin text only cost
# a few more shingles, so mixed text goes to characters. Same ideograph
# ranges as danlu.data.text.cjk_share, but counted among letters rather than all
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
        # Only what the algorithm itself needs is checked here; the bounds a user
        # may set (dedup.num_perm, dedup.threshold, ...) are the config schema's.
        if self.num_perm < 1:
            raise ValueError(f"num_perm must be >= 1, got {self.num_perm}")
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
    # Decoding an array of code points takes 10 ms; joining 1.1M chr() 160 ms.
    every_char = np.arange(0x110000, dtype="<u4").tobytes().decode("utf-32-le", "surrogatepass")
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


# Windows are hashed _WINDOW_CHUNK at a time: the passes over a chunk then
# run over 256 kB that stay in L2 instead of streaming the whole batch each
# time (1.4x faster for n = 5).
_WINDOW_CHUNK = 1 << 15


def _window_hashes(seq: np.ndarray, n: int, base: np.uint64) -> np.ndarray:
    """Polynomial hash of every length-n window of uint64 `seq`,
    sum(seq[i+k] * base**(n-k)) mod 2**64. The final multiply makes windows
    that differ only in their last element differ in the high bits too."""
    count = max(len(seq) - n + 1, 0)
    out = np.empty(count, dtype=np.uint64)
    for lo in range(0, count, _WINDOW_CHUNK):
        hi = min(lo + _WINDOW_CHUNK, count)
        if n >= 8:
            out[lo:hi] = _doubled_windows(seq[lo : hi + n - 1], n, base)
            continue
        h = out[lo:hi]
        np.copyto(h, seq[lo:hi])
        for k in range(1, n):
            h *= base
            h += seq[lo + k : hi + k]
        h *= base
    return out


def _doubled_windows(seg: np.ndarray, n: int, base: np.uint64) -> np.ndarray:
    """The same windows for a long n in ~2 log2(n) passes instead of 2n: with
    h_a(i) the hash of the a elements from i, h_(a+b)(i) = h_a(i) * base**b
    + h_b(i + a), so windows of 1, 2, 4, 8.. elements are built by doubling
    and n's binary digits are appended to the largest (exact mod 2**64)."""
    count = len(seg) - n + 1
    blocks = {1: seg * base}
    size = 1
    while 2 * size <= n:
        span = len(seg) - 2 * size + 1
        doubled = blocks[size][:span] * _power(base, size)
        doubled += blocks[size][size : size + span]
        size *= 2
        blocks[size] = doubled
    acc, length = blocks[size][:count].copy(), size
    for part in sorted(blocks, reverse=True):
        if length + part <= n:
            acc *= _power(base, part)
            acc += blocks[part][length : length + count]
            length += part
    return acc


@functools.cache
def _power(base: np.uint64, exponent: int) -> np.uint64:
    return np.uint64(pow(int(base), exponent, 1 << 64))


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
    texts: Sequence[str],
    params: MinHashParams,
    hashfunc: Callable[[bytes], int] | None,
    by_char: np.ndarray | None = None,
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
    joined = None
    if by_char is None:
        joined = _joined(texts, n, n - 1)
        by_char = _prefers_chars(*joined)
    char_rows, word_rows = np.flatnonzero(by_char), np.flatnonzero(~by_char)
    if len(char_rows):
        if len(word_rows):  # a mixed batch: join the character-shingled texts alone
            joined = _joined([texts[i] for i in char_rows], n, n - 1)
        elif joined is None:  # the mask was given: nothing joined yet
            joined = _joined(texts, n, n - 1)
        cps, starts = joined
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
    by_char: np.ndarray | None = None,
) -> Iterator[np.ndarray]:
    """Stream signatures as (batch, num_perm) blocks, for inputs that do not
    fit in memory; the blocks concatenate to `signatures(texts)`. `by_char`,
    if given, is `char_shingle_mask(texts)`, already computed by the caller."""
    row = 0
    for batch in _batches(texts, batch_chars):
        mask = None if by_char is None else by_char[row : row + len(batch)]
        yield _signature_block(batch, params, hashfunc, mask)
        row += len(batch)


def signatures(
    texts: Sequence[str],
    params: MinHashParams,
    *,
    hashfunc: Callable[[bytes], int] | None = None,
    batch_chars: int = DEFAULT_BATCH_CHARS,
    by_char: np.ndarray | None = None,
) -> np.ndarray:
    """(len(texts), num_perm) MinHash signatures of dtype params.dtype. Row i
    depends only on texts[i] and params, so shards concatenate to the
    unsharded result. With `hashfunc` (e.g. datasketch.hashfunc.sha1_hash32,
    called on each shingle's UTF-8 bytes, lone surrogates passed through)
    rows equal datasketch.MinHash exactly, one Python call per shingle;
    without it, a vectorised 32-bit hash of the same shingles."""
    sig = np.empty((len(texts), params.num_perm), dtype=params.dtype)
    row = 0
    blocks = signature_blocks(texts, params, hashfunc=hashfunc, batch_chars=batch_chars,
                              by_char=by_char)
    for block in blocks:
        sig[row : row + len(block)] = block
        row += len(block)
    return sig


# ---------------------------------------------------------------- LSH


def lsh_bands(params: MinHashParams) -> tuple[int, int]:
    """(bands, rows) exactly as datasketch.MinHashLSH picks them for
    params.threshold and num_perm with its default weights (0.5, 0.5)."""
    return _lsh_bands(params.threshold, params.num_perm)


@functools.cache  # by the two values that matter, not by every field of the params
def _lsh_bands(threshold: float, num_perm: int) -> tuple[int, int]:
    from datasketch import MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    return lsh.b, lsh.r


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """np.unique(values) for a 1-d array, by sorting: numpy 2's np.unique goes
    through a hash table first, ~40x slower on a few hundred thousand integers."""
    ordered = np.sort(values)
    if not len(ordered):
        return ordered
    return ordered[np.concatenate([[True], ordered[1:] != ordered[:-1]])]


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


# Rows keyed per slab: 4096 rows of 128 uint32 are 2 MB, so each column pass
# reads cache rather than striding through the whole signature array (which
# costs a memory read per row and column), and a subset of rows is gathered a
# slab at a time instead of copied whole.
_KEY_SLAB = 4096


def _pick(block: np.ndarray, rows: np.ndarray | None, index) -> np.ndarray:
    """block[rows][index] without materialising block[rows]."""
    return block[index] if rows is None else block[rows[index]]


def _row_keys_of(block: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """_row_keys of block[rows] (every row when None), a slab at a time."""
    n = len(block) if rows is None else len(rows)
    keys = np.empty(n, dtype=np.uint64)
    for lo in range(0, n, _KEY_SLAB):
        keys[lo : lo + _KEY_SLAB] = _row_keys(_pick(block, rows, slice(lo, lo + _KEY_SLAB)))
    return keys


def same_row_labels(block: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """label[i] = the first row equal to row i (exact: equal 64-bit keys are
    checked, and a key collision is split with np.unique). With `rows`, of
    block[rows], labels indexing `rows`, without copying block[rows]."""
    n = len(block) if rows is None else len(rows)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    keys = _row_keys_of(block, rows)
    order = np.argsort(keys, kind="stable")
    keys = keys[order]
    run_starts = np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1]]))
    run_of = np.repeat(np.arange(len(run_starts)), np.diff(np.append(run_starts, n)))
    first = order[run_starts[run_of]]  # stable sort: the earliest row of each run
    labels = np.empty(n, dtype=np.int64)
    labels[order] = first
    shared = np.flatnonzero(np.diff(np.append(run_starts, n))[run_of] >= 2)
    unequal = (_pick(block, rows, order[shared]) != _pick(block, rows, first[shared])).any(axis=1)
    for run in np.unique(run_of[shared[unequal]]):  # practically never: a 64-bit collision
        members = order[run_starts[run] : (np.append(run_starts, n))[run + 1]]
        _, inverse = np.unique(_pick(block, rows, members), axis=0, return_inverse=True)
        earliest = np.full(inverse.max() + 1, n, dtype=np.int64)
        np.minimum.at(earliest, inverse, members)
        labels[members] = earliest[inverse]
    return labels


def _pairs_within_groups(labels: np.ndarray, chunk: int = 1 << 20) -> Iterator[np.ndarray]:
    """Every (i, j), i < j, with labels[i] == labels[j], encoded i * n + j,
    in pieces of at most `chunk` codes plus one row's: a bucket of m rows has
    m(m-1)/2 pairs, and a few big buckets of common boilerplate would
    otherwise be materialised all at once."""
    n = len(labels)
    grouped = np.flatnonzero(np.bincount(labels, minlength=n)[labels] >= 2)
    order = grouped[np.lexsort((grouped, labels[grouped]))]
    run_starts = np.flatnonzero(np.diff(labels[order], prepend=-1))
    sizes = np.diff(np.append(run_starts, len(order)))
    for size in np.unique(sizes).tolist():
        members = order[_ranges(run_starts[sizes == size], np.full((sizes == size).sum(), size))]
        members = members.reshape(-1, size)
        if size * (size - 1) // 2 > chunk:
            for group in members:
                yield from _pairs_of_big_group(group, n, chunk)
            continue
        left, right = np.triu_indices(size, 1)
        step = chunk // len(left)
        for lo in range(0, len(members), step):
            block = members[lo : lo + step]
            yield (block[:, left] * n + block[:, right]).ravel()


def _pairs_of_big_group(group: np.ndarray, n: int, chunk: int) -> Iterator[np.ndarray]:
    """The pairs of one group too big for a piece, a run of its rows at a
    time: row a pairs with the m - 1 - a rows after it."""
    m = len(group)
    after = m - 1 - np.arange(m)
    ends = np.searchsorted(np.cumsum(after), np.arange(chunk, int(after.sum()) + chunk, chunk))
    start = 0
    for end in np.unique(np.minimum(ends + 1, m)).tolist():  # at least one row a piece
        rows = np.arange(start, end)
        left = np.repeat(rows, after[rows])
        right = _ranges(rows + 1, after[rows])
        yield group[left] * n + group[right]
        start = end


def _band(i: int, rows: int) -> slice:
    return slice(i * rows, (i + 1) * rows)


def candidate_pairs(
    sig: np.ndarray, params: MinHashParams, rows: np.ndarray | None = None
) -> np.ndarray:
    """(P, 2) int64 pairs i < j of rows sharing an LSH bucket in any band,
    sorted: the same pairs datasketch.MinHashLSH.query reports. A bucket of m
    rows yields m(m-1)/2 pairs; find_duplicates collapses identical
    signatures first so exact copies do not blow this up. With `rows`, pairs
    of sig[rows], as indices into `rows`."""
    bands, per_band = lsh_bands(params)
    n = len(sig) if rows is None else len(rows)
    codes = [np.zeros(0, dtype=np.int64)]
    for i in range(bands):
        codes.extend(_pairs_within_groups(same_row_labels(sig[:, _band(i, per_band)], rows)))
    unique = sorted_unique(np.concatenate(codes))
    return np.stack([unique // max(n, 1), unique % max(n, 1)], axis=1)


def estimated_jaccard(
    sig: np.ndarray, pairs: np.ndarray, *, other: np.ndarray | None = None, chunk: int = 1 << 13
) -> np.ndarray:
    """Share of equal signature values for each pair (datasketch's
    MinHash.jaccard): pair (i, j) compares sig[i] with sig[j], or with
    other[j] when `other` is given. Chunks keep the gathered rows small."""
    other = sig if other is None else other
    out = np.empty(len(pairs), dtype=np.float64)
    for lo in range(0, len(pairs), chunk):
        p = pairs[lo : lo + chunk]
        equal = np.count_nonzero(sig[p[:, 0]] == other[p[:, 1]], axis=1)
        out[lo : lo + chunk] = equal / np.float64(sig.shape[1])
    return out


def near_duplicate_pairs(
    sig: np.ndarray, params: MinHashParams, rows: np.ndarray | None = None
) -> np.ndarray:
    """Candidate pairs whose estimated Jaccard is >= params.threshold (of
    sig[rows] as indices into `rows`, when given), sorted. Candidates are
    confirmed a piece at a time and only confirmed pairs are kept: at a low
    threshold the candidates, mostly chance collisions in buckets of common
    boilerplate, grow with the square of the corpus, the confirmed pairs only
    with the duplicates in it."""
    bands, per_band = lsh_bands(params)
    n = max(len(sig) if rows is None else len(rows), 1)
    confirmed = np.zeros(0, dtype=np.int64)  # sorted codes i * n + j
    for i in range(bands):
        labels = same_row_labels(sig[:, _band(i, per_band)], rows)
        found = [confirmed]
        for codes in _pairs_within_groups(labels):  # unique within a band
            codes = codes[~_sorted_contains(confirmed, codes)]  # found in an earlier band
            pairs = np.stack([codes // n, codes % n], axis=1)
            jaccard = estimated_jaccard(sig, pairs if rows is None else rows[pairs])
            found.append(codes[jaccard >= params.threshold])
        confirmed = np.sort(np.concatenate(found))
    return np.stack([confirmed // n, confirmed % n], axis=1)


def _sorted_contains(members: np.ndarray, values: np.ndarray) -> np.ndarray:
    """For each value, whether it is in the sorted array `members`."""
    if not len(members):
        return np.zeros(len(values), dtype=bool)
    at = np.minimum(np.searchsorted(members, values), len(members) - 1)
    return members[at] == values


class BucketIndex:
    """The LSH buckets of a fixed set of signatures (benchmark questions, say),
    for finding which of them other signatures share a bucket with: a sorted
    array of row keys per band, searched once per query row and band. Gives
    the cross pairs candidate_pairs would give on both sets stacked, at a cost
    proportional to the query rows, never query rows x indexed rows."""

    def __init__(self, sig: np.ndarray, params: MinHashParams):
        self.sig, self.params = sig, params
        self.bands, self.per_band = lsh_bands(params)
        self.keys, self.order = [], []
        for i in range(self.bands):
            keys = _row_keys_of(sig[:, _band(i, self.per_band)])
            order = np.argsort(keys, kind="stable")
            self.keys.append(keys[order])
            self.order.append(order)

    def candidates(self, query: np.ndarray) -> np.ndarray:
        """(P, 2) sorted unique (indexed row, query row) pairs sharing a bucket."""
        codes = [np.zeros(0, dtype=np.int64)]
        for i in range(self.bands):
            band = _band(i, self.per_band)
            keys = _row_keys_of(query[:, band])
            lo = np.searchsorted(self.keys[i], keys, side="left")
            hits = np.searchsorted(self.keys[i], keys, side="right") - lo
            q = np.repeat(np.arange(len(query)), hits)
            ref = self.order[i][_ranges(lo[hits > 0], hits[hits > 0])]
            same = (self.sig[ref, band] == query[q, band]).all(axis=1)  # keys can collide
            codes.append(ref[same] * len(query) + q[same])
        unique = sorted_unique(np.concatenate(codes))
        return np.stack([unique // max(len(query), 1), unique % max(len(query), 1)], axis=1)

    def near(self, query: np.ndarray) -> np.ndarray:
        """Candidate pairs whose estimated Jaccard is >= params.threshold."""
        pairs = self.candidates(query)
        jaccard = estimated_jaccard(self.sig, pairs, other=query)
        return pairs[jaccard >= self.params.threshold]


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


def find_duplicates(
    sig: np.ndarray, params: MinHashParams, rows: np.ndarray | None = None
) -> np.ndarray:
    """Representatives (see `representatives`) of the near-duplicate clusters
    in `sig` (or in sig[rows], as indices into `rows`, without copying them).
    Rows with identical signatures are joined directly (estimated Jaccard 1)
    and only one of them goes through LSH; this gives the same clusters as
    running LSH on all rows, without a bucket of m copies costing m(m-1)/2
    pairs."""
    n = len(sig) if rows is None else len(rows)
    same = same_row_labels(sig, rows)
    distinct = np.flatnonzero(same == np.arange(n))
    if rows is not None:
        near = near_duplicate_pairs(sig, params, rows[distinct])
    else:  # all rows distinct (the usual case): no index to gather through
        near = near_duplicate_pairs(sig, params, None if len(distinct) == n else distinct)
    copies = np.flatnonzero(same != np.arange(n))
    pairs = np.concatenate([distinct[near], np.stack([same[copies], copies], axis=1)])
    return representatives(n, pairs)


def shingle_hash_groups(
    texts: Sequence[str], char_ngram: int, word_ngram: int, by_char: np.ndarray | None = None
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The fast 32-bit hashes of the texts' shingles (as `shingles` defines
    them), one group per shingle kind present: (rows, hashes, counts), the
    hashes of texts[rows[0]], texts[rows[1]], ... in turn, counts[k] of
    them for texts[rows[k]]. Padding copies of a real shingle may appear; a
    set of a text's hashes is exact up to 32-bit collisions. `by_char`, if
    given, is `char_shingle_mask(texts)`."""
    by_char = char_shingle_mask(texts) if by_char is None else by_char
    groups = []
    for rows, kind in ((np.flatnonzero(by_char), "char"), (np.flatnonzero(~by_char), "word")):
        if not len(rows):
            continue
        sub = texts if len(rows) == len(texts) else [texts[i] for i in rows]
        if kind == "char":
            cps, starts = _joined(sub, char_ngram, char_ngram - 1)
            groups.append((rows, *_char_ngram_hashes(cps, starts, _lengths(sub), char_ngram)))
        else:
            groups.append((rows, *_word_ngram_hashes(sub, word_ngram)))
    return groups


def shingle_hashes(
    texts: Sequence[str], char_ngram: int, word_ngram: int
) -> tuple[np.ndarray, np.ndarray]:
    """The hashes of `shingle_hash_groups` concatenated in text order, and
    the count per text."""
    if not len(texts):
        return np.zeros(0, dtype=np.uint32), np.zeros(0, dtype=np.int64)
    groups = shingle_hash_groups(texts, char_ngram, word_ngram)
    if len(groups) == 1:  # one kind: already in text order
        return groups[0][1], groups[0][2]
    # A mixed batch: put each kind's hashes back at its texts' offsets in one
    # scatter, rather than splitting them into an array per text.
    counts = np.empty(len(texts), dtype=np.int64)
    for rows, _hashes, group_counts in groups:
        counts[rows] = group_counts
    starts = np.cumsum(counts) - counts
    out = np.empty(counts.sum(), dtype=np.uint32)
    for rows, hashes, group_counts in groups:
        out[_ranges(starts[rows], group_counts)] = hashes
    return out, counts
