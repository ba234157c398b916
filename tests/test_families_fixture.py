"""The family fixtures build loadable tiny models that keep each real chat template."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from families import FAMILIES, build_family_model, load_family, special_tokens

SYSTEM = "你是一名金融分析助手。Answer briefly."
CHAT = [
    {"role": "system", "content": SYSTEM},
    {"role": "user", "content": "什么是市盈率？"},
    {"role": "assistant", "content": "市盈率是股价除以每股收益。"},
    {"role": "user", "content": "And a P/E of 15 means?"},
]
ANSWER = {"role": "assistant", "content": "Investors pay 15 yuan per yuan of annual earnings."}


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("families")
    return {name: build_family_model(name, root / name) for name in FAMILIES}


@pytest.fixture(scope="module")
def loaded(family_dirs):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return {
        name: (AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path))
        for name, path in family_dirs.items()
    }


def test_fixture_files_are_complete():
    keys = {"checkpoint", "source", "architecture", "model_type", "chat_template", "bos_token",
            "eos_token", "pad_token", "unk_token", "additional_special_tokens", "added_tokens",
            "end_of_turn", "config", "tiny_config", "generation_eos_tokens"}
    for name in FAMILIES:
        spec = load_family(name)
        assert keys <= spec.keys(), f"{name}: missing {keys - spec.keys()}"
        assert {"repo", "path", "commit"} <= spec["source"].keys(), name
        assert spec["chat_template"].strip(), name
        assert spec["end_of_turn"], name


@pytest.mark.parametrize("name", FAMILIES)
def test_directory_loads_as_the_family(name, family_dirs, loaded):
    spec = load_family(name)
    tokenizer, model = loaded[name]
    config = json.loads((family_dirs[name] / "config.json").read_text(encoding="utf-8"))
    assert config["architectures"] == [spec["architecture"]]
    assert config["model_type"] == spec["model_type"]
    assert type(model).__name__ == spec["architecture"]
    assert model.config.vocab_size == len(tokenizer)
    assert 1024 <= len(tokenizer) <= 2048
    # The template survives save/load byte for byte.
    assert tokenizer.chat_template == spec["chat_template"]
    assert tokenizer.bos_token == spec["bos_token"]
    assert tokenizer.eos_token == spec["eos_token"]
    assert tokenizer.pad_token == spec["pad_token"]
    assert tokenizer.unk_token == spec["unk_token"]


@pytest.mark.parametrize("name", FAMILIES)
def test_special_and_turn_tokens_are_single_ids(name, loaded):
    spec = load_family(name)
    tokenizer, model = loaded[name]
    tokens = special_tokens(spec) + spec["added_tokens"] + spec["end_of_turn"]
    for token in dict.fromkeys(tokens):
        ids = tokenizer.encode(token, add_special_tokens=False)
        assert len(ids) == 1, f"{name}: {token!r} encodes to {ids}"
        assert tokenizer.convert_ids_to_tokens(ids) == [token], name
    eos = tokenizer.convert_tokens_to_ids(spec["generation_eos_tokens"])
    want = eos[0] if len(eos) == 1 else eos
    assert model.generation_config.eos_token_id == want, name
    if name == "glm4":  # the real list: <|endoftext|>, <|user|>, <|observation|>
        assert isinstance(model.config.eos_token_id, list) and len(model.config.eos_token_id) == 3


@pytest.mark.parametrize("name", FAMILIES)
def test_chat_template_renders_and_model_runs(name, loaded):
    import torch

    spec = load_family(name)
    tokenizer, model = loaded[name]
    try:
        prompt = tokenizer.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(CHAT + [ANSWER], tokenize=False)
    except Exception as exc:  # noqa: BLE001 - name the family whose template failed
        pytest.fail(f"{name}: chat template raised {type(exc).__name__}: {exc}")
    assert "什么是市盈率？" in prompt and "P/E of 15" in prompt, name
    assert ANSWER["content"] in full, name
    if name != "mistral-v0.3":  # Mistral drops the system prompt unless the last message is a user turn
        assert SYSTEM.split("。")[0] in full, name
    assert SYSTEM.split("。")[0] in prompt, name
    assert any(t in full for t in spec["end_of_turn"]) or name == "glm4", name

    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")
    with torch.no_grad():
        logits = model(**ids).logits
    assert logits.shape == (1, ids["input_ids"].shape[1], len(tokenizer)), name
    assert torch.isfinite(logits).all(), name


def test_every_linear_input_is_a_multiple_of_128(loaded):
    import torch

    for name, (_, model) in loaded.items():
        for module_name, module in model.named_modules():
            if isinstance(module, torch.nn.Linear):
                assert module.in_features % 128 == 0, f"{name}: {module_name}"
