"""Merge: fold a LoRA adapter into its full-precision base and prove the merge.

The merged model is only trusted if it computes what base+adapter computed:
`merge_adapter` runs the check prompts through the unmerged PeftModel (the
LoRA branch evaluated at run time, x·W + s·(x·A)·B) and through the merged
model (one weight W + s·B·A), and refuses to write anything when the two
disagree beyond the tolerance for the dtype. The two paths share no merge
arithmetic, so a merge that scales the delta twice, or drops it, shows up.

Checks that would otherwise fail after minutes of loading, or silently, come
first: a quantised base (merging into 4-bit weights rounds the delta away),
an adapter whose tensors do not fit the base (another model, another vocab).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from danlu.config import ExportConfig, from_mapping, stage_params
from danlu.errors import UserError
from danlu.model.loading import (
    load_model,
    load_tokenizer,
    model_facts,
    model_inputs,
    resolve_model_path,
)
from danlu.outputs import atomic_dir, bytes_on_disk

log = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


class MergeError(UserError, ValueError):
    """An adapter or base that cannot be merged; one line."""


class MergeCheckError(MergeError):
    """The merged model does not reproduce base+adapter; nothing was written."""


@dataclass(frozen=True)
class Tolerance:
    """Allowed max |logit difference| = atol + rtol * max |reference logit|."""

    atol: float
    rtol: float
    why: str

    def limit(self, logit_scale: float) -> float:
        return self.atol + self.rtol * logit_scale


# Merged and unmerged models differ only by rounding: x·(W + s·B·A) versus
# x·W + s·(x·A)·B sum the same products in a different order and round at
# different points. How far that moves the logits depends on the dtype's
# mantissa, so each dtype gets its own bound. A wrong merge (delta scaled
# twice, dropped, added to the wrong layer) moves logits by about as much as
# the adapter itself does, which for a trained adapter is units, far above
# either bound; `adapter_effect` in the stats says how big that margin is.
TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(
        atol=1e-4, rtol=1e-4,
        why="24-bit mantissa (eps 1.2e-7): measured differences are ~7e-7 of the logit "
            "scale (tiny and demo models, 2-4 layers); error grows with depth, so the bound "
            "keeps ~100x room for 30-60 layer models while staying far below the logit "
            "change of any adapter worth merging",
    ),
    "bf16": Tolerance(
        atol=5e-2, rtol=2e-2,
        why="8-bit mantissa (eps 3.9e-3): the merged weight W + s*B*A is rounded to bf16, "
            "which drops the part of a small delta below W's last bit, and every layer "
            "rounds again; measured differences are 0.8-1.2% of the logit scale on 2-4 "
            "layers, so a bf16 check only catches errors above a few percent (merge in "
            "fp32 for a tight check)",
    ),
}


# --- checks before any weight loads ----------------------------------------------


def quantization_of(model_dir: Path) -> str | None:
    """A short description of the quantization_config in config.json, or None."""
    cfg = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    qcfg = cfg.get("quantization_config") or cfg.get("text_config", {}).get("quantization_config")
    if not qcfg:
        return None
    method = qcfg.get("quant_method", "unknown method")
    if qcfg.get("load_in_4bit"):
        return f"{method} 4-bit"
    if qcfg.get("load_in_8bit"):
        return f"{method} 8-bit"
    bits = qcfg.get("bits") or qcfg.get("w_bit")
    return f"{method} {bits}-bit" if bits else str(method)


def read_adapter(adapter_dir: Path) -> tuple[dict, dict[str, list[int]]]:
    """The adapter's config and the shape of every tensor it saved (header only)."""
    from safetensors import safe_open

    adapter_dir = Path(adapter_dir)
    cfg_path, weights = adapter_dir / ADAPTER_CONFIG, adapter_dir / ADAPTER_WEIGHTS
    if not cfg_path.is_file():
        raise MergeError(f"{adapter_dir}: not a peft adapter (no {ADAPTER_CONFIG})")
    if not weights.is_file():
        raise MergeError(f"{adapter_dir}: no {ADAPTER_WEIGHTS} (only safetensors adapters merge)")
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    if cfg.get("peft_type") != "LORA":
        raise MergeError(f"{adapter_dir}: peft_type {cfg.get('peft_type')!r}, only LORA merges")
    with safe_open(str(weights), framework="pt") as fh:
        shapes = {key: list(fh.get_slice(key).get_shape()) for key in fh.keys()}  # noqa: SIM118
    return cfg, shapes


