"""Reading raw data files: jsonl, json, csv, tsv, parquet, each optionally `.gz`,
in UTF-8 (with or without BOM) or GBK/GB18030.

`read_rows` yields one RawRow per record with its location in the file, or with
a RecordError for a line that cannot be parsed; it raises InputError only when
the file as a whole cannot be used (missing, empty, truncated, undecodable,
unknown container).
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from danlu.data.records import RecordError
from danlu.errors import InputError

CONTAINERS = ("jsonl", "json", "csv", "tsv", "parquet")
_SNIFF_BYTES = 1 << 20


@dataclass
class RawRow:
    loc: dict  # {"line": n} for jsonl, {"index": i} for json, {"row": n} for csv/tsv/parquet
    data: Any = None
    error: RecordError | None = None
    raw_text: str | None = None  # the unparseable text, kept for the rejects file


def container_of(path: Path) -> str:
    suffixes = [s.lower().lstrip(".") for s in path.suffixes]
    if suffixes and suffixes[-1] == "gz":
        suffixes = suffixes[:-1]
    kind = {"ndjson": "jsonl"}.get(suffixes[-1], suffixes[-1]) if suffixes else ""
    if kind not in CONTAINERS:
        raise InputError(path, f"unknown file type {''.join(path.suffixes) or '(none)'!r}; "
                               f"expected one of .{', .'.join(CONTAINERS)} (optionally .gz)")
    return kind


def _open_binary(path: Path):
    if path.suffix.lower() == ".gz":
        return gzip.open(path, "rb")
    return open(path, "rb")


def detect_encoding(sample: bytes, path: Path) -> str:
    """UTF-8 (BOM or not) first; GB18030 (a superset of GBK) only when the text
    it yields is mostly Chinese, because GB18030 decodes many byte soups
    without error. Anything else is an error, never a silent guess."""
    if sample.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    for enc, plausible in (("utf-8", lambda t: True), ("gb18030", _mostly_cjk)):
        try:
            text = codecs.getincrementaldecoder(enc)(errors="strict").decode(sample, final=False)
        except UnicodeDecodeError:
            continue
        if plausible(text):
            return enc
    raise InputError(path, "cannot decode as UTF-8 or GBK/GB18030; set `encoding:` for this dataset")


def _mostly_cjk(text: str) -> bool:
    non_ascii = [c for c in text if ord(c) > 127]
    if not non_ascii:
        return True
    cjk = sum(1 for c in non_ascii if "\u3000" <= c <= "\u9fff" or "\uff00" <= c <= "\uffef")
    return cjk / len(non_ascii) >= 0.8


def read_dataset(spec, facts: dict) -> Iterator[RawRow]:
    """The records of one `datasets:` entry (a `config.DatasetSpec`): its file, or
    its hub dataset, whose revision and rows digest `hub.hub_rows` puts in `facts`."""
    if spec.path is not None:
        return read_rows(spec.path, spec.encoding)
    from danlu.data.hub import hub_rows

    return hub_rows(spec, facts)


def read_rows(path: str | Path, encoding: str = "auto") -> Iterator[RawRow]:
    """Yield the records of one data file (see module docstring). jsonl, csv and
    tsv stream, so a file of many GB never sits in memory."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such file")
    kind = container_of(path)
    if path.stat().st_size == 0:
        raise InputError(path, "empty file")
    if kind == "parquet":
        yield from _parquet_rows(path)
        return
    try:
        with _open_binary(path) as fh:
            sample = fh.read(_SNIFF_BYTES)
            if not sample.strip():
                raise InputError(path, "empty file (no records)")
            enc = detect_encoding(sample, path) if encoding == "auto" else encoding
            if kind == "json":
                yield from _json_rows(path, sample + fh.read(), enc)
            elif kind == "jsonl":
                yield from _jsonl_rows(_lines(sample, fh), enc)
            else:
                stream = io.TextIOWrapper(io.BufferedReader(_Prefixed(sample, fh)),
                                          encoding=enc, newline="")
                yield from _csv_rows(path, stream, "\t" if kind == "tsv" else ",")
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise InputError(path, f"truncated or corrupt gzip archive ({err.__class__.__name__})") from None
    except UnicodeDecodeError as err:
        raise InputError(path, f"not valid {err.encoding} ({err.reason})") from None


class _Prefixed(io.RawIOBase):
    """A raw stream that replays the sniffed sample before the rest of `fh`."""

    def __init__(self, prefix: bytes, fh):
        self._prefix, self._fh = prefix, fh

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        if self._prefix:
            n = min(len(buf), len(self._prefix))
            buf[:n], self._prefix = self._prefix[:n], self._prefix[n:]
            return n
        data = self._fh.read(len(buf))
        buf[: len(data)] = data
        return len(data)


