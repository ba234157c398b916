import datetime
import random
import sys
from collections import Counter

import pytest
from stdnum import luhn
from stdnum.cn import ric

from danlu.data import text as T
from danlu.data.pii import PLACEHOLDERS, find_pii, id_check_char, mask_pii, mask_value


def make_id(body17: str) -> str:
    # stdnum's calc_check_digit reads the first 17 characters of a full number.
    return body17 + ric.calc_check_digit(body17 + "0")


def make_card(body: str) -> str:
    return body + luhn.calc_check_digit(body)


def grouped(value: str, sizes, sep: str) -> str:
    out, i = [], 0
    for n in sizes:
        out.append(value[i:i + n])
        i += n
    return sep.join(out + ([value[i:]] if value[i:] else []))


def fullwidth(s: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in s)


VALID_ID = make_id("11010519491231002")  # ...X
VALID_ID_DIGIT = make_id("44030119900307123")
CARD16 = make_card("621700001234567")
CARD19 = make_card("622200000000000000")
AMEX = make_card("37828224631000")
PHONE = "13812345678"
ZW = "\u200b"

# ---- the hold-out: every spelling of each type, as in issue #16 (full-width
# digits, spaces, hyphens, zero-width characters, +86/0086, 6-8-4 ID groups,
# full-width ＠ and ．) and more. Each would have caught the reported leak.
SPELLINGS = {
    "phone": [
        PHONE,
        fullwidth(PHONE),
        grouped(PHONE, (3, 4), " "),
        grouped(PHONE, (3, 4), "-"),
        grouped(PHONE, (3, 4), "."),
        grouped(PHONE, (3, 4), ZW),
        "138\u200b1234\u200d5678",
        grouped(PHONE, (3, 4), " - "),
        grouped(PHONE, (3, 4), "\u3000"),
        grouped(PHONE, (3, 4), "\u2013"),
        grouped(PHONE, (4, 4), " "),
        fullwidth(grouped(PHONE, (3, 4), "-")),
        "+86 " + grouped(PHONE, (3, 4), " "),
        "+86-" + grouped(PHONE, (3, 4), "-"),
        "+86" + PHONE,
        "0086 " + PHONE,
        "0086" + PHONE,
        "86 " + grouped(PHONE, (3, 4), " "),
        "＋８６ " + fullwidth(PHONE),
        " ".join(PHONE),
    ],
    "id_card": [
        VALID_ID,
        VALID_ID.lower(),
        VALID_ID_DIGIT,
        grouped(VALID_ID, (6, 8), " "),
        grouped(VALID_ID, (6, 8), "-"),
        grouped(VALID_ID_DIGIT, (6, 8), "\u3000"),
        grouped(VALID_ID, (4, 4, 4, 4), " "),
        grouped(VALID_ID, (3, 3, 4, 4), " "),
        fullwidth(VALID_ID),
        fullwidth(grouped(VALID_ID_DIGIT, (6, 8), " ")),
        ZW.join(VALID_ID_DIGIT),
        "\u00ad".join(grouped(VALID_ID, (6, 8), "-")),
    ],
    "bank_card": [
        CARD16,
        CARD19,
        grouped(CARD16, (4, 4, 4), " "),
        grouped(CARD16, (4, 4, 4), "-"),
        grouped(CARD19, (4, 4, 4, 4), " "),
        grouped(CARD19, (6,), " "),
        grouped(AMEX, (4, 6), " "),
        fullwidth(CARD16),
        fullwidth(grouped(CARD19, (4, 4, 4, 4), "-")),
        ZW.join(CARD16),
        grouped(CARD16, (4, 4, 4), "\u00a0"),
        "4111 1111 1111 1111",
    ],
    "email": [
        "zhang.san@example.com.cn",
        "ZHANG.SAN@EXAMPLE.COM",
        "li_si+fin@corp.cn",
        "13812345678@qq.com",
        "zhang.san＠example.com",
        "zhang.san＠example．com．cn",
        fullwidth("zhang.san@example.com"),
        "zhang.san﹫example.com",
        "zhang\u200b.san@exam\u200dple.com",
    ],
    "ip": [
        "10.2.33.4",
        "84.166.211.119",
        "192.168.001.010",
        fullwidth("84.166.211.119"),
        "84.166\u200b.211.119",
        "2001:db8::ff00:42:8329",
        "2001:0DB8:85A3:0000:0000:8A2E:0370:7334",
        "fe80::1ff:fe23:4567:890a",
        "::ffff:192.168.1.1",
        "::ffff:c0a8:101",
    ],
}
SENTENCES = ("客户信息：{}，请核实。", "Please contact {} today.")
HOLD_OUT = [(kind, value, sentence) for kind, values in SPELLINGS.items()
            for value in values for sentence in SENTENCES]


