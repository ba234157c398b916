"""MinHash signatures of a records file, a shard at a time: the `dedup-signatures`
stage, and the one on-disk signature format (`Block`) that dedup reads."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from danlu.config import DedupConfig, from_mapping, stage_params
from danlu.data.minhash import (
    char_shingle_mask,
    signatures,
)
from danlu.data.readers import records_input
from danlu.data.records import dumps, numbered_lines, parse_line
from danlu.errors import InputError
from danlu.progress import Progress

if TYPE_CHECKING:  # for annotations only: signing does not depend on decontamination
    from danlu.data.decontamination import ContaminationIndex

SIG_BATCH = 2048  # records per batch: bounded memory, whatever the corpus


def dedup_text(record: dict, include_system: bool = False) -> str:
    """What two records are compared on: their user and assistant turns."""
    return "\n".join(m["content"] for m in record["messages"]
                     if include_system or m["role"] != "system")


def _line_bound(path: Path) -> int:
    """At least as many as the lines `open` yields (it also ends one at a lone
    CR): how many rows to reserve, so that arrays never grow by copying."""
    count = 1
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 24):
            count += chunk.count(b"\n") + chunk.count(b"\r")
    return count


@dataclass
class Block:
    """Signatures of some records: their line numbers, MinHash rows, sha256s."""

    lines: np.ndarray  # int64 (n,)
    sig: np.ndarray  # (n, num_perm)
    sha: np.ndarray  # uint8 (n, 32)

    def save(self, prefix: Path) -> list[Path]:
        paths = [Path(f"{prefix}.{name}.npy") for name in ("lines", "sig", "sha")]
        for path, array in zip(paths, (self.lines, self.sig, self.sha), strict=True):
            with open(path, "wb") as fh:
                np.save(fh, np.ascontiguousarray(array), allow_pickle=False)
        return paths

    @classmethod
    def load(cls, prefix: Path) -> Block:
        return cls(*(np.load(f"{prefix}.{name}.npy", allow_pickle=False)
                     for name in ("lines", "sig", "sha")))

    @classmethod
    def concat(cls, blocks: Sequence[Block]) -> Block:
        """Blocks of any shards, back in input order."""
        return cls.merge(len(blocks), lambda i: blocks[i], [b.lines for b in blocks])

    @classmethod
    def load_shards(cls, prefixes: Sequence[Path]) -> Block:
        """The shards saved at `prefixes`, merged in input order; one shard's
        signatures are in memory at a time besides the merged ones."""
        lines = [np.load(f"{p}.lines.npy", allow_pickle=False) for p in prefixes]
        return cls.merge(len(prefixes), lambda i: cls.load(prefixes[i]), lines)

    @classmethod
    def merge(cls, count: int, get, lines: Sequence[np.ndarray]) -> Block:
        """Blocks get(0) .. get(count - 1), whose line numbers are `lines`,
        scattered into arrays allocated once (not concatenated, then sorted)."""
        if not count:
            raise ValueError("no signature blocks to merge")
        every = np.concatenate(lines)
        order = np.argsort(every, kind="stable")
        position = np.empty_like(order)
        position[order] = np.arange(len(order))
        merged, at = None, 0
        for i in range(count):
            part = get(i)
            if merged is None:
                sig = np.empty((len(every), part.sig.shape[1]), dtype=part.sig.dtype)
                merged = cls(every[order], sig, np.empty((len(every), 32), dtype=np.uint8))
            where = position[at : at + len(part.lines)]
            merged.sig[where], merged.sha[where] = part.sig, part.sha
            at += len(part.lines)
        return merged


@dataclass
class Batch:
    """Up to SIG_BATCH valid records: line numbers, compared texts, and (when
    asked) their ids and whether each line is exactly `dumps(record)`, so a
    later pass may copy it without parsing it again."""

    lines: list[int] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    canonical: list[bool] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)


def _batches(path: Path, cfg: DedupConfig, *, shard: int = 0, shards: int = 1,
             details: bool = False) -> Iterator[Batch]:
    """The valid records of one shard (line number % shards == shard), in
    batches; another shard's lines are not even parsed."""
    batch = Batch()
    for n, line in numbered_lines(path):
        if n % shards != shard:
            continue
        record, _problem = parse_line(line)
        if record is None:
            continue
        batch.lines.append(n)
        batch.texts.append(dedup_text(record, cfg.include_system))
        if details:
            batch.canonical.append(line == dumps(record))
            batch.ids.append(record["id"])
        if len(batch.lines) >= SIG_BATCH:
            yield batch
            batch = Batch()
    if batch.lines:
        yield batch


