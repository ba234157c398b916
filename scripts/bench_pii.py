"""Recall and false positives of danlu's PII masking on a labelled, generated set.

    python scripts/bench_pii.py [--per-spelling 40] [--decoys-per-kind 150] [--seed 0]
                                [--peer-python PYTHON] [--no-peer] [--show-misses N]

Values: every PII type in at least eight spellings (grouped, prefixed,
full-width, with zero-width or odd spaces inside, ...), each inside a Chinese
or an English sentence; every value passes its checksum (MOD 11-2 and a real
birth date for ID numbers, Luhn and a card network's prefix for cards).
Decoys: order numbers, amounts, dates, timestamps, version strings, numbers
failing their checksum, phone-like numbers with wrong prefixes, e-mail- and
IP-like strings, in the same sentences.

A value counts as caught when the sentence comes back as its text before the
value, the type's placeholder, and its text after: the whole span, separators
included, and nothing else. A decoy counts as a false positive of a type when
any of that type's placeholders appears. The peer is datatrove's PIIFormatter
(emails and IPs), set up as its docs and FineWeb pipeline use it: default
arguments, as a pipeline step over Documents; it writes fake addresses rather
than tags, so for it a value is caught when its span holds one of its
replacement strings, and a decoy is a false positive when one appears. The
peer runs in a child process of --peer-python (default: this interpreter), so
that it can live in a separate virtualenv.

Not decoys, and reported apart (danlu.random_numbers_masked): unlabelled
random 11-19-digit strings. Some are values by the rules (a mobile number's
form, a card prefix passing Luhn one time in ten, an ID's check digit and
date) and are masked on purpose: privacy first.

Prints per-spelling counts and examples of misses to stderr, then one JSON
line last.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from stdnum import luhn  # noqa: E402

from danlu.data.pii import PII_TYPES, PLACEHOLDERS, id_check_char, mask_pii  # noqa: E402

# ---------------------------------------------------------------- spelling helpers

FULLWIDTH = str.maketrans({c: chr(ord(c) + 0xFEE0) for c in
                           "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ@.-_+"})
ZERO_WIDTH = ("\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad")


def groups(s: str, sizes: tuple[int, ...], sep: str) -> str:
    out, i = [], 0
    for n in sizes:
        out.append(s[i:i + n])
        i += n
    if i < len(s):
        out.append(s[i:])
    return sep.join(p for p in out if p)


def fullwidth(s: str) -> str:
    return s.translate(FULLWIDTH)


def zero_width(rng: random.Random, s: str, k: int = 3) -> str:
    chars = list(s)
    for _ in range(k):
        chars.insert(rng.randint(1, len(chars) - 1), rng.choice(ZERO_WIDTH))
    return "".join(chars)


# ---------------------------------------------------------------- values

def phone(rng: random.Random) -> str:
    return "1" + rng.choice("3456789") + "".join(rng.choices("0123456789", k=9))


def id_card(rng: random.Random, want_x: bool = False) -> str:
    while True:
        region = "".join(rng.choices("0123456789", k=6))
        year = rng.randint(1930, 2015)
        month, day = rng.randint(1, 12), rng.randint(1, 28)
        body = f"{region}{year}{month:02d}{day:02d}{rng.randint(0, 999):03d}"
        check = id_check_char(body)
        if (check == "X") == want_x:
            return body + check


_CARD_PREFIXES = (("62", 16), ("62", 19), ("4", 16), ("51", 16), ("55", 16), ("34", 15),
                  ("37", 15), ("35", 16), ("6011", 16), ("9558", 19))


def bank_card(rng: random.Random, prefix: str | None = None, length: int | None = None) -> str:
    if prefix is None:
        prefix, length = rng.choice(_CARD_PREFIXES)
    body = prefix + "".join(rng.choices("0123456789", k=length - len(prefix) - 1))
    return body + luhn.calc_check_digit(body)


def email(rng: random.Random) -> str:
    user = rng.choice(("zhang.san", "li_si", "wang.wu88", "chen", "j.doe", "finance.team"))
    host = rng.choice(("example.com", "qq.com", "163.com", "mail.example.com.cn", "corp.cn"))
    return f"{user}{rng.randint(1, 999)}@{host}"


def ipv4(rng: random.Random) -> str:
    first = rng.choice((8, 23, 45, 61, 84, 101, 114, 139, 180, 202, 210, 221))
    return ".".join(str(x) for x in (first, rng.randint(0, 255), rng.randint(0, 255),
                                     rng.randint(1, 254)))


def ipv6(rng: random.Random) -> str:
    hextets = [f"{rng.randint(0, 0xFFFF):x}" for _ in range(8)]
    hextets[0] = rng.choice(("2001", "2400", "2408", "240e", "2a00"))
    return ":".join(hextets)


# Each spelling: (name, function (rng) -> (value as written)).
SPELLINGS = {
    "phone": [
        ("plain", lambda r: phone(r)),
        ("3-4-4 spaces", lambda r: groups(phone(r), (3, 4, 4), " ")),
        ("3-4-4 hyphens", lambda r: groups(phone(r), (3, 4, 4), "-")),
        ("3-4-4 dots", lambda r: groups(phone(r), (3, 4, 4), ".")),
        ("4-4-3 spaces", lambda r: groups(phone(r), (4, 4, 3), " ")),
        ("full-width digits", lambda r: fullwidth(phone(r))),
        ("full-width 3-4-4 with －", lambda r: fullwidth(groups(phone(r), (3, 4, 4), "-"))),
        ("zero-width inside", lambda r: zero_width(r, phone(r))),
        ("+86 3-4-4", lambda r: "+86 " + groups(phone(r), (3, 4, 4), " ")),
        ("+86-3-4-4", lambda r: "+86-" + groups(phone(r), (3, 4, 4), "-")),
        ("0086 prefix", lambda r: "0086 " + phone(r)),
        ("0086 glued", lambda r: "0086" + phone(r)),
        ("86 prefix", lambda r: "86 " + groups(phone(r), (3, 4, 4), " ")),
        ("+86 glued", lambda r: "+86" + phone(r)),
        ("ideographic spaces", lambda r: groups(phone(r), (3, 4, 4), "\u3000")),
        ("en dashes", lambda r: groups(phone(r), (3, 4, 4), "\u2013")),
        ("spaced hyphens", lambda r: groups(phone(r), (3, 4, 4), " - ")),
        ("digit by digit", lambda r: " ".join(phone(r))),
    ],
    "id_card": [
        ("plain", lambda r: id_card(r)),
        ("plain X", lambda r: id_card(r, want_x=True)),
        ("lowercase x", lambda r: id_card(r, want_x=True).lower()),
        ("6-8-4 spaces", lambda r: groups(id_card(r), (6, 8, 4), " ")),
        ("6-8-4 hyphens", lambda r: groups(id_card(r, want_x=r.random() < 0.5), (6, 8, 4), "-")),
        ("6-8-4 ideographic spaces", lambda r: groups(id_card(r), (6, 8, 4), "\u3000")),
        ("4-4-4-4-2", lambda r: groups(id_card(r), (4, 4, 4, 4, 2), " ")),
        ("3-3-4-4-4", lambda r: groups(id_card(r), (3, 3, 4, 4, 4), " ")),
        ("full-width", lambda r: fullwidth(id_card(r, want_x=r.random() < 0.5))),
        ("zero-width inside", lambda r: zero_width(r, id_card(r))),
        ("full-width 6-8-4 zero-width", lambda r: zero_width(r, fullwidth(
            groups(id_card(r), (6, 8, 4), " ")), 2)),
    ],
    "bank_card": [
        ("plain", lambda r: bank_card(r)),
        ("4-4-4-4 spaces", lambda r: groups(bank_card(r, "62", 16), (4, 4, 4, 4), " ")),
        ("4-4-4-4 hyphens", lambda r: groups(bank_card(r, "4", 16), (4, 4, 4, 4), "-")),
        ("4-4-4-4-3 (19 digits)", lambda r: groups(bank_card(r, "62", 19), (4, 4, 4, 4), " ")),
        ("6-13 (19 digits)", lambda r: groups(bank_card(r, "9558", 19), (6,), " ")),
        ("Amex 4-6-5", lambda r: groups(bank_card(r, "37", 15), (4, 6), " ")),
        ("full-width", lambda r: fullwidth(bank_card(r))),
        ("full-width grouped", lambda r: fullwidth(groups(bank_card(r, "55", 16), (4, 4, 4), " "))),
        ("zero-width inside", lambda r: zero_width(r, bank_card(r), 4)),
        ("no-break spaces", lambda r: groups(bank_card(r, "62", 16), (4, 4, 4), "\u00a0")),
        ("4-4-4-4 dots", lambda r: groups(bank_card(r, "51", 16), (4, 4, 4), ".")),
    ],
    "email": [
        ("plain", lambda r: email(r)),
        ("uppercase", lambda r: email(r).upper()),
        ("plus tag", lambda r: email(r).replace("@", "+fin@")),
        ("digits local part", lambda r: phone(r) + "@qq.com"),
        ("full-width ＠", lambda r: email(r).replace("@", "＠")),
        ("full-width ＠ and ．", lambda r: email(r).replace("@", "＠").replace(".", "．")),
        ("all full-width", lambda r: fullwidth(email(r))),
        ("small form ﹫", lambda r: email(r).replace("@", "﹫")),
        ("zero-width inside", lambda r: zero_width(r, email(r), 2)),
    ],
    "ip": [
        ("IPv4 public", lambda r: ipv4(r)),
        ("IPv4 private 10/8", lambda r: "10." + ".".join(str(r.randint(0, 255)) for _ in range(3))),
        ("IPv4 private 192.168/16", lambda r: f"192.168.{r.randint(0, 255)}.{r.randint(1, 254)}"),
        ("IPv4 full-width", lambda r: fullwidth(ipv4(r))),
        ("IPv4 zero-width inside", lambda r: zero_width(r, ipv4(r), 2)),
        ("IPv6 full", lambda r: ipv6(r)),
        ("IPv6 compressed", lambda r: f"2001:db8::{r.randint(1, 0xFFFF):x}:{r.randint(1, 9999)}"),
        ("IPv6 uppercase", lambda r: ipv6(r).upper()),
        ("IPv6 link-local", lambda r: f"fe80::{r.randint(1, 0xFFFF):x}:{r.randint(1, 0xFFFF):x}"),
        ("IPv6 with IPv4 tail", lambda r: "::ffff:" + ipv4(r)),
    ],
}

SENTENCES = {
    "phone": ("请拨打{}联系客户经理。", "我的手机号是 {}，请回电。", "Please call me at {} after 5pm.",
              "Contact: {}."),
    "id_card": ("客户身份证号码：{}，请核实。", "身份证号{}已登记", "ID number {} was verified.",
                "Her resident ID is {}."),
    "bank_card": ("请把退款打到卡号{}。", "银行卡 {} 已冻结", "Refund to card {} please.",
                  "The card {} was declined."),
    "email": ("发邮件到{}即可。", "联系邮箱：{}，谢谢", "Send the statement to {} today.",
              "Email {} for details."),
    "ip": ("登录IP为{}，请确认。", "服务器 {} 无法访问", "Login from {} was blocked.",
           "The host {} is down."),
}

# ---------------------------------------------------------------- decoys


def _is_id(digits: str) -> bool:
    """A valid ID number by the published rule (check digit and birth date),
    checked with python-stdnum's check digit, not danlu's code."""
    import datetime

    from stdnum.cn import ric

    if len(digits) != 18 or not digits[:17].isdigit():
        return False
    try:
        datetime.date(int(digits[6:10]), int(digits[10:12]), int(digits[12:14]))
    except ValueError:
        return False
    return 1900 <= int(digits[6:10]) <= 2099 and ric.calc_check_digit(digits) == digits[-1]


def _any_value(number: str) -> bool:
    """Is this number a value by the published rules? A decoy that "fails its
    checksum" must not pass another's: an 18-digit number with a card prefix
    that passes Luhn is a card number."""
    digits = number.replace(" ", "").upper()
    card = (13 <= len(digits) <= 19 and digits.isdigit() and luhn.is_valid(digits)
            and (digits[0] in "34569" or 2221 <= int(digits[:4]) <= 2720))
    return card or _is_id(digits)


def _failing(make, value=_any_value):
    """A decoy maker that draws again while `value` holds of its number."""
    def draw(r: random.Random) -> str:
        while value(number := make(r)):
            pass
        return number
    return draw


def _bad_id(r: random.Random) -> str:
    value = id_card(r)
    wrong = r.choice([c for c in "0123456789X" if c != value[-1]])
    return value[:-1] + wrong


def _bad_card(r: random.Random) -> str:
    value = bank_card(r)
    return value[:-1] + str((int(value[-1]) + r.randint(1, 9)) % 10)


def _digits(r: random.Random, n: int) -> str:
    return "".join(r.choices("0123456789", k=n))


def _when(r: random.Random, template: str) -> str:
    """A random date and time written with `template` ({y} {m} {d} {yy} {H} {M} {S} {ms})."""
    return template.format(y=r.randint(2000, 2026), yy=r.randint(0, 26), m=r.randint(1, 12),
                           d=r.randint(1, 28), H=r.randint(0, 23), M=r.randint(0, 59),
                           S=r.randint(0, 59), ms=r.randint(0, 999))


YMD = "{y:04d}{m:02d}{d:02d}"
ORDER_LABELS = ("订单号", "订单号：", "订单编号 ", "流水号", "交易单号：", "Order No. ", "order #",
                "Ref: ", "Transaction ID ")
DECOYS = {
    "order number": [
        lambda r: _when(r, YMD) + _digits(r, r.randint(6, 14)),
        lambda r: r.choice(("SO", "DD", "PO", "JD", "E")) + _when(r, YMD) + _digits(r, 6),
        lambda r: _when(r, "{yy:02d}{m:02d}{d:02d}-") + _digits(r, 15),
        lambda r: _when(r, "ORD-{y:04d}-") + _digits(r, 6),
        lambda r: _when(r, YMD + "-") + _digits(r, 10),
        # a long number named an order or reference number, like the one
        # that crashed clean (625234190912097672); one that passes the ID
        # checks is masked by design, so none is drawn
        lambda r: r.choice(ORDER_LABELS) + _failing(lambda q: _digits(q, q.randint(13, 19)),
                                                    _is_id)(r),
    ],
    "amount": [
        lambda r: f"¥{r.randint(1, 10**9) / 100:,.2f}",
        lambda r: f"{r.randint(1, 10**8) / 100:.2f}元",
        lambda r: f"{r.randint(1, 99)}.{r.randint(0, 9)}亿元",
        lambda r: f"USD {r.randint(1000, 10**10):,}",
        lambda r: f"{r.choice('13456789')}{_digits(r, 10)}.{_digits(r, 2)}元",  # 11 digits and cents
        lambda r: f"{r.randint(1, 999)} {_digits(r, 3)} {_digits(r, 3)},{_digits(r, 2)} €",
    ],
    "date": [
        lambda r: _when(r, "{y:04d}-{m:02d}-{d:02d}"),
        lambda r: _when(r, "{y:04d}/{m:02d}/{d:02d}"),
        lambda r: _when(r, "{y}年{m}月{d}日"),
        lambda r: _when(r, "{d:02d}.{m:02d}.{y:04d}"),
        lambda r: _when(r, YMD),
    ],
    "timestamp": [
        lambda r: _when(r, "{y:04d}-{m:02d}-{d:02d} {H:02d}:{M:02d}:{S:02d}"),
        lambda r: _when(r, "{y:04d}-{m:02d}-{d:02d}T{H:02d}:{M:02d}:{S:02d}Z"),
        lambda r: str(r.randint(1_500_000_000, 1_800_000_000)),
        lambda r: str(r.randint(1_500_000_000_000, 1_800_000_000_000)),
        lambda r: _when(r, "{H:02d}:{M:02d}:{S:02d}.{ms:03d}"),
    ],
    "version": [
        lambda r: f"v{r.randint(0, 9)}.{r.randint(0, 20)}.{r.randint(0, 30)}",
        lambda r: ".".join(str(r.randint(0, 20)) for _ in range(5)),
        lambda r: f"v{r.randint(1, 9)}.{r.randint(0, 20)}.{r.randint(0, 30)}.{r.randint(0, 99)}",
        lambda r: f"10.0.{r.randint(10000, 22999)}.{r.randint(1, 999)}",
        lambda r: f"Python 3.{r.randint(8, 13)}.{r.randint(0, 12)}",
    ],
    "checksum fails": [
        _failing(_bad_id),
        _failing(lambda r: groups(_bad_id(r), (6, 8, 4), " ")),
        _failing(_bad_card),
        _failing(lambda r: groups(_bad_card(r), (4, 4, 4, 4), " ")),
        lambda r: f"{r.randint(256, 999)}." + ".".join(str(r.randint(0, 255)) for _ in range(3)),
        # a real check digit but no real birth date (month 13-99)
        _failing(lambda r: (lambda b: b + id_check_char(b))(
            _digits(r, 6) + "1990" + str(r.randint(13, 99)) + "01" + _digits(r, 3))),
    ],
    "phone-like": [
        lambda r: "1" + r.choice("012") + _digits(r, 9),  # no mobile starts 10-12
        lambda r: "1" + r.choice("3456789") + _digits(r, 8),  # 10 digits
        lambda r: "1" + r.choice("3456789") + _digits(r, 10),  # 12 digits
        lambda r: "0" + r.choice("12345") + _digits(r, 1) + "-" + _digits(r, 8),  # landline
        lambda r: groups("1" + r.choice("012") + _digits(r, 9), (3, 4, 4), "-"),
    ],
    "e-mail-like": [
        lambda r: "@" + r.choice(("finance_cn", "bank_support", "zhangsan")),
        lambda r: r.choice(("user", "admin")) + "@localhost",
        lambda r: r.choice(("zhang", "li")) + " at example dot com",
        lambda r: "a@b",
    ],
    "IP-like": [
        lambda r: _when(r, "{H:02d}:{M:02d}:{S:02d}"),
        lambda r: ":".join(f"{r.randint(0, 255):02X}" for _ in range(6)),  # a MAC address
        lambda r: f"{r.randint(1, 9)}.{r.randint(0, 9)}.{r.randint(0, 9)}",
        lambda r: f"第{r.randint(1, 9)}:{r.randint(1, 9)}场",
    ],
}

DECOY_SENTENCES = ("订单号{}已发货。", "金额为 {}，请确认。", "记录时间：{}", "见附件{}。",
                   "Reference {} is attached.", "The value was {} in the report.",
                   "Version {} fixed it.", "共{}笔交易")

# ---------------------------------------------------------------- the set


def build(seed: int, per_spelling: int, decoys_per_kind: int):
    rng = random.Random(seed)
    values = []  # (type, spelling, prefix, value, suffix)
    for kind, spellings in SPELLINGS.items():
        for name, make in spellings:
            for _ in range(per_spelling):
                template = rng.choice(SENTENCES[kind])
                prefix, suffix = template.split("{}")
                values.append((kind, name, prefix, make(rng), suffix))
    decoys = []  # (kind, text)
    for kind, makers in DECOYS.items():
        for _ in range(decoys_per_kind):
            prefix, suffix = rng.choice(DECOY_SENTENCES).split("{}")
            decoys.append((kind, prefix + rng.choice(makers)(rng) + suffix))
    return values, decoys


# ---------------------------------------------------------------- scoring


def score_danlu(values, decoys, show_misses: int) -> dict:
    caught, total, misses = Counter(), Counter(), []
    by_spelling: dict = {}
    t0 = time.process_time()
    for kind, name, prefix, value, suffix in values:
        out, _ = mask_pii(prefix + value + suffix)
        ok = out == prefix + PLACEHOLDERS[kind] + suffix
        total[kind] += 1
        caught[kind] += ok
        key = f"{kind}: {name}"
        by_spelling.setdefault(key, [0, 0])
        by_spelling[key][0] += ok
        by_spelling[key][1] += 1
        if not ok and len(misses) < show_misses:
            misses.append((key, prefix + value + suffix, out))
    fp, fp_any, fp_examples = Counter(), 0, []
    for kind, text in decoys:
        out, counts = mask_pii(text)
        fp.update(counts.keys())
        fp_any += bool(counts)
        if counts and len(fp_examples) < show_misses:
            fp_examples.append((kind, text, out))
    seconds = time.process_time() - t0
    rng, masked = random.Random(0), Counter()
    randoms = ["".join(rng.choices("0123456789", k=rng.randint(11, 19))) for _ in range(2000)]
    for number in randoms:
        masked.update(mask_pii(f"数字 {number} 见附件")[1].keys())
    return {
        "recall": {k: round(caught[k] / total[k], 4) for k in PII_TYPES},
        "false_positive_rate": {k: round(fp[k] / len(decoys), 4) for k in PII_TYPES},
        "false_positive_rate_any": round(fp_any / len(decoys), 4),
        "us_per_text": round(seconds / (len(values) + len(decoys)) * 1e6, 1),
        "random_numbers_masked": {k: round(masked[k] / len(randoms), 4) for k in sorted(masked)},
        "_by_spelling": by_spelling, "_misses": misses, "_fp_examples": fp_examples,
    }


# The peer runs in a child process of --peer-python; this is its whole program.
PEER_PROGRAM = r"""
import json, sys
from importlib.metadata import version
from datatrove.data import Document
from datatrove.pipeline.formatters import PIIFormatter

