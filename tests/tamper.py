"""The tamper matrix: each kind of artifact of a finished, audited run
(workflow_utils.build_audited_run) x four attacks. Each attack is applied in
place, `danlu verify` runs in this process, and the file is put back exactly
(bytes and mtime; a deleted file is renamed away and back, so hard links
between a stage's files and its export survive).

Used by tests/test_tamper.py and scripts/tamper_matrix.py.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from danlu.audit.verify import verify

ATTACKS = ("flip one byte", "delete", "truncate", "earlier version")


def write_in_place(path: Path, data: bytes) -> None:
    """New content in the same inode (a hard-linked export sees it too)."""
    with open(path, "r+b") as fh:
        fh.write(data)
        fh.truncate()


def truncated(data: bytes) -> bytes:
    """A text of several lines loses its last line (a log cut short at a line
    boundary is the quiet way); anything else its second half."""
    lines = data.splitlines(keepends=True)
    if data.endswith(b"\n") and len(lines) > 1:
        return b"".join(lines[:-1])
    return data[: len(data) // 2]


def flipped(data: bytes, offset: int | None = None) -> bytes:
    out = bytearray(data)
    out[len(data) // 2 if offset is None else offset] ^= 0x01
    return bytes(out)


@dataclass
class Saved:
    """A file as it was: put back with `restore` (bytes, then mtime)."""
    path: Path
    data: bytes
    times: tuple[int, int]

    @classmethod
    def of(cls, path: Path) -> Saved:
        st = path.stat()
        return cls(path, path.read_bytes(), (st.st_atime_ns, st.st_mtime_ns))

    def restore(self) -> None:
        write_in_place(self.path, self.data)
        os.utime(self.path, ns=self.times)


@dataclass
class Stash:
    """Where deleted files wait (the same file system, so a rename keeps the inode)."""
    directory: Path
    count: int = 0

    def delete(self, path: Path) -> Callable[[], None]:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.count += 1
        kept = self.directory / f"{self.count}-{path.name}"
        os.rename(path, kept)
        return lambda: os.rename(kept, path)


@dataclass
class FileTarget:
    """One file; `earlier` gives another legitimate version of it (`source` says which)."""
    kind: str
    path: str
    earlier: Callable[[], bytes]
    source: str
    flip_offset: Callable[[bytes], int] | None = None

    @property
    def expect(self) -> tuple[str, ...]:
        return (self.path,)

    def apply(self, attack: str, root: Path, stash: Stash) -> Callable[[], None]:
        path = root / self.path
        if attack == "delete":
            return stash.delete(path)
        saved = Saved.of(path)
        if attack == "flip one byte":
            offset = self.flip_offset(saved.data) if self.flip_offset else None
            write_in_place(path, flipped(saved.data, offset))
        elif attack == "truncate":
            write_in_place(path, truncated(saved.data))
        else:
            other = self.earlier()
            assert other != saved.data, f"{self.path}: the earlier version is the same bytes"
            write_in_place(path, other)
        return saved.restore


@dataclass
class RowTarget:
    """One tag row of the project's MLflow store (results/mlflow.db), changed
    with SQL as someone with the file would; undone by putting the file's bytes back."""
    kind: str
    run_id: str
    key: str
    earlier_value: str
    source: str
    expect: tuple[str, ...]  # what the problem line says: the file the row vouches for, the run
    store: str = "results/mlflow.db"

    @property
    def path(self) -> str:
        return f"{self.store}: run {self.run_id[:8]}… tag {self.key}"

    def apply(self, attack: str, root: Path, stash: Stash) -> Callable[[], None]:
        db = root / self.store
        saved = Saved.of(db)
        with sqlite3.connect(db) as con:
            (value,) = con.execute("SELECT value FROM tags WHERE run_uuid = ? AND key = ?",
                                   (self.run_id, self.key)).fetchone()
            if attack == "delete":
                con.execute("DELETE FROM tags WHERE run_uuid = ? AND key = ?",
                            (self.run_id, self.key))
            else:
                new = {"flip one byte": flipped(value.encode()).decode(),
                       "truncate": value[: len(value) // 2],
                       "earlier version": self.earlier_value}[attack]
                assert new != value, f"{self.path}: the earlier value is the same"
                con.execute("UPDATE tags SET value = ? WHERE run_uuid = ? AND key = ?",
                            (new, self.run_id, self.key))
        con.close()
        return saved.restore


@dataclass
class Outcome:
    kind: str
    path: str
    attack: str
    detected: bool
    problem: str  # the problem line naming the file, or what verify said instead


@dataclass
class Matrix:
    outcomes: list[Outcome] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)  # kind -> where "earlier" came from

    @property
    def missed(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.detected]

    def table(self) -> str:
        """Markdown: kinds down, attacks across, then detected/total."""
        cells: dict[str, dict[str, Outcome]] = {}
        for o in self.outcomes:
            cells.setdefault(o.kind, {})[o.attack] = o
        lines = ["| kind | file | " + " | ".join(ATTACKS) + " | earlier version from |",
                 "|---|---|" + "---|" * (len(ATTACKS) + 1)]
        for kind, row in cells.items():
            path = next(iter(row.values())).path
            marks = [("detected" if row[a].detected else "**MISSED**") if a in row else "-"
                     for a in ATTACKS]
            lines.append(f"| {kind} | `{path}` | " + " | ".join(marks)
                         + f" | {self.sources.get(kind, '')} |")
        total = len(self.outcomes)
        lines.append("")
        lines.append(f"{total - len(self.missed)}/{total} detected "
                     f"({len(cells)} kinds x {len(ATTACKS)} attacks)")
        return "\n".join(lines)


