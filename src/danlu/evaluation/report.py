"""The evaluate stage's files: per-question predictions, per-subject and per-category
accuracy, a summary, and a comparison of several models.

Published C-Eval/CMMLU numbers mix two averages: lm-eval weights every question
equally (micro), the official CMMLU code and OpenCompass weight every subject
equally (macro). Every table here gives both, labelled. All files are written
with sorted keys, fixed float rounding and no timestamps, so a rerun on the same
model is byte-identical and the manifest's hashes only change when results do.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

AVERAGES = {
    "micro_accuracy": "mean over questions (lm-eval's group score, weighted by size)",
    "macro_accuracy": "mean over subjects (official CMMLU code, OpenCompass)",
}
RANDOM_GUESS = 0.25
DIGITS = 6  # rounding of every float written: stable across BLAS thread counts


@dataclass(frozen=True)
class QuestionResult:
    benchmark: str
    subject: str
    category: str
    overlays: tuple[str, ...]  # extra groups the subject also counts in ("China specific")
    id: str
    answer: str
    scores: tuple[float, ...] | None  # A-D; None when the answer is not one of A-D (skipped)
    prediction: str | None
    shots: int  # shots actually in the prompt (fewer when the context was too short)
    truncated: bool  # even the zero-shot prompt was too long and was cut from the left

    @property
    def skipped(self) -> bool:
        return self.scores is None


def write_outputs(
    results: Sequence[QuestionResult], facts: Mapping, out_dir: Path, model_digest: str
) -> dict:
    """Write predictions.jsonl, subjects.csv, categories.csv, summary.json; return the summary."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_predictions(results, out_dir / "predictions.jsonl")
    subjects = subject_table(results, facts["num_fewshot"])
    categories = category_table(subjects)
    _write_csv(subjects, out_dir / "subjects.csv")
    _write_csv(categories, out_dir / "categories.csv")
    summary = summarise(subjects, categories, facts, model_digest)
    (out_dir / "summary.json").write_text(_dump(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def write_predictions(results: Iterable[QuestionResult], path: Path) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        for r in results:
            scores = None if r.scores is None else [round(s, DIGITS) for s in r.scores]
            record = {
                "benchmark": r.benchmark,
                "subject": r.subject,
                "id": r.id,
                "scores": scores,
                "prediction": r.prediction,
                "answer": r.answer,
                "shots": r.shots,
            }
            fh.write(_dump(record) + "\n")


def subject_table(results: Sequence[QuestionResult], num_fewshot: int) -> pd.DataFrame:
    """One row per (benchmark, subject): scored questions, correct, accuracy, and the
    questions skipped, shown fewer shots, or truncated."""
    rows = [
        {
            "benchmark": r.benchmark,
            "subject": r.subject,
            "category": r.category,
            "overlays": ";".join(r.overlays),
            "scored": int(not r.skipped),
            "correct": int(not r.skipped and r.prediction == r.answer),
            "skipped": int(r.skipped),
            "shots_dropped": int(not r.skipped and r.shots < num_fewshot),
            "truncated": int(r.truncated),
        }
        for r in results
    ]
    keys = ["benchmark", "subject", "category", "overlays"]
    columns = [*keys, "questions", "correct", "accuracy", "skipped", "shots_dropped", "truncated"]
    if not rows:
        return pd.DataFrame(columns=columns)
    table = pd.DataFrame(rows).groupby(keys, sort=True, as_index=False).sum()
    table = table.rename(columns={"scored": "questions"})
    scored = table["questions"].where(table["questions"] > 0)
    table["accuracy"] = (table["correct"] / scored).round(DIGITS)
    return table[columns]


def category_table(subjects: pd.DataFrame) -> pd.DataFrame:
    """Per benchmark and group (each category, each overlay, and "overall"): micro and
    macro accuracy. Subjects with no scored question do not enter the macro mean."""
    rows = []
    for benchmark, table in subjects.groupby("benchmark", sort=True):
        groups: dict[str, list[int]] = {}
        for i, row in table.iterrows():
            for group in [row["category"], *filter(None, row["overlays"].split(";"))]:
                groups.setdefault(group, []).append(i)
        groups = dict(sorted(groups.items()))
        groups["overall"] = list(table.index)
        for group, members in groups.items():
            part = table.loc[members]
            scored = part[part["questions"] > 0]
            questions = int(part["questions"].sum())
            rows.append(
                {
                    "benchmark": benchmark,
                    "category": group,
                    "subjects": len(part),
                    "questions": questions,
                    "correct": int(part["correct"].sum()),
                    "micro_accuracy": round(part["correct"].sum() / questions, DIGITS)
                    if questions
                    else None,
                    "macro_accuracy": round(scored["accuracy"].mean(), DIGITS)
                    if len(scored)
                    else None,
                }
            )
    return pd.DataFrame(
        rows,
        columns=[
            "benchmark",
            "category",
            "subjects",
            "questions",
            "correct",
            "micro_accuracy",
            "macro_accuracy",
        ],
    )


def summarise(
    subjects: pd.DataFrame, categories: pd.DataFrame, facts: Mapping, model_digest: str
) -> dict:
    benchmarks = {}
    for benchmark, cats in categories.groupby("benchmark", sort=True):
        subs = subjects[subjects["benchmark"] == benchmark]
        overall = cats[cats["category"] == "overall"].iloc[0]
        split, shot_split = facts["splits"][benchmark]
        benchmarks[benchmark] = {
            "split": split,
            "shot_split": shot_split,
            "shots": facts["num_fewshot"],
            "scoring": facts["scoring"],
            "subjects": int(len(subs)),
            "questions": int(overall["questions"]),
            "correct": int(overall["correct"]),
            "skipped": int(subs["skipped"].sum()),
            "shots_dropped": int(subs["shots_dropped"].sum()),
            "truncated": int(subs["truncated"].sum()),
            "micro_accuracy": _number(overall["micro_accuracy"]),
            "macro_accuracy": _number(overall["macro_accuracy"]),
            "categories": {
                row["category"]: {
                    "subjects": int(row["subjects"]),
                    "questions": int(row["questions"]),
                    "micro_accuracy": _number(row["micro_accuracy"]),
                    "macro_accuracy": _number(row["macro_accuracy"]),
                }
                for _, row in cats.iterrows()
                if row["category"] != "overall"
            },
        }
    return {
        "model_digest": model_digest,
        "averages": AVERAGES,
        "settings": dict(facts),
        "benchmarks": benchmarks,
    }


def write_comparison(
    summaries: Mapping[str, Mapping],
    out_dir: Path,
    *,
    average: str = "micro_accuracy",
    model_facts: Mapping[str, Mapping] | None = None,
) -> dict[str, Path]:
    """compare.csv and compare.png from several models' summary.json contents
    (label -> summary, in the order the bars should appear). `model_facts`
    (label -> {size_mb, val_perplexity}) adds those columns and legend notes."""
    if average not in AVERAGES:
        raise ValueError(f"average must be one of {', '.join(AVERAGES)}, got {average!r}")
    rows = []
    for model, summary in summaries.items():
        for benchmark, b in sorted(summary["benchmarks"].items()):
            groups = {**dict(sorted(b["categories"].items())), "overall": b}
            for category, g in groups.items():
                rows.append(
                    {
                        "benchmark": benchmark,
                        "category": category,
                        "model": model,
                        "questions": g["questions"],
                        "micro_accuracy": g["micro_accuracy"],
                        "macro_accuracy": g["macro_accuracy"],
                    }
                )
    table = pd.DataFrame(
        rows,
        columns=["benchmark", "category", "model", "questions", "micro_accuracy", "macro_accuracy"],
    )
    facts = model_facts or {}
    for column in ("size_mb", "val_perplexity"):
        if any(column in f for f in facts.values()):
            table[column] = [facts.get(m, {}).get(column) for m in table["model"]]
    # Group the models' rows side by side: benchmark, then category ("overall" last),
    # models in the caller's order (a stable sort keeps it).
    last = table["category"] == "overall"
    table = table.assign(_last=last).sort_values(["benchmark", "_last", "category"], kind="stable")
    table = table.drop(columns="_last").reset_index(drop=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out_dir / "compare.csv", "png": out_dir / "compare.png",
             "html": out_dir / "compare.html"}
    _write_csv(table, paths["csv"])
    # The same table as a page: the Snakemake report shows HTML results inline.
    paths["html"].write_text(
        table.to_html(index=False, float_format=lambda v: f"{v:.4f}", border=0, na_rep=""),
        encoding="utf-8")
    labels = {m: _legend(m, facts.get(m, {})) for m in summaries}
    _plot_comparison(table, list(summaries), average, paths["png"], labels)
    return paths


def _legend(model: str, facts: Mapping) -> str:
    notes = [f"{facts['size_mb']:.1f} MB"] if facts.get("size_mb") is not None else []
    if facts.get("val_perplexity") is not None:
        notes.append(f"ppl {facts['val_perplexity']:.1f}")
    return f"{model} ({', '.join(notes)})" if notes else model


def _plot_comparison(
    table: pd.DataFrame, models: list[str], average: str, path: Path, labels: Mapping[str, str]
) -> None:
    # Figure without pyplot: the Agg canvas, no global state, safe in a worker process.
    from matplotlib.figure import Figure

    benchmarks = sorted(table["benchmark"].unique())
    fig = Figure(figsize=(7 * max(len(benchmarks), 1), 4.5))
    axes = fig.subplots(1, max(len(benchmarks), 1), squeeze=False)[0]
    width = 0.8 / max(len(models), 1)
    for ax, benchmark in zip(axes, benchmarks, strict=False):
        part = table[table["benchmark"] == benchmark]
        categories = list(dict.fromkeys(part["category"]))  # already ordered, overall last
        for m, model in enumerate(models):
            values = part[part["model"] == model].set_index("category")[average]
            heights = [float(values.get(c)) if pd.notna(values.get(c)) else 0.0 for c in categories]
            xs = [c + (m - (len(models) - 1) / 2) * width for c in range(len(categories))]
            ax.bar(xs, heights, width, label=labels.get(model, model))
        ax.axhline(
            RANDOM_GUESS, color="grey", linestyle="--", linewidth=1, label="random guess (25%)"
        )
        ax.set_xticks(range(len(categories)), categories, rotation=20, ha="right")
        ax.set_ylim(0, 1)
        ax.set_title(benchmark)
        ax.set_ylabel(f"accuracy ({average.split('_')[0]} average)")
        ax.legend(fontsize="small")
    fig.tight_layout()
    # No Software/date metadata, so the PNG is byte-identical across reruns.
    fig.savefig(path, format="png", dpi=100, metadata={"Software": None})


def _write_csv(table: pd.DataFrame, path: Path) -> None:
    table.to_csv(path, index=False, lineterminator="\n", float_format=f"%.{DIGITS}f")


def _number(value):
    return None if value is None or pd.isna(value) else round(float(value), DIGITS)


def _dump(obj, indent: int | None = None) -> str:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, indent=indent)


def main(args) -> None:
    from danlu.stage import run_stage

    summaries = {Path(p).parent.name: json.loads(Path(p).read_text(encoding="utf-8"))
                 for p in args.summaries}
    facts = {}
    for p in args.summaries:
        model = json.loads((Path(p).parent / "model.json").read_text(encoding="utf-8"))
        facts[Path(p).parent.name] = {"size_mb": round(model["bytes"] / 2**20, 3),
                                      "val_perplexity": model.get("val_perplexity")}
    out = Path(args.out)
    run_stage("eval_compare", {"models": list(summaries)},
              lambda run: {k: str(v) for k, v in
                           write_comparison(summaries, out, model_facts=facts).items()},
              inputs=[*args.summaries, *args.code],
              outputs=[out / "compare.csv", out / "compare.png", out / "compare.html"],
              manifest_path=out / "compare.manifest.json", artifacts=[out / "compare.png"],
              log_stats=False)