texts = json.load(sys.stdin)
step = PIIFormatter()  # defaults, as datatrove's FineWeb pipeline uses it
docs = (Document(text=t, id=str(i)) for i, t in enumerate(texts))
out = [d.text for d in step.run(docs)]
json.dump({"version": version("datatrove"), "texts": out,
           "email": list(step.emails_replacer.replacements),
           "ip": list(step.ip_replacer.replacements)}, sys.stdout)
"""
PEER_TYPES = ("email", "ip")


def score_peer(python: str, values, decoys) -> dict:
    texts = [p + v + s for _, _, p, v, s in values] + [t for _, t in decoys]
    proc = subprocess.run([python, "-c", PEER_PROGRAM], input=json.dumps(texts),
                          capture_output=True, text=True)
    if proc.returncode:
        tail = proc.stderr.strip().splitlines()[-1:] or ["?"]
        return {"error": f"{python}: {tail[0]}"}
    result = json.loads(proc.stdout)
    outs = result["texts"]
    caught, total = Counter(), Counter()
    for (kind, _, prefix, _, suffix), out in zip(values, outs, strict=False):
        if kind not in PEER_TYPES:
            continue
        total[kind] += 1
        middle = out[len(prefix):len(out) - len(suffix)]
        caught[kind] += (out.startswith(prefix) and out.endswith(suffix)
                         and middle in result[kind])
    fp, fp_any, fp_kinds = Counter(), 0, Counter()
    for (decoy_kind, text), out in zip(decoys, outs[len(values):], strict=True):
        hit = {k for k in PEER_TYPES if out != text and any(r in out for r in result[k])}
        fp.update(hit)
        fp_any += out != text
        fp_kinds[decoy_kind] += out != text
    by_spelling = Counter()
    for (kind, name, prefix, _, suffix), out in zip(values, outs, strict=False):
        middle = out[len(prefix):len(out) - len(suffix)]
        by_spelling[f"{kind}: {name}"] += middle in result.get(kind, ())
    print(f"peer caught by spelling: {dict(+by_spelling)}", file=sys.stderr)
    print(f"peer false positives by decoy kind: {dict(+fp_kinds)}", file=sys.stderr)
    return {
        "name": "datatrove PIIFormatter", "version": result["version"], "types": list(PEER_TYPES),
        "recall": {k: round(caught[k] / total[k], 4) for k in PEER_TYPES},
        "false_positive_rate": {k: round(fp[k] / len(decoys), 4) for k in PEER_TYPES},
        "false_positive_rate_any": round(fp_any / len(decoys), 4),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-spelling", type=int, default=40, help="values per spelling")
    parser.add_argument("--decoys-per-kind", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--peer-python", default=sys.executable,
                        help="the Python that has datatrove (a separate venv if need be)")
    parser.add_argument("--no-peer", action="store_true")
    parser.add_argument("--show-misses", type=int, default=5)
    args = parser.parse_args(argv)

    values, decoys = build(args.seed, args.per_spelling, args.decoys_per_kind)
    ours = score_danlu(values, decoys, args.show_misses)
    for key, (ok, n) in sorted(ours.pop("_by_spelling").items()):
        print(f"{key:50s} {ok}/{n}", file=sys.stderr)
    for key, text, out in ours.pop("_misses"):
        print(f"MISS {key}: {text!r} -> {out!r}", file=sys.stderr)
    for key, text, out in ours.pop("_fp_examples"):
        print(f"FALSE POSITIVE {key}: {text!r} -> {out!r}", file=sys.stderr)
    result = {
        "seed": args.seed,
        "values": dict(Counter(kind for kind, *_ in values)),
        "spellings": {k: len(v) for k, v in SPELLINGS.items()},
        "decoys": len(decoys),
        "danlu": ours,
    }
    if not args.no_peer:
        result["peer"] = score_peer(args.peer_python, values, decoys)
    print(json.dumps(result, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