@pytest.mark.parametrize(("kind", "value", "sentence"), HOLD_OUT,
                         ids=[f"{k}-{v!a}-{'zh' if s[0] == '客' else 'en'}" for k, v, s in HOLD_OUT])
def test_every_spelling_is_masked_whole(kind, value, sentence):
    prefix, suffix = sentence.split("{}")
    masked, counts = mask_pii(prefix + value + suffix)
    assert masked == prefix + PLACEHOLDERS[kind] + suffix  # the whole span, separators too
    assert counts == {kind: 1}


def test_at_least_eight_spellings_a_type():
    assert all(len(set(v)) >= 8 for v in SPELLINGS.values())


def obfuscate(rng: random.Random, value: str) -> str:
    """The value as someone might type it: full-width, zero-width characters."""
    chars = [fullwidth(c) if rng.random() < 0.5 else c for c in value]
    for _ in range(rng.randint(0, 3)):
        chars.insert(rng.randint(1, len(chars) - 1), rng.choice((ZW, "\u2060", "\ufeff", "\u00ad")))
    return "".join(chars)


def random_values(rng: random.Random) -> list[tuple[str, str]]:
    phone = "1" + rng.choice("3456789") + "".join(rng.choices("0123456789", k=9))
    birth = datetime.date(1930, 1, 1) + datetime.timedelta(days=rng.randint(0, 30000))
    id_body = "".join(rng.choices("0123456789", k=6)) + birth.strftime("%Y%m%d") + "123"
    prefix = rng.choice(("62", "4", "51", "9558"))
    card = make_card(prefix + "".join(rng.choices("0123456789", k=15 - len(prefix))))
    return [("phone", grouped(phone, rng.choice([(11,), (3, 4), (4, 4)]), rng.choice(" -."))),
            ("id_card", grouped(make_id(id_body), rng.choice([(18,), (6, 8)]), rng.choice(" -"))),
            ("bank_card", grouped(card, rng.choice([(16,), (4, 4, 4, 4)]), rng.choice(" -"))),
            ("email", f"user{rng.randint(0, 99)}.name@example{rng.randint(0, 9)}.com"),
            ("ip", ".".join(str(rng.randint(0, 255)) for _ in range(4)))]


def test_obfuscated_values_mask_like_the_plain_ones():
    rng = random.Random(0)
    for _ in range(300):
        for kind, value in random_values(rng):
            for sentence in SENTENCES:
                prefix, suffix = sentence.split("{}")
                text = prefix + obfuscate(rng, value) + suffix
                assert mask_pii(text) == (prefix + PLACEHOLDERS[kind] + suffix, {kind: 1}), text


# ---- the crash: an 18-digit order number made python-stdnum raise
# KeyError('county'); the check now needs no region table.

def test_reported_order_number_does_not_crash_and_is_masked_as_an_id():
    # It passes the MOD 11-2 check and holds a real date (1909-12-09), so it is
    # masked as an ID number: privacy first (see the danlu.data.pii docstring).
    with pytest.raises(KeyError):
        ric.is_valid("625234190912097672")
    assert mask_pii("订单号625234190912097672是什么？") == ("订单号<ID_CARD>是什么？", {"id_card": 1})


def reference_id(value: str) -> bool:
    """The rule, written out with stdnum's check digit and datetime."""
    try:
        born = datetime.date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        return False
    return 1900 <= born.year <= 2099 and ric.calc_check_digit(value) == value[17]


