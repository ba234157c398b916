"""Merging a LoRA adapter: checked against base+adapter, refused when unsafe."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from danlu.model.merge import (
    MergeCheckError,
    MergeError,
    adapter_mismatches,
    base_name_mismatch,
    merge_adapter,
)


def _make_adapter(model, out_dir, seed: int = 0):
    """A LoRA adapter without training: lora_B starts at zero (the adapter
    would do nothing), so give it small seeded random values."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    # alpha/r = 4: scaling applied twice (16) differs clearly from once (4).
    lora = LoraConfig(r=4, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, lora)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.02)
    peft_model.save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir, tmp_path_factory):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    return _make_adapter(model, tmp_path_factory.mktemp("adapter") / "lora")


@pytest.fixture(scope="module")
def check_inputs():
    gen = torch.Generator().manual_seed(5)
    return [torch.randint(3, 2048, (n,), generator=gen).tolist() for n in (40, 24, 56)]


def _base_plus_adapter_logits(base_dir, adapter_dir, inputs):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, adapter_dir).eval()
    with torch.inference_mode():
        return [model(input_ids=torch.tensor([ids])).logits[0] for ids in inputs]


def test_merged_directory_loads_and_matches_base_plus_adapter(tiny_model_dir, adapter_dir,
                                                              check_inputs, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "merged"
    stats = merge_adapter(tiny_model_dir, adapter_dir, out, check_inputs=check_inputs)
    assert stats["max_abs_diff"] <= stats["tolerance"]
    assert stats["adapter_effect"] > 100 * stats["tolerance"]  # the check had room to fail
    assert stats["dtype"] == "fp32" and stats["bytes_on_disk"] > 0
    assert (out / "model.safetensors").is_file()
    assert "quantization_config" not in json.loads((out / "config.json").read_text())
    assert AutoTokenizer.from_pretrained(out).chat_template

    merged = AutoModelForCausalLM.from_pretrained(out)  # plain transformers, no peft
    assert sum(p.numel() for p in merged.parameters()) == stats["parameters"]
    expected = _base_plus_adapter_logits(tiny_model_dir, adapter_dir, check_inputs)
    with torch.inference_mode():
        for ids, want in zip(check_inputs, expected, strict=True):
            got = merged(input_ids=torch.tensor([ids])).logits[0]
            torch.testing.assert_close(got, want, atol=1e-4, rtol=0)


def test_check_catches_an_adapter_whose_scaling_was_applied_twice(tiny_model_dir, adapter_dir,
                                                                  check_inputs, tmp_path):
    from peft.tuners.lora import LoraLayer

    def scaling_twice(peft_model):  # the bug: delta = s * (s * B @ A)
        for module in peft_model.modules():
            if isinstance(module, LoraLayer):
                module.scaling = {name: s * s for name, s in module.scaling.items()}
        return peft_model.merge_and_unload()

    out = tmp_path / "merged"
    with pytest.raises(MergeCheckError, match="differs from base\\+adapter") as err:
        merge_adapter(tiny_model_dir, adapter_dir, out, check_inputs=check_inputs,
                      merge_fn=scaling_twice)
    assert "\n" not in str(err.value)
    assert not out.exists()
    assert not list(tmp_path.iterdir())  # no temporary directory left either


def test_bf16_merge_passes_its_own_tolerance(tiny_model_dir, adapter_dir, check_inputs, tmp_path):
    stats = merge_adapter(tiny_model_dir, adapter_dir, tmp_path / "merged",
                          check_inputs=check_inputs, dtype="bf16")
    assert 0 < stats["max_abs_diff"] <= stats["tolerance"]
    assert stats["adapter_effect"] > stats["tolerance"]


@pytest.mark.parametrize("qcfg", [
    {"quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "nf4"},
    {"quant_method": "bitsandbytes", "load_in_8bit": True},
    {"quant_method": "gptq", "bits": 4, "group_size": 128},
])
def test_quantised_base_is_refused(tiny_model_dir, adapter_dir, check_inputs, tmp_path, qcfg):
    base = tmp_path / "base"
    shutil.copytree(tiny_model_dir, base)
    cfg = json.loads((base / "config.json").read_text())
    (base / "config.json").write_text(json.dumps({**cfg, "quantization_config": qcfg}))
    with pytest.raises(MergeError, match="quantised") as err:
        merge_adapter(base, adapter_dir, tmp_path / "merged", check_inputs=check_inputs)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "merged").exists()


def test_adapter_for_a_wider_base_gives_one_line_error(tiny_model_dir, check_inputs, tmp_path):
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(tiny_model_dir)
    config.hidden_size, config.intermediate_size = 256, 512
    other = _make_adapter(AutoModelForCausalLM.from_config(config), tmp_path / "other")
    with pytest.raises(MergeError) as err:
        merge_adapter(tiny_model_dir, other, tmp_path / "merged", check_inputs=check_inputs)
    message = str(err.value)
    assert "\n" not in message
    assert ("adapter expects lora_A of shape [4, 256] for model.layers.0.self_attn.q_proj, "
            "base has in_features 128") in message
    assert not (tmp_path / "merged").exists()


def test_missing_adapter_is_one_line_error(tiny_model_dir, check_inputs, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(MergeError, match="no adapter_config.json"):
        merge_adapter(tiny_model_dir, tmp_path / "empty", tmp_path / "merged",
                      check_inputs=check_inputs)


def test_mismatches_name_missing_layers_and_a_different_vocabulary():
    modules = {"model.layers.0.self_attn.q_proj": torch.nn.Linear(128, 128),
               "model.embed_tokens": torch.nn.Embedding(2048, 128)}
    params = {"lm_head.weight": (2048, 128), "model.embed_tokens.weight": (2048, 128)}
    shapes = {
        "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": [4, 128],
        "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight": [128, 4],
        "base_model.model.model.layers.7.mlp.up_proj.lora_A.weight": [4, 128],
        "base_model.model.model.embed_tokens.lora_embedding_A": [4, 2050],
        "base_model.model.lm_head.weight": [2050, 128],
    }
    assert adapter_mismatches(shapes, modules, params) == [  # base order, then unknowns
        "adapter expects lora_embedding_A of shape [4, 2050] for model.embed_tokens, "
        "base has num_embeddings 2048",
        "adapter's lm_head.weight has shape [2050, 128], base has [2048, 128]",
        "adapter has lora_A for model.layers.7.mlp.up_proj, which the base does not have",
    ]


def test_recorded_base_path_only_warns():
    assert base_name_mismatch({"base_model_name_or_path": "/old/place/model"}, "/new/model") is None
    assert "Qwen/Qwen2.5-7B" in base_name_mismatch(
        {"base_model_name_or_path": "Qwen/Qwen2.5-7B"}, "/models/llama")
