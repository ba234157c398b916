"""GPTQ and AWQ exports of the tiny model: loadable, compressed, close to fp."""

from __future__ import annotations

import json

import pytest
import torch
from workflow_utils import finance_records

from danlu.data.tokenize import build_example
from danlu.model.loading import load_tokenizer
from danlu.model.quantize import (
    QuantizeError,
    build_recipe,
    calibration_texts,
    gate_examples,
    group_size_problems,
    no_pinning_without_accelerator,
    quantize_model,
    score_val,
    top1_agreement,
)

# Bounds for the 4-bit exports of the random tiny model, whose logits are
# nearly flat (std ~0.2 across the vocabulary), so argmax ties flip easily.
# Chance agreement is 1/2048; measured top-1 agreement on the val examples'
# answer tokens: GPTQ 0.86, AWQ 0.66 (on calibration prompts 0.78 / 0.68-0.71);
# relative logit error 0.11 / 0.16-0.18. A broken export (wrong scales,
# zeroed or unscaled weights) gives agreement near 0 and error near 1 or more.
# (Its perplexity cannot tell: see test_gates.py, which gates a trained model.)
MIN_TOP1_AGREEMENT = 0.5
MAX_RELATIVE_LOGIT_ERROR = 0.35


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Matrices this small gain nothing from a second thread, and on a shared
    # two-core runner OpenMP's spin-waiting made AWQ 5-20x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _records(n: int = 32, seed: int = 7) -> list[dict]:
    return finance_records(n, seed)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return load_tokenizer(tiny_model_dir)


@pytest.fixture(scope="module")
def texts(tokenizer):
    return calibration_texts(_records(), tokenizer, n=16, seed=0)


@pytest.fixture(scope="module")
def val_examples(tokenizer):
    examples = [build_example(r, tokenizer) for r in _records(8, seed=8)]  # held out
    return gate_examples(examples, n=8, max_tokens=256)


@pytest.fixture(scope="module")
def exports(tiny_model_dir, tokenizer, texts, val_examples, tmp_path_factory):
    # Measured without gates: this model is too flat for them (test_gates.py).
    root = tmp_path_factory.mktemp("quantized")
    return {method: (root / method, quantize_model(
        tiny_model_dir, root / method, method=method, calibration_texts=texts,
        tokenizer=tokenizer, max_seq_length=256, val_examples=val_examples))
        for method in ("gptq", "awq")}


def test_calibration_texts_use_the_chat_template_and_are_deterministic(tokenizer):
    records = _records()
    texts = calibration_texts(records, tokenizer, n=8, seed=3)
    assert len(texts) == 8
    assert all(t.startswith("<|im_start|>user\n") and "<|im_start|>assistant\n" in t
               and t.rstrip().endswith("<|im_end|>") for t in texts)
    assert texts == calibration_texts(records, tokenizer, n=8, seed=3)
    assert texts != calibration_texts(records, tokenizer, n=8, seed=4)
    everything = calibration_texts(records, tokenizer, n=100, seed=3)
    assert len(everything) == len(records)
    assert [everything.index(t) for t in texts] == sorted(everything.index(t) for t in texts)


@pytest.mark.parametrize("method", ["gptq", "awq"])
def test_export_loads_with_from_pretrained_and_keeps_quantization_config(exports, method):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, stats = exports[method]
    qcfg = json.loads((out / "config.json").read_text())["quantization_config"]
    assert qcfg["quant_method"] == "compressed-tensors"
    assert qcfg["ignore"] == ["lm_head"]
    weights = qcfg["config_groups"]["group_0"]["weights"]
    assert (weights["num_bits"], weights["group_size"]) == (4, 128)
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.quantization_config is not None
    assert AutoTokenizer.from_pretrained(out).chat_template
    assert stats["method"] == method and stats["calibration_samples"] == 16
    assert stats["bytes_on_disk"] > 0


@pytest.mark.parametrize("method", ["gptq", "awq"])
def test_export_has_the_form_vllms_compressed_tensors_loader_serves(exports, method):
    """vLLM cannot run here (its PyPI wheel is a CUDA build), so the export is checked
    against what vLLM's loader dispatches on (vllm/model_executor/layers/quantization/
    compressed_tensors/compressed_tensors.py: `_is_wNa16_group_channel`, then format
    `pack-quantized` with 4 or 8 bits -> CompressedTensorsWNA16): weight-only, static,
    symmetric int4 in groups, packed on disk."""
    from safetensors import safe_open

    out, _ = exports[method]
    qcfg = json.loads((out / "config.json").read_text())["quantization_config"]
    assert (qcfg["quant_method"], qcfg["format"]) == ("compressed-tensors", "pack-quantized")
    for group in qcfg["config_groups"].values():
        weights = group["weights"]
        assert group.get("input_activations") is None  # A16: activations stay unquantised
        assert (weights["num_bits"], weights["type"], weights["strategy"], weights["dynamic"],
                weights["symmetric"]) == (4, "int", "group", False, True)
        assert group["targets"] == ["Linear"]
    names = set()
    for shard in out.glob("*.safetensors"):
        with safe_open(shard, "pt") as fh:
            names.update(fh.keys())
    packed = {n.removesuffix(".weight_packed") for n in names if n.endswith(".weight_packed")}
    assert packed and all(f"{n}.weight_scale" in names for n in packed)
    assert not any(n.startswith("lm_head.weight_") for n in names)  # kept in full precision


