"""Quantize: 4-bit weight-only exports (GPTQ or AWQ) with llm-compressor.

The recipe is llm-compressor's own: GPTQ is one `GPTQModifier`; AWQ is the
`AWQModifier` transform (rescale salient channels, using the architecture's
built-in mappings) followed by a plain `QuantizationModifier`. Both calibrate
with `oneshot` on chat-rendered train records, and the result is saved
compressed (`save_compressed=True`): config.json keeps a compressed-tensors
`quantization_config` (format `pack-quantized`, the form vLLM's compressed-tensors
loader serves; tests check that form, since vLLM itself does not run on a CPU
here), and plain `AutoModelForCausalLM.from_pretrained(out_dir)` loads it on a
CPU (decompressed to dense weights).

The export must also pass a quality gate (`export.gates`) before it is
written: the merged model and the saved export are both scored on the first
val examples' answer tokens, and the export's top-1 agreement with the merged
model and its perplexity ratio must clear the thresholds, or the job fails in
one line and leaves nothing behind (so the audit rule never signs it).

Pure pieces (calibration sampling, the group-size check, top-1 agreement, the
gate's figures and verdict) are separate from `quantize_model`, the I/O shell.
"""

from __future__ import annotations

import contextlib
import gc
import math
import random
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from danlu.config import ExportConfig, Gates, from_mapping, stage_params
from danlu.errors import UserError
from danlu.outputs import atomic_dir, bytes_on_disk

METHODS = ("gptq", "awq")
TARGETS = ["Linear"]
# GPTQ adds this fraction of the Hessian's mean diagonal before inverting it,
# so that columns no calibration token excites do not blow up the update;
# 0.01 is the GPTQ paper's and llm-compressor's default.
DAMPENING_FRAC = 0.01
IGNORE_INDEX = -100  # label of a token that is not scored (prompt, padding)


class QuantizeError(UserError, ValueError):
    """A quantisation request that cannot work; one line."""


class QualityGateError(QuantizeError):
    """The export is too far from the merged model to ship; nothing was written."""


@dataclass(frozen=True)
class ValScores:
    """One model on the gate's val examples: its argmax at every scored
    position (one 1-D tensor per example) and the summed negative
    log-likelihood of the answer tokens (perplexity.py's definition)."""

    predictions: list[torch.Tensor]
    nll: float
    tokens: int

    @property
    def perplexity(self) -> float:
        return _exp(self.nll / self.tokens)


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


def gate_examples(examples: Iterable[dict], n: int, max_tokens: int) -> list[dict]:
    """The first n tokenised val examples ({input_ids, labels}, labels -100
    where not scored) that keep an answer token once cut to max_tokens.
    Cutting from the right keeps the prompt each answer token is predicted from;
    the cap bounds the gate's cost on a large model (two forward passes, on the
    CPU before llm-compressor onloads anything)."""
    picked = []
    for example in examples:
        if len(picked) == n:
            break
        ids, labels = list(example["input_ids"][:max_tokens]), list(example["labels"][:max_tokens])
        # Position 0 is never predicted: only labels from position 1 on are scored.
        if any(label != IGNORE_INDEX for label in labels[1:]):
            picked.append({"input_ids": ids, "labels": labels})
    if not picked:
        raise QuantizeError(f"no val example has an answer token within its first {max_tokens} "
                            "tokens: nothing to gate the export on (raise export.gates.max_tokens)")
    return picked


def gate_figures(reference: ValScores, export: ValScores, gates: Gates | None) -> dict:
    """The gate's figures and verdict for an export scored against the merged
    model (thresholds and verdict None when measured without gates)."""
    agreement = top1_agreement(reference.predictions, export.predictions)
    ratio = _exp((export.nll - reference.nll) / reference.tokens)  # ppl_export / ppl_merged
    passed = None if gates is None else (
        agreement >= gates.min_top1_agreement
        # NaN logits give a NaN ratio, which compares False with anything: fail it.
        and math.isfinite(ratio) and ratio <= gates.max_ppl_ratio)
    return {
        "top1_agreement": round(agreement, 4),
        "ppl_ratio": round(ratio, 4) if math.isfinite(ratio) else ratio,
        "val_perplexity_merged": round(reference.perplexity, 4),
        "val_perplexity_export": round(export.perplexity, 4)
        if math.isfinite(export.perplexity) else export.perplexity,
        "min_top1_agreement": None if gates is None else gates.min_top1_agreement,
        "max_ppl_ratio": None if gates is None else gates.max_ppl_ratio,
        "val_examples": len(reference.predictions),
        "val_tokens": reference.tokens,
        "passed": passed,
    }


