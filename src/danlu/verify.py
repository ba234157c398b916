"""`danlu verify`: prove, offline, that a results directory is what its
records say. Checks, each problem one line naming the file:

1. files: every file a stage manifest names still has the recorded sha256;
2. chain: each manifest's inputs equal the outputs of the manifests that
   produced them, back to the raw data (an upstream job that reran with
   identical outputs is fine: the files, not the manifest's timestamps, count);
3. audit log: the hash chain is intact, and each manifest's sha256 equals the
   one its job logged (so an edited manifest shows);
4. MLflow: the digests the job's run recorded equal its manifest's;
5. signatures and provenance: every signed export and the provenance
   statement verify with the public key in results/audit/, and the
   statement's subjects and audit-log head match the files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from danlu.manifest import MANIFEST_SUFFIX, sha256_file


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    checked: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def count(self, what: str, n: int = 1) -> None:
        self.checked[what] = self.checked.get(what, 0) + n

    @property
    def ok(self) -> bool:
        return not self.problems


def find_manifests(results: Path) -> list[Path]:
    """Stage manifests (not MLflow's artifact copies of them)."""
    return sorted(p for p in results.rglob(f"*{MANIFEST_SUFFIX}")
                  if "mlruns" not in p.relative_to(results).parts)


def _load(path: Path, report: Report) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        report.problems.append(f"{path}: unreadable manifest ({err.__class__.__name__})")
        return None


def check_files(root: Path, manifests: dict[str, dict], report: Report) -> None:
    cache: dict[str, str | None] = {}
    for name, m in manifests.items():
        for kind in ("inputs", "outputs"):
            for entry in m.get(kind, []):
                path = root / entry["path"]
                if entry["path"] not in cache:
                    cache[entry["path"]] = sha256_file(path) if path.is_file() else None
                    report.count("files")
                actual = cache[entry["path"]]
                if actual is None:
                    report.problems.append(f"{entry['path']}: missing ({kind[:-1]} of {name})")
                elif actual != entry["sha256"]:
                    report.problems.append(f"{entry['path']}: sha256 {actual[:12]}… differs from "
                                           f"{entry['sha256'][:12]}… recorded in {name}")


def check_chain(root: Path, manifests: dict[str, dict], report: Report) -> None:
    for name, m in manifests.items():
        inputs = {e["path"]: e["sha256"] for e in m.get("inputs", [])}
        for up_name, up_sha in m.get("upstream_manifests", {}).items():
            report.count("links")
            upstream = manifests.get(up_name)
            if upstream is None:
                report.problems.append(f"{name}: upstream manifest {up_name} is missing")
                continue
            produced = {e["path"]: e["sha256"] for e in upstream.get("outputs", [])}
            for path, sha in inputs.items():
                if path in produced and produced[path] != sha:
                    report.problems.append(f"{name}: input {path} is not what {up_name} produced")
            if (root / up_name).is_file() and sha256_file(root / up_name) != up_sha:
                report.notes.append(f"{name}: {up_name} was rewritten since (a rerun with "
                                    "identical outputs); the shared files still match")


def check_audit_log(root: Path, results: Path, manifests: dict[str, dict], report: Report) -> dict:
    """Returns manifest path -> its latest log entry."""
    from danlu.audit import check_chain as chain_problems
    from danlu.audit import read_entries

    log = results / "audit" / "log.jsonl"
    if not log.is_file():
        report.problems.append(f"{log}: audit log missing")
        return {}
    report.problems.extend(chain_problems(log))
    latest = {}
    for _line, entry in read_entries(log):
        if entry:
            latest[entry.get("manifest")] = entry
            report.count("log entries")
    for name in manifests:
        entry = latest.get(name)
        if entry is None:
            report.problems.append(f"{name}: no audit-log entry for this manifest")
        elif sha256_file(root / name) != entry.get("manifest_sha256"):
            report.problems.append(f"{name}: edited after its job (sha256 differs from the audit log, "
                                   f"entry {entry.get('seq')})")
    return latest


def _absolute(uri: str | None, root: Path) -> str | None:
    """A relative SQLite store is relative to the project root, wherever verify runs."""
    if uri and uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{(root / uri.removeprefix('sqlite:///')).absolute()}"
    return uri


def check_mlflow(root: Path, manifests: dict[str, dict], latest: dict, report: Report) -> None:
    from danlu.tracking import digest_tag, recorded_digests

    for name, m in manifests.items():
        entry = latest.get(name) or {}
        run_id, uri = entry.get("mlflow_run_id"), _absolute(entry.get("tracking_uri"), root)
        if not run_id:
            report.notes.append(f"{name}: no MLflow run recorded (tracking was off or failed)")
            continue
        try:
            tags = recorded_digests(uri, run_id)
        except Exception as err:  # noqa: BLE001 - an unreachable server is a finding, not a crash
            report.problems.append(f"{name}: MLflow run {run_id} unreadable at {uri} ({err.__class__.__name__})")
            continue
        report.count("mlflow runs")
        if tags.get("manifest") != entry.get("manifest_sha256"):
            report.problems.append(f"{name}: MLflow run {run_id} records another manifest sha256")
        for kind in ("inputs", "outputs"):
            for e in m.get(kind, []):
                got = tags["files"].get(digest_tag(kind[:-1], e["path"]))
                if got != e["sha256"]:
                    report.problems.append(f"{e['path']}: MLflow run {run_id} records "
                                           f"{(got or 'nothing')[:12]}… not the manifest's {e['sha256'][:12]}…")


def verify(results: Path, *, mlflow: bool = True) -> Report:
    """Run every check on `results` (its parent is the project root)."""
    results = Path(results)
    root = results.parent
    report = Report()
    if not results.is_dir():
        report.problems.append(f"{results}: no such results directory")
        return report
    manifests = {}
    for path in find_manifests(results):
        data = _load(path, report)
        if data is not None:
            manifests[path.relative_to(root).as_posix()] = data
    report.count("manifests", len(manifests))
    check_files(root, manifests, report)
    check_chain(root, manifests, report)
    latest = check_audit_log(root, results, manifests, report)
    if mlflow:
        check_mlflow(root, manifests, latest, report)
    check_exports(root, results, report)
    return report


def check_exports(root: Path, results: Path, report: Report) -> None:
    """Signatures of the exported models and the provenance statement."""
    audit = results / "audit"
    statement_path = audit / "provenance.intoto.json"
    if not statement_path.is_file():
        report.notes.append(f"{statement_path}: no provenance yet (the audit rule has not run)")
        return
    from danlu.audit import GENESIS, head
    from danlu.provenance import check_statement, load_statement
    from danlu.signing import SignatureError, verify_file, verify_model

    public_key = audit / "public_key.pem"
    try:
        verify_file(statement_path, audit / "provenance.sig", public_key)
        report.count("signatures")
    except SignatureError as err:
        report.problems.append(str(err))
    try:
        statement = load_statement(statement_path)
    except ValueError as err:
        report.problems.append(f"{statement_path}: {err}")
        return
    signed_dirs = json.loads((audit / "exports.json").read_text(encoding="utf-8"))
    files = {}
    for name, directory in signed_dirs.items():
        try:
            verify_model(root / directory, audit / "signatures" / f"{name}.sig", public_key)
            report.count("signatures")
        except SignatureError as err:
            report.problems.append(str(err))
        for f in sorted((root / directory).rglob("*")):
            if f.is_file():
                files[f.relative_to(root).as_posix()] = sha256_file(f)
    report.problems.extend(f"{statement_path}: {p}" for p in check_statement(statement, files))
    signed_head = statement["predicate"]["buildDefinition"]["internalParameters"].get("auditLog", {})
    # Jobs after the audit rule (a later partial rerun) extend the log
    # legitimately; the entry the statement signed must still be in it.
    signed = signed_head.get("head_sha256")
    if signed and signed != head(audit / "log.jsonl")["head_sha256"] and signed != GENESIS \
            and not _contains_line(audit / "log.jsonl", signed):
        report.problems.append(f"{audit / 'log.jsonl'}: the entry the signed provenance "
                               "ends at is gone or edited")


def _contains_line(log: Path, digest: str) -> bool:
    from danlu.audit import line_digest, read_entries

    return any(line_digest(line) == digest for line, _ in read_entries(log))
