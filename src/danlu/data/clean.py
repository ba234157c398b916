"""Clean: raw records in any supported format -> canonical, normalised,
PII-masked records. Every dropped record lands in rejects with a reason.

The pure part is `clean_record(raw, ...) -> (record | None, reject | None)`;
`clean_files` is the I/O shell that streams files and counts reasons, in the
manner of datatrove's filters.
"""

from __future__ import annotations

import functools
import json
import re
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

from danlu.config import (
    CleanConfig,
    DatasetSpec,
    from_mapping,
    stage_params,
)
from danlu.data.pii import mask_pii, mask_value
from danlu.data.readers import RawRow, read_dataset, read_rows
from danlu.data.records import (
    FieldMap,
    RecordError,
    check_structure,
    detect_format,
    dumps,
    to_messages,
)
from danlu.data.shards import Shard, read_shard
from danlu.data.templates import SPECIAL_TOKENS
from danlu.data.text import detect_language, non_text_share, normalize_text
from danlu.errors import InputError, UsageError
from danlu.outputs import atomic_outputs, write_json
from danlu.progress import Progress

# What a clean job (and combining clean jobs) writes, in this order.
CLEAN_FILES = ("records.jsonl", "rejects.jsonl", "stats.json")

# How many leading records decide a file's format when the config says `auto`.
_DETECT_SAMPLE = 200


@functools.lru_cache(maxsize=16)
def _any_of(tokens: tuple[str, ...]) -> Callable[[str], bool]:
    """A test for `any(t in text for t in tokens)`: one scan instead of one per token."""
    if not tokens:
        return lambda text: False
    pattern = re.compile("|".join(map(re.escape, tokens)))
    return lambda text: pattern.search(text) is not None


def clean_messages(messages: list[dict], cfg: CleanConfig, pii: Counter) -> list[dict]:
    """Normalise, check and mask one conversation; raise RecordError to reject."""
    out = []
    for i, msg in enumerate(messages):
        content = normalize_text(msg["content"])
        if not content:
            raise RecordError("empty_field", f"messages[{i}].content")
        out.append({"role": msg["role"], "content": content})
    check_structure(out)
    tokens = cfg.special_tokens if cfg.special_tokens is not None else SPECIAL_TOKENS
    has_token = _any_of(tuple(tokens))
    for i, msg in enumerate(out):
        if has_token(msg["content"]):
            raise RecordError("special_tokens", f"messages[{i}].content",
                              "chat-template control tokens inside text")
    if cfg.mask_pii:
        for msg in out:
            msg["content"], _ = mask_pii(msg["content"], cfg.pii_types, pii)
    text = "\n".join(m["content"] for m in out if m["role"] != "system")
    if len(text) < cfg.min_chars:
        raise RecordError("too_short", "messages", f"{len(text)} < min_chars {cfg.min_chars}")
    if len(text) > cfg.max_chars:
        raise RecordError("too_long", "messages", f"{len(text)} > max_chars {cfg.max_chars}")
    if non_text_share(text) > cfg.max_non_text_share:
        raise RecordError("non_text", "messages", "mostly encoded or binary content")
    if cfg.languages and detect_language(text) not in cfg.languages:
        raise RecordError("language", "messages", f"detected {detect_language(text)}")
    return out


def _location(file: str, loc: dict) -> dict:
    return {"file": file, **loc}


def _position(loc: dict) -> int:
    return loc.get("line") or loc.get("row") or loc["index"] + 1


def _reject(source: dict, err: RecordError, raw, raw_text, cfg: CleanConfig, pii: Counter) -> dict:
    """The reject line: the raw record (or unparseable text) with the reason,
    field and detail. Rejects are an audit trail that outlives the run, so
    they hold no more than records.jsonl would: whenever mask_pii is on, the
    record, its keys and numbers, and the field and detail texts (which may
    quote a value, e.g. an unknown role) are masked with the same types.
    Masking counts go to `pii` too: they were found."""
    types = cfg.pii_types if cfg.mask_pii else ()
    body = {"record": mask_value(raw, types, pii)} if raw_text is None else \
           {"text": mask_value(raw_text, types, pii)}
    return {"source": source, "reason": err.reason, "field": mask_value(err.field, types, pii),
            "detail": mask_value(err.detail, types, pii), **body}