class _BlockBuilder:
    """A Block filled batch by batch into arrays reserved once for an upper
    bound of rows: pages never written cost no memory, and the result is a
    view, so the signatures exist once (a list of batches concatenated at the
    end would hold them twice)."""

    def __init__(self, capacity: int, cfg: DedupConfig):
        self.params = cfg.minhash()
        self.lines = np.empty(capacity, dtype=np.int64)
        self.sig = np.empty((capacity, self.params.num_perm), dtype=self.params.dtype)
        self.sha = np.empty((capacity, 32), dtype=np.uint8)
        self.rows = 0

    def add(self, batch: Batch, by_char: np.ndarray | None = None) -> np.ndarray:
        """Sign the batch; returns its signatures."""
        rows = slice(self.rows, self.rows + len(batch.lines))
        self.lines[rows] = batch.lines
        self.sig[rows] = signatures(batch.texts, self.params, by_char=by_char)
        digests = b"".join(hashlib.sha256(t.encode("utf-8")).digest() for t in batch.texts)
        self.sha[rows] = np.frombuffer(digests, dtype=np.uint8).reshape(-1, 32)
        self.rows = rows.stop
        return self.sig[rows]

    def block(self) -> Block:
        n = self.rows
        return Block(self.lines[:n], self.sig[:n], self.sha[:n])


@dataclass
class Scan:
    """What one pass over a records file learnt, row by row (valid records in
    line order): their signatures, and when asked whether each line can be
    copied as is, the ids, and the benchmark questions each leaks."""

    block: Block
    canonical: np.ndarray  # bool per row
    ids: list[str]
    hits: dict[int, dict]


def scan(path: Path, cfg: DedupConfig, *, block: Block | None = None,
         index: ContaminationIndex | None = None, details: bool = False,
         shard: int = 0, shards: int = 1, label: str = "dedup") -> Scan:
    """One pass: sign the records (unless `block` already holds their
    signatures) and test them against `index`, a batch at a time."""
    builder = _BlockBuilder(_line_bound(path) // shards + 1, cfg) if block is None else None
    canonical, ids, hits, row = bytearray(), [], {}, 0
    progress = Progress(label)
    for batch in _batches(path, cfg, shard=shard, shards=shards, details=details):
        by_char = None  # which texts are shingled by characters: asked once for both uses
        if builder is not None or index is not None:
            by_char = char_shingle_mask(batch.texts)
        if builder is not None:
            sig = builder.add(batch, by_char)
        else:
            rows = slice(row, row + len(batch.lines))
            if not np.array_equal(block.lines[rows], batch.lines):
                raise InputError(path, "the signatures given are not this file's "
                                       f"(line {batch.lines[0]})")
            sig = block.sig[rows]
        if index is not None:
            index.add_hits(hits, row, index.matches(batch.texts, sig, by_char))
        canonical += bytes(batch.canonical)
        ids += batch.ids
        row += len(batch.lines)
        progress.add(len(batch.lines))
    progress.done()
    if builder is not None:
        block = builder.block()
    elif row != len(block.lines):
        raise InputError(path, "the signatures given are not this file's (more records)")
    return Scan(block, np.frombuffer(canonical, dtype=bool), ids, hits)


def shard_signatures(path: Path, cfg: DedupConfig, shard: int = 0, shards: int = 1) -> Block:
    """Signatures of this shard's valid records, streamed in batches."""
    return scan(path, cfg, shard=shard, shards=shards, label="dedup signatures").block


def main(args) -> None:
    from danlu.stage import run_stage

    params = stage_params(args, "dedup")
    cfg = from_mapping(DedupConfig, params)
    source = records_input(args.input)
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