def test_18_digit_numbers_never_raise_and_are_ids_by_check_digit_and_date():
    rng = random.Random(1)
    masked = 0
    for _ in range(20000):
        born = datetime.date(1900, 1, 1) + datetime.timedelta(days=rng.randint(0, 45000))
        value = ("".join(rng.choices("0123456789", k=6)) + born.strftime("%Y%m%d")
                 + "".join(rng.choices("0123456789X", k=4)))
        value = value[:14] + value[14:17].replace("X", "7") + value[17]
        counts = mask_pii(f"号码{value}。")[1]
        assert (counts.get("id_card") == 1) == reference_id(value), value
        masked += reference_id(value)
    assert 1000 < masked < 3000  # about one in eleven passes its check digit


def test_id_check_char_is_stdnums():
    rng = random.Random(2)
    for _ in range(2000):
        body = "".join(rng.choices("0123456789", k=17))
        assert id_check_char(body) == ric.calc_check_digit(body + "0")


# ---- decoys: nothing here is a value.

BAD_ID = VALID_ID_DIGIT[:-1] + ("0" if VALID_ID_DIGIT[-1] != "0" else "1")


@pytest.mark.parametrize(
    "text",
    [
        BAD_ID + " 是一个校验位错误的号码",
        grouped(BAD_ID, (6, 8), " ") + " 校验位错误",
        "670817 19801128 4185 is a mistyped ID",  # its first 14 digits pass Luhn
        "110105199013450012 has no 13th month",
        "card 4111111111111112 fails Luhn",
        "card 4111 1111 1111 1112 fails Luhn",
        "6216 8328 7779 6493 575 and 3403 1658 8448 946 fail Luhn",  # hold a card, a phone
        "订单号 2024061812345678901234 不是PII",  # 22 digits: too long for any type
        "订单号6217000000000012348已发货",  # passes Luhn, but named an order number
        "Order No. 6217000000000012348 shipped",
        "Ref: 6217 0000 0000 0001 2348",
        "SO20240618001234 and SO13812345678X",
        "金额13800000000.00元",  # an amount, not a phone
        "合计57066501228.61元",  # an amount, not a card
        "¥1,380,000,000.00 and USD 13,812,345,678",
        "13.52 14.33 15.67 16.1",
        "时间 2024-06-18 13:45:12，时间戳 1718700000 与 1718700000123",
        "2024-06-18T13:45:12Z 20240618",
        "version 1.2.3.4.5 and v1.2.3.4 and Python 3.11.4 and 10.0.19041.1",
        "IP 999.1.1.1 is not an address",
        "time 12:30:45 and MAC 00:1A:2B:3C:4D:5E",
        "a[::2], std::vector, Foo::Bar, ::1 and ::",
        "号码12812345678不是手机号",  # mobile numbers start 13-19
        "号码10612345678、1381234567、138123456789",
        "座机 010-12345678",
        "128-1234-5678",
        "@finance_cn, user@localhost, a@b, zhang at example dot com",
        "138-1234-5678-9999",  # a longer code
        "tel13812345678",  # glued to letters
    ],
)
def test_decoys_are_kept(text):
    masked, counts = mask_pii(text)
    assert masked == text
    assert not counts


def test_a_card_named_a_card_is_masked_but_the_same_digits_named_an_order_are_not():
    card = "6217000000000012348"
    assert mask_pii(f"卡号{card}")[0] == "卡号<BANK_CARD>"
    assert mask_pii(f"订单号{card}")[0] == f"订单号{card}"


def test_values_next_to_each_other():
    text = f"{VALID_ID} {PHONE} {CARD16}，2024 {PHONE} 138 1234 5678 2 次"
    assert mask_pii(text)[0] == "<ID_CARD> <PHONE> <BANK_CARD>，2024 <PHONE> <PHONE> 2 次"
    text = f"card {grouped(CARD16, (4, 4, 4), ' ')} 123Ratio, 2024 138 1234 5678"
    assert mask_pii(text)[0] == "card <BANK_CARD> 123Ratio, 2024 <PHONE>"
    text = f"2024 {grouped(CARD16, (4, 4, 4), ' ')}, {grouped(CARD16, (4, 4, 4), ' ')} 2024"
    assert mask_pii(text)[0] == "2024 <BANK_CARD>, <BANK_CARD> 2024"