def _detect_file_format(rows: list[RawRow], fields: FieldMap, path: Path) -> str:
    votes = Counter(detect_format(r.data, fields) for r in rows
                    if r.error is None and isinstance(r.data, dict))
    votes.pop(None, None)
    if not votes:
        # A headerless CSV makes its first row the keys: mask them, as an error
        # message goes to the terminal and the job's log.
        keys = sorted({mask_value(k) for r in rows if isinstance(r.data, dict)
                       for k in r.data})[:12]
        raise InputError(path, f"cannot tell the record format from fields {keys}; "
                               "set `format:` (alpaca, sharegpt or messages) for this dataset")
    return votes.most_common(1)[0][0]


def clean_dataset(spec: DatasetSpec, cfg: CleanConfig, kept, rejects, stats: dict,
                  shard: Shard | None = None) -> None:
    """Stream one dataset (file or hub), or one `shard` of its file, into the
    open `kept` / `rejects` files."""
    path = Path(spec.path) if spec.path else spec.source  # a hub dataset: its hf:// name
    fields = FieldMap(spec.columns, spec.tags)
    facts: dict = {}  # a hub dataset's revision and rows digest
    rows = read_dataset(spec, facts) if shard is None else read_shard(path, spec.encoding, shard)
    head = _head(rows)
    if spec.format != "auto":
        fmt = spec.format
    else:  # decided by the file's first records, whichever shard this is
        sample = head if shard is None else _head(read_rows(path, spec.encoding))
        fmt = _detect_file_format(sample, fields, path)
    reasons, pii = stats["rejected_by_reason"], stats["pii_masked_by_type"]
    n_in = n_kept = 0
    where = "" if shard is None else f" shard {shard.index} of {shard.count}"
    progress = Progress(f"clean {spec.name}{where}")
    for row in _chain(head, rows):
        n_in += 1
        progress.add()
        source = _location(spec.source, row.loc)
        try:
            if row.error is not None:
                raise row.error
            messages = clean_messages(to_messages(row.data, fmt, fields), cfg, pii)
        except RecordError as err:
            reasons[err.reason] += 1
            rejects.write(dumps(_reject(source, err, row.data, row.raw_text, cfg, pii)))
            continue
        record_id = f"{spec.name}-{_position(row.loc):07d}"
        kept.write(dumps({"id": record_id, "source": source, "messages": messages,
                          "meta": {"dataset": spec.name, "format": fmt}}))
        n_kept += 1
    progress.done()
    if n_in == 0 and shard is None:  # a shard may be empty; combine checks the whole file
        raise InputError(path, "no records")
    stats["files"][spec.source] = {"dataset": spec.name, "format": fmt, "records_in": n_in,
                                   "records_kept": n_kept, **facts}


def _head(rows) -> list[RawRow]:
    return [row for _, row in zip(range(_DETECT_SAMPLE), rows, strict=False)]


def _chain(head: list, rest: Iterable):
    yield from head
    yield from rest


def clean_files(specs: list[DatasetSpec], cfg: CleanConfig, out_dir: Path,
                shard: Shard | None = None) -> dict:
    """Clean every dataset (or `shard` of the one dataset's file) into
    `out_dir/{records,rejects}.jsonl` and `stats.json`.

    Outputs appear only if every input was usable: an InputError leaves nothing.
    """
    stats = new_stats()
    with atomic_outputs([out_dir / n for n in CLEAN_FILES]) as (records_tmp, rejects_tmp, stats_tmp):
        with open(records_tmp, "w", encoding="utf-8") as kept, \
             open(rejects_tmp, "w", encoding="utf-8") as rejects:
            for spec in specs:
                clean_dataset(spec, cfg, kept, rejects, stats, shard)
        summary = summarize(stats)
        write_json(stats_tmp, summary)
    return summary


def new_stats() -> dict:
    """The counts a clean job adds up, and combining clean jobs sums (summarize)."""
    return {"files": {}, "rejected_by_reason": Counter(), "pii_masked_by_type": Counter()}


def summarize(stats: dict) -> dict:
    files = stats["files"]
    records_in = sum(f["records_in"] for f in files.values())
    kept = sum(f["records_kept"] for f in files.values())
    summary = {
        "records_in": records_in,
        "records_kept": kept,
        "records_rejected": sum(stats["rejected_by_reason"].values()),
        "rejected_by_reason": dict(sorted(stats["rejected_by_reason"].items())),
        "pii_masked_by_type": dict(sorted(stats["pii_masked_by_type"].items())),
        "files": files,
    }
    # The invariant users rely on: nothing is silently lost.
    assert summary["records_in"] == summary["records_kept"] + summary["records_rejected"], summary
    return summary


def main(args) -> None:
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
    outputs = [out / n for n in CLEAN_FILES]
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