_PREFIX = "base_model.model."
_LORA_KEY = re.compile(
    r"^(?P<module>.+)\.(?P<kind>lora_A|lora_B|lora_embedding_A|lora_embedding_B|"
    r"lora_magnitude_vector)(?:\.(?:weight|bias))?$"
)


def _expected(kind: str, module) -> tuple[int, int, str] | None:
    """(dim, size, what) the tensor `kind` must have for this base module, or
    None when the module type is not one whose shapes are known here."""
    if isinstance(module, torch.nn.Linear):
        if kind == "lora_A":
            return 1, module.in_features, "in_features"
        if kind in ("lora_B", "lora_magnitude_vector"):  # weight [out, r], bias [out]
            return 0, module.out_features, "out_features"
    if isinstance(module, torch.nn.Embedding):
        if kind == "lora_embedding_A":
            return 1, module.num_embeddings, "num_embeddings"
        if kind in ("lora_embedding_B", "lora_magnitude_vector"):
            return 0, module.embedding_dim, "embedding_dim"
    return None


def _in_model_order(shapes: dict[str, list[int]], modules: dict) -> list[tuple[str, list[int]]]:
    """(name without peft's prefix, shape), in the base's layer order rather
    than the file's alphabetical one, so the first problem named is the first
    layer a reader would look at."""
    order = {name: i for i, name in enumerate(modules)}

    def rank(item):
        name = item[0]
        match = _LORA_KEY.match(name)
        owner = match["module"] if match else name.replace(".base_layer.", ".").rpartition(".")[0]
        return order.get(owner, len(order)), name

    return sorted(((k.removeprefix(_PREFIX), v) for k, v in shapes.items()), key=rank)


def adapter_mismatches(shapes: dict[str, list[int]], modules: dict, params: dict) -> list[str]:
    """What in the adapter does not fit the base, one phrase each (pure).

    `modules`: the base's named modules; `params`: its parameter shapes. LoRA
    tensors are checked against the layer they attach to; other saved tensors
    (modules_to_save, resized embeddings) against the base parameter they
    replace, which is where a different vocabulary shows."""
    problems = []
    for name, shape in _in_model_order(shapes, modules):
        match = _LORA_KEY.match(name)
        if match:
            module_name, kind = match["module"], match["kind"]
            if module_name not in modules:
                problems.append(f"adapter has {kind} for {module_name}, "
                                "which the base does not have")
                continue
            expected = _expected(kind, modules[module_name])
            if expected and (len(shape) <= expected[0] or shape[expected[0]] != expected[1]):
                _, size, what = expected
                problems.append(f"adapter expects {kind} of shape {shape} for {module_name}, "
                                f"base has {what} {size}")
            continue
        param = name.replace(".base_layer.", ".")
        if param not in params:
            problems.append(f"adapter saves {param}, which the base does not have")
        elif list(params[param]) != shape:
            problems.append(f"adapter's {param} has shape {shape}, base has {list(params[param])}")
    return problems


