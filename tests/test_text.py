import random
import re
import sys
import unicodedata

import pytest

from danlu.data import text as T
from danlu.data.text import detect_language, non_text_share, normalize_text


def test_nfc_and_fullwidth_letters_digits_but_not_chinese_punctuation():
    assert normalize_text("Ｅ\u0301ＰＳ为１２元，增长５％！") == "ÉPS为12元，增长5％！"


def test_invisible_and_control_characters_are_removed():
    assert normalize_text("a\u200bb\u200dc\ufeffd\x07e\u202ef") == "abcdef"


def test_whitespace_collapses_outside_code_blocks_only():
    text = "第一行   有\t空格\r\n\n\n\n第二行  \n```python\ndef f():\n    return  1\n```\n  end  "
    assert normalize_text(text) == (
        "第一行 有 空格\n\n第二行\n```python\ndef f():\n    return  1\n```\nend"
    )


def test_unclosed_fence_keeps_its_indentation():
    assert normalize_text("x\n```\n  a  b") == "x\n```\n  a  b"


def test_language_by_script():
    assert detect_language("什么是市盈率？市盈率是股价除以每股收益。") == "zh"
    assert detect_language("What is a bond? A bond is a loan to an issuer.") == "en"
    assert detect_language("Что такое облигация?") == "other"


def test_non_text_share_flags_base64_blobs():
    blob = "QUJD" * 200
    assert non_text_share("请看附件：" + blob) > 0.9
    assert non_text_share("一段正常的中文金融问答。") == 0.0


# ---- the character tables and their fast paths, checked against the plain
# per-character definitions they replace (on every code point, or on random
# text over an alphabet of the characters that matter).

EVERY_CHAR = "".join(map(chr, range(sys.maxunicode + 1)))


@pytest.mark.parametrize(
    ("chars", "member"),
    [
        (T.invisible_chars, lambda c: c not in "\n\t" and unicodedata.category(c) in ("Cc", "Cf")),
        (T.odd_chars, lambda c: c == "\ufffd" or unicodedata.category(c) in ("Co", "Cs", "Cn")),
        (T.space_chars, str.isspace),
        (T.letter_chars, str.isalpha),
    ],
    ids=["invisible", "odd", "space", "letter"],
)
def test_char_classes_equal_unicodedata_on_every_code_point(chars, member):
    assert chars().remove(EVERY_CHAR) == "".join(c for c in EVERY_CHAR if not member(c))
    # count() by its own path, on the BMP and either side of every range's ends
    # (every code point would double the time, astral ranges being slow in re).
    ends = {cp for a, b in chars().ranges for cp in (a - 1, a, b, b + 1)
            if 0 <= cp <= sys.maxunicode}
    sample = EVERY_CHAR[:0x10000] + "".join(map(chr, sorted(ends)))
    assert chars().count(sample) == sum(map(member, sample))


def test_nfc_makes_no_odd_space():
    # normalize_text skips the odd-space scan for texts that had none before NFC.
    odd = set(re.findall(f"[{T._ODD_SPACE_CHARS}]", EVERY_CHAR))
    made = {c for c in EVERY_CHAR if c not in odd and odd & set(unicodedata.normalize("NFC", c))}
    assert not made
    # ... nor does composition: no odd space has a canonical two-character decomposition.
    canonical = [unicodedata.decomposition(c) for c in odd]
    assert all(d.startswith("<") or len(d.split()) <= 1 for d in canonical)


def test_rare_chars_are_what_the_skipped_steps_act_on():
    def acted_on(c):
        return ord(c) > 0xFFFF or (
            c not in "\n\t" and unicodedata.category(c) in ("Cc", "Cf")
            or re.match(f"[{T._ODD_SPACE_CHARS}{T._FULLWIDTH_CHARS}]", c))

    assert T._rare_chars().findall(EVERY_CHAR) == [c for c in EVERY_CHAR if acted_on(c)]


