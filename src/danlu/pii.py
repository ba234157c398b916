"""PII masking for Chinese and English text: mainland resident ID numbers (MOD 11-2
check digit), mobile numbers, bank cards (Luhn), emails, IPv4 and IPv6.

Each match is replaced by a typed placeholder such as `<ID_CARD>`; counts by type
are returned, never the values, so nothing downstream (outputs, logs, MLflow,
error messages) can carry a PII value.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from collections.abc import Callable, Iterable

from stdnum import luhn
from stdnum.cn import ric

PLACEHOLDERS = {
    "id_card": "<ID_CARD>",
    "bank_card": "<BANK_CARD>",
    "phone": "<PHONE>",
    "email": "<EMAIL>",
    "ip": "<IP>",
}
PII_TYPES = tuple(PLACEHOLDERS)

# Digits glued to letters or other digits are part of something longer (an
# order number, a hash) and are left alone.
_NB = r"(?<![0-9A-Za-z])"
_NA = r"(?![0-9A-Za-z])"
_ID_CARD = re.compile(_NB + r"\d{17}[\dXx]" + _NA)
# 13-19 digits, optionally in groups of 4 separated by one space or dash.
_BANK_CARD = re.compile(
    _NB + r"\d{4}(?:[ -]\d{4}){2,3}(?:[ -]\d{1,4})?" + _NA + "|" + _NB + r"\d{13,19}" + _NA
)
_PHONE = re.compile(
    r"(?<![0-9A-Za-z+])(?:(?:\+|00)86[ -]?)?1[3-9]\d(?:[ -]?\d{4}){2}" + _NA
)
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
# An address may end a sentence ("... from 10.0.0.1."), but not a longer
# dotted number such as a version string 1.2.3.4.5.
_IPV4 = re.compile(r"(?<!\d)(?<!\d\.)(?:\d{1,3}\.){3}\d{1,3}(?!\.?\d)")
_IPV6 = re.compile(r"(?<![0-9A-Fa-f:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![0-9A-Fa-f:])")


def _valid_id_card(s: str) -> bool:
    return ric.is_valid(s.upper())


def _valid_bank_card(s: str) -> bool:
    digits = re.sub(r"[ -]", "", s)
    return 13 <= len(digits) <= 19 and luhn.is_valid(digits)


def _valid_ip(s: str) -> bool:
    try:
        ipaddress.ip_address(s)
    except ValueError:
        return False
    return True


# Order matters: an ID number can also pass Luhn, and a card number contains
# digit runs that look like phones, so the longer, stricter patterns go first.
_DETECTORS: tuple[tuple[str, re.Pattern, Callable[[str], bool] | None], ...] = (
    ("email", _EMAIL, None),
    ("id_card", _ID_CARD, _valid_id_card),
    ("bank_card", _BANK_CARD, _valid_bank_card),
    ("phone", _PHONE, None),
    ("ip", _IPV6, _valid_ip),
    ("ip", _IPV4, _valid_ip),
)


def mask_pii(text: str, types: Iterable[str] = PII_TYPES) -> tuple[str, Counter]:
    """Return `text` with every PII value of the given types replaced by its
    placeholder, and a Counter of replacements by type."""
    wanted = set(types)
    counts: Counter = Counter()
    for kind, pattern, valid in _DETECTORS:
        if kind not in wanted:
            continue

        def replace(m: re.Match, kind=kind, valid=valid) -> str:
            if valid is not None and not valid(m.group()):
                return m.group()
            counts[kind] += 1
            return PLACEHOLDERS[kind]

        text = pattern.sub(replace, text)
    return text, counts


def mask_value(value, types: Iterable[str] = PII_TYPES, counts: Counter | None = None):
    """Mask every string inside a JSON-like value (for rejected raw records)."""
    counts = counts if counts is not None else Counter()
    if isinstance(value, str):
        masked, c = mask_pii(value, types)
        counts.update(c)
        return masked
    if isinstance(value, dict):
        return {k: mask_value(v, types, counts) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask_value(v, types, counts) for v in value]
    return value
