"""PII masking for Chinese and English text: mainland resident ID numbers, mainland
mobile numbers, bank cards, e-mail addresses, IPv4 and IPv6 addresses.

Each value is replaced by a typed placeholder such as `<ID_CARD>`; counts by type
are returned, never the values, so nothing downstream (outputs, logs, MLflow,
error messages) can carry a PII value.

Every spelling of a value is one value: detection runs on the matching view of
the text (`danlu.data.text.fold_for_matching`: full-width forms to ASCII, invisible
characters dropped), numbers may be grouped by spaces, hyphens or dots, and the
placeholder replaces the whole original span, separators and invisible
characters included. The rules, and the decisions in them:

- phone: 11 digits 1[3-9]xxxxxxxxx, optionally after +86, 0086 or 86.
- id_card: 18 characters whose last (0-9 or X) is the MOD 11-2 check digit of
  the first 17 and whose digits 7-14 are a real date from 1900-01-01 to
  2099-12-31 (a fixed range, so that a text is masked the same way on any day).
  The region code is not checked: any table of them is incomplete or dated
  (python-stdnum's raised KeyError for a third of valid-looking numbers). So an
  order number that passes both checks (about 1 in 15,000 random 18-digit
  numbers, more among date-led ones) is masked as an ID number: privacy first.
  An 18-digit number with a date there is an ID number, right or mistyped,
  and never read as a card (1 in 1,400 cards has a date there).
- bank_card: 13-19 digits passing Luhn whose issuer prefix is a card network's
  (2221-2720, or a first digit 3-6 or 9: American Express, JCB, Diners, Visa,
  Mastercard, UnionPay, Discover, China's domestic 9xxx). Without the prefix
  rule, one in ten timestamps (1xxx...) and date-led order numbers (20xx...)
  would pass Luhn and be masked. A number the text names an order or
  reference number (订单号, 流水号, Order No.) is not read as a card; any other
  number with a card prefix that passes Luhn is masked whatever it names.
- email: local@domain.tld; ipv4 (octets 0-255, leading zeros allowed) and ipv6
  (any form Python's ipaddress accepts with two groups at least, an embedded
  IPv4 tail included; "::1" and std::vector are not addresses).

A number is a value only as people write one: digits in a row, or groups of at
least three digits (the last group may be shorter: 6-8-4, 4-4-4-4-2, 4-4-4-4-3;
not after a dot, which makes a decimal) with one kind of separator, or single
digits spaced out. Digits glued to letters or continued by a bare "." or "-"
are part of something longer (an order code, a decimal amount, a version, a
date) and are left alone. A card number written in fours, or an ID number,
is read whole: if it fails its check, nothing inside it is a value either.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
from collections import Counter
from collections.abc import Callable, Iterable

from stdnum import luhn

from danlu.data.text import fold_for_matching, unfold_span

PLACEHOLDERS = {
    "id_card": "<ID_CARD>",
    "bank_card": "<BANK_CARD>",
    "phone": "<PHONE>",
    "email": "<EMAIL>",
    "ip": "<IP>",
}
PII_TYPES = tuple(PLACEHOLDERS)
NUMBER_TYPES = frozenset({"id_card", "bank_card", "phone"})
_ALL_TYPES = frozenset(PII_TYPES)

# A span found: (start, end, type).
Span = tuple[int, int, str]

# ---------------------------------------------------------------- numbers
#
# The patterns run on the matching view, where every digit is 0-9, every
# space " " and every dash "-".

# Between two digits of one number: a space or two, or one dot or dash with
# up to two spaces around it ("138 - 1234 - 5678").
_SEP = r"(?: {0,2}[.\-] {0,2}| {1,3})"
# A run of digits and separators with at least 11 digits (the shortest value,
# a phone number), maybe ending in an ID number's X. re skips to its
# candidates fast as it starts with a character class.
_NUMBER_RUN = re.compile(r"[0-9](?:" + _SEP + r"?[0-9]){10,}[Xx]?")
_GROUP = re.compile(r"[0-9]+[Xx]?")
_LETTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_MAX_DIGITS = 19  # the longest value, a 19-digit card
_PHONE_PREFIXES = ("0086", "86")
_CARD_FIRST_DIGITS = frozenset("34569")
# The shortest last group each type is written with (4-4-4-4-2 for an ID).
_LAST_GROUP = {"id_card": 2, "bank_card": 1, "phone": 3}
_MISTYPED = ""  # _classify's answer for a card or ID number whose check fails
# A label that names the number after it an order or reference number (订单号,
# 流水号：, Order No. ...): card numbers are not called that, and a long order
# number with a card prefix passes Luhn one time in ten. Tested on the view
# just before the number.
_ORDER_LABEL = re.compile(
    r"(?:订单|(?:单|流水|交易|编|序列|合同|发票|批次|参考)号码?"
    r"|(?<![A-Za-z])(?:order|invoice|tracking|transaction|txn|ref(?:erence)?|serial)"
    r"(?: ?(?:no\.?|num(?:ber)?|id|#))?)"
    r" {0,2}[:：#]? {0,2}$", re.IGNORECASE)
_LABEL_WINDOW = 24
_ID_WEIGHTS = tuple(pow(2, 17 - i, 11) for i in range(17))
_ID_CHECK = "10X98765432"


def id_check_char(body: str) -> str:
    """The MOD 11-2 (ISO 7064) check character of a 17-digit ID body (GB 11643)."""
    return _ID_CHECK[sum(int(c) * w for c, w in zip(body, _ID_WEIGHTS, strict=True)) % 11]


def _valid_birth_date(yyyymmdd: str) -> bool:
    year, month, day = int(yyyymmdd[:4]), int(yyyymmdd[4:6]), int(yyyymmdd[6:])
    if not 1900 <= year <= 2099:
        return False
    try:
        datetime.date(year, month, day)
    except ValueError:
        return False
    return True


def valid_id_card(value: str) -> bool:
    """18 characters: MOD 11-2 check character right and a real birth date.
    No region table (see the module docstring)."""
    value = value.upper()
    return (len(value) == 18 and value[:17].isdigit() and value[17] in "0123456789X"
            and id_check_char(value[:17]) == value[17] and _valid_birth_date(value[6:14]))


def _card_prefix(digits: str) -> bool:
    return digits[0] in _CARD_FIRST_DIGITS or 2221 <= int(digits[:4]) <= 2720


def valid_bank_card(digits: str) -> bool:
    """13-19 digits with a card network's prefix, passing Luhn."""
    return (13 <= len(digits) <= 19 and digits.isdigit() and _card_prefix(digits)
            and luhn.is_valid(digits))


