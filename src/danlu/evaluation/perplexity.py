"""Val-set perplexity: exp of the mean negative log-likelihood of the answer
tokens, on the same tokenised, cut-to-cutoff examples training saw."""

from __future__ import annotations

import math

import torch


def perplexity(model, examples, batch_size: int = 8) -> dict:
    """`examples`: dicts with input_ids and labels (-100 = not scored). Runs
    each example alone in its row (padded batches, attention-masked)."""
    nll, tokens = 0.0, 0
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(examples), batch_size):
                batch = examples[start : start + batch_size]
                width = max(len(e["input_ids"]) for e in batch)
                ids = torch.zeros((len(batch), width), dtype=torch.long)
                labels = torch.full((len(batch), width), -100, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for row, e in enumerate(batch):
                    n = len(e["input_ids"])
                    ids[row, :n] = torch.tensor(e["input_ids"])
                    labels[row, :n] = torch.tensor(e["labels"])
                    mask[row, :n] = 1
                logits = model(input_ids=ids, attention_mask=mask).logits.float()
                shift_logits, shift_labels = logits[:, :-1], labels[:, 1:]
                scored = shift_labels != -100
                logp = torch.log_softmax(shift_logits[scored], dim=-1)
                nll -= logp.gather(1, shift_labels[scored].unsqueeze(1)).sum().item()
                tokens += int(scored.sum())
    finally:
        model.train(was_training)
    mean = nll / tokens if tokens else float("nan")
    return {"val_perplexity": math.exp(mean) if tokens else float("nan"),
            "val_nll_per_token": mean, "val_tokens": tokens, "val_examples": len(examples)}