def run_matrix(root: Path, targets: list, stash: Stash,
               progress: Callable[[Outcome], None] | None = None) -> Matrix:
    matrix = Matrix(sources={t.kind: t.source for t in targets})
    for target in targets:
        for attack in ATTACKS:
            undo = target.apply(attack, root, stash)
            try:
                report = verify(root / "results")
            finally:
                undo()
            naming = [p for p in report.problems if all(e in p for e in target.expect)]
            outcome = Outcome(target.kind, target.path, attack, bool(naming),
                              (naming or report.problems or ["(verify said OK)"])[0])
            matrix.outcomes.append(outcome)
            if progress:
                progress(outcome)
    return matrix


# --- the targets of an audited run -------------------------------------------------------


def _log(root: Path) -> list[dict]:
    text = (root / "results/audit/log.jsonl").read_text("utf-8")
    return [json.loads(line) for line in text.splitlines()]


def _runs_of(root: Path, manifest: str) -> list[str]:
    """The MLflow run ids of the jobs that wrote `manifest`, oldest first."""
    return [e["mlflow_run_id"] for e in _log(root) if e["manifest"] == manifest]


def _tag(root: Path, run_id: str, key: str) -> str:
    with sqlite3.connect(root / "results/mlflow.db") as con:
        (value,) = con.execute("SELECT value FROM tags WHERE run_uuid = ? AND key = ?",
                               (run_id, key)).fetchone()
    con.close()
    return value


def _parents(root: Path) -> list[str]:
    """Parent runs of the logged jobs, in log order (one per invocation)."""
    parents: list[str] = []
    for entry in _log(root):
        parent = _tag(root, entry["mlflow_run_id"], "mlflow.parentRunId")
        if parent not in parents:
            parents.append(parent)
    return parents


def _value_offset(root: Path, run_id: str, key: str) -> Callable[[bytes], int]:
    """Where in mlflow.db the tag's value lies (the row SQLite reads now: the
    last copy in the file, older pages may hold stale ones), for a byte flip
    that changes what the store says rather than a free page."""
    def offset(data: bytes) -> int:
        value = _tag(root, run_id, key).encode()
        at = data.rfind(value)
        assert at >= 0, f"{key} of run {run_id} not found in mlflow.db"
        return at + len(value) // 2
    return offset