# The implementations the fast ones replace, kept as their definition.
_PLAIN_HSPACE = re.compile(r"[ \t\f\v\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]+")
_PLAIN_FENCE = re.compile(r"(```.*?(?:```|\Z))", re.DOTALL)


def plain_normalize(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n").translate(T._FULLWIDTH)
    text = "".join(c for c in text if c in "\n\t" or unicodedata.category(c) not in ("Cc", "Cf"))
    text = unicodedata.normalize("NFC", text)

    def collapse(prose):
        prose = _PLAIN_HSPACE.sub(" ", prose)
        prose = re.sub(r" *\n *", "\n", prose)
        return re.sub(r"\n{3,}", "\n\n", prose)

    parts = _PLAIN_FENCE.split(text)
    return "".join(p if i % 2 else collapse(p) for i, p in enumerate(parts)).strip()


def plain_non_text_share(text: str) -> float:
    if not text:
        return 0.0
    blob = sum(len(m.group()) for m in re.finditer(r"[A-Za-z0-9+/=_-]{64,}", text))
    odd = sum(1 for c in text if c == "\ufffd" or unicodedata.category(c) in ("Co", "Cs", "Cn"))
    return min(1.0, (blob + odd) / len(text))


def plain_cjk_share(text: str) -> float:
    chars = [c for c in text if not c.isspace()]
    if not chars:
        return 0.0
    cjk = sum(1 for c in chars if "\u3400" <= c <= "\u9fff" or "\uf900" <= c <= "\ufaff")
    return cjk / len(chars)


def plain_detect_language(text: str) -> str:
    if plain_cjk_share(text) >= 0.2:
        return "zh"
    letters = [c for c in text if c.isalpha()]
    if letters and sum(c.isascii() for c in letters) / len(letters) >= 0.8:
        return "en"
    return "other"


_PIECES = list(
    " \t\n\r\f\v\x07\x85\xa0\u1680\u2000\u2001\u2028\u202f\u3000\u200b\u200d\ufeff\u00ad\u202e"
    "abcXYZ019+/=_-.中文，。豈\uf900Ａｚ０９Ｅ\u0301\u0660😀𠀀\U000e0001\ue000\U000f0000\u0378\ufffd\ud800"
) + ["```", "```py\n", "  ", "\r\n", "\n\n\n", "QUJD" * 17, "e\u0301", "A\u030a"]


def random_texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [
        "".join(rng.choices(_PIECES, k=rng.randint(0, 60))) for _ in range(n)
    ] + ["Q" * 63, "Q" * 64, "a " + "Q" * 65 + "中" + "-" * 70]


@pytest.mark.parametrize(
    ("fast", "plain"),
    [
        (normalize_text, plain_normalize),
        (non_text_share, plain_non_text_share),
        (T.cjk_share, plain_cjk_share),
        (detect_language, plain_detect_language),
    ],
    ids=["normalize_text", "non_text_share", "cjk_share", "detect_language"],
)
def test_fast_text_functions_equal_their_plain_definitions(fast, plain):
    for text in random_texts(4000):
        assert fast(text) == plain(text), repr(text)


def test_base64_runs_by_bytes_equal_the_class_regex():
    for text in random_texts(2000, seed=1):
        expected = sum(len(m) for m in re.findall(r"[A-Za-z0-9+/=_-]{64,}", text))
        assert T._base64_chars(text) == expected, repr(text)


def test_code_point_ranges_and_class_pattern():
    ranges = T.code_point_ranges(c in "bcdf" for c in "abcdefg")
    assert ranges == {False: [(0, 0), (4, 4), (6, 6)], True: [(1, 3), (5, 5)]}
    pattern = re.compile(T.class_pattern([(0x5D, 0x5E), (0x2D, 0x2D), (0x1F600, 0x1F600)]))
    assert [c for c in "a]^-\\😀" if pattern.match(c)] == ["]", "^", "-", "😀"]
