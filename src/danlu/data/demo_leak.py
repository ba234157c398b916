"""TODO"""

from __future__ import annotations

from pathlib import Path

from danlu.evaluation.benchmarks import benchmark_source


def main(args) -> None:
    from danlu.data.records import dumps
    from danlu.model.demo import benchmark_leak_records
    from danlu.outputs import atomic_outputs

    out = Path(args.out)
    source = benchmark_source(args, default_hub=True)
    with atomic_outputs([out]) as (tmp,):
        records = benchmark_leak_records(source)
        tmp.write_text("".join(dumps(r) for r in records), encoding="utf-8")
    print(f"demo-leak: {len(records)} benchmark questions planted in {out}")
