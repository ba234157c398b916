"""Combine: concatenate the per-file (or per-shard) clean outputs, one
Snakemake job each, in order, and add up their stats; the result equals
cleaning every file in one job."""

from __future__ import annotations

import json
import time
from pathlib import Path

from danlu.data.clean import CLEAN_FILES, new_stats, summarize
from danlu.errors import InputError
from danlu.outputs import atomic_outputs, write_json


def combine_parts(part_dirs: list[Path], out_dir: Path) -> dict:
    """Concatenate per-file (or per-shard) clean outputs, one Snakemake job
    each, in the given order and add up their stats; equal to cleaning all
    files at once."""
    stats = new_stats()
    with atomic_outputs([out_dir / n for n in CLEAN_FILES]) as (records_tmp, rejects_tmp, stats_tmp):
        for name, tmp in (("records.jsonl", records_tmp), ("rejects.jsonl", rejects_tmp)):
            with open(tmp, "wb") as out:
                for part in part_dirs:
                    with open(part / name, "rb") as fh:
                        while chunk := fh.read(1 << 20):
                            out.write(chunk)
        for part in part_dirs:
            sub = json.loads((part / "stats.json").read_text(encoding="utf-8"))
            _add_files(stats["files"], sub["files"])
            stats["rejected_by_reason"].update(sub["rejected_by_reason"])
            stats["pii_masked_by_type"].update(sub["pii_masked_by_type"])
        for source, facts in stats["files"].items():
            if facts["records_in"] == 0:  # every shard of it was empty
                raise InputError(source, "no records")
        summary = summarize(stats)
        write_json(stats_tmp, summary)
    return summary


def _add_files(files: dict, more: dict) -> None:
    """Merge a part's per-file stats; the shards of one file add up to it."""
    for source, facts in more.items():
        if source not in files:
            files[source] = dict(facts)
            continue
        for key in ("records_in", "records_kept"):
            files[source][key] += facts[key]


def main(args) -> None:
    from danlu.stage import run_stage

    parts = [Path(p) for p in args.parts]
    out = Path(args.out)
    outputs = [out / n for n in CLEAN_FILES]
    inputs = [p / n for p in parts for n in CLEAN_FILES]

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
