"""The model families users bring, each as a tiny local model with the real
checkpoint's exact chat template (tests/fixtures/families/): the trained
tokens of a multi-turn conversation are exactly the answers and their
end-of-turn tokens, reasoning data keeps its thoughts where it should, and a
few training steps, the merge and GPTQ and AWQ exports run on every family."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from families import FAMILIES

from danlu.data.tokenize import IGNORE_INDEX, ExampleOptions, build_example, tokenize_splits
from danlu.model.loading import load_tokenizer

SYSTEM = "你是一位谨慎的理财顾问。"
QUESTIONS = ["什么是债券？", "How risky is a bond fund?"]
ANSWERS = ["债券是发行人向投资者借款的凭证。", "Less risky than stocks, more than deposits."]

# What each family's template puts before an answer that the model itself
# writes (Mistral's space, GLM's newline), and what closes an answer: in the
# middle of a conversation and at its end. GLM-4 closes an answer with
# nothing (the next turn's tag stops generation), so the final answer learns
# eos, as LLaMA-Factory's efficient_eos does.
LEAD = {"mistral-v0.3": " ", "glm4": "\n"}
END = {
    "qwen2.5": ("<|im_end|>\n", "<|im_end|>\n"),
    "qwen3": ("<|im_end|>\n", "<|im_end|>\n"),
    "llama3.1": ("<|eot_id|>", "<|eot_id|>"),
    "deepseek-r1-distill-qwen": ("<｜end▁of▁sentence｜>", "<｜end▁of▁sentence｜>"),
    "mistral-v0.3": ("</s>", "</s>"),
    "gemma3": ("<end_of_turn>\n", "<end_of_turn>\n"),
    "glm4": ("", "<|endoftext|>"),
}
# Reasoning templates: an answer without thoughts learns an empty thought
# block (Qwen3 renders it; DeepSeek-R1's generation prompt already opens `<think>\n`).
EMPTY_THOUGHT = {"qwen3": "<think>\n\n</think>\n\n", "deepseek-r1-distill-qwen": "\n</think>\n\n"}


@pytest.fixture(scope="session")
def family_model(tmp_path_factory):
    """Builds each family's tiny model once per session, on first use."""
    from families import build_family_model

    built = {}

    def get(name: str):
        if name not in built:
            built[name] = build_family_model(name, tmp_path_factory.mktemp(name) / "model")
        return built[name]

    return get


def conversation(answers=ANSWERS) -> list[dict]:
    messages = [{"role": "system", "content": SYSTEM}]
    for question, answer in zip(QUESTIONS, answers, strict=True):
        messages += [{"role": "user", "content": question},
                     {"role": "assistant", "content": answer}]
    return messages


def trained_segments(tokenizer, example: dict) -> list[str]:
    """The decoded runs of consecutive trained tokens."""
    ids, labels = np.array(example["input_ids"]), np.array(example["labels"])
    trained = labels != IGNORE_INDEX
    edges = np.flatnonzero(np.diff(np.r_[0, trained.astype(int), 0]))
    return [tokenizer.decode(ids[a:b].tolist(), skip_special_tokens=False,
                             clean_up_tokenization_spaces=False)
            for a, b in zip(edges[::2], edges[1::2], strict=True)]


def masked_text(tokenizer, example: dict) -> str:
    ids, labels = np.array(example["input_ids"]), np.array(example["labels"])
    return tokenizer.decode(ids[labels == IGNORE_INDEX].tolist(), skip_special_tokens=False)


@pytest.mark.parametrize("family", FAMILIES)
def test_trained_tokens_are_exactly_the_answers_and_their_end_of_turn(family, family_model):
    tokenizer = load_tokenizer(family_model(family))
    example = build_example({"id": "x", "messages": conversation()}, tokenizer)
    lead, (mid_end, last_end) = LEAD.get(family, ""), END[family]
    assert trained_segments(tokenizer, example) == [
        lead + ANSWERS[0] + mid_end,
        lead + EMPTY_THOUGHT.get(family, "") + ANSWERS[1] + last_end,
    ]
    prompt = masked_text(tokenizer, example)
    assert all(q in prompt for q in QUESTIONS)
    # Gemma has no system role and Mistral puts the system text in the last
    # user turn: wherever the template puts it, it is prompt, never target.
    assert SYSTEM in prompt


THOUGHTS = ["<think>\n先看定义。\n</think>\n\n" + ANSWERS[0],
            "<think>\n比较股票与存款。\n</think>\n\n" + ANSWERS[1]]


@pytest.mark.parametrize("family", ["qwen3", "deepseek-r1-distill-qwen"])
def test_final_answer_keeps_its_thoughts_earlier_ones_follow_the_template(family, family_model):
    tokenizer = load_tokenizer(family_model(family))
    example = build_example({"id": "x", "messages": conversation(THOUGHTS)}, tokenizer)
    mid_end, last_end = END[family]
    # Both templates drop the thoughts of an answer before the last question
    # (DeepSeek-R1 keeps what follows `</think>`, blank lines included).
    if family == "qwen3":  # the template renders the final thoughts itself
        first = ANSWERS[0] + mid_end
        last = "<think>\n比较股票与存款。\n</think>\n\n" + ANSWERS[1] + last_end
    else:  # the generation prompt opens `<think>\n`; the answer continues it
        first = "\n\n" + ANSWERS[0] + mid_end
        last = "比较股票与存款。\n</think>\n\n" + ANSWERS[1] + last_end
    assert trained_segments(tokenizer, example) == [first, last]


