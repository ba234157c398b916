"""Data commands: clean, combine, the demo model and leak, dedup and split."""

from __future__ import annotations

import json
from pathlib import Path

from danlu.commands.common import UsageError, stage_params
from danlu.config import DatasetSpec, from_mapping


def cmd_clean(args) -> None:
    from danlu.clean import clean_files
    from danlu.config import CleanConfig
    from danlu.stage import run_stage

    params = stage_params(args, "clean")
    cfg = from_mapping(CleanConfig, params)
    if args.dataset:
        specs = [from_mapping(DatasetSpec, json.loads(args.dataset))]
        if len(args.inputs) != 1 or Path(args.inputs[0]) != Path(specs[0].path):
            raise UsageError("--dataset describes exactly one input, given as INPUT")
    else:
        specs = [DatasetSpec(name=Path(p).name.split(".")[0], path=p, format=args.format,
                             columns={}, tags={}, encoding=args.encoding) for p in args.inputs]
    out = Path(args.out)
    outputs = [out / n for n in ("records.jsonl", "rejects.jsonl", "stats.json")]
    record = {"clean": params, "datasets": [s.__dict__ for s in specs]}
    stats = run_stage(
        "clean", record, lambda run: clean_files(specs, cfg, out),
        inputs=[*(s.path for s in specs), *args.code], outputs=outputs,
        manifest_path=out / "manifest.json",
        datasets=[(s.path, "raw") for s in specs] + [(str(outputs[0].as_posix()), "cleaned")],
    )
    print(f"clean: {stats['records_in']} in, {stats['records_kept']} kept, "
          f"{stats['records_rejected']} rejected {stats['rejected_by_reason']}, "
          f"PII masked {stats['pii_masked_by_type']}")


def cmd_combine(args) -> None:
    from danlu.clean import combine_parts
    from danlu.stage import run_stage

    parts = [Path(p) for p in args.parts]
    out = Path(args.out)
    outputs = [out / n for n in ("records.jsonl", "rejects.jsonl", "stats.json")]
    inputs = [p / n for p in parts for n in ("records.jsonl", "rejects.jsonl", "stats.json")]
    stats = run_stage(
        "clean_combine", {"parts": [p.as_posix() for p in parts]},
        lambda run: combine_parts(parts, out),
        inputs=inputs + args.code, outputs=outputs, manifest_path=out / "manifest.json",
        datasets=[(outputs[0].as_posix(), "cleaned")],
    )
    print(f"combine: {stats['records_in']} in, {stats['records_kept']} kept, "
          f"{stats['records_rejected']} rejected")


def cmd_demo_model(args) -> None:
    from danlu.demo import DemoModelShape, build_demo_model
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


def cmd_demo_leak(args) -> None:
    from danlu.demo import benchmark_leak_records
    from danlu.outputs import atomic_outputs
    from danlu.records import dumps

    out = Path(args.out)
    with atomic_outputs([out]) as (tmp,):
        records = benchmark_leak_records(Path(args.benchmarks))
        tmp.write_text("".join(dumps(r) for r in records), encoding="utf-8")
    print(f"demo-leak: {len(records)} benchmark questions planted in {out}")


def _records_input(path: str) -> Path:
    """A canonical records.jsonl that exists, else exit 2 (the reader reports
    one that does not decode)."""
    from danlu.readers import InputError

    p = Path(path)
    if not p.is_file():
        raise InputError(p, "no such file")
    return p


def cmd_dedup_signatures(args) -> None:
    from danlu.config import DedupConfig
    from danlu.dedup import shard_signatures
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
    from danlu.dedup import Block, ContaminationIndex, benchmark_items, dedup_file, shard_signatures
    from danlu.stage import run_stage

    params = stage_params(args, "dedup")
    cfg = from_mapping(DedupConfig, params)
    source, out = _records_input(args.input), Path(args.out)
    prefixes = [Path(p) for p in args.signatures]
    shard_files = [Path(f"{p}.{n}.npy") for p in prefixes for n in ("lines", "sig", "sha")]

    def work(run):
        if prefixes:
            block = Block.concat([Block.load(p) for p in prefixes])
        else:
            shards = args.shards or cfg.shards
            block = Block.concat([shard_signatures(source, cfg, i, shards) for i in range(shards)])
        index = None
        if cfg.decontaminate and cfg.contamination_benchmarks:
            index = ContaminationIndex(benchmark_items(Path(args.benchmarks),
                                                       cfg.contamination_benchmarks), cfg)
        return dedup_file(source, block, cfg, out, index)

    names = ("records.jsonl", "removed.jsonl", "clusters.jsonl", "stats.json", "clusters.png")
    stats = run_stage(
        "dedup", {"dedup": params, "benchmarks": args.benchmarks}, work,
        inputs=[source, *shard_files, *args.code], outputs=[out / n for n in names],
        manifest_path=out / "manifest.json", artifacts=[out / "clusters.png"],
        datasets=[(source.as_posix(), "cleaned"), ((out / "records.jsonl").as_posix(), "deduplicated")],
    )
    print(f"dedup: {stats['records_in']} in, {stats['records_kept']} kept, "
          f"removed {stats['removed_by_reason']}")


def cmd_split(args) -> None:
    from danlu.config import DedupConfig
    from danlu.dedup import split_file
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
