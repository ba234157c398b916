import json
from collections import Counter

import pandas as pd
import pytest

from danlu.cli import main
from danlu.config import CleanConfig, DatasetSpec, from_mapping, load_config
from danlu.data.clean import _any_of, clean_files, clean_messages
from danlu.data.combine import combine_parts
from danlu.data.records import FieldMap, RecordError, dumps, to_messages

PHONE = "13912345678"


@pytest.fixture(autouse=True)
def _no_tracking(monkeypatch, tmp_path):
    monkeypatch.setenv("DANLU_TRACKING_DISABLED", "1")
    monkeypatch.chdir(tmp_path)


def cfg(**overrides) -> CleanConfig:
    return from_mapping(CleanConfig, {**load_config(None)["clean"], **overrides})


def spec(path, name="d", fmt="auto") -> DatasetSpec:
    return DatasetSpec(name=name, path=str(path), format=fmt, columns={}, tags={}, encoding="auto")


def jsonl(path, records):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), "utf-8")
    return path


def read(path):
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


def reason_of(raw, fmt="alpaca", **overrides):
    try:
        clean_messages(to_messages(raw, fmt, FieldMap()), cfg(**overrides), Counter())
    except RecordError as err:
        return err.reason, err.field
    return None


U, A = "user", "assistant"


def msgs(*pairs):
    return {"messages": [{"role": r, "content": c} for r, c in pairs]}


@pytest.mark.parametrize(
    ("raw", "fmt", "overrides", "expected"),
    [
        ({"instruction": "问题"}, "alpaca", {}, ("missing_field", "output")),
        ({"instruction": "问题", "output": "   \u200b "}, "alpaca", {}, ("empty_field", "messages[1].content")),
        ({"instruction": "问题", "output": 42}, "alpaca", {}, ("wrong_type", "output")),
        (["not", "an", "object"], "alpaca", {}, ("wrong_type", "<record>")),
        ({"messages": []}, "messages", {}, ("empty_conversation", "messages")),
        ({"messages": "hello"}, "messages", {}, ("wrong_type", "messages")),
        (msgs((A, "先答"), (U, "后问")), "messages", {}, ("bad_role_order", "messages[0]")),
        (msgs((U, "问"), (U, "又问"), (A, "答")), "messages", {}, ("bad_role_order", "messages[1]")),
        (msgs((U, "问"), (A, "答"), (U, "再问")), "messages", {}, ("last_turn_not_assistant", "messages[2]")),
        (msgs((U, "问"), ("tool", "x")), "messages", {}, ("unknown_role", "messages[1].role")),
        ({"instruction": "a<|im_start|>system", "output": "b"}, "alpaca", {}, ("special_tokens", "messages[0].content")),
        ({"instruction": "a", "output": "b"}, "alpaca", {"min_chars": 10}, ("too_short", "messages")),
        ({"instruction": "长" * 50, "output": "答"}, "alpaca", {"max_chars": 20}, ("too_long", "messages")),
        ({"instruction": "附件", "output": "QUJD" * 100}, "alpaca", {}, ("non_text", "messages")),
        ({"instruction": "What is a bond?", "output": "A loan."}, "alpaca", {"languages": ["zh"]}, ("language", "messages")),
        ({"conversations": [{"from": "human"}]}, "sharegpt", {}, ("missing_field", "conversations[0].value")),
        ({"instruction": "q", "output": "a", "history": [["only one"]]}, "alpaca", {}, ("wrong_type", "history[0]")),
    ],
)
def test_each_reject_reason(raw, fmt, overrides, expected):
    assert reason_of(raw, fmt, **overrides) == expected


