"""Every figure danlu draws (matplotlib, Agg). Labels are English so no CJK font
is needed; PNGs carry no timestamp, so identical data gives identical bytes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

_PNG_META = {"Software": None}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata=_PNG_META)
    _pyplot().close(fig)


def plot_lengths(lengths: Sequence[int], percentiles: Mapping[str, float], cutoff: int,
                 path: Path, title: str = "Token lengths (train)") -> None:
    """Histogram and CDF of token lengths, percentiles and the chosen cutoff marked."""
    plt = _pyplot()
    arr = np.sort(np.asarray(lengths))
    fig, (hist, cdf) = plt.subplots(1, 2, figsize=(11, 4))
    hist.hist(arr, bins=min(60, max(10, arr.size // 20)), color="#4c72b0")
    hist.set_xlabel("tokens per example")
    hist.set_ylabel("examples")
    cdf.plot(arr, np.arange(1, arr.size + 1) / arr.size, color="#4c72b0")
    cdf.set_xlabel("tokens per example")
    cdf.set_ylabel("share of examples ≤ x")
    for ax in (hist, cdf):
        for name, value in percentiles.items():
            ax.axvline(value, color="grey", linestyle=":", linewidth=1)
            ax.text(value, ax.get_ylim()[1] * 0.95, name, rotation=90, va="top", fontsize=8)
        ax.axvline(cutoff, color="#c44e52", linewidth=2, label=f"cutoff_len = {cutoff}")
    cdf.legend(loc="lower right")
    fig.suptitle(title)
    _save(fig, path)


def plot_histogram(counts: Mapping[int, int], path: Path, xlabel: str, title: str) -> None:
    """A bar chart of integer-keyed counts (e.g. duplicate-cluster sizes)."""
    plt = _pyplot()
    keys = sorted(counts)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar([str(k) for k in keys], [counts[k] for k in keys], color="#4c72b0")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    ax.set_yscale("log")
    ax.set_title(title)
    _save(fig, path)


def plot_loss(history: Sequence[Mapping], path: Path) -> None:
    """Training (and eval) loss by step, from the Trainer's log history."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    train = [(h["step"], h["loss"]) for h in history if "loss" in h]
    evals = [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h]
    if train:
        ax.plot(*zip(*train, strict=True), label="train loss", color="#4c72b0")
    if evals:
        ax.plot(*zip(*evals, strict=True), "o-", label="eval loss", color="#dd8452")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.legend()
    ax.set_title("Training loss")
    _save(fig, path)