@pytest.mark.parametrize("method", ["gptq", "awq"])
def test_export_stays_close_to_the_fp_model(exports, method, tiny_model_dir, tokenizer, texts,
                                            val_examples):
    from transformers import AutoModelForCausalLM

    out, stats = exports[method]
    assert stats["top1_agreement"] >= MIN_TOP1_AGREEMENT
    assert stats["gate"]["passed"] is None  # measured, not judged, without gates
    fp = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    quant = AutoModelForCausalLM.from_pretrained(out)
    errors = []
    with torch.inference_mode():
        for text in texts[:4]:
            ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
            ref, got = fp(ids).logits[0], quant(ids).logits[0]
            centred = ref - ref.mean(-1, keepdim=True)
            errors.append(float((got - ref).norm() / centred.norm()))
    assert max(errors) <= MAX_RELATIVE_LOGIT_ERROR
    # stats measured the export as saved, on the val examples' answer tokens.
    agreement = top1_agreement(score_val(fp, val_examples).predictions,
                               score_val(quant, val_examples).predictions)
    assert agreement == pytest.approx(stats["top1_agreement"], abs=1e-4)


def test_group_size_that_does_not_divide_a_layer_is_refused_first(tiny_model_dir, tokenizer,
                                                                  texts, tmp_path):
    with pytest.raises(QuantizeError) as err:
        quantize_model(tiny_model_dir, tmp_path / "out", method="gptq", calibration_texts=texts,
                       tokenizer=tokenizer, group_size=96)
    message = str(err.value)
    assert "\n" not in message
    assert "model.layers.0.self_attn.q_proj" in message and "128" in message
    assert not (tmp_path / "out").exists()


def test_group_size_problems_follow_ignore():
    model = torch.nn.ModuleDict({"a": torch.nn.Linear(128, 8), "b": torch.nn.Linear(96, 8),
                                 "lm_head": torch.nn.Linear(100, 8)})
    assert group_size_problems(model, 64, ignore=["lm_head"]) == [("b", 96)]
    assert group_size_problems(model, 32, ignore=["lm_head"]) == []
    assert group_size_problems(model, 32, ignore=[]) == [("lm_head", 100)]


def test_awq_pinning_guard_skips_pinning_only_while_active():
    from llmcompressor.pipelines.cache import IntermediatesCache

    cache = IntermediatesCache.empty(1, torch.device("cpu"))
    cache.update(0, {"hidden": torch.ones(2, 4)})
    original = IntermediatesCache.pin_memory
    with no_pinning_without_accelerator() as active:
        cache.pin_memory(0)  # what AWQ calls before each grid search
    assert IntermediatesCache.pin_memory is original
    if torch.accelerator.is_available():
        assert not active
        return
    assert active
    # Without the guard the same call fails on a CPU-only machine; if this
    # starts passing, llm-compressor fixed it and the guard can go.
    with pytest.raises(RuntimeError, match="accelerator"):
        cache.pin_memory(0)


def test_pinning_guard_restores_on_error():
    from llmcompressor.pipelines.cache import IntermediatesCache

    original = IntermediatesCache.pin_memory
    with pytest.raises(KeyError), no_pinning_without_accelerator():
        raise KeyError("boom")
    assert IntermediatesCache.pin_memory is original


def test_top1_agreement_counts_positions():
    ref = [torch.tensor([1, 2, 3, 4]), torch.tensor([5, 6])]
    assert top1_agreement(ref, ref) == 1.0
    assert top1_agreement(ref, [torch.tensor([1, 2, 0, 0]), torch.tensor([5, 0])]) == 0.5
    with pytest.raises(ValueError):
        top1_agreement(ref, [torch.tensor([1, 2, 3]), torch.tensor([5, 6])])


def test_recipe_rejects_unknown_method_and_scheme():
    with pytest.raises(QuantizeError, match="method"):
        build_recipe("rtn", "W4A16", 128, ["lm_head"], 0.01)
    with pytest.raises(QuantizeError, match="preset"):
        build_recipe("gptq", "W4A17", 128, ["lm_head"], 0.01)
    (gptq,) = build_recipe("gptq", "W4A16", 64, ["lm_head"], 0.01)
    assert gptq.config_groups["group_0"].weights.group_size == 64