def valid_phone(digits: str) -> bool:
    """A mainland mobile number 1[3-9]xxxxxxxxx, maybe after 86 or 0086."""
    for prefix in _PHONE_PREFIXES:
        if len(digits) == 11 + len(prefix) and digits.startswith(prefix):
            digits = digits[len(prefix):]
    return len(digits) == 11 and digits.isdigit() and digits[0] == "1" and digits[1] in "3456789"


def _sep_kind(sep: str) -> str:
    return "." if "." in sep else "-" if "-" in sep else " "


def _written_as_one(groups: list[str], kinds: list[str], last_min: int) -> bool:
    """Are these digit groups, joined by separators of these kinds, one number
    as people write one? (Lists of short numbers, decimals, thousands are not.)"""
    if len(groups) == 1:
        return True
    if len(set(kinds)) != 1:
        return False
    if all(len(g) == 1 for g in groups):  # 1 3 8 1 2 3 4 5 6 7 8
        return True
    if kinds[0] == ".":  # 57066501228.61 is an amount
        last_min = max(last_min, 3)
    return all(len(g) >= 3 for g in groups[:-1]) and len(groups[-1]) >= last_min


def _id_shaped(value: str) -> bool:
    """18 characters with a birth date where an ID number has it: an ID
    number, right or mistyped, and no card (1 in 1,400 cards has a date there)."""
    return len(value) == 18 and value[:17].isdigit() and _valid_birth_date(value[6:14])


