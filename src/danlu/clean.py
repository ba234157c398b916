"""Clean: raw records in any supported format -> canonical, normalised,
PII-masked records. Every dropped record lands in rejects with a reason.

The pure part is `clean_record(raw, ...) -> (record | None, reject | None)`;
`clean_files` is the I/O shell that streams files and counts reasons, in the
manner of datatrove's filters.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from tqdm import tqdm

from danlu.config import CleanConfig, DatasetSpec
from danlu.outputs import atomic_outputs, write_json
from danlu.pii import mask_pii, mask_value
from danlu.readers import InputError, RawRow, read_rows
from danlu.records import FieldMap, RecordError, check_structure, detect_format, dumps, to_messages
from danlu.templates import SPECIAL_TOKENS
from danlu.text import detect_language, non_text_share, normalize_text

# How many leading records decide a file's format when the config says `auto`.
_DETECT_SAMPLE = 200
# Files above this size get a progress bar (in the job's log).
_PROGRESS_BYTES = 50 << 20


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
    for i, msg in enumerate(out):
        if any(t in msg["content"] for t in tokens):
            raise RecordError("special_tokens", f"messages[{i}].content",
                              "chat-template control tokens inside text")
    if cfg.mask_pii:
        for msg in out:
            msg["content"], found = mask_pii(msg["content"], cfg.pii_types)
            pii.update(found)
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
    """The reject line: the raw record (or unparseable text), PII masked, with
    the reason and field. Masking counts go to `pii` too: they were found."""
    types = cfg.pii_types if cfg.mask_pii else ()
    body = {"record": mask_value(raw, types, pii)} if raw_text is None else \
           {"text": mask_value(raw_text, types, pii)}
    return {"source": source, "reason": err.reason, "field": err.field, "detail": err.detail, **body}


def _detect_file_format(rows: list[RawRow], fields: FieldMap, path: Path) -> str:
    votes = Counter(detect_format(r.data, fields) for r in rows
                    if r.error is None and isinstance(r.data, dict))
    votes.pop(None, None)
    if not votes:
        keys = sorted({k for r in rows if isinstance(r.data, dict) for k in r.data})[:12]
        raise InputError(path, f"cannot tell the record format from fields {keys}; "
                               "set `format:` (alpaca, sharegpt or messages) for this dataset")
    return votes.most_common(1)[0][0]


def clean_dataset(spec: DatasetSpec, cfg: CleanConfig, kept, rejects, stats: dict) -> None:
    """Stream one dataset file into the open `kept` / `rejects` files."""
    path = Path(spec.path)
    fields = FieldMap(spec.columns, spec.tags)
    rows = read_rows(path, spec.encoding)
    if path.is_file() and path.stat().st_size > _PROGRESS_BYTES:
        rows = tqdm(rows, desc=f"clean {spec.name}", unit="rec", mininterval=10)
    head = [row for _, row in zip(range(_DETECT_SAMPLE), rows, strict=False)]
    fmt = spec.format if spec.format != "auto" else _detect_file_format(head, fields, path)
    reasons, pii = stats["rejected_by_reason"], stats["pii_masked_by_type"]
    n_in = n_kept = 0
    for row in _chain(head, rows):
        n_in += 1
        source = _location(spec.path, row.loc)
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
    if n_in == 0:
        raise InputError(path, "no records")
    stats["files"][spec.path] = {"dataset": spec.name, "format": fmt, "records_in": n_in,
                                 "records_kept": n_kept}


def _chain(head: list, rest: Iterable):
    yield from head
    yield from rest


def clean_files(specs: list[DatasetSpec], cfg: CleanConfig, out_dir: Path) -> dict:
    """Clean every dataset into `out_dir/{records,rejects}.jsonl` and `stats.json`.

    Outputs appear only if every input was usable: an InputError leaves nothing.
    """
    stats = {"files": {}, "rejected_by_reason": Counter(), "pii_masked_by_type": Counter()}
    names = ("records.jsonl", "rejects.jsonl", "stats.json")
    with atomic_outputs([out_dir / n for n in names]) as (records_tmp, rejects_tmp, stats_tmp):
        with open(records_tmp, "w", encoding="utf-8") as kept, \
             open(rejects_tmp, "w", encoding="utf-8") as rejects:
            for spec in specs:
                clean_dataset(spec, cfg, kept, rejects, stats)
        summary = summarize(stats)
        write_json(stats_tmp, summary)
    return summary


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


def combine_parts(part_dirs: list[Path], out_dir: Path) -> dict:
    """Concatenate per-file clean outputs (one Snakemake job per input file) in
    the given order and add up their stats; equal to cleaning all files at once."""
    stats = {"files": {}, "rejected_by_reason": Counter(), "pii_masked_by_type": Counter()}
    names = ("records.jsonl", "rejects.jsonl", "stats.json")
    with atomic_outputs([out_dir / n for n in names]) as (records_tmp, rejects_tmp, stats_tmp):
        for name, tmp in (("records.jsonl", records_tmp), ("rejects.jsonl", rejects_tmp)):
            with open(tmp, "wb") as out:
                for part in part_dirs:
                    with open(part / name, "rb") as fh:
                        while chunk := fh.read(1 << 20):
                            out.write(chunk)
        for part in part_dirs:
            sub = json.loads((part / "stats.json").read_text(encoding="utf-8"))
            stats["files"].update(sub["files"])
            stats["rejected_by_reason"].update(sub["rejected_by_reason"])
            stats["pii_masked_by_type"].update(sub["pii_masked_by_type"])
        summary = summarize(stats)
        write_json(stats_tmp, summary)
    return summary