def check_adapter(base_dir: Path, adapter_dir: Path, trust_remote_code: bool = False) -> dict:
    """One-line MergeErrors for a quantised base or an adapter that does not fit
    it; the base is built on the meta device, so no weights are read. Returns
    the adapter config."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    quant = quantization_of(base_dir)
    if quant:
        raise MergeError(f"{base_dir}: the base is quantised ({quant}); merge into the "
                         "full-precision base (bf16/fp32), since rounding the merged weights "
                         "to 4 or 8 bits silently loses much of the adapter")
    cfg, shapes = read_adapter(adapter_dir)
    config = AutoConfig.from_pretrained(base_dir, trust_remote_code=trust_remote_code)
    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    modules = dict(model.named_modules())
    params = {name: tuple(p.shape) for name, p in model.named_parameters()}
    problems = adapter_mismatches(shapes, modules, params)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise MergeError(f"{adapter_dir}: does not fit {base_dir}: {problems[0]}{more}")
    return cfg


def base_name_mismatch(adapter_cfg: dict, base_dir: Path) -> str | None:
    """A warning text when the adapter names another base. Only a warning:
    directories move between training and merging, so the recorded path is a
    hint, and the shape check above is what decides."""
    recorded = adapter_cfg.get("base_model_name_or_path")
    if not recorded:
        return None
    here = str(base_dir)
    if recorded == here or Path(recorded).name == Path(here).name:
        return None
    return f"adapter was trained on {recorded!r}, merging into {here!r}"


# --- the check ----------------------------------------------------------------------


def _logits(model, ids: Sequence[int]) -> torch.Tensor:
    device = next(model.parameters()).device
    with torch.inference_mode():
        out = model(input_ids=torch.tensor([list(ids)], device=device))
    return out.logits[0].float().cpu()


def max_abs_diff(reference: Sequence[torch.Tensor], other: Sequence[torch.Tensor]) -> float:
    """Largest |difference| over all prompts and positions; inf when any is non-finite."""
    worst = 0.0
    for ref, got in zip(reference, other, strict=True):
        diff = (ref - got).abs()
        if not torch.isfinite(diff).all():
            return float("inf")
        worst = max(worst, float(diff.max()))
    return worst


def check_merge(reference: Sequence[torch.Tensor], merged: Sequence[torch.Tensor],
                dtype: str) -> dict:
    """Compare merged logits with the unmerged base+adapter logits; raise
    MergeCheckError beyond TOLERANCES[dtype], else return the numbers."""
    tol = TOLERANCES[dtype]
    scale = max(float(r.abs().max()) for r in reference)
    limit = tol.limit(scale)
    diff = max_abs_diff(reference, merged)
    if not diff <= limit:
        hint = " (if bf16 rounding is the cause, merge with dtype fp32)" if dtype != "fp32" else ""
        raise MergeCheckError(f"merged model differs from base+adapter by {diff:.3g} on logits, "
                              f"above the {dtype} tolerance {limit:.3g}; nothing was written{hint}")
    return {"max_abs_diff": diff, "tolerance": limit, "logit_scale": scale,
            "tolerance_rule": f"{tol.atol:g} + {tol.rtol:g} * max|logit|"}


def peft_merge(peft_model):
    """The merge the pipeline uses: peft's merge_and_unload, refusing NaNs."""
    return peft_model.merge_and_unload(safe_merge=True)


def _check_inputs(check_inputs: Sequence[Sequence[int]], vocab: int) -> None:
    if not check_inputs or any(len(ids) == 0 for ids in check_inputs):
        raise MergeError("merge needs at least one non-empty check input (token ids)")
    for i, ids in enumerate(check_inputs):
        bad = [t for t in ids if not 0 <= t < vocab]
        if bad:
            raise MergeError(f"check input {i} has token id {bad[0]} "
                             f"outside the vocabulary ({vocab})")


