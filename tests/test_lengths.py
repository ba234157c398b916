"""The example builder (prompt masking), truncation and the cutoff decision."""

import json

import numpy as np
import pytest

from danlu.data import tokenize
from danlu.data.cutoff import CutoffRule, choose_cutoff, decide_cutoff
from danlu.data.records import FieldMap, to_messages
from danlu.data.tokenize import (
    IGNORE_INDEX,
    ExampleOptions,
    build_example,
    tokenize_splits,
    truncate_example,
)
from danlu.model import train
from danlu.model.loading import load_tokenizer

RAW = {
    "alpaca": {"instruction": "计算利息", "input": "本金1000元，年利率3%", "output": "利息是30元。",
               "system": "你是理财顾问", "history": [["你好", "您好，请问有什么可以帮您？"]]},
    "sharegpt": {"conversations": [{"from": "system", "value": "你是理财顾问"},
                                   {"from": "human", "value": "你好"},
                                   {"from": "gpt", "value": "您好，请问有什么可以帮您？"},
                                   {"from": "human", "value": "计算利息\n本金1000元，年利率3%"},
                                   {"from": "gpt", "value": "利息是30元。"}]},
    "messages": {"messages": [{"role": "user", "content": "What is a bond?"},
                              {"role": "assistant", "content": "A loan to an issuer."}]},
}


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return load_tokenizer(tiny_model_dir)


def _decoded(tokenizer, example, trained: bool) -> str:
    ids = np.array(example["input_ids"])
    mask = np.array(example["labels"]) != IGNORE_INDEX
    return tokenizer.decode(ids[mask if trained else ~mask])


@pytest.mark.parametrize("fmt", ["alpaca", "sharegpt", "messages"])
def test_prompt_masked_answers_trained_for_every_format(tokenizer, fmt):
    messages = to_messages(RAW[fmt], fmt, FieldMap())
    ex = build_example({"id": "x", "messages": messages}, tokenizer)
    trained, masked = _decoded(tokenizer, ex, True), _decoded(tokenizer, ex, False)
    for m in messages:
        assert m["content"] in (trained if m["role"] == "assistant" else masked)
        assert m["content"] not in (masked if m["role"] == "assistant" else trained)
    assert trained.count("<|im_end|>") == sum(m["role"] == "assistant" for m in messages)
    assert ex["target_length"] == sum(lab != IGNORE_INDEX for lab in ex["labels"])
    assert ex["labels"][ex["prompt_length"]] != IGNORE_INDEX


def test_alpaca_and_sharegpt_of_the_same_dialogue_build_the_same_example(tokenizer):
    a = build_example({"id": "a", "messages": to_messages(RAW["alpaca"], "alpaca", FieldMap())}, tokenizer)
    s = build_example({"id": "a", "messages": to_messages(RAW["sharegpt"], "sharegpt", FieldMap())}, tokenizer)
    assert a == s


def test_mask_history_and_train_on_prompt(tokenizer):
    messages = to_messages(RAW["alpaca"], "alpaca", FieldMap())
    last = build_example({"id": "x", "messages": messages}, tokenizer, ExampleOptions(mask_history=True))
    trained = _decoded(tokenizer, last, True)
    assert "利息是30元" in trained and "请问有什么可以帮您" not in trained
    everything = build_example({"id": "x", "messages": messages}, tokenizer,
                               ExampleOptions(train_on_prompt=True))
    assert everything["target_length"] == everything["length"]


def test_truncation_keeps_prompt_start_and_answer_start_and_never_empties_targets():
    rng = np.random.default_rng(0)
    for _ in range(500):
        prompt, answer = int(rng.integers(1, 300)), int(rng.integers(1, 300))
        ids = list(range(prompt + answer))
        labels = [IGNORE_INDEX] * prompt + ids[prompt:]
        cutoff = int(rng.integers(2, 400))
        new_ids, new_labels, outcome = truncate_example(ids, labels, cutoff)
        assert outcome in ("fit", "truncated")
        assert len(new_ids) <= cutoff
        assert any(lab != IGNORE_INDEX for lab in new_labels)
        assert new_ids[0] == 0  # the prompt's start
        first_trained = next(i for i, lab in zip(new_ids, new_labels, strict=True) if lab != IGNORE_INDEX)
        assert first_trained == prompt  # the answer's start