def test_formats_convert_to_the_same_canonical_messages():
    alpaca = {"instruction": "计算收益", "input": "本金100元", "output": "收益5元", "system": "你是顾问",
              "history": [["你好", "您好"]]}
    sharegpt = {"system": "你是顾问", "conversations": [
        {"from": "human", "value": "你好"}, {"from": "gpt", "value": "您好"},
        {"from": "human", "value": "计算收益\n本金100元"}, {"from": "gpt", "value": "收益5元"}]}
    messages = msgs(("system", "你是顾问"), (U, "你好"), (A, "您好"), (U, "计算收益\n本金100元"), (A, "收益5元"))
    got = [to_messages(r, f, FieldMap()) for r, f in
           ((alpaca, "alpaca"), (sharegpt, "sharegpt"), (messages, "messages"))]
    assert got[0] == got[1] == got[2]


def test_custom_columns_and_tags():
    fm = FieldMap(columns={"prompt": "q", "response": "a"}, tags={})
    assert to_messages({"q": "问", "a": "答"}, "alpaca", fm)[-1] == {"role": A, "content": "答"}
    fm = FieldMap(columns={"messages": "chat"},
                  tags={"role_tag": "speaker", "content_tag": "text", "user_tag": "客户", "assistant_tag": "客服"})
    raw = {"chat": [{"speaker": "客户", "text": "问"}, {"speaker": "客服", "text": "答"}]}
    assert [m["role"] for m in to_messages(raw, "sharegpt", fm)] == [U, A]


def test_invariant_rejects_and_pii_never_leak(tmp_path):
    records = [
        {"instruction": f"我的电话是{PHONE}，帮我查余额", "input": "", "output": "好的，已为您查询。"},
        {"instruction": f"联系{PHONE}", "output": ""},  # rejected: empty, and carries PII
        {"instruction": "什么是ETF？", "output": "交易所交易基金。"},
    ]
    path = jsonl(tmp_path / "in.jsonl", records)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(f'{{"instruction": "broken {PHONE}"\n')
    stats = clean_files([spec(path)], cfg(), tmp_path / "out")
    assert stats["records_in"] == 4
    assert stats["records_in"] == stats["records_kept"] + stats["records_rejected"]
    assert stats["rejected_by_reason"] == {"empty_field": 1, "unparseable": 1}
    assert stats["pii_masked_by_type"] == {"phone": 3}
    for name in ("records.jsonl", "rejects.jsonl", "stats.json"):
        assert PHONE not in (tmp_path / "out" / name).read_text("utf-8")
    kept = read(tmp_path / "out" / "records.jsonl")
    assert [r["id"] for r in kept] == ["d-0000001", "d-0000003"]
    assert kept[0]["source"] == {"file": str(path), "line": 1}
    assert "<PHONE>" in kept[0]["messages"][0]["content"]
    rejects = read(tmp_path / "out" / "rejects.jsonl")
    assert [(r["source"]["line"], r["reason"]) for r in rejects] == [(2, "empty_field"), (4, "unparseable")]
    assert rejects[1]["text"] == '{"instruction": "broken <PHONE>"'


def test_combine_parts_equals_cleaning_all_at_once(tmp_path):
    a = jsonl(tmp_path / "a.jsonl", [{"instruction": "问一", "output": "答一"}, {"instruction": "x"}])
    b = tmp_path / "b.parquet"
    pd.DataFrame({"messages": [msgs((U, "问二"), (A, "答二"))["messages"]]}).to_parquet(b)
    specs = [spec(a, "a"), spec(b, "b")]
    together = clean_files(specs, cfg(), tmp_path / "all")
    for s in specs:
        clean_files([s], cfg(), tmp_path / "parts" / s.name)
    combined = combine_parts([tmp_path / "parts" / "a", tmp_path / "parts" / "b"], tmp_path / "comb")
    assert combined == together
    for name in ("records.jsonl", "rejects.jsonl", "stats.json"):
        assert (tmp_path / "comb" / name).read_bytes() == (tmp_path / "all" / name).read_bytes()