def _lines(sample: bytes, fh) -> Iterator[bytes]:
    """Lines of sample + rest of fh, read in 1 MiB chunks."""
    pending = sample
    while True:
        chunk = fh.read(_SNIFF_BYTES)
        pending += chunk
        lines = pending.split(b"\n")
        pending = lines.pop()
        yield from (line.rstrip(b"\r") for line in lines)
        if not chunk:
            break
    if pending:
        yield pending.rstrip(b"\r")


def _decode_line(raw: bytes, enc: str) -> str:
    try:
        return raw.decode(enc)
    except UnicodeDecodeError:
        raise RecordError("unparseable", "<line>", f"bytes not valid {enc}") from None


def _jsonl_rows(lines: Iterator[bytes], enc: str, first: int = 1) -> Iterator[RawRow]:
    """Rows of `lines`, the first of which is line number `first` of the file
    (a shard of it starts further on: see shards.py)."""
    for n, raw in enumerate(lines, start=first):
        loc = {"line": n}
        try:
            text = _decode_line(raw, enc)
        except RecordError as err:
            yield RawRow(loc, error=err, raw_text=raw.decode(enc, errors="replace"))
            continue
        if n == 1:
            text = text.lstrip("\ufeff")
        if not text.strip():
            continue  # blank separator lines are not records
        try:
            yield RawRow(loc, data=json.loads(text))
        except json.JSONDecodeError as err:
            yield RawRow(loc, error=RecordError("unparseable", "<line>", f"invalid JSON: {err.msg}"),
                         raw_text=text)


def _json_rows(path: Path, data: bytes, enc: str) -> Iterator[RawRow]:
    try:
        text = data.decode(enc).lstrip("\ufeff")
    except UnicodeDecodeError as err:
        raise InputError(path, f"not valid {enc} at byte {err.start}") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        if err.msg == "Extra data":  # JSON Lines saved as .json: read it as such
            yield from _jsonl_rows(iter(data.splitlines()), enc)
            return
        raise InputError(path, f"invalid JSON at line {err.lineno} column {err.colno}: {err.msg}") from None
    if isinstance(value, dict):
        lists = [v for v in value.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise InputError(path, "expected a JSON list of records (or an object holding one list)")
        value = lists[0]
    if not isinstance(value, list):
        raise InputError(path, f"expected a JSON list of records, got {type(value).__name__}")
    if not value:
        raise InputError(path, "empty file (no records)")
    for i, item in enumerate(value):
        yield RawRow({"index": i}, data=item)


def _csv_rows(path: Path, stream, delimiter: str) -> Iterator[RawRow]:
    reader = csv.reader(stream, delimiter=delimiter)
    try:
        header = next(reader)
    except (StopIteration, csv.Error):
        raise InputError(path, "no header row") from None
    header = [h.strip().lstrip("\ufeff") for h in header]
    for n, cells in enumerate(reader, start=1):
        if not any(c.strip() for c in cells):
            continue
        if len(cells) != len(header):
            err = RecordError("unparseable", "<row>",
                              f"{len(cells)} fields where the header has {len(header)}")
            yield RawRow({"row": n}, error=err, raw_text=delimiter.join(cells))
            continue
        yield RawRow({"row": n}, data={h: c for h, c in zip(header, cells, strict=True) if h})


def _parquet_rows(path: Path) -> Iterator[RawRow]:
    pf = parquet_file(path)
    n = 0
    for batch in pf.iter_batches(batch_size=1024):
        for item in batch.to_pylist():
            n += 1
            yield RawRow({"row": n}, data=item)


def parquet_file(path: Path):
    """The opened pyarrow ParquetFile, with at least one row; else InputError."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        if path.suffix.lower() == ".gz":
            with gzip.open(path, "rb") as fh:
                pf = pq.ParquetFile(io.BytesIO(fh.read()))
        else:
            pf = pq.ParquetFile(path)
    except (EOFError, gzip.BadGzipFile, zlib.error):
        raise InputError(path, "truncated or corrupt gzip archive") from None
    except (pa.ArrowInvalid, OSError) as err:
        raise InputError(path, f"not a readable parquet file ({str(err).splitlines()[0]})") from None
    if pf.metadata.num_rows == 0:
        raise InputError(path, "empty file (no rows)")
    return pf


def records_input(path: str) -> Path:
    """A canonical records.jsonl that exists, else exit 2 (the reader reports
    one that does not decode)."""

    p = Path(path)
    if not p.is_file():
        raise InputError(p, "no such file")
    return p