@pytest.mark.parametrize("family", ["qwen3", "deepseek-r1-distill-qwen"])
def test_enable_thinking_false_learns_answers_without_thoughts(family, family_model):
    tokenizer = load_tokenizer(family_model(family))
    options = ExampleOptions(enable_thinking=False)
    example = build_example({"id": "x", "messages": conversation(THOUGHTS)}, tokenizer, options)
    mid_end, last_end = END[family]
    assert trained_segments(tokenizer, example) == [ANSWERS[0] + mid_end,
                                                    ANSWERS[1] + last_end]
    text = tokenizer.decode(example["input_ids"], skip_special_tokens=False)
    assert "先看定义" not in text and "比较股票" not in text
    assert text.count("</think>") == 1  # the empty thought block, in the prompt


def test_a_template_that_cannot_be_mapped_names_itself_and_the_turn(family_model):
    from danlu.data.answer_spans import TemplateError

    tokenizer = load_tokenizer(family_model("qwen2.5"))
    # Answers rendered in reverse order: no prompt of a turn leads into it.
    tokenizer.chat_template = (
        "{% for m in messages|reverse %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    with pytest.raises(TemplateError, match=r"chat template of .*turn \d"):
        build_example({"id": "x", "messages": conversation()}, tokenizer)


def _records(n: int) -> list[dict]:
    rows = []
    for i in range(n):
        answers = [f"第{i}号债券的票面利率是{i % 7 + 2}%。", f"Fund {i} holds {i % 5 + 1} bonds."]
        if i % 2:
            answers[1] = f"<think>\n先算一下{i}。\n</think>\n\n" + answers[1]
        rows.append({"id": f"r{i}", "messages": conversation(answers)})
    return rows


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_train_merge_gptq_and_awq_run_for_every_family(family, family_model, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    from danlu.audit.tracking import StageRun
    from danlu.config import TrainConfig, from_mapping, load_config
    from danlu.model.merge import merge_adapter
    from danlu.model.quantize import calibration_texts, quantize_model, read_gate_examples
    from danlu.model.train import run_training

    monkeypatch.setenv("DANLU_TRACKING_DISABLED", "1")
    model_dir = family_model(family)
    tokenizer = load_tokenizer(model_dir)
    records = _records(16)
    for split, rows in (("train", records[:12]), ("val", records[12:])):
        (tmp_path / f"{split}.jsonl").write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    tokenize_splits({s: tmp_path / f"{s}.jsonl" for s in ("train", "val")}, tokenizer,
                    ExampleOptions(), tmp_path / "lengths")
    cfg = from_mapping(TrainConfig, {
        **load_config(None)["train"], "lora_r": 4, "lora_alpha": 8, "max_steps": 3,
        "per_device_train_batch_size": 4, "gradient_accumulation_steps": 1,
        "learning_rate": 1e-3, "eval_steps": 3, "save_steps": 3, "warmup_ratio": 0.0})
    stats = run_training(arrow_dir=tmp_path / "lengths",
                         cutoff={"cutoff_len": 256, "overlength": "truncate"},
                         model_dir=model_dir, tokenizer=tokenizer, cfg=cfg, seed=0,
                         out_dir=tmp_path / "adapter", run=StageRun("train"),
                         fingerprint={"family": family})
    assert stats["target_tokens"] > 0

    check = [tokenizer(t, add_special_tokens=False)["input_ids"][:48]
             for t in calibration_texts(records, tokenizer, n=2, seed=0)]
    merged = merge_adapter(model_dir, tmp_path / "adapter", tmp_path / "merged",
                           check_inputs=check)
    assert merged["max_abs_diff"] <= merged["tolerance"]

    for method in ("gptq", "awq"):  # GLM-4's fused gate_up_proj needs its own AWQ mapping
        quantized = quantize_model(
            tmp_path / "merged", tmp_path / method, method=method,
            calibration_texts=calibration_texts(records, tokenizer, 8, 0), tokenizer=tokenizer,
            max_seq_length=128,
            val_examples=read_gate_examples(tmp_path / "lengths" / "val", 4, 128))
        assert quantized["top1_agreement"] is not None
        model = AutoModelForCausalLM.from_pretrained(tmp_path / method)
        saved = json.loads((tmp_path / method / "config.json").read_text())
        assert saved["quantization_config"]["quant_method"] == "compressed-tensors"
        assert type(model).__name__ == json.loads((model_dir / "config.json").read_text())[
            "architectures"][0]
        with torch.inference_mode():
            logits = model(input_ids=torch.tensor([check[0]])).logits
        assert torch.isfinite(logits).all()
        # The exports ship the family's own template, byte for byte.
        assert load_tokenizer(tmp_path / method).chat_template == tokenizer.chat_template