def test_drop_policy_and_examples_without_targets():
    ids, labels = list(range(10)), [IGNORE_INDEX] * 5 + list(range(5, 10))
    assert truncate_example(ids, labels, 8, "drop")[2] == "dropped"
    assert truncate_example(ids, [IGNORE_INDEX] * 10, 8)[2] == "dropped"
    assert truncate_example(ids, labels, 10, "drop")[2] == "fit"


@pytest.mark.parametrize("percentile", [50, 90, 95, 99])
def test_cutoff_is_a_multiple_of_64_just_above_the_percentile(percentile):
    lengths_ = np.random.default_rng(1).integers(20, 3000, size=1000)
    p = np.percentile(lengths_, percentile)
    chosen = choose_cutoff(lengths_, CutoffRule("auto", percentile, 16, 100000), None)
    cutoff = chosen["decision"]["cutoff_len"]
    assert cutoff % 64 == 0 and p <= cutoff < p + 64 and not chosen["decision"]["clamped"]
    assert chosen["config"]["percentile_value"] == pytest.approx(p, abs=1e-3)


def test_cutoff_clamps_and_override():
    values = [5000] * 10
    d = choose_cutoff(values, CutoffRule("auto", 90, 128, 4096), model_max=2048)["decision"]
    assert d["cutoff_len"] == 2048 and d["clamped"]
    d = choose_cutoff([10] * 10, CutoffRule("auto", 90, 128, 4096), None)["decision"]
    assert d["cutoff_len"] == 128 and d["clamped"]
    d = choose_cutoff([10] * 10, CutoffRule(512, 90, 128, 4096), None)
    assert d["decision"]["cutoff_len"] == 512 and d["decision"]["method"] == "override"
    assert d["config"]["decided_cutoff_len"] == 128
    with pytest.raises(ValueError, match="exceeds the model's context"):
        choose_cutoff([10], CutoffRule(4096, 90, 128, 8192), model_max=2048)


def test_same_cutoff_from_another_percentile_leaves_cutoff_json_identical(tmp_path, tokenizer):
    records = [{"id": f"r{i}", "messages": [{"role": "user", "content": "问" * (10 + i % 40)},
                                            {"role": "assistant", "content": "答" * 5}]}
               for i in range(60)]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), "utf-8")
    tokenize_splits({"train": tmp_path / "train.jsonl"}, tokenizer, ExampleOptions(), tmp_path / "arrow")
    outputs = {}
    for pct in (90, 91):
        out = tmp_path / f"out{pct}"
        out.mkdir()
        decide_cutoff(tmp_path / "arrow", CutoffRule("auto", pct, 16, 4096), "truncate", 1024, out)
        outputs[pct] = out
    assert (outputs[90] / "cutoff.json").read_bytes() == (outputs[91] / "cutoff.json").read_bytes()
    used = [json.loads((outputs[p] / "stats.json").read_text())["decision"]["percentile"] for p in (90, 91)]
    assert used == [90, 91]
    assert (outputs[90] / "lengths.png").stat().st_size > 0


def test_training_uses_the_same_builder_and_truncation():
    assert train.build_example is tokenize.build_example
    assert train.truncate_example is tokenize.truncate_example


def test_an_empty_split_is_one_line_naming_the_file(tmp_path, tokenizer):
    from danlu.data.tokenize import NoRecordsError

    (tmp_path / "train.jsonl").write_text(json.dumps({"id": "a", "messages": [
        {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}) + "\n")
    (tmp_path / "val.jsonl").write_text("\n")
    with pytest.raises(NoRecordsError, match=r"val\.jsonl: no records to tokenise"):
        tokenize_splits({"train": tmp_path / "train.jsonl", "val": tmp_path / "val.jsonl"},
                        tokenizer, ExampleOptions(), tmp_path / "out")
