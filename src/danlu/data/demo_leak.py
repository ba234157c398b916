"""The demo's planted leak: alpaca records that copy benchmark questions, as
a careless scrape would, so decontamination has something to catch. They are
built at run time; the repository never holds benchmark text (non-commercial
licence)."""

from __future__ import annotations

from pathlib import Path

from danlu.evaluation.benchmarks import benchmark_source


def benchmark_leak_records(source, per_benchmark: int = 1) -> list[dict]:
    """Alpaca records that copy benchmark questions, as a careless scrape
    would: the demo plants them so decontamination has something to catch.
    They are built at run time from `source` (a local copy's directory, or a
    `benchmarks.Source`); the repository never holds benchmark text
    (non-commercial licence)."""
    from danlu.evaluation.benchmarks import Source, load_benchmark, load_subjects

    if not isinstance(source, Source):
        source = Source(Path(source))
    records = []
    for name in ("ceval", "cmmlu"):
        # Only the subjects used are read (each is a download from the hub).
        first = sorted(load_subjects(name, source.root))[:per_benchmark]
        for data in load_benchmark(name, source.root, subjects=first, hub_id=source.hub_id(name)):
            q = data.questions[0]
            options = "\n".join(f"{label}、{text}" for label, text in zip("ABCD", q.options, strict=True))
            records.append({"instruction": f"{q.question}\n{options}", "input": "",
                            "output": f"答案：{q.answer}"})
    return records


def main(args) -> None:
    from danlu.data.records import dumps
    from danlu.outputs import atomic_outputs

    out = Path(args.out)
    source = benchmark_source(args, default_hub=True)
    with atomic_outputs([out]) as (tmp,):
        records = benchmark_leak_records(source)
        tmp.write_text("".join(dumps(r) for r in records), encoding="utf-8")
    print(f"demo-leak: {len(records)} benchmark questions planted in {out}")
