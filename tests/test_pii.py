import pytest
from stdnum import luhn
from stdnum.cn import ric

from danlu.pii import mask_pii, mask_value


def make_id(body17: str) -> str:
    # stdnum's calc_check_digit reads the first 17 characters of a full number.
    return body17 + ric.calc_check_digit(body17 + "0")


VALID_ID = make_id("11010519491231002")  # ...X
VALID_ID_DIGIT = make_id("44030119900307123")
CARD19 = "622200000000000000" + luhn.calc_check_digit("622200000000000000")
CARD19_GROUPED = " ".join(CARD19[i : i + 4] for i in range(0, 19, 4))


@pytest.mark.parametrize(
    ("text", "kind", "placeholder"),
    [
        (f"身份证号{VALID_ID}请核实", "id_card", "<ID_CARD>"),
        (f"ID {VALID_ID_DIGIT}.", "id_card", "<ID_CARD>"),
        ("请致电13812345678咨询", "phone", "<PHONE>"),
        ("call 138-1234-5678 now", "phone", "<PHONE>"),
        ("电话 +86 139 1234 5678。", "phone", "<PHONE>"),
        ("卡号 4111111111111111 已冻结", "bank_card", "<BANK_CARD>"),
        (f"卡号 {CARD19_GROUPED} 已冻结", "bank_card", "<BANK_CARD>"),
        (f"卡号{CARD19}。", "bank_card", "<BANK_CARD>"),
        ("mail zhang.san@example.com.cn today", "email", "<EMAIL>"),
        ("server 10.2.33.4 is down", "ip", "<IP>"),
        ("login from 84.166.211.119.", "ip", "<IP>"),
        ("v6 2001:db8::ff00:42:8329 up", "ip", "<IP>"),
    ],
)
def test_each_pii_type_is_masked_and_counted(text, kind, placeholder):
    masked, counts = mask_pii(text)
    assert placeholder in masked
    assert counts == {kind: 1}
    digits = "".join(c for c in text if c.isdigit())
    assert len(digits) < 8 or digits not in "".join(c for c in masked if c.isdigit())


@pytest.mark.parametrize(
    "text",
    [
        VALID_ID[:-1] + ("0" if VALID_ID[-1] != "0" else "1") + " 是一个校验位错误的号码",
        "card 4111111111111112 fails Luhn",
        "订单号 2024061812345678901234 不是PII",  # 22 digits: too long for any type
        "version 1.2.3.4.5 and time 12:30:45",
        "IP 999.1.1.1 is not an address",
        "号码12812345678不是手机号",  # mobile numbers start 13-19
    ],
)
def test_decoys_with_invalid_checksums_are_kept(text):
    masked, counts = mask_pii(text)
    assert masked == text
    assert not counts


def test_only_requested_types_are_masked():
    text = "13812345678 a@b.com"
    masked, counts = mask_pii(text, types=["email"])
    assert masked == "13812345678 <EMAIL>"
    assert counts == {"email": 1}


def test_mask_value_walks_nested_records():
    value = {"instruction": "call 13812345678", "history": [["id " + VALID_ID, "ok"]], "n": 3}
    masked = mask_value(value)
    assert masked == {"instruction": "call <PHONE>", "history": [["id <ID_CARD>", "ok"]], "n": 3}
