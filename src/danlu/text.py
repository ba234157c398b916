"""Text normalisation shared by clean (what is stored) and dedup (what is compared)."""

from __future__ import annotations

import re
import unicodedata

# Full-width ASCII letters and digits (Ａ-Ｚ, ａ-ｚ, ０-９) sit 0xFEE0 above ASCII.
# Full-width punctuation (，。！？：；（）) is left alone: it is correct Chinese.
_FULLWIDTH = {c: c - 0xFEE0 for r in ((0xFF10, 0xFF19), (0xFF21, 0xFF3A), (0xFF41, 0xFF5A))
              for c in range(r[0], r[1] + 1)}
_HSPACE = re.compile(r"[ \t\f\v\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]+")
_SPACE_AROUND_NEWLINE = re.compile(r" *\n *")
_MANY_NEWLINES = re.compile(r"\n{3,}")
_FENCE = re.compile(r"(```.*?(?:```|\Z))", re.DOTALL)


def _strip_invisible(text: str) -> str:
    """Drop control characters (but newline and tab) and format characters
    (zero-width spaces/joiners, BOM, bidi overrides: category Cf)."""
    return "".join(
        ch for ch in text
        if ch in "\n\t" or unicodedata.category(ch) not in ("Cc", "Cf")
    )


def _collapse(prose: str) -> str:
    prose = _HSPACE.sub(" ", prose)
    prose = _SPACE_AROUND_NEWLINE.sub("\n", prose)
    return _MANY_NEWLINES.sub("\n\n", prose)


def normalize_text(text: str) -> str:
    """NFC, full-width letters/digits to ASCII, invisible characters removed,
    whitespace runs collapsed outside fenced code blocks (indentation inside
    ``` fences is meaning, not noise), ends stripped."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").translate(_FULLWIDTH)
    text = unicodedata.normalize("NFC", _strip_invisible(text))
    parts = _FENCE.split(text)
    # split() with one capture group alternates prose, fence, prose, ...
    return "".join(p if i % 2 else _collapse(p) for i, p in enumerate(parts)).strip()


def cjk_share(text: str) -> float:
    """Share of CJK ideographs among the non-space characters."""
    chars = [c for c in text if not c.isspace()]
    if not chars:
        return 0.0
    cjk = sum(1 for c in chars if "\u3400" <= c <= "\u9fff" or "\uf900" <= c <= "\ufaff")
    return cjk / len(chars)


def detect_language(text: str) -> str:
    """'zh', 'en' or 'other' by script: enough for a configurable language filter
    on Chinese/English finance data without a model download."""
    if cjk_share(text) >= 0.2:
        return "zh"
    letters = [c for c in text if c.isalpha()]
    if letters and sum(c.isascii() for c in letters) / len(letters) >= 0.8:
        return "en"
    return "other"


_BASE64_RUN = re.compile(r"[A-Za-z0-9+/=_-]{64,}")


def non_text_share(text: str) -> float:
    """Share of characters that are not readable prose: long base64/hex-like runs,
    replacement characters (from undecodable bytes) and unprintable symbols."""
    if not text:
        return 0.0
    blob = sum(len(m.group()) for m in _BASE64_RUN.finditer(text))
    odd = sum(1 for c in text if c == "\ufffd" or unicodedata.category(c) in ("Co", "Cs", "Cn"))
    return min(1.0, (blob + odd) / len(text))
