"""Quantize: 4-bit weight-only exports (GPTQ or AWQ) with llm-compressor.

The recipe is llm-compressor's own: GPTQ is one `GPTQModifier`; AWQ is the
`AWQModifier` transform (rescale salient channels, using the architecture's
built-in mappings) followed by a plain `QuantizationModifier`. Both calibrate
with `oneshot` on chat-rendered train records, and the result is saved
compressed (`save_compressed=True`): config.json keeps a compressed-tensors
`quantization_config`, so vLLM serves it as is and plain
`AutoModelForCausalLM.from_pretrained(out_dir)` loads it on a CPU
(decompressed to dense weights).

Pure pieces (calibration sampling, the group-size check, top-1 agreement) are
separate from `quantize_model`, the I/O shell.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from danlu.errors import UserError
from danlu.outputs import atomic_dir, bytes_on_disk

METHODS = ("gptq", "awq")
TARGETS = ["Linear"]
# GPTQ adds this fraction of the Hessian's mean diagonal before inverting it,
# so that columns no calibration token excites do not blow up the update;
# 0.01 is the GPTQ paper's and llm-compressor's default.
DAMPENING_FRAC = 0.01
AGREEMENT_PROMPTS = 4  # calibration prompts the fp and quantised models are compared on


class QuantizeError(UserError, ValueError):
    """A quantisation request that cannot work; one line."""


# --- pure pieces -----------------------------------------------------------------


def calibration_texts(records: Sequence[dict], tokenizer, n: int, seed: int) -> list[str]:
    """n canonical records ({"messages": [...]}) rendered with the model's chat
    template, so calibration sees the token patterns serving will. The choice
    depends only on (len(records), n, seed) and keeps file order."""
    if not records:
        raise QuantizeError("no calibration records")
    if n <= 0:
        raise QuantizeError(f"calibration samples must be positive, got {n}")
    picked = sorted(random.Random(seed).sample(range(len(records)), min(n, len(records))))
    return [tokenizer.apply_chat_template(list(records[i]["messages"]), tokenize=False)
            for i in picked]


def group_size_problems(model: torch.nn.Module, group_size: int,
                        ignore: Sequence[str]) -> list[tuple[str, int]]:
    """(name, input width) of each layer to be quantised whose input width the
    group size does not divide; matching is llm-compressor's (names, class
    names, `re:` patterns), so it sees exactly the layers oneshot will."""
    from compressed_tensors.utils import match_named_modules

    return [(name, module.in_features)
            for name, module in match_named_modules(model, TARGETS, list(ignore))
            if module.in_features % group_size]


def top1_agreement(reference: Sequence[torch.Tensor], other: Sequence[torch.Tensor]) -> float:
    """Share of positions where two models predict the same next token.
    Arguments are per-prompt argmax predictions (1-D token ids) in the same order."""
    same = total = 0
    for ref, got in zip(reference, other, strict=True):
        if ref.shape != got.shape:
            raise ValueError(f"prediction shapes differ: {tuple(ref.shape)} vs {tuple(got.shape)}")
        same += int((ref == got).sum())
        total += ref.numel()
    if total == 0:
        raise ValueError("no predictions to compare")
    return same / total


def build_recipe(method: str, scheme: str, group_size: int, ignore: Sequence[str],
                 dampening_frac: float) -> list:
    """llm-compressor modifiers for `method`, weights in groups of `group_size`."""
    from compressed_tensors.quantization import (
        QuantizationStrategy,
        is_preset_scheme,
        preset_name_to_scheme,
    )
    from llmcompressor.modifiers.quantization import GPTQModifier, QuantizationModifier
    from llmcompressor.modifiers.transform.awq import AWQModifier

    if method not in METHODS:
        raise QuantizeError(f"quantisation method {method!r}: use one of {', '.join(METHODS)}")
    if not is_preset_scheme(scheme):
        raise QuantizeError(f"scheme {scheme!r} is not an llm-compressor preset (e.g. W4A16)")
    group = preset_name_to_scheme(scheme, TARGETS)
    if group.weights is None or group.weights.strategy != QuantizationStrategy.GROUP:
        raise QuantizeError(f"scheme {scheme} does not quantise weights in groups; "
                            "use a group scheme such as W4A16 or W4A16_ASYM")
    # The presets fix group 128; a custom group size goes in through config_groups.
    group.weights = group.weights.model_copy(update={"group_size": group_size})
    config_groups = {"group_0": group}
    if method == "gptq":
        return [GPTQModifier(config_groups=config_groups, ignore=list(ignore),
                             dampening_frac=dampening_frac)]
    return [AWQModifier(),  # mappings inferred from the architecture (Llama, Qwen2, ...)
            QuantizationModifier(config_groups=config_groups, ignore=list(ignore))]


@contextlib.contextmanager
def no_pinning_without_accelerator() -> Iterator[bool]:
    """Make llm-compressor's IntermediatesCache.pin_memory a no-op while the
    block runs, on machines without an accelerator. Yields whether it did.

    Why: AWQ pins its cached activations before the grid search to speed up
    host-to-device copies; with no device, torch raises "Cannot access
    accelerator device when none is available" (llm-compressor 0.14, torch
    2.13). Pinning has nothing to speed up there, so skipping it changes no
    number. The original method is restored on exit, error or not; on
    machines with an accelerator nothing is touched."""
    from llmcompressor.pipelines.cache import IntermediatesCache

    if torch.accelerator.is_available():
        yield False
        return
    original = IntermediatesCache.pin_memory
    IntermediatesCache.pin_memory = _skip_pinning
    try:
        yield True
    finally:
        IntermediatesCache.pin_memory = original


def _skip_pinning(self, batch_index: int, input_names=None) -> None:
    return None


# --- I/O shell ------------------------------------------------------------------------


def check_group_size(model_dir: Path, group_size: int, ignore: Sequence[str],
                     trust_remote_code: bool = False) -> None:
    """One-line QuantizeError, before any weight loads (meta device), naming
    the first layer whose input width group_size does not divide."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    if group_size <= 0:
        raise QuantizeError(f"group_size must be positive, got {group_size}")
    config = AutoConfig.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    problems = group_size_problems(model, group_size, ignore)
    if problems:
        name, width = problems[0]
        more = f" (and {len(problems) - 1} more layers)" if len(problems) > 1 else ""
        raise QuantizeError(f"group_size {group_size} does not divide the input width {width} "
                            f"of {name}{more}; pick a divisor or add the layer to ignore")


