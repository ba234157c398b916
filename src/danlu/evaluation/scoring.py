"""Scores of given tokens at the end of token rows, from any causal LM.

A row is one model input; a target is (score slot, tokens): the tokens are scored
at the row's last len(tokens) positions, the way lm-eval's HFLM scores a
continuation (input = context + continuation[:-1]). The score is the summed
log-probability, or, for the official CMMLU method, the raw logit.

Speed without changing the numbers:
- the rows of one subject begin with the same header and shots; that common token
  prefix runs through the model once and its key/value cache is reused by every
  batch, so only the question tails are computed again;
- tails are sorted by length and right-padded, so a batch wastes little;
- only the positions that are scored get logits (`logits_to_keep`), which keeps
  memory at batch x positions x vocab instead of batch x length x vocab.
Works for any `AutoModelForCausalLM`, peft-wrapped or quantised, as given (no cast).
"""

from __future__ import annotations

import inspect

import torch


def score_rows(
    model,
    rows: list[list[int]],
    row_targets: list[list[tuple[int, list[int]]]],
    n_scores: int,
    *,
    batch_size: int,
    share_prefix: bool,
    log_softmax: bool,
    pad_id: int,
) -> torch.Tensor:
    """float64 tensor of `n_scores` slots, each the sum over its target's tokens."""
    scores = torch.zeros(n_scores, dtype=torch.float64)
    device = _input_device(model)
    keep_supported = _forward_accepts(model, "logits_to_keep")
    prefix = shared_prefix_len(rows, row_targets) if share_prefix and len(rows) > 1 else 0
    cache = _prefix_cache(model, rows[0][:prefix], device, keep_supported) if prefix else None
    prefix = prefix if cache is not None else 0
    cache_batch = 1
    order = sorted(range(len(rows)), key=lambda i: (-len(rows[i]), i))
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        tails = [rows[i][prefix:] for i in batch]
        width = len(tails[0])
        # Right padding under a causal mask never influences a real position, which is
        # also why lm-eval passes no attention mask.
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        for b, tail in enumerate(tails):
            ids[b, : len(tail)] = torch.tensor(tail, dtype=torch.long)
        b_idx, pos, tok, slot = [], [], [], []
        for b, i in enumerate(batch):
            end = len(tails[b])
            for target, tokens in row_targets[i]:
                b_idx += [b] * len(tokens)
                pos += range(end - len(tokens), end)
                tok += tokens
                slot += [target] * len(tokens)
        kwargs = {"use_cache": cache is not None}
        if keep_supported:
            keep = sorted(set(pos))
            kwargs["logits_to_keep"] = torch.tensor(keep, device=device)
            where = {p: k for k, p in enumerate(keep)}
            pos = [where[p] for p in pos]
        if cache is not None:
            if cache_batch == 1:
                cache.batch_repeat_interleave(len(batch))
            elif len(batch) < cache_batch:
                cache.batch_select_indices(torch.arange(len(batch), device=device))
            cache_batch = len(batch)
            kwargs["past_key_values"] = cache
        logits = model(input_ids=ids.to(device), **kwargs).logits
        at = logits.device
        picked = logits[torch.tensor(b_idx, device=at), torch.tensor(pos, device=at)]
        if log_softmax:
            picked = torch.log_softmax(picked, dim=-1)  # in the logits' dtype, as lm-eval
        values = picked.gather(1, torch.tensor(tok, device=at)[:, None])[:, 0]
        scores.index_add_(0, torch.tensor(slot), values.double().cpu())
        if cache is not None:
            cache.crop(-width)  # back to the shared prefix for the next batch
    return scores


def shared_prefix_len(rows: list[list[int]], row_targets) -> int:
    """Longest common token prefix of all rows, cut so that every scored position
    (the last len(tokens) of each row) stays in the part that is recomputed."""
    base = torch.tensor(rows[0])
    common = min(len(r) for r in rows)
    for row in rows[1:]:
        n = min(common, len(row))
        diff = torch.nonzero(torch.tensor(row[:n]) != base[:n])
        common = int(diff[0]) if len(diff) else n
    for row, targets in zip(rows, row_targets, strict=True):
        common = min(common, len(row) - max(len(t) for _, t in targets))
    return max(common, 0)


def _prefix_cache(model, prefix: list[int], device, keep_supported: bool):
    """The key/value cache of the shared prefix, or None when this model's cache
    cannot be reused across batches (no cache object, or sliding-window layers
    that would drop prefix entries)."""
    kwargs = {"logits_to_keep": 1} if keep_supported else {}
    out = model(input_ids=torch.tensor([prefix], device=device), use_cache=True, **kwargs)
    cache = getattr(out, "past_key_values", None)
    needed = ("crop", "batch_repeat_interleave", "batch_select_indices")
    if cache is None or not all(hasattr(cache, name) for name in needed):
        return None
    if any(getattr(layer, "is_sliding", False) for layer in getattr(cache, "layers", [])):
        return None
    return cache


def _forward_accepts(model, name: str) -> bool:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft
    return name in inspect.signature(base.forward).parameters


def _input_device(model) -> torch.device:
    try:
        return model.get_input_embeddings().weight.device
    except AttributeError:
        return next(model.parameters()).device
