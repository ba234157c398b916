"""Text normalisation shared by clean (what is stored) and dedup (what is compared).

No function here loops over characters in Python (about 100 ns a character):
character tests are compiled regular expressions whose character classes are
built once from the Unicode database, and re scans them in a few ns.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import re
import sys
import unicodedata
from collections import defaultdict
from collections.abc import Callable, Iterable

# re scans fast only for a pattern that starts with a literal or a character
# class (it skips to the candidates); one that starts with a repeat or an
# assertion is tried at every position, several times slower. Hence `[x][x]*`
# rather than `[x]+` below, and guards such as `"  " in text` before a sub.

# Full-width ASCII letters and digits (Ａ-Ｚ, ａ-ｚ, ０-９) sit 0xFEE0 above ASCII.
# Full-width punctuation (，。！？：；（）) is left alone: it is correct Chinese.
_FULLWIDTH_RANGES = ((0xFF10, 0xFF19), (0xFF21, 0xFF3A), (0xFF41, 0xFF5A))
_FULLWIDTH = {c: c - 0xFEE0 for r in _FULLWIDTH_RANGES for c in range(r[0], r[1] + 1)}
_FULLWIDTH_CHARS = "０-９Ａ-Ｚａ-ｚ"
_FULLWIDTH_RUN = re.compile(f"[{_FULLWIDTH_CHARS}][{_FULLWIDTH_CHARS}]*")
# Spaces but the plain one: where one of them or two spaces in a row occur,
# _HSPACE has something to replace. NFC makes none of them (only U+2000 and
# U+2001 change, into U+2002 and U+2003; tests/test_text.py).
_ODD_SPACE_CHARS = r"\t\f\v\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000"
_ODD_SPACE = re.compile(f"[{_ODD_SPACE_CHARS}]")
_HSPACE = re.compile(f"[ {_ODD_SPACE_CHARS}][ {_ODD_SPACE_CHARS}]*")
_SPACE_AROUND_NEWLINE = re.compile(r" *\n *")
_MANY_NEWLINES = re.compile(r"\n\n\n+")
_FENCE = re.compile(r"(```.*?(?:```|\Z))", re.DOTALL)
_ASTRAL_RUN = re.compile("[\U00010000-\U0010ffff][\U00010000-\U0010ffff]*")


def code_point_ranges(keys: Iterable) -> dict:
    """{key: [(first, last), ...]} from one key per code point, from code point 0 on."""
    ranges: dict = defaultdict(list)
    start = 0
    for key, run in itertools.groupby(keys):
        n = sum(1 for _ in run)  # not len(list(run)): a run can be 700k long (50 MB)
        ranges[key].append((start, start + n - 1))
        start += n
    return ranges


def _all_chars(last: int = sys.maxunicode) -> Iterable[str]:
    return map(chr, range(last + 1))


@functools.cache
def _category_ranges() -> dict:
    """Code point ranges by Unicode general category (one pass, ~0.1 s, cached)."""
    return code_point_ranges(map(unicodedata.category, _all_chars()))


@functools.cache
def predicate_ranges(predicate: Callable[[str], bool], last: int = sys.maxunicode) -> tuple:
    """Code point ranges up to `last` where `predicate` (e.g. str.isspace) holds, cached."""
    return tuple(code_point_ranges(map(predicate, _all_chars(last)))[True])


def category_ranges(categories: Iterable[str]) -> list:
    by_category = _category_ranges()
    return sorted(r for c in categories for r in by_category.get(c, ()))


def class_pattern(ranges: Iterable[tuple[int, int]]) -> str:
    """A regex character class of the ranges, as escapes (safe for any code point)."""
    return f"[{_class_body(ranges)}]"


def _class_body(ranges: Iterable[tuple[int, int]]) -> str:
    return "".join(f"\\U{a:08x}" if a == b else f"\\U{a:08x}-\\U{b:08x}" for a, b in ranges)


class CharClass:
    """A set of code points that counts and removes its members with re.

    re tests a class's Basic Multilingual Plane part in a bitmap, but its
    astral ranges one by one for every character (hundreds for unassigned
    code points: 100x slower). So the BMP part scans the text, and the astral
    part only the text's astral characters, which are rare.
    """

    def __init__(self, ranges: Iterable[tuple[int, int]]):
        self.ranges = ranges = sorted(ranges)
        bmp = [(a, min(b, 0xFFFF)) for a, b in ranges if a <= 0xFFFF]
        astral = [(max(a, 0x10000), b) for a, b in ranges if b > 0xFFFF]
        self._bmp = _run_pattern(bmp)
        self._astral = _run_pattern(astral)

    def count(self, text: str) -> int:
        n = sum(map(len, self._bmp.findall(text))) if self._bmp else 0
        if self._astral and (astral := "".join(_ASTRAL_RUN.findall(text))):
            n += sum(map(len, self._astral.findall(astral)))
        return n

    def remove(self, text: str) -> str:
        if self._bmp:
            text = self._bmp.sub("", text)
        if self._astral:
            text = _ASTRAL_RUN.sub(lambda m: self._astral.sub("", m.group()), text)
        return text


def _run_pattern(ranges: list) -> re.Pattern | None:
    if not ranges:
        return None
    cls = class_pattern(ranges)
    return re.compile(cls + cls + "*")


@functools.cache
def invisible_chars() -> CharClass:
    """Control characters but newline and tab, and format characters (Cf: zero-width
    spaces/joiners, BOM, soft hyphen, bidi overrides)."""
    keep = {ord("\n"), ord("\t")}
    ranges = category_ranges(("Cc", "Cf"))
    return CharClass(r for a, b in ranges for r in _without(a, b, keep))


def _without(first: int, last: int, drop: set[int]) -> list[tuple[int, int]]:
    """The range first..last split around the code points in `drop`."""
    out, start = [], first
    for cp in sorted(c for c in drop if first <= c <= last):
        if start < cp:
            out.append((start, cp - 1))
        start = cp + 1
    if start <= last:
        out.append((start, last))
    return out


@functools.cache
def odd_chars() -> CharClass:
    """What undecodable or binary content leaves behind: the replacement
    character, private-use (Co), surrogate (Cs) and unassigned (Cn) code points."""
    return CharClass(category_ranges(("Co", "Cs", "Cn")) + [(0xFFFD, 0xFFFD)])


@functools.cache
def space_chars() -> CharClass:
    return CharClass(predicate_ranges(str.isspace))


@functools.cache
def letter_chars() -> CharClass:
    return CharClass(predicate_ranges(str.isalpha))


def _strip_invisible(text: str) -> str:
    """Drop control characters (but newline and tab) and format characters
    (zero-width spaces/joiners, BOM, bidi overrides: category Cf)."""
    return invisible_chars().remove(text)


def _fullwidth_to_ascii(match: re.Match) -> str:
    return match.group().translate(_FULLWIDTH)


@functools.cache
def _rare_chars() -> re.Pattern:
    """What gives normalize_text's steps before NFC or the odd-space test
    anything to do: full-width letters/digits, invisible characters (the BMP's;
    for astral ones, any astral character) and odd spaces. Most texts hold
    none, and one scan for them spares three."""
    invisible = [(a, min(b, 0xFFFF)) for a, b in invisible_chars().ranges if a <= 0xFFFF]
    body = _class_body([*invisible, (0x10000, sys.maxunicode)])
    return re.compile(f"[{body}{_ODD_SPACE_CHARS}{_FULLWIDTH_CHARS}]")


def _collapse(prose: str, odd_spaces: bool = True) -> str:
    # Each substitution runs only where it would change something; most prose
    # has no double space, odd space, space beside a newline or blank lines.
    # odd_spaces=False: the caller knows there is no odd space in `prose`.
    if "  " in prose or (odd_spaces and _ODD_SPACE.search(prose)):
        prose = _HSPACE.sub(" ", prose)
    if " \n" in prose or "\n " in prose:
        prose = _SPACE_AROUND_NEWLINE.sub("\n", prose)
    if "\n\n\n" in prose:
        prose = _MANY_NEWLINES.sub("\n\n", prose)
    return prose


def normalize_text(text: str) -> str:
    """NFC, full-width letters/digits to ASCII, invisible characters removed,
    whitespace runs collapsed outside fenced code blocks (indentation inside
    ``` fences is meaning, not noise), ends stripped."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    rare = _rare_chars().search(text) is not None
    if rare:
        text = _FULLWIDTH_RUN.sub(_fullwidth_to_ascii, text)
        text = _strip_invisible(text)
    text = unicodedata.normalize("NFC", text)
    if "```" not in text:
        return _collapse(text, rare).strip()
    parts = _FENCE.split(text)
    # split() with one capture group alternates prose, fence, prose, ...
    return "".join(p if i % 2 else _collapse(p, rare) for i, p in enumerate(parts)).strip()


_CJK_RUN = re.compile("[\u3400-\u9fff\uf900-\ufaff][\u3400-\u9fff\uf900-\ufaff]*")
_ASCII_LETTER_RUN = re.compile("[A-Za-z][A-Za-z]*")


def _count(run: re.Pattern, text: str) -> int:
    return sum(map(len, run.findall(text)))


def cjk_share(text: str) -> float:
    """Share of CJK ideographs among the non-space characters."""
    non_space = len(text) - space_chars().count(text)
    if not non_space:
        return 0.0
    return _count(_CJK_RUN, text) / non_space


def detect_language(text: str) -> str:
    """'zh', 'en' or 'other' by script: enough for a configurable language filter
    on Chinese/English finance data without a model download."""
    if cjk_share(text) >= 0.2:
        return "zh"
    letters = letter_chars().count(text)
    if letters and _count(_ASCII_LETTER_RUN, text) / letters >= 0.8:
        return "en"
    return "other"


# Runs of 64+ base64/hex-like characters ([A-Za-z0-9+/=_-]{64,}). A class
# regex would try every letter of every word; instead the text becomes one
# byte a character (non-ASCII to "?"), those characters b"a" and the rest
# b" ", where a run is found by a fast literal search for 64 b"a".
_BASE64_CHARS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=_-"
_BASE64_MASK = bytes(ord("a") if i in _BASE64_CHARS else ord(" ") for i in range(256))
_BASE64_RUN = re.compile(b"a" * 64 + b"a*")


def _base64_chars(text: str) -> int:
    """How many characters of `text` are in runs of 64+ base64-like characters."""
    mask = text.encode("ascii", "replace").translate(_BASE64_MASK)
    return sum(map(len, _BASE64_RUN.findall(mask)))


def non_text_share(text: str) -> float:
    """Share of characters that are not readable prose: long base64/hex-like runs,
    replacement characters (from undecodable bytes) and unprintable symbols."""
    if not text:
        return 0.0
    blob = _base64_chars(text)
    odd = odd_chars().count(text)
    return min(1.0, (blob + odd) / len(text))


# ---------------------------------------------------------------- matching view
#
# Pattern matchers (PII) need one spelling of each character: a phone number
# in full-width digits, with a zero-width space inside or an en dash between
# groups, is the same phone number. `fold_for_matching` gives that spelling,
# and `unfold_span` maps a span found in it back to the original text, so that
# a caller can replace the whole original span (separators and invisible
# characters too).

# Punctuation that can sit inside a PII value (an e-mail's @ . _ + -, a
# number's - and .) is folded to ASCII. Other full-width punctuation (，：；（）！？％),
# frequent in Chinese, is never inside a value: left alone, it keeps most
# Chinese texts off the slow path below.
_FOLD_PUNCT = {
    "＠": "@", "﹫": "@", "．": ".", "﹒": ".", "＋": "+", "﹢": "+", "＿": "_",
    "－": "-", "﹣": "-", "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2212": "-",
}
# Line and paragraph breaks stay breaks: a value never spans one.
_FOLD_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


def _fold_char(c: str) -> str | None:
    """What one character becomes in the matching view: None drops it."""
    if c in _FOLD_PUNCT:
        return _FOLD_PUNCT[c]
    if c in _FOLD_BREAKS:
        return "\n"
    if c.isspace():
        return " "
    if unicodedata.category(c) in ("Cc", "Cf"):
        return None  # zero-width spaces and joiners, soft hyphen, BOM, controls
    if c.isdecimal():
        return str(unicodedata.decimal(c))  # full-width, Arabic-Indic, math digits
    return c.translate(_FULLWIDTH)  # full-width letters


@functools.cache
def _fold_table() -> dict[int, str | None]:
    """str.translate table of every character _fold_char changes (built once).
    Spaces, breaks, controls and decimal digits are all in these categories,
    whose table normalize_text builds anyway (tests/test_pii.py checks the
    table against _fold_char on every code point)."""
    ranges = [*category_ranges(("Zs", "Zl", "Zp", "Cc", "Cf", "Nd")), *_FULLWIDTH_RANGES]
    chars = {chr(cp) for a, b in ranges for cp in range(a, b + 1)}
    table = {}
    for c in sorted(chars | set(_FOLD_PUNCT) | set(_FOLD_BREAKS)):
        if (folded := _fold_char(c)) != c:
            table[ord(c)] = folded
    return table


@functools.cache
def _fold_run() -> re.Pattern:
    """Runs of characters the view changes. Astral ones are rare and re tests
    an astral class range by range, so any astral character is a candidate
    (the table passes the others through)."""
    ranges = []
    for cp in sorted(cp for cp in _fold_table() if cp <= 0xFFFF):
        if ranges and ranges[-1][1] == cp - 1:
            ranges[-1] = (ranges[-1][0], cp)
        else:
            ranges.append((cp, cp))
    body = _class_body([*ranges, (0x10000, sys.maxunicode)])
    return re.compile(f"[{body}][{body}]*")


def fold_for_matching(text: str) -> tuple[str, list[int]]:
    """The matching view of `text`: full-width letters, digits and the
    punctuation of e-mails and numbers to ASCII, every decimal digit to 0-9,
    every space to " ", dashes to "-", invisible characters dropped. One
    character becomes at most one, so a view span maps back to one span
    (`unfold_span`, given the second item returned: where characters were
    dropped, as the view positions they would have had)."""
    run = _fold_run()
    if not run.search(text):  # most texts: the view is the text
        return text, []
    table = _fold_table()
    pieces, dropped, last = [], [], 0
    for m in run.finditer(text):
        chars = m.group()
        folded = chars.translate(table)
        if len(folded) != len(chars):
            start = m.start() - len(dropped)  # its view position
            dropped += [start + i - n for n, i in
                        enumerate(i for i, c in enumerate(chars) if table.get(ord(c), c) is None)]
        pieces += (text[last:m.start()], folded)
        last = m.end()
    pieces.append(text[last:])
    return "".join(pieces), dropped


def unfold_span(dropped: list[int], start: int, end: int) -> tuple[int, int]:
    """The original span of the view span [start, end) (end > start): view
    position v is original position v + (how many dropped are at or before v)."""
    first = start + bisect.bisect_right(dropped, start)
    last = end - 1 + bisect.bisect_right(dropped, end - 1)
    return first, last + 1