def _predictions(model, encoded: Sequence[list[int]]) -> list[torch.Tensor]:
    from compressed_tensors.offload import get_execution_device

    # After oneshot, layers may sit offloaded with an onload device: ask the
    # embedding where inputs go rather than trusting the first parameter.
    device = get_execution_device(model.get_input_embeddings(), torch.device("cpu"))
    with torch.inference_mode():
        return [model(input_ids=torch.tensor([ids], device=device)).logits[0].argmax(-1).cpu()
                for ids in encoded]


def quantize_model(model_dir, out_dir, *, method: str, calibration_texts: list[str], tokenizer,
                   scheme: str = "W4A16", group_size: int = 128, max_seq_length: int = 512,
                   ignore: Sequence[str] = ("lm_head",), dampening_frac: float = DAMPENING_FRAC,
                   agreement_prompts: int = AGREEMENT_PROMPTS,
                   trust_remote_code: bool = False) -> dict:
    """Quantise a full-precision model's Linear weights and save it compressed.

    Arguments:
        model_dir: the model to quantise (e.g. the merged model), any dtype.
        out_dir: the export; written atomically, absent on failure.
        method: gptq (Hessian-based error correction) or awq (activation-aware
            scaling, then round-to-nearest).
        calibration_texts: chat-rendered train records (see calibration_texts()).
        tokenizer: the model's tokenizer; encodes calibration and is saved with the export.
        scheme: an llm-compressor preset with grouped weights (W4A16, W4A16_ASYM).
        group_size: input columns sharing one scale; must divide every quantised
            layer's input width (checked first).
        max_seq_length: calibration texts are cut to this many tokens.
        ignore: layers left in full precision (lm_head: quantising it costs the
            most quality for the least memory saved).
        dampening_frac: GPTQ's Hessian dampening (unused by AWQ).
        agreement_prompts: how many calibration prompts the fp and quantised
            models are compared on (top-1 agreement); 0 skips the comparison.

    Returns stats: method, scheme, group_size, calibration_samples,
    calibration_tokens, seconds, bytes_on_disk, top1_agreement.
    """
    from datasets import Dataset
    from llmcompressor import oneshot
    from transformers import AutoModelForCausalLM

    recipe = build_recipe(method, scheme, group_size, ignore, dampening_frac)
    if not calibration_texts:
        raise QuantizeError("no calibration texts")
    model_dir = Path(model_dir)
    check_group_size(model_dir, group_size, ignore, trust_remote_code)

    # The chat template already wrote every special token; adding BOS again
    # would calibrate on a sequence serving never sees.
    encoded = [tokenizer(text, add_special_tokens=False, truncation=True,
                         max_length=max_seq_length)["input_ids"] for text in calibration_texts]
    encoded = [ids for ids in encoded if ids]
    if not encoded:
        raise QuantizeError("every calibration text encodes to zero tokens")
    dataset = Dataset.from_dict({"input_ids": encoded,
                                 "attention_mask": [[1] * len(ids) for ids in encoded]})

    # dtype "auto": quantise from the checkpoint's own precision; no device_map,
    # llm-compressor onloads one layer at a time to the accelerator if there is one.
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype="auto",
                                                 trust_remote_code=trust_remote_code)
    model.eval()
    probe = encoded[:agreement_prompts]
    reference = _predictions(model, probe) if probe else []

    started = time.perf_counter()
    with no_pinning_without_accelerator():
        oneshot(model=model, dataset=dataset, recipe=recipe, max_seq_length=max_seq_length,
                num_calibration_samples=len(encoded), shuffle_calibration_samples=False)
    seconds = time.perf_counter() - started
    # The in-memory model now computes with the quantised weights (the same
    # arithmetic the decompressed export does).
    agreement = top1_agreement(reference, _predictions(model, probe)) if probe else None

    with atomic_dir(Path(out_dir)) as tmp:
        model.save_pretrained(tmp, save_compressed=True)
        tokenizer.save_pretrained(tmp)
        size = bytes_on_disk(tmp)
    return {
        "method": method,
        "scheme": scheme,
        "group_size": group_size,
        "ignore": list(ignore),
        "calibration_samples": len(encoded),
        "calibration_tokens": sum(len(ids) for ids in encoded),
        "max_seq_length": max_seq_length,
        "seconds": round(seconds, 3),
        "bytes_on_disk": size,
        "top1_agreement": agreement,
        "agreement_prompts": len(probe),
    }
