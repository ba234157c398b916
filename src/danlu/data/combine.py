"""TODO"""

from __future__ import annotations

import time
from pathlib import Path


def main(args) -> None:
    from danlu.data.clean import combine_parts
    from danlu.stage import run_stage

    parts = [Path(p) for p in args.parts]
    out = Path(args.out)
    outputs = [out / n for n in ("records.jsonl", "rejects.jsonl", "stats.json")]
    inputs = [p / n for p in parts for n in ("records.jsonl", "rejects.jsonl", "stats.json")]
    def work(run):
        # A byte copy at disk speed, but of the whole corpus: say how fast.
        started = time.monotonic()
        stats = combine_parts(parts, out)
        took = time.monotonic() - started
        size = sum(p.stat().st_size for p in outputs[:2])
        print(f"combine: {stats['records_in']:,} records, {size / 1e6:,.1f} MB in {took:.1f} s "
              f"({stats['records_in'] / max(took, 1e-9):,.0f} records/s)", flush=True)
        return stats

    stats = run_stage(
        "clean_combine", {"parts": [p.as_posix() for p in parts]}, work,
        inputs=inputs + args.code, outputs=outputs, manifest_path=out / "manifest.json",
        datasets=[(outputs[0].as_posix(), "cleaned")],
    )
    print(f"combine: {stats['records_in']} in, {stats['records_kept']} kept, "
          f"{stats['records_rejected']} rejected")