def check_gate(name: str, figures: dict) -> None:
    """Raise QualityGateError, one line naming the export and every figure
    that misses its threshold, unless the figures passed."""
    if figures["passed"] is not False:
        return
    misses = []
    if not figures["top1_agreement"] >= figures["min_top1_agreement"]:
        misses.append(f"top-1 agreement with the merged model {figures['top1_agreement']:.4f} "
                      f"< min_top1_agreement {figures['min_top1_agreement']}")
    if not figures["ppl_ratio"] <= figures["max_ppl_ratio"]:
        misses.append(f"val perplexity ratio {figures['ppl_ratio']:.4f} "
                      f"({figures['val_perplexity_export']:.4g} / "
                      f"{figures['val_perplexity_merged']:.4g} merged) "
                      f"> max_ppl_ratio {figures['max_ppl_ratio']}")
    raise QualityGateError(f"{name} export fails export.gates on {figures['val_tokens']} val "
                           f"tokens: {'; '.join(misses)}; nothing written")


def _exp(x: float) -> float:
    """exp that says inf rather than raising, for a broken model's huge NLL."""
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


# AWQ smoothing for architectures llm-compressor has no mapping for and whose
# layer names its default (Llama) mapping does not fit. GLM-4 (GlmForCausalLM,
# the -hf checkpoints; Glm4ForCausalLM, GLM-4-0414) keeps q/k/v apart but fuses
# gate and up into gate_up_proj, like Phi-3, whose mapping this follows.
AWQ_MAPPINGS = {
    arch: [("re:.*input_layernorm$", ["re:.*q_proj$", "re:.*k_proj$", "re:.*v_proj$"]),
           ("re:.*v_proj$", ["re:.*o_proj$"]),
           ("re:.*post_attention_layernorm$", ["re:.*gate_up_proj$"]),
           ("re:.*gate_up_proj$", ["re:.*down_proj$"])]
    for arch in ("GlmForCausalLM", "Glm4ForCausalLM")
}


def build_recipe(method: str, scheme: str, group_size: int, ignore: Sequence[str],
                 dampening_frac: float, architecture: str | None = None) -> list:
    """llm-compressor modifiers for `method`, weights in groups of `group_size`
    (`architecture`, the model's class name, picks AWQ's layer mappings)."""
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
    if architecture in AWQ_MAPPINGS:
        from llmcompressor.modifiers.transform.awq import AWQMapping

        awq = AWQModifier(mappings=[AWQMapping(smooth, balance)
                                    for smooth, balance in AWQ_MAPPINGS[architecture]])
    else:
        awq = AWQModifier()  # mappings inferred from the architecture (Llama, Qwen2, ...)
    return [awq, QuantizationModifier(config_groups=config_groups, ignore=list(ignore))]


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


def read_gate_examples(arrow_dir: Path, n: int, max_tokens: int) -> list[dict]:
    """gate_examples() of a tokenised val split (lengths' Arrow set, the
    tokens evaluate's val perplexity is computed on)."""
    import datasets

    datasets.disable_progress_bars()
    split = datasets.load_from_disk(str(arrow_dir)).select_columns(["input_ids", "labels"])
    return gate_examples(iter(split), n, max_tokens)


def score_val(model, examples: Sequence[dict]) -> ValScores:
    """Argmax and NLL at each scored position, one example at a time (no padding)."""
    from compressed_tensors.offload import get_execution_device

    # After oneshot, layers may sit offloaded with an onload device: ask the
    # embedding where inputs go rather than trusting the first parameter.
    device = get_execution_device(model.get_input_embeddings(), torch.device("cpu"))
    predictions, nll, tokens = [], 0.0, 0
    with torch.inference_mode():
        for example in examples:
            ids = torch.tensor([example["input_ids"]], device=device)
            logits = model(input_ids=ids).logits[0, :-1].float().cpu()
            targets = torch.tensor(example["labels"][1:])  # the token each position predicts
            scored = targets != IGNORE_INDEX
            logp = torch.log_softmax(logits[scored], dim=-1)
            nll -= float(logp.gather(1, targets[scored].unsqueeze(1)).sum())
            tokens += int(scored.sum())
            predictions.append(logits[scored].argmax(-1))
    return ValScores(predictions, nll, tokens)