def _card_shaped(groups: list[str], kinds: list[str]) -> bool:
    """13-19 digits in fours (the last group shorter) with a card prefix."""
    digits = "".join(groups)
    return (len(groups) >= 4 and 13 <= len(digits) <= 19 and len(set(kinds)) == 1
            and all(len(g) == 4 for g in groups[:-1]) and digits.isdigit()
            and _card_prefix(digits))


def _classify(groups: list[str], kinds: list[str], wanted: frozenset,
              order_label: bool = False) -> str | None:
    """The type of the number these groups spell, _MISTYPED (a card or ID
    number that fails its check: skip it whole), or None (no value).
    `order_label`: the text names it an order or reference number, so it is
    no card."""
    digits = "".join(groups)
    if _id_shaped(digits) and _written_as_one(groups, kinds, _LAST_GROUP["id_card"]):
        # One ID number, right or mistyped (670817 19801128 4185): nothing
        # inside it is a value either.
        return "id_card" if "id_card" in wanted and valid_id_card(digits) else _MISTYPED
    if _card_shaped(groups, kinds):
        # One card number written in fours, right or mistyped: the mistyped
        # 6216 8328 7779 6493 575 holds a 16-digit number that passes Luhn.
        valid = "bank_card" in wanted and not order_label and valid_bank_card(digits)
        return "bank_card" if valid else _MISTYPED
    if ("bank_card" in wanted and not order_label and valid_bank_card(digits)
            and _written_as_one(groups, kinds, _LAST_GROUP["bank_card"])):
        return "bank_card"
    if "phone" in wanted and valid_phone(digits):
        # A country code group may stand apart: "+86 138-1234-5678".
        if len(groups) > 1 and groups[0] in _PHONE_PREFIXES:
            groups, kinds = groups[1:], kinds[1:]
        if _written_as_one(groups, kinds, _LAST_GROUP["phone"]):
            return "phone"
    return None


def _continued(seps: list[str], i: int, j: int) -> bool:
    """Is the window of groups i..j-1 glued to a neighbouring group by a bare
    dot or dash? Then it is part of a longer number: 13800000000.00 (an
    amount), 1.13812345678 (a version), 138-1234-5678-9999. A space is no
    glue: `2024 13812345678` and `6217 0000 1234 5678 12 元` hold values."""
    left = seps[i - 1] if i > 0 else ""
    right = seps[j - 1] if j <= len(seps) else ""
    return left in (".", "-") or right in (".", "-")


def _longest_value(groups: list[str], seps: list[str], kinds: list[str], i: int, stop: int,
                   wanted: frozenset, order_label: bool) -> tuple[int, str] | None:
    """The longest run of groups i..j-1 (j <= stop) that spells a value: (j, type)."""
    ends, n = [], 0
    for j in range(i + 1, stop + 1):
        n += len(groups[j - 1])
        if n > _MAX_DIGITS:
            break
        ends.append(j)
    for j in reversed(ends):
        if len("".join(groups[i:j])) < 11 or _continued(seps, i, j):
            continue
        kind = _classify(groups[i:j], kinds[i:j - 1], wanted, order_label)
        if kind is not None:
            return j, kind
    return None