def merge_adapter(base_dir, adapter_dir, out_dir, *, check_inputs: list[list[int]],
                  dtype: str = "fp32", template: str = "chatml", trust_remote_code: bool = False,
                  merge_fn: Callable = peft_merge) -> dict:
    """Merge a LoRA adapter into its full-precision base and write the result.

    Arguments:
        base_dir: the base model (directory or hub id), not quantised.
        adapter_dir: a peft LoRA adapter (adapter_config.json + safetensors).
        out_dir: where the merged model goes; written atomically, absent on failure.
        check_inputs: token-id lists (a few fixed val prompts; memory is tokens x vocab
            x 4 bytes each) on which merged and unmerged logits must agree.
        dtype: fp32 or bf16, the precision the base loads and merges in (see TOLERANCES).
        template: chat template to save when the tokenizer ships none.
        merge_fn: PeftModel -> merged model; peft_merge unless a test injects a faulty one.

    Returns stats: max_abs_diff, tolerance, dtype, adapter_effect (how far the
    adapter moves logits: the check's margin), parameters, bytes_on_disk.
    """
    from peft import PeftModel

    if dtype not in TOLERANCES:
        raise MergeError(f"merge dtype {dtype!r}: use one of {sorted(TOLERANCES)}")
    base_dir = resolve_model_path(str(base_dir))
    adapter_dir = Path(adapter_dir)
    adapter_cfg = check_adapter(base_dir, adapter_dir, trust_remote_code)
    mismatch = base_name_mismatch(adapter_cfg, base_dir)
    if mismatch:
        log.warning("merge: %s (shapes fit, going on)", mismatch)

    base = load_model(base_dir, quantization="none", compute_dtype=dtype,
                      trust_remote_code=trust_remote_code)
    _check_inputs(check_inputs, base.get_input_embeddings().num_embeddings)
    model = PeftModel.from_pretrained(base, adapter_dir, is_trainable=False)
    model.eval()  # no LoRA dropout: the reference must be deterministic
    reference = [_logits(model, ids) for ids in check_inputs]
    with model.disable_adapter():
        effect = max_abs_diff(reference, [_logits(model, ids) for ids in check_inputs])
    merged = merge_fn(model)
    result = check_merge(reference, [_logits(merged, ids) for ids in check_inputs], dtype)
    if effect <= result["tolerance"]:
        log.warning("merge: the adapter moves logits by at most %.3g, within the tolerance %.3g: "
                    "the check cannot tell this merge from no merge", effect, result["tolerance"])

    tok_src = adapter_dir if (adapter_dir / "tokenizer_config.json").is_file() else base_dir
    tokenizer = load_tokenizer(tok_src, template, trust_remote_code=trust_remote_code)
    with atomic_dir(Path(out_dir)) as tmp:
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        size = bytes_on_disk(tmp)
    return {
        **result,
        "dtype": dtype,
        "adapter_effect": effect,
        "check_inputs": len(check_inputs),
        "check_tokens": sum(len(ids) for ids in check_inputs),
        "parameters": sum(p.numel() for p in merged.parameters()),
        "bytes_on_disk": size,
        "base_name_mismatch": mismatch,
    }


def main(args) -> None:
    from danlu.stage import run_stage

    params = stage_params(args, "export")
    export = from_mapping(ExportConfig, params)
    model_path = resolve_model_path(args.model, args.revision)
    tokenizer = load_tokenizer(Path(args.adapter), args.template, args.trust_remote_code)
    prompts = _check_prompts(args.val, tokenizer, export.merge_check_prompts)
    out = Path(args.out)
    adapter_files = sorted(str(p) for p in Path(args.adapter).glob("adapter_*"))
    run_stage(
        "merge", {"export": params, **model_facts(args, model_path)},
        lambda run: merge_adapter(model_path, Path(args.adapter), out, check_inputs=prompts,
                                  dtype=export.merge_dtype, template=args.template,
                                  trust_remote_code=args.trust_remote_code),
        inputs=[*model_inputs(args.model), *adapter_files, args.val, *args.code],
        outputs=[out], manifest_path=Path(args.manifest),
    )


def _check_prompts(val_path: str, tokenizer, n: int, max_tokens: int = 128) -> list[list[int]]:
    """Token ids of the first n val records' prompts, for the merge check."""
    from danlu.data.records import read_jsonl

    prompts = []
    for record in read_jsonl(val_path):
        text = tokenizer.apply_chat_template(record["messages"][:-1], add_generation_prompt=True,
                                             tokenize=False)
        prompts.append(tokenizer(text, add_special_tokens=False)["input_ids"][:max_tokens])
        if len(prompts) == n:
            break
    return prompts