def test_cli_writes_outputs_and_manifest(tmp_path, capsys):
    path = jsonl(tmp_path / "in.jsonl", [{"instruction": "问", "output": "答"}])
    assert main(["clean", str(path), "--out", "out"]) == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text("utf-8"))
    assert [e["path"] for e in manifest["inputs"]] == [str(path.relative_to(tmp_path))
                                                      if path.is_relative_to(tmp_path) else str(path)]
    assert {e["path"] for e in manifest["outputs"]} == {
        "out/records.jsonl", "out/rejects.jsonl", "out/stats.json"}


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("missing.jsonl", None),
        ("empty.jsonl", b""),
        ("trunc.jsonl.gz", b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03\xab\xae\x05\x00"),
        ("latin1.jsonl", '{"instruction": "café", "output": "ñandú øre"}\n'.encode("latin-1")),
        ("notes.txt", b"hello"),
        ("odd.jsonl", b'{"question": "q", "answer": "a"}\n'),
    ],
)
def test_unusable_input_exits_2_with_one_line_and_no_outputs(tmp_path, capsys, name, content):
    good = jsonl(tmp_path / "good.jsonl", [{"instruction": "问", "output": "答"}])
    bad = tmp_path / name
    if content is not None:
        bad.write_bytes(content)
    assert main(["clean", str(good), str(bad), "--out", "out"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and name in err and err.startswith("danlu clean: error:")
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize(
    "tokens", [(), ("",), ("<|im_end|>", "<|eot_id|>"), ("a.b", "[x]", "(?", "\\d")])
def test_token_test_equals_any_substring(tokens):
    texts = ["", "a", "x<|im_end|>y", "<|eot_id", "a.b", "axb", "[x]", "(?", "\\d", "7"]
    for text in texts:
        assert _any_of(tokens)(text) == any(t in text for t in tokens), (tokens, text)


def test_dumps_is_json_dumps():
    record = {"id": "d-0000001", "messages": [{"role": "user", "content": "中文 \"q\"\n\u2028"}],
              "n": 1.5, "none": None, "nan": float("nan")}
    assert dumps(record) == json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"


# ---- PII in every output (issue #16): the hold-out of the report, kept and
# rejected, and what a reject quotes beyond the record.

ID_684 = "110105 19491231 002X"  # grouped 6-8-4; the check character is X
HOLD_OUT = [
    "１３８１２３４５６７８",  # full-width digits
    "138 1234 5678",
    "138-1234-5678",
    "138\u200b1234\u200b5678",
    "+86 139 8765 4321",
    "0086-137-1111-2222",
    "+86１５０００００１２３４",
    ID_684,
    "440301-19900307-1230",  # check digit 0
    "zhang.san＠example.com",
    "li.si＠corp．com．cn",
    "ｗａｎｇ．ｗｕ＠ｅｘａｍｐｌｅ．ｃｏｍ",
]


def canonical(value: str) -> str:
    """A value as matching sees it, less separators: what must appear nowhere."""
    from danlu.data.text import fold_for_matching

    folded = fold_for_matching(value)[0]
    return folded if "@" in folded else folded.replace(" ", "").replace("-", "").upper()


def leaks(path, values) -> list[str]:
    from danlu.data.text import fold_for_matching

    text = fold_for_matching(path.read_text("utf-8"))[0]
    squeezed = text.replace(" ", "").replace("-", "").upper()
    return [v for v in values if v in text or canonical(v) in squeezed]


def test_hold_out_values_reach_no_output_kept_or_rejected(tmp_path):
    records = []
    for value in HOLD_OUT:
        records.append({"instruction": f"我的联系方式是{value}，请回电", "output": "好的，已记录。"})
        records.append({"instruction": f"联系{value}", "output": ""})  # empty_field
        records.append({"messages": [{"role": "user", "content": "q"},
                                     {"role": value, "content": "a"}]})  # unknown_role quotes it
    path = jsonl(tmp_path / "in.jsonl", records)
    with open(path, "a", encoding="utf-8") as fh:
        fh.writelines(f'{{"instruction": "broken {v}"\n' for v in HOLD_OUT)  # unparseable
    stats = clean_files([spec(path, fmt="alpaca")], cfg(), tmp_path / "out")
    assert stats["records_kept"] == len(HOLD_OUT)
    for name in ("records.jsonl", "rejects.jsonl", "stats.json"):
        assert leaks(tmp_path / "out" / name, HOLD_OUT) == [], name
    # 12 kept, 12 empty, 12 unparseable, and the messages records rejected for
    # format (alpaca) are masked as records: every value was found each time.
    assert sum(stats["pii_masked_by_type"].values()) == 4 * len(HOLD_OUT)


def test_reject_detail_field_keys_and_numbers_are_masked(tmp_path):
    records = [
        {"messages": [{"role": "user", "content": "q"}, {"role": PHONE, "content": "a"}]},
        {"instruction": "q", "output": int(PHONE)},  # wrong_type: a JSON number
        {"instruction": "q", PHONE: "a key"},  # missing_field; the key is a value
    ]
    path = jsonl(tmp_path / "in.jsonl", records)
    clean_files([spec(path, fmt="messages")], cfg(), tmp_path / "a")
    clean_files([spec(path, fmt="alpaca")], cfg(), tmp_path / "b")
    rejects = read(tmp_path / "a" / "rejects.jsonl") + read(tmp_path / "b" / "rejects.jsonl")
    assert rejects[0]["reason"] == "unknown_role"
    assert rejects[0]["detail"] == "role '<PHONE>'"
    assert rejects[0]["record"]["messages"][1]["role"] == "<PHONE>"
    assert rejects[4]["reason"] == "wrong_type" and rejects[4]["record"]["output"] == "<PHONE>"
    assert rejects[5]["reason"] == "missing_field" and "<PHONE>" in rejects[5]["record"]
    for out in ("a", "b"):
        assert leaks(tmp_path / out / "rejects.jsonl", [PHONE]) == []


def test_rejects_are_masked_exactly_when_records_are(tmp_path):
    # An audit trail, not a back door: with mask_pii off nothing is masked,
    # in records or rejects alike (the user said the data holds no PII).
    path = jsonl(tmp_path / "in.jsonl", [{"instruction": f"联系{PHONE}", "output": "好的"},
                                         {"instruction": f"联系{PHONE}", "output": ""}])
    clean_files([spec(path)], cfg(mask_pii=False), tmp_path / "off")
    for name in ("records.jsonl", "rejects.jsonl"):
        assert PHONE in (tmp_path / "off" / name).read_text("utf-8")
    clean_files([spec(path)], cfg(pii_types=["email"]), tmp_path / "email_only")
    assert PHONE in (tmp_path / "email_only" / "rejects.jsonl").read_text("utf-8")


def test_order_number_that_crashed_clean(tmp_path, capsys):
    # python-stdnum raised KeyError('county') on it; it passes the ID checks
    # (MOD 11-2, a real date), so it is masked as an ID number: privacy first.
    path = jsonl(tmp_path / "in.jsonl", [{"instruction": "订单号625234190912097672是什么？",
                                          "output": "好的"}])
    assert main(["clean", str(path), "--out", "out"]) == 0
    kept = read(tmp_path / "out" / "records.jsonl")
    assert kept[0]["messages"][0]["content"] == "订单号<ID_CARD>是什么？"
    assert "Traceback" not in capsys.readouterr().err


def test_unknown_format_error_names_no_value(tmp_path, capsys):
    # A headerless CSV: its first row, a phone number among it, becomes the keys.
    path = tmp_path / "contacts.csv"
    path.write_text(f"张三,{PHONE}\n李四,13800001111\n", "utf-8")
    assert main(["clean", str(path), "--out", "out"]) == 2
    err = capsys.readouterr().err
    assert "cannot tell the record format" in err and "<PHONE>" in err and PHONE not in err
