"""Data commands: clean, combine, the demo model and leak, dedup and split."""

from __future__ import annotations

import json
import time
from pathlib import Path

from danlu.commands.common import UsageError, stage_params
from danlu.config import DatasetSpec, from_mapping


def cmd_clean(args) -> None:
    from danlu.config import CleanConfig
    from danlu.data.clean import clean_files
    from danlu.stage import run_stage

    params = stage_params(args, "clean")
    cfg = from_mapping(CleanConfig, params)
    # How the workflow lays out jobs changes no record: not a parameter of this job.
    params = {k: v for k, v in params.items() if k != "shards"}
    if args.dataset:
        specs = [_dataset_spec(json.loads(args.dataset))]
        # A file entry is also given as INPUT (the rule's input); a hub entry has none.
        given = [Path(p) for p in args.inputs]
        if given != ([Path(specs[0].path)] if specs[0].path else []):
            raise UsageError("--dataset describes a file given as the one INPUT, "
                             "or a hub dataset (hf_hub_url) with no INPUT")
    elif args.inputs:
        specs = [_dataset_spec({"name": Path(p).name.split(".")[0], "path": p,
                                "format": args.format, "encoding": args.encoding})
                 for p in args.inputs]
    else:
        raise UsageError("give INPUT files, or --dataset with a dataset entry as JSON")
    shard = _shard(args, specs)
    out = Path(args.out)
    outputs = [out / n for n in ("records.jsonl", "rejects.jsonl", "stats.json")]
    record = {"clean": params, "datasets": [s.__dict__ for s in specs]}
    if shard is not None:
        record.update(shard=shard.index, shards=shard.count)
    files = [s.path for s in specs if s.path]
    stats = run_stage(
        "clean", record, lambda run: clean_files(specs, cfg, out, shard),
        inputs=[*files, *args.code], outputs=outputs,
        manifest_path=out / "manifest.json",
        datasets=[(p, "raw") for p in files] + [(str(outputs[0].as_posix()), "cleaned")],
    )
    print(f"clean: {stats['records_in']} in, {stats['records_kept']} kept, "
          f"{stats['records_rejected']} rejected {stats['rejected_by_reason']}, "
          f"PII masked {stats['pii_masked_by_type']}")
    for source, facts in stats["files"].items():
        if "rows_sha256" in facts:
            print(f"clean: {source} at revision {facts['revision'] or '(default)'}"
                  f"{'' if facts['revision_is_commit'] else ' (not resolved to a commit)'}: "
                  f"{facts['rows']} rows, sha256 {facts['rows_sha256']}")


def _shard(args, specs: list[DatasetSpec]):
    """The record range `--shard`/`--shards` asks for (None: the whole input)."""
    from danlu.data.shards import Shard

    if args.shards == 1 and args.shard == 0:
        return None
    if not 0 <= args.shard < args.shards:
        raise UsageError(f"--shard {args.shard} --shards {args.shards}: need 0 <= shard < shards")
    if len(specs) != 1 or specs[0].path is None:
        raise UsageError("--shards splits one data file: give one INPUT (a hub dataset is "
                         "cleaned whole)")
    return Shard(args.shard, args.shards)


def _dataset_spec(entry: dict) -> DatasetSpec:
    """A `datasets:` entry checked against the schema, its defaults filled in (by
    hand, `--dataset '{"name": "x", "hf_hub_url": "owner/name"}'` is enough)."""
    from danlu.config import validate_config

    return from_mapping(DatasetSpec, validate_config({"datasets": [entry]})["datasets"][0])


def cmd_combine(args) -> None:
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


def cmd_demo_model(args) -> None:
    from danlu.model.demo import DemoModelShape, build_demo_model
    from danlu.outputs import atomic_dir
    from danlu.stage import run_stage

    params = stage_params(args, "demo")
    shape = DemoModelShape(**params["model"])
    out = Path(args.out)

    def work(run):
        with atomic_dir(out) as tmp:
            return build_demo_model(tmp, Path(args.corpus), shape)

    run_stage("demo_model", params, work, inputs=[args.corpus, *args.code], outputs=[out],
              manifest_path=Path(args.manifest))


def benchmark_source(args, *, default_hub: bool):
    """The benchmarks a command reads (`--benchmarks`, `--benchmark-hub`), said in its log."""
    from danlu.evaluation.benchmarks import find_source, parse_hub_ids

    source, why = find_source(args.benchmarks, parse_hub_ids(args.benchmark_hub),
                              default_hub=default_hub)
    print(f"{args.command}: benchmarks: {why}")
    return source