def _run_values(view: str, run: re.Match, wanted: frozenset) -> list[Span]:
    """The values in one run of digit groups, leftmost and longest first."""
    start, end = run.span()
    # A group glued to letters is part of a code (SO13812345678, 138abc); an
    # X after a digit ended the run before, an ID number.
    glued_left = (view[start - 1:start] in _LETTERS
                  and not (view[start - 1] in "Xx" and view[start - 2:start - 1].isdigit()))
    glued_right = view[end:end + 1] in _LETTERS
    # Digits in a row, the usual case: no windows to try.
    if run.group()[:-1].isdigit():
        if glued_left or glued_right:
            return []
        kind = _classify([run.group()], [], wanted, _order_label(view, start, end - start))
        return [] if not kind else [(_with_plus(view, start, kind), end, kind)]
    found = list(_GROUP.finditer(view, start, end))
    groups = [g.group() for g in found]
    seps = [view[a.end():b.start()] for a, b in zip(found, found[1:], strict=False)]
    kinds = [_sep_kind(s) for s in seps]
    i, stop = int(glued_left), len(groups) - glued_right
    labelled = _order_label(view, start, sum(map(len, groups)))
    spans = []
    while i < stop:
        hit = _longest_value(groups, seps, kinds, i, stop, wanted, labelled and i == 0)
        if hit is None:
            i += 1
            continue
        j, kind = hit
        if kind != _MISTYPED:
            spans.append((_with_plus(view, found[i].start(), kind), found[j - 1].end(), kind))
        i = j
    return spans


def _order_label(view: str, start: int, n_digits: int) -> bool:
    """Is the number at `start` named an order or reference number? Asked
    only where it may hold a card (13 digits or more)."""
    return n_digits >= 13 and _ORDER_LABEL.search(
        view, max(0, start - _LABEL_WINDOW), start) is not None


def _with_plus(view: str, start: int, kind: str) -> int:
    """The start of a phone number's span: its + (of +86) belongs to it."""
    return start - 1 if kind == "phone" and view[start - 1:start] == "+" else start


def _find_numbers(view: str, wanted: frozenset) -> list[Span]:
    spans = []
    for run in _NUMBER_RUN.finditer(view):
        spans += _run_values(view, run, wanted)
    return spans


# ---------------------------------------------------------------- e-mail, IP

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
# A dotted quad, not inside a longer dotted number (a version 1.2.3.4.5) or
# glued to letters (v1.2.3.4). An address may end a sentence: "from 10.0.0.1."
_IPV4 = re.compile(r"[0-9](?<=(?<![0-9A-Za-z])(?<![0-9A-Za-z]\.)[0-9])[0-9]{0,2}"
                   r"(?:\.[0-9]{1,3}){3}(?!\.?[0-9])")
# Not glued to letters either: std::vector, Foo::Bar.
_IPV6 = re.compile(r"(?<![0-9A-Za-z:])(?:[0-9A-Fa-f]{0,4}:){2,7}"
                   r"(?:[0-9]{1,3}(?:\.[0-9]{1,3}){3}|[0-9A-Fa-f]{0,4})(?![0-9A-Za-z:])")
# Cheap tests (they start with a literal, which re finds fast) that spare
# most texts the full scans: every IPv6 address holds "::" or, written out,
# at least six colons between hex groups (a time 12:30:45 has two); every
# IPv4 match a dot before a digit.
_IPV6_HINT = re.compile(r":(?::|[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4}){3})")
_IPV4_HINT = re.compile(r"\.[0-9]")


def _valid_ipv4(s: str) -> bool:
    return all(int(octet) <= 255 for octet in s.split("."))


def _valid_ipv6(s: str) -> bool:
    # Two groups at least: "::" and "::1" (unspecified, loopback) name no one
    # and are mostly code (a[::2]).
    if len([g for g in re.split(r"[:.]", s) if g]) < 2:
        return False
    try:
        ipaddress.IPv6Address(s)
    except ValueError:
        return False
    return True


def _find_emails(view: str, wanted: frozenset) -> list[Span]:
    if "@" not in view:
        return []
    return [(m.start(), m.end(), "email") for m in _EMAIL.finditer(view)]