def test_only_requested_types_are_masked():
    text = "13812345678 a@b.com"
    masked, counts = mask_pii(text, types=["email"])
    assert masked == "13812345678 <EMAIL>"
    assert counts == {"email": 1}
    assert mask_pii(text, types=[]) == (text, {})


def test_mask_value_walks_nested_records_keys_and_numbers():
    value = {"instruction": "call 138 1234 5678", "history": [["id " + VALID_ID, "ok"]], "n": 3,
             "13812345678": "a key", "output": 13812345678, "amount": 13812345678.0,
             "rate": 1.5, "ok": True, "none": None}
    counts = Counter()
    masked = mask_value(value, counts=counts)
    assert masked == {"instruction": "call <PHONE>", "history": [["id <ID_CARD>", "ok"]], "n": 3,
                      "<PHONE>": "a key", "output": "<PHONE>", "amount": "<PHONE>",
                      "rate": 1.5, "ok": True, "none": None}
    assert counts == {"phone": 4, "id_card": 1}


def test_mask_pii_adds_to_given_counts():
    counts = Counter({"phone": 2})
    masked, same = mask_pii("call 13812345678 or a@b.com", counts=counts)
    assert masked == "call <PHONE> or <EMAIL>"
    assert same is counts and counts == {"phone": 3, "email": 1}


# ---- random texts: masking leaves nothing to find, and spans map back.

_PIECES = list("0123456789" * 3 + "+- .:@xX\n中aF１٣𝟎") + [
    "86", "00", "13", "139", "1234", "6217", "::", "fe80:", "a@b.cn", "110101199003",
    "+86 ", "0086-", "192.168.", VALID_ID, CARD19, grouped(CARD19, (4, 4, 4, 4), " "), "<IP>",
    ZW, "\u3000", "＠", "．", "－", "\u00ad", "订单号", "卡号"]


def random_texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choices(_PIECES, k=rng.randint(0, 30))) for _ in range(n)]


def test_masked_text_holds_nothing_more_to_mask():
    for text in random_texts(4000):
        masked, _ = mask_pii(text)
        assert find_pii(masked) == [], (text, masked)
    # a value that shows only once its neighbour is masked
    assert mask_pii(f"{VALID_ID}2::f0 x") == ("<ID_CARD><IP> x", {"id_card": 1, "ip": 1})


def test_spans_are_disjoint_and_in_order():
    for text in random_texts(4000, seed=1):
        spans = find_pii(text)
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False)), text


def test_fold_table_is_fold_char_on_every_code_point():
    folded = map(T._fold_char, map(chr, range(sys.maxunicode + 1)))
    expected = {cp: f for cp, f in enumerate(folded) if f != chr(cp)}
    assert T._fold_table() == expected
    fold_run = T._fold_run()
    bmp_changed = {chr(cp) for cp in expected if cp <= 0xFFFF}
    for cp in range(0x10000):
        assert (fold_run.match(chr(cp)) is not None) == (chr(cp) in bmp_changed), hex(cp)


def test_a_view_span_maps_back_to_the_original_span():
    rng = random.Random(3)
    for text in random_texts(2000, seed=2):
        view, dropped = T.fold_for_matching(text)
        assert view == "".join(T._fold_char(c) or "" for c in text)
        for _ in range(5):
            if not view:
                break
            start = rng.randrange(len(view))
            end = rng.randint(start + 1, len(view))
            a, b = T.unfold_span(dropped, start, end)
            assert T.fold_for_matching(text[a:b])[0] == view[start:end]
            assert T._fold_char(text[a]) == view[start]  # no dropped character at the ends
            assert T._fold_char(text[b - 1]) == view[end - 1]