def audited_targets(run, other_key_dir: Path) -> list:
    """Every kind of artifact under results/ (and the raw input the manifests
    hash), each with its earlier version: from the first invocation (the first
    data) or the second (before the audit job ran again), else named."""
    root, first, second = run.root, run.first, run.second

    def snap(base: Path, path: str) -> Callable[[], bytes]:
        return lambda: (base / path).read_bytes()

    def from_first(kind, path):
        return FileTarget(kind, path, snap(first, path), "the first data's run")

    def from_second(kind, path):
        return FileTarget(kind, path, snap(second, path), "before the audit job reran")

    def sibling(kind, path, other, why):
        return FileTarget(kind, path, snap(root, other), why)

    def other_public_key() -> bytes:
        from danlu.audit.signing import ensure_key_pair

        return ensure_key_pair(other_key_dir)[1].read_bytes()

    combine_runs = _runs_of(root, "results/clean/manifest.json")
    combine, combine_first = combine_runs[-1], combine_runs[0]
    parents = _parents(root)
    digest_key = "danlu.sha256.output.results/clean/records.jsonl"
    artifact = f"results/mlruns/{combine}/artifacts/manifest.json"
    return [
        FileTarget("raw input", "data/alp.jsonl", snap(first, "data/alp.jsonl"),
                   "the first data"),
        from_first("clean per-file stats", "results/clean/parts/alp/stats.json"),
        from_first("clean records", "results/clean/records.jsonl"),
        from_first("clean rejects", "results/clean/rejects.jsonl"),
        from_first("dedup signature shard", "results/dedup/signatures/shard-0.sig.npy"),
        from_first("dedup records", "results/dedup/records.jsonl"),
        from_first("dedup removed", "results/dedup/removed.jsonl"),
        from_first("split file", "results/dedup/train.jsonl"),
        from_first("Arrow set", "results/lengths/train/data-00000-of-00001.arrow"),
        from_first("cutoff.json", "results/lengths/cutoff.json"),
        sibling("adapter", "results/train/adapter_model.safetensors",
                "results/train/checkpoints/checkpoint-2/adapter_model.safetensors",
                "the same training two steps earlier (checkpoint-2)"),
        sibling("merged weights", "results/merge/model/model.safetensors",
                "results/demo_model/model/model.safetensors",
                "the weights before the merge (the base model)"),
        sibling("quantized weights", "results/quantize/gptq/model.safetensors",
                "results/quantize/awq/model.safetensors", "the other 4-bit export (AWQ)"),
        sibling("eval summary", "results/eval/tuned/summary.json",
                "results/eval/base/summary.json", "the untuned model's summary"),
        from_first("stage manifest", "results/clean/manifest.json"),
        from_second("audit manifest", "results/audit/manifest.json"),
        from_second("audit log", "results/audit/log.jsonl"),
        from_second("provenance statement", "results/audit/provenance.intoto.json"),
        from_second("provenance signature", "results/audit/provenance.sig"),
        from_second("export signature", "results/audit/signatures/merged.sig"),
        FileTarget("public key", "results/audit/public_key.pem", other_public_key,
                   "another run's key"),
        FileTarget("MLflow store file", "results/mlflow.db",
                   snap(second, "results/mlflow.db"), "before the audit job reran",
                   flip_offset=_value_offset(root, parents[-1], "danlu.audit.head")),
        FileTarget("MLflow artifact", artifact,
                   snap(root, f"results/mlruns/{combine_first}/artifacts/manifest.json"),
                   "the first data's run"),
        RowTarget("MLflow row: file digest", combine, digest_key,
                  _tag(root, combine_first, digest_key), "the first data's run",
                  ("results/clean/records.jsonl: MLflow run", combine)),
        RowTarget("MLflow row: manifest digest", combine, "danlu.manifest.sha256",
                  _tag(root, combine_first, "danlu.manifest.sha256"), "the first data's run",
                  ("results/clean/manifest.json: MLflow run", combine)),
        RowTarget("MLflow row: log head", parents[-1], "danlu.audit.head",
                  _tag(root, parents[-2], "danlu.audit.head"), "the invocation before",
                  ("results/audit/log.jsonl: ", f"MLflow parent run {parents[-1]}")),
    ]


def fingerprint(root: Path) -> dict[str, tuple[str, int]]:
    """sha256 and mtime of every file of the project, to show all was put back."""
    from danlu.audit.manifest import sha256_file

    return {p.relative_to(root).as_posix(): (sha256_file(p), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file() and ".snakemake" not in p.parts}
