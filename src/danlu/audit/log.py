"""The tamper-evident audit log: `results/audit/log.jsonl`, one entry per stage
job, each holding the sha256 of the entry before it, so a deleted, reordered or
edited entry breaks the chain.

A chain only shows edits in its middle: whoever can write the file can cut its
end, or rebuild every link. So the head is also recorded where such an editor of
results/ cannot silently follow: each append tags the invocation's MLflow parent
run with the new head (`danlu.audit.head`: "<seq> <sha256>") and with the log's
identity (`danlu.audit.log`: the sha256 of its first line), under the log's lock
so the tags advance in log order; and the signed provenance statement names the
head at the time the `audit` job ran. `danlu verify` compares both.

Jobs find the log through $DANLU_AUDIT_LOG (the Snakefile sets it); a command
run by hand without it records nothing here (its manifest still stands).
"""

from __future__ import annotations

import fcntl
import getpass
import hashlib
import json
import os
import socket
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

ENV_LOG = "DANLU_AUDIT_LOG"
GENESIS = "0" * 64


def line_digest(line: str) -> str:
    return hashlib.sha256(line.rstrip("\n").encode("utf-8")).hexdigest()


# Called under the log's lock with (entry, its line's sha256, the first line's sha256).
HeadWitness = Callable[[dict, str, str], None]


def append_entry(log_path: Path, *, stage: str, manifest: str, manifest_sha256: str,
                 mlflow_run_id: str | None, tracking_uri: str | None,
                 witness: HeadWitness | None = None) -> dict:
    """Append one entry under an exclusive lock (parallel jobs share the log);
    `witness` records the new head elsewhere before the lock is released."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a+", encoding="utf-8") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            fh.seek(0)
            lines = [line for line in fh.read().splitlines() if line.strip()]
            entry = {
                "seq": len(lines) + 1,
                "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "stage": stage,
                "manifest": manifest,
                "manifest_sha256": manifest_sha256,
                "mlflow_run_id": mlflow_run_id,
                "tracking_uri": tracking_uri,
                "user": getpass.getuser(),
                "host": socket.gethostname(),
                "prev_sha256": line_digest(lines[-1]) if lines else GENESIS,
            }
            line = json.dumps(entry, sort_keys=True, ensure_ascii=False)
            fh.seek(0, os.SEEK_END)
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())
            if witness is not None:
                first = lines[0] if lines else line
                witness(entry, line_digest(line), line_digest(first))
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
    return entry


def read_entries(log_path: Path) -> list[tuple[str, dict | None]]:
    """(raw line, parsed entry or None) for every non-blank line."""
    out = []
    for line in log_path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            try:
                out.append((line, json.loads(line)))
            except json.JSONDecodeError:
                out.append((line, None))
    return out


def check_chain(log_path: Path) -> list[str]:
    """One problem line per broken link (see module docstring)."""
    problems = []
    prev = GENESIS
    for n, (line, entry) in enumerate(read_entries(log_path), start=1):
        where = f"{log_path}: line {n}"
        if entry is None:
            problems.append(f"{where}: not valid JSON")
        elif entry.get("prev_sha256") != prev:
            problems.append(f"{where}: hash chain broken (entry {entry.get('seq')} does not "
                            "follow the line before it: an entry was deleted, moved or edited)")
        elif entry.get("seq") != n:
            problems.append(f"{where}: sequence number {entry.get('seq')} where {n} was expected")
        prev = line_digest(line)
    return problems


def head(log_path: Path) -> dict:
    """The chain's current head: entry count and the last line's sha256."""
    entries = read_entries(log_path) if log_path.is_file() else []
    return {"entries": len(entries),
            "head_sha256": line_digest(entries[-1][0]) if entries else GENESIS}


def record_job(*, stage: str, manifest_path: Path, manifest_sha256: str, run) -> None:
    """Called by every stage job once its manifest is written."""
    log = os.environ.get(ENV_LOG)
    if not log:
        return
    from danlu.audit.manifest import rel

    append_entry(Path(log), stage=stage, manifest=rel(manifest_path),
                 manifest_sha256=manifest_sha256, mlflow_run_id=run.run_id,
                 tracking_uri=run.uri if run.run_id else None,
                 witness=run.witness_head)
