import json
from collections import Counter

import pandas as pd
import pytest

from danlu.clean import clean_files, clean_messages, combine_parts
from danlu.cli import main
from danlu.config import CleanConfig, DatasetSpec, from_mapping, load_config
from danlu.records import FieldMap, RecordError, to_messages

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