def score_saved(export_dir: Path, examples: Sequence[dict],
                trust_remote_code: bool = False) -> ValScores:
    """Score the export as saved (loaded back, decompressed to dense weights),
    so the gate judges the bytes that ship, not the in-memory model."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(export_dir, dtype="auto",
                                                 trust_remote_code=trust_remote_code)
    model.eval()
    return score_val(model, examples)


def quantize_model(model_dir, out_dir, *, method: str, calibration_texts: list[str], tokenizer,
                   scheme: str = "W4A16", group_size: int = 128, max_seq_length: int = 512,
                   ignore: Sequence[str] = ("lm_head",), dampening_frac: float = DAMPENING_FRAC,
                   val_examples: Sequence[dict] = (), gates: Gates | None = None,
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
        val_examples: tokenised val examples (see gate_examples()) on which the
            merged model and the saved export are compared; empty skips the
            comparison (and the gate).
        gates: thresholds the comparison must meet, else QualityGateError and
            no out_dir; None measures without judging.

    Returns stats: method, scheme, group_size, calibration_samples,
    calibration_tokens, seconds, bytes_on_disk, top1_agreement, gate (the
    figures of gate_figures(), or None without val examples).
    """
    from datasets import Dataset
    from llmcompressor import oneshot
    from transformers import AutoModelForCausalLM

    model_dir = Path(model_dir)
    architecture = (_architectures(model_dir) or [None])[0]
    recipe = build_recipe(method, scheme, group_size, ignore, dampening_frac, architecture)
    if not calibration_texts:
        raise QuantizeError("no calibration texts")
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
    reference = score_val(model, val_examples) if val_examples else None

    started = time.perf_counter()
    with no_pinning_without_accelerator():
        oneshot(model=model, dataset=dataset, recipe=recipe, max_seq_length=max_seq_length,
                num_calibration_samples=len(encoded), shuffle_calibration_samples=False)
    seconds = time.perf_counter() - started

    with atomic_dir(Path(out_dir)) as tmp:
        model.save_pretrained(tmp, save_compressed=True)
        tokenizer.save_pretrained(tmp)
        size = bytes_on_disk(tmp)
        # Drop our reference before loading the export back (llm-compressor's
        # hooks may still hold the model; the export loads packed, ~1/4 the size).
        del model
        gc.collect()
        gate = None
        if reference is not None:
            exported = score_saved(tmp, val_examples, trust_remote_code)
            gate = gate_figures(reference, exported, gates)
            check_gate(method, gate)  # raising here removes tmp: nothing ships
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
        "top1_agreement": gate["top1_agreement"] if gate else None,
        "gate": gate,
    }


def _architectures(model_dir: Path) -> list[str]:
    import json

    config = model_dir / "config.json"
    if not config.is_file():
        return []
    return json.loads(config.read_text(encoding="utf-8")).get("architectures") or []


def main(args) -> None:
    from danlu.data.records import read_jsonl
    from danlu.model.loading import load_tokenizer
    from danlu.stage import run_stage

    params = stage_params(args, "export")
    export = from_mapping(ExportConfig, params)
    gates = export.gates
    tokenizer = load_tokenizer(Path(args.model), args.template, args.trust_remote_code)
    texts = calibration_texts(list(read_jsonl(args.train)), tokenizer,
                              export.calibration_samples, args.seed)
    val_examples = read_gate_examples(Path(args.val), gates.val_examples, gates.max_tokens)
    out = Path(args.out)
    stats = run_stage(
        f"quantize_{args.method}", {"export": params, "method": args.method, "seed": args.seed},
        lambda run: quantize_model(
            Path(args.model), out, method=args.method, calibration_texts=texts, tokenizer=tokenizer,
            scheme=export.scheme, group_size=export.group_size,
            max_seq_length=export.calibration_max_length,
            dampening_frac=export.dampening_frac, val_examples=val_examples, gates=gates,
            trust_remote_code=args.trust_remote_code),
        inputs=[args.model, args.train, args.val, *args.code], outputs=[out],
        manifest_path=Path(args.manifest),
    )
    gate = stats["gate"]
    print(f"quantize {args.method}: passed export.gates on {gate['val_tokens']} val tokens: "
          f"top-1 agreement {gate['top1_agreement']:.4f} (min {gate['min_top1_agreement']}), "
          f"perplexity ratio {gate['ppl_ratio']:.4f} (max {gate['max_ppl_ratio']})")