def _finder(pattern: re.Pattern, valid: Callable[[str], bool],
            hint: Callable[[str], object] | None = None) -> Callable:
    def find(view: str, wanted: frozenset) -> list[Span]:
        if hint is not None and not hint(view):
            return []
        return [(m.start(), m.end(), "ip") for m in pattern.finditer(view) if valid(m.group())]
    return find


# Order matters: each finder runs on the view with what earlier ones found
# blanked out. E-mails first (13812345678@qq.com is an address), then IP
# addresses, whose groups are too short to be read as a number value but
# would glue a number beside them to themselves (::2.13812345678).
_DETECTORS: tuple[tuple[frozenset, Callable[[str, frozenset], list[Span]]], ...] = (
    (frozenset({"email"}), _find_emails),
    (frozenset({"ip"}), _finder(_IPV6, _valid_ipv6, _IPV6_HINT.search)),
    (frozenset({"ip"}), _finder(_IPV4, _valid_ipv4, _IPV4_HINT.search)),
    (NUMBER_TYPES, _find_numbers),
)


def _blank(view: str, spans: list[Span]) -> str:
    """The view with these spans overwritten by NULs, which no pattern matches
    and which glue to nothing."""
    pieces, last = [], 0
    for start, end, _ in sorted(spans):
        pieces += (view[last:start], "\0" * (end - start))
        last = end
    pieces.append(view[last:])
    return "".join(pieces)


def find_pii(text: str, types: Iterable[str] = PII_TYPES) -> list[Span]:
    """The PII values of the given types in `text`: (start, end, type), in
    text order, spans of the original text (one pass; see mask_pii)."""
    wanted = _ALL_TYPES if types is PII_TYPES else frozenset(types)
    if not wanted:  # masking off (rejects with mask_pii: false)
        return []
    view, dropped = fold_for_matching(text)
    spans: list[Span] = []
    for kinds, find in _DETECTORS:
        if not kinds.isdisjoint(wanted) and (found := find(view, wanted)):
            spans += found
            view = _blank(view, found)
    if not spans:  # most texts
        return spans
    return sorted((*unfold_span(dropped, start, end), kind) for start, end, kind in spans)


def mask_pii(text: str, types: Iterable[str] = PII_TYPES,
             counts: Counter | None = None) -> tuple[str, Counter]:
    """Return `text` with every PII value of the given types replaced by its
    placeholder, and a Counter of replacements by type (`counts`, added to,
    when given)."""
    counts = counts if counts is not None else Counter()
    # A value glued to another (11010519491231002X2::f0) shows once its
    # neighbour is a placeholder: mask again until nothing is found. Each
    # pass takes digits, "@" or ":" away and placeholders add none, so it ends.
    while spans := find_pii(text, types):
        text = _replace(text, spans, counts)
    return text, counts


def _replace(text: str, spans: list[Span], counts: Counter) -> str:
    pieces, last = [], 0
    for start, end, kind in spans:
        pieces += (text[last:start], PLACEHOLDERS[kind])
        last = end
        counts[kind] += 1
    pieces.append(text[last:])
    return "".join(pieces)


def mask_value(value, types: Iterable[str] = PII_TYPES, counts: Counter | None = None):
    """Mask every string inside a JSON-like value (a rejected raw record): its
    keys too, and numbers, which become the placeholder string where they
    hold a value (a phone number typed as a JSON number)."""
    counts = counts if counts is not None else Counter()
    if isinstance(value, str):
        return mask_pii(value, types, counts)[0]
    if isinstance(value, dict):
        return {mask_value(k, types, counts): mask_value(v, types, counts)
                for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask_value(v, types, counts) for v in value]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _mask_number(value, types, counts)
    return value


def _mask_number(value: int | float, types: Iterable[str], counts: Counter):
    # 13812345678.0 is how a float holds a phone number read from a sheet.
    integral = isinstance(value, int) or (value == value and abs(value) != float("inf")
                                          and value.is_integer())
    text = str(int(value)) if integral else repr(value)
    masked = mask_pii(text, types, counts)[0]
    return value if masked == text else masked