def cmd_demo_leak(args) -> None:
    from danlu.data.records import dumps
    from danlu.model.demo import benchmark_leak_records
    from danlu.outputs import atomic_outputs

    out = Path(args.out)
    source = benchmark_source(args, default_hub=True)
    with atomic_outputs([out]) as (tmp,):
        records = benchmark_leak_records(source)
        tmp.write_text("".join(dumps(r) for r in records), encoding="utf-8")
    print(f"demo-leak: {len(records)} benchmark questions planted in {out}")


def _records_input(path: str) -> Path:
    """A canonical records.jsonl that exists, else exit 2 (the reader reports
    one that does not decode)."""
    from danlu.data.readers import InputError

    p = Path(path)
    if not p.is_file():
        raise InputError(p, "no such file")
    return p


def cmd_dedup_signatures(args) -> None:
    from danlu.config import DedupConfig
    from danlu.data.dedup import shard_signatures
    from danlu.stage import run_stage

    params = stage_params(args, "dedup")
    cfg = from_mapping(DedupConfig, params)
    source = _records_input(args.input)
    prefix = Path(args.out)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def work(run):
        block = shard_signatures(source, cfg, args.shard, args.shards)
        written.extend(block.save(prefix))
        return {"records": len(block.lines), "shard": args.shard, "shards": args.shards}

    run_stage("dedup_signatures", {"dedup": params, "shard": args.shard, "shards": args.shards},
              work, inputs=[source, *args.code], outputs=lambda: written,
              manifest_path=Path(f"{prefix}.manifest.json"), log_stats=False)


def cmd_dedup(args) -> None:
    from danlu.config import DedupConfig
    from danlu.data.dedup import (
        Block,
        ContaminationIndex,
        benchmark_items,
        dedup_file,
        shard_signatures,
    )
    from danlu.stage import run_stage

    params = stage_params(args, "dedup")
    cfg = from_mapping(DedupConfig, params)
    source, out = _records_input(args.input), Path(args.out)
    prefixes = [Path(p) for p in args.signatures]
    shard_files = [Path(f"{p}.{n}.npy") for p in prefixes for n in ("lines", "sig", "sha")]
    benchmarks = None
    if cfg.decontaminate and cfg.contamination_benchmarks:
        # By hand, no benchmarks means no decontamination (said in the log), not a
        # download: the hub is read only when --benchmark-hub names it.
        benchmarks = benchmark_source(args, default_hub=False)
        if benchmarks is None:
            print("dedup: decontamination SKIPPED: give --benchmarks DIR or "
                  "--benchmark-hub NAME=HUB_ID to remove benchmark questions")

    def work(run):
        shards = args.shards or cfg.shards
        if prefixes:  # signed by the workflow's shard jobs
            block = Block.load_shards(prefixes)
        elif shards > 1:  # as those jobs would, in this process (the same outputs)
            block = Block.concat([shard_signatures(source, cfg, i, shards) for i in range(shards)])
        else:  # signed by dedup_file's first pass, which also decontaminates
            block = None
        index = None
        if benchmarks is not None:
            index = ContaminationIndex(benchmark_items(benchmarks, cfg.contamination_benchmarks),
                                       cfg)
        return dedup_file(source, block, cfg, out, index)

    names = ("records.jsonl", "removed.jsonl", "clusters.jsonl", "stats.json", "clusters.png")
    stats = run_stage(
        "dedup", {"dedup": params, "benchmarks": _describe(benchmarks, cfg)}, work,
        inputs=[source, *shard_files, *args.code], outputs=[out / n for n in names],
        manifest_path=out / "manifest.json", artifacts=[out / "clusters.png"],
        datasets=[(source.as_posix(), "cleaned"), ((out / "records.jsonl").as_posix(), "deduplicated")],
    )
    print(f"dedup: {stats['records_in']} in, {stats['records_kept']} kept, "
          f"removed {stats['removed_by_reason']}")


def _describe(benchmarks, cfg) -> str | None:
    """What the manifest records as the decontamination source (None: skipped)."""
    return benchmarks.describe(cfg.contamination_benchmarks) if benchmarks else None


def cmd_split(args) -> None:
    from danlu.config import DedupConfig
    from danlu.data.dedup import split_file
    from danlu.stage import run_stage

    params = stage_params(args, "dedup")
    cfg = from_mapping(DedupConfig, params)
    source, out = _records_input(args.input), Path(args.out)
    names = ("train.jsonl", "val.jsonl", "split_stats.json")
    stats = run_stage(
        "split", {"dedup": params, "seed": args.seed},
        lambda run: split_file(source, cfg, args.seed, out),
        inputs=[source, *args.code], outputs=[out / n for n in names],
        manifest_path=out / "split.manifest.json",
        datasets=[((out / "train.jsonl").as_posix(), "train"), ((out / "val.jsonl").as_posix(), "val")],
    )
    print(f"split: {stats['train']} train, {stats['val']} val in {stats['groups']} groups")
