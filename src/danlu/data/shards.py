"""Splitting one data file into record ranges, one clean job each, so a cluster
spreads a big file over nodes. Shard i of n holds a contiguous run of the
file's records; concatenated in order they are the file, and every record keeps
the location (line, row, index) and so the id it has when the file is read
whole, which makes the combined outputs byte-identical to one job's.

How each kind of file is split, cheaply:
  lines    .jsonl: byte ranges. Shard i takes the lines that start in
           [i*size/n, (i+1)*size/n): it seeks to the first line starting at or
           after its offset, and counts the newlines before it (no parsing,
           at disk speed) to number its lines as the whole file does.
  groups   .parquet: row ranges; a shard decodes only the row groups that
           overlap its rows (the row count is in the footer).
  records  .json, .csv, .tsv: record ranges. A JSON array or a CSV row (which
           may span lines inside quotes) has no boundary one can seek to, so
           each shard parses the file (a first pass counts its records) but
           cleans only its own; cleaning, not parsing, is what costs.
A gzip-compressed file is never split: every shard would decompress it from
the start (twice). Neither is a hub dataset (read through `datasets`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

from danlu.data.readers import (
    _SNIFF_BYTES,
    InputError,
    RawRow,
    _jsonl_rows,
    container_of,
    detect_encoding,
    parquet_file,
    read_rows,
)

# `clean.shards: auto`: one shard per this many bytes of input file.
AUTO_SHARD_BYTES = 256 << 20
_CHUNK = 16 << 20  # bytes per read when scanning for newlines


@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise ValueError(f"shard {self.index} of {self.count}: need 0 <= shard < shards")

    def bounds(self, total: int) -> tuple[int, int]:
        """This shard's [start, stop) of `total` bytes or records."""
        return total * self.index // self.count, total * (self.index + 1) // self.count


def split_kind(path: str | Path) -> str | None:
    """How the file splits ("lines", "groups" or "records"), None if it cannot
    be split cheaply (gzip). Raises InputError for an unknown file type."""
    path = Path(path)
    kind = container_of(path)
    if path.suffix.lower() == ".gz":
        return None
    return {"jsonl": "lines", "parquet": "groups"}.get(kind, "records")


def plan_shards(path: str | None, requested: int | str) -> tuple[int, str | None]:
    """How many clean jobs a dataset gets, and a note for the log when that is
    fewer than asked. `requested` is `clean.shards`: a count, or "auto" (one
    per AUTO_SHARD_BYTES of the file; 1 when the file does not exist yet,
    e.g. one a rule writes)."""
    if path is None:
        return 1, None if requested in (1, "auto") else "a hub dataset is cleaned in one job"
    size = os.path.getsize(path) if os.path.isfile(path) else 0
    wanted = max(1, math.ceil(size / AUTO_SHARD_BYTES)) if requested == "auto" else requested
    if wanted > 1 and split_kind(path) is None:
        return 1, (f"{path}: gzip-compressed, cleaned in one job instead of {wanted} "
                   "(a shard would decompress it from the start); store it uncompressed to split it")
    return wanted, None


def read_shard(path: str | Path, encoding: str, shard: Shard) -> Iterator[RawRow]:
    """The rows of `shard`, located as `readers.read_rows` locates them."""
    path = Path(path)
    kind = split_kind(path)
    if kind is None:
        raise InputError(path, "a gzip-compressed file cannot be split cheaply; clean it in "
                               "one job (--shards 1) or store it uncompressed")
    if kind == "lines":
        return _line_shard(path, encoding, shard)
    if kind == "groups":
        return _group_shard(path, shard)
    return _record_shard(path, encoding, shard)


def _line_shard(path: Path, encoding: str, shard: Shard) -> Iterator[RawRow]:
    if not path.is_file():
        raise InputError(path, "no such file")
    size = path.stat().st_size
    if size == 0:
        raise InputError(path, "empty file")
    with open(path, "rb") as fh:
        # The same checks and encoding as the whole file's reader: from its start.
        sample = fh.read(_SNIFF_BYTES)
        if not sample.strip():
            raise InputError(path, "empty file (no records)")
        enc = detect_encoding(sample, path) if encoding == "auto" else encoding
        lo, hi = shard.bounds(size)
        start = _line_start(fh, lo)
        first = _count_newlines(fh, start) + 1
        yield from _jsonl_rows(_lines_between(fh, start, hi), enc, first)


def _line_start(fh, offset: int) -> int:
    """The first line start at or after `offset` (the file's size if none)."""
    if offset == 0:
        return 0
    fh.seek(offset - 1)  # a line starts at `offset` if the byte before it ends one
    pos = offset - 1
    while chunk := fh.read(_SNIFF_BYTES):
        at = chunk.find(b"\n")
        if at >= 0:
            return pos + at + 1
        pos += len(chunk)
    return pos


def _count_newlines(fh, stop: int) -> int:
    fh.seek(0)
    count, left = 0, stop
    while left > 0 and (chunk := fh.read(min(_CHUNK, left))):
        count += chunk.count(b"\n")
        left -= len(chunk)
    return count


def _lines_between(fh, start: int, stop: int) -> Iterator[bytes]:
    """The lines that start in [start, stop), `start` being a line start, split
    as `readers._lines` splits them."""
    fh.seek(start)
    pos, pending = start, b""
    while pos < stop:
        chunk = fh.read(_SNIFF_BYTES)
        if not chunk:
            if pending:
                yield pending.rstrip(b"\r")
            return
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            if pos >= stop:
                return
            yield line.rstrip(b"\r")
            pos += len(line) + 1


def _group_shard(path: Path, shard: Shard) -> Iterator[RawRow]:
    pf = parquet_file(path)
    lo, hi = shard.bounds(pf.metadata.num_rows)
    first = 0  # index of the first row of the row group
    for group in range(pf.metadata.num_row_groups):
        rows = pf.metadata.row_group(group).num_rows
        if first < hi and first + rows > lo:  # overlaps this shard: decode it
            n = first
            for batch in pf.iter_batches(batch_size=1024, row_groups=[group]):
                for item in batch.to_pylist():
                    if lo <= n < hi:
                        yield RawRow({"row": n + 1}, data=item)
                    n += 1
        first += rows


def _record_shard(path: Path, encoding: str, shard: Shard) -> Iterator[RawRow]:
    total = sum(1 for _ in read_rows(path, encoding))
    lo, hi = shard.bounds(total)
    yield from islice(read_rows(path, encoding), lo, hi)
