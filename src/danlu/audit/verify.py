"""`danlu verify`: prove, offline, that a results directory is what its
records say. It starts from the evidence that must exist, not from the files it
happens to find, and reports each problem as one line naming the file.

Three records witness the run, and each is checked against the others:

- the audit log (results/audit/log.jsonl): one hash-chained entry per job,
  naming the manifest the job wrote and its sha256;
- MLflow (when tracking was on): one parent run per snakemake invocation and one
  child run per job, holding the manifest's and every file's sha256; each log
  append also tags the parent with the log's new head (danlu.audit.log);
- the signed provenance statement (once the `audit` job has run): the exports'
  files by sha256 and the log's head when it was signed.

Checks:

1. manifests: every manifest the log names exists and is the one its latest job
   logged; every manifest found on disk has a log entry;
2. files: every file a manifest names still has the recorded sha256;
3. chain: each manifest's inputs equal the outputs of the manifests that
   produced them, back to the raw data (an upstream job that reran with
   identical outputs is fine: the files, not the manifest's timestamps, count);
4. audit log: the hash chain is intact and numbered 1, 2, 3, ...;
5. MLflow: every logged job's run records the manifest sha256 its entry does and
   the files' digests its manifest does; every finished job run of every
   invocation of this log has its entry (a log cut short shows); the head each
   parent run recorded is in the log, unchanged; the runs' artifact copies of
   manifests and plots match their recorded digests;
6. exports: once an `audit` entry exists, the provenance statement, its
   signature, the public key and every export's signature exist and verify;
   the statement's subjects match the export files, and the log entry it
   signed as the head is still that entry.

An expected record that is absent is a problem, never a note. Notes are for what
is legitimate but worth knowing (a manifest rewritten by a rerun with identical
outputs; a job run with tracking off). The summary line says which witnesses
took part: a run with tracking off has no MLflow witness, and says so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from danlu.audit.manifest import MANIFEST_SUFFIX, sha256_file


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    checked: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    witnesses: list[str] = field(default_factory=list)  # which records took part, in words

    def count(self, what: str, n: int = 1) -> None:
        self.checked[what] = self.checked.get(what, 0) + n

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        """What was checked: the counts, then the witnesses."""
        counts = ", ".join(f"{n} {what}" for what, n in self.checked.items())
        return "; ".join(part for part in (counts, *self.witnesses) if part)


def find_manifests(results: Path) -> list[Path]:
    """Stage manifests (not MLflow's artifact copies of them)."""
    return sorted(p for p in results.rglob(f"*{MANIFEST_SUFFIX}")
                  if "mlruns" not in p.relative_to(results).parts)


def _name(path: Path, root: Path) -> str:
    """How problem lines name a file: relative to the project root, as manifests do."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def _short(digest: str | None) -> str:
    return f"{digest[:12]}…" if digest else "nothing"


def _two(got: str | None, want: str | None) -> tuple[str, str]:
    """Two digests shortened, unless their short forms would look the same."""
    if got and want and got[:12] == want[:12]:
        return got, want
    return _short(got), _short(want)


# --- the audit log -----------------------------------------------------------------------


@dataclass
class AuditLog:
    """The log as read: raw lines and parsed entries (None where not JSON)."""
    name: str
    lines: list[str]
    entries: list[dict | None]

    def line_sha256(self, seq: int) -> str | None:
        from danlu.audit.log import line_digest

        return line_digest(self.lines[seq - 1]) if 0 < seq <= len(self.lines) else None

    @property
    def first_sha256(self) -> str | None:
        return self.line_sha256(1)

    def valid(self) -> list[dict]:
        return [e for e in self.entries if e]

    def latest(self) -> dict[str, dict]:
        """Manifest path -> the last entry that logged it (a rerun supersedes)."""
        return {e.get("manifest"): e for e in self.valid()}

    def by_run(self) -> dict[str, dict]:
        return {e["mlflow_run_id"]: e for e in self.valid() if e.get("mlflow_run_id")}

    def last_of_stage(self, stage: str) -> dict | None:
        return next((e for e in reversed(self.valid()) if e.get("stage") == stage), None)


def load_log(root: Path, results: Path, report: Report) -> AuditLog | None:
    from danlu.audit.log import check_chain, read_entries

    path = results / "audit" / "log.jsonl"
    name = _name(path, root)
    if not path.is_file():
        report.problems.append(f"{name}: audit log missing")
        return None
    try:
        rows = read_entries(path)
    except (OSError, UnicodeDecodeError) as err:
        report.problems.append(f"{name}: unreadable audit log ({err.__class__.__name__})")
        return None
    report.problems.extend(p.replace(str(path), name, 1) for p in check_chain(path))
    report.count("log entries", len(rows))
    return AuditLog(name, [line for line, _ in rows], [entry for _, entry in rows])


# --- manifests ---------------------------------------------------------------------------


def load_manifests(root: Path, results: Path, log: AuditLog | None,
                   report: Report) -> dict[str, dict]:
    """Every manifest the log names or the disk holds, parsed; a logged one that
    is gone is a problem (the log, not the disk, says what must exist)."""
    latest = log.latest() if log else {}
    names = {p.relative_to(root).as_posix() for p in find_manifests(results)}
    manifests = {}
    for name in sorted(names | {n for n in latest if n}):
        path = root / name
        if not path.is_file():
            entry = latest[name]
            report.problems.append(f"{name}: missing (its {entry.get('stage')} job logged it "
                                   f"as audit-log entry {entry.get('seq')})")
            continue
        try:
            manifests[name] = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            report.problems.append(f"{name}: unreadable manifest ({err.__class__.__name__})")
    report.count("manifests", len(manifests))
    return manifests


def check_logged(root: Path, results: Path, log: AuditLog | None, report: Report) -> None:
    """Each manifest on disk is the one its latest job logged."""
    if log is None:
        return
    history: dict[str, list[dict]] = {}
    for entry in log.valid():
        history.setdefault(entry.get("manifest"), []).append(entry)
    for path in find_manifests(results):
        name = path.relative_to(root).as_posix()
        entries = history.get(name)
        if not entries:
            report.problems.append(f"{name}: no audit-log entry for this manifest")
            continue
        actual, latest = sha256_file(path), entries[-1]
        if actual == latest.get("manifest_sha256"):
            continue
        earlier = next((e for e in entries if e.get("manifest_sha256") == actual), None)
        if earlier is not None:
            report.problems.append(f"{name}: the version audit-log entry {earlier.get('seq')} "
                                   f"logged, not the one of its latest job (entry "
                                   f"{latest.get('seq')}): replaced with an earlier file")
        else:
            report.problems.append(f"{name}: edited after its job (sha256 differs from the "
                                   f"audit log, entry {latest.get('seq')})")


def check_files(root: Path, manifests: dict[str, dict], report: Report) -> None:
    cache: dict[str, str | None] = {}
    for name, m in manifests.items():
        for kind in ("inputs", "outputs"):
            for entry in m.get(kind, []):
                path = root / entry["path"]  # an external file's path is absolute: itself
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


# --- MLflow ------------------------------------------------------------------------------


def _project_store(uri: str | None) -> bool:
    """A store named relative to the project (the default results/mlflow.db)."""
    return bool(uri and uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"))


def _absolute(uri: str | None, root: Path) -> str | None:
    """A relative SQLite store is relative to the project root, wherever verify runs."""
    if _project_store(uri):
        return f"sqlite:///{(root / uri.removeprefix('sqlite:///')).absolute()}"
    return uri


class Stores:
    """The tracking stores the log names, each opened once per verify; a store
    that cannot be opened is one problem line naming it, however many entries
    point there."""

    def __init__(self, root: Path, report: Report):
        self.root, self.report = root, report
        self._open: dict[str, object] = {}

    def name(self, uri: str) -> str:
        if _project_store(uri):
            return uri.removeprefix("sqlite:///")
        return uri

    def get(self, uri: str):
        from danlu.audit.tracking import StoreReader

        if uri not in self._open:
            try:
                self._open[uri] = StoreReader(_absolute(uri, self.root))
            except Exception as err:  # noqa: BLE001 - an unreadable store is a finding
                self.report.problems.append(f"{self.name(uri)}: MLflow store unreadable "
                                            f"({err.__class__.__name__}: {err})")
                self._open[uri] = None
        return self._open[uri]

    def opened(self) -> list[tuple[str, object]]:
        return [(uri, reader) for uri, reader in self._open.items() if reader is not None]

    def close(self) -> None:
        for _, reader in self.opened():
            reader.close()


def check_mlflow(root: Path, manifests: dict[str, dict], latest: dict, report: Report,
                 stores: Stores | None = None) -> None:
    """The file digests each current manifest's run recorded equal the manifest's."""
    from danlu.audit.tracking import digest_tag, path_tag

    own = stores is None
    stores = stores or Stores(root, report)
    try:
        for name, m in manifests.items():
            entry = latest.get(name) or {}
            run_id, uri = entry.get("mlflow_run_id"), entry.get("tracking_uri")
            if not run_id:
                report.notes.append(f"{name}: no MLflow run recorded (tracking was off or failed)")
                continue
            run = _read_run(stores, uri, run_id, name, report)
            if run is None:
                continue
            report.count("mlflow runs")
            where = f"MLflow run {run_id}"
            for kind in ("inputs", "outputs"):
                for e in m.get(kind, []):
                    key = digest_tag(kind[:-1], e["path"])
                    got = run.tags.get(key)
                    if got != e["sha256"]:
                        shown = _two(got, e["sha256"])
                        report.problems.append(f"{e['path']}: {where} records {shown[0]} "
                                               f"not the manifest's {shown[1]}")
                    # A key that names the file by hash must lead back to this path.
                    elif path_tag(key) and run.tags.get(path_tag(key)) != e["path"]:
                        report.problems.append(f"{e['path']}: {where} records another path "
                                               f"under {path_tag(key)}")
    finally:
        if own:
            stores.close()


def _read_run(stores: Stores, uri: str | None, run_id: str, name: str, report: Report):
    """The run, or None after reporting why it cannot be read."""
    reader = stores.get(uri) if uri else None
    if reader is None:
        if not uri:
            report.problems.append(f"{name}: MLflow run {run_id} has no tracking URI in the log")
        return None
    try:
        run = reader.run(run_id)
    except Exception as err:  # noqa: BLE001 - a damaged store is a finding, not a crash
        report.problems.append(f"{stores.name(uri)}: MLflow run {run_id} unreadable "
                               f"({err.__class__.__name__}), named by {name}")
        return None
    if run is None:
        report.problems.append(f"{name}: MLflow run {run_id} of its audit-log entry is not in "
                               f"{stores.name(uri)} (deleted, or the store was replaced)")
    return run


def check_mlflow_witness(root: Path, log: AuditLog, report: Report, stores: Stores) -> None:
    """MLflow as an independent witness of the log: the logged jobs' runs, and
    every job run and recorded head of every invocation of this log."""
    from danlu.audit.tracking import MANIFEST_SHA_TAG

    tracked = [e for e in log.valid() if e.get("mlflow_run_id")]
    if not tracked:
        report.witnesses.append("MLflow: not a witness (no logged job ran with tracking on)")
        return
    invocations: set[tuple[str, str]] = set()
    for entry in tracked:
        uri = entry.get("tracking_uri")
        run = _read_run(stores, uri, entry["mlflow_run_id"], entry.get("manifest"), report)
        if run is None:
            continue
        if run.tags.get(MANIFEST_SHA_TAG) != entry.get("manifest_sha256"):
            shown = _two(run.tags.get(MANIFEST_SHA_TAG), entry.get("manifest_sha256"))
            report.problems.append(
                f"{entry.get('manifest')}: MLflow run {run.run_id} in {stores.name(uri)} records "
                f"manifest sha256 {shown[0]}, audit-log entry {entry.get('seq')} {shown[1]}")
        if run.parent:
            invocations.add((uri, run.parent))
    invocations |= _invocations_of_log(log, report, stores)
    heads = [check_invocation(root, log, uri, parent, report, stores)
             for uri, parent in sorted(invocations)]
    _witness_summary(log, [h for h in heads if h], len(invocations), report)


def _invocations_of_log(log: AuditLog, report: Report, stores: Stores) -> set[tuple[str, str]]:
    """Parent runs tagged with this log's identity, found in the store itself, so an
    invocation whose every entry was cut from the log is still found."""
    from danlu.audit.tracking import LOG_TAG

    found = set()
    for uri, reader in stores.opened():
        try:
            found |= {(uri, p.run_id) for p in reader.runs_tagged(LOG_TAG, log.first_sha256)}
        except Exception as err:  # noqa: BLE001
            report.problems.append(f"{stores.name(uri)}: MLflow search failed "
                                   f"({err.__class__.__name__})")
    return found


def check_invocation(root: Path, log: AuditLog, uri: str, parent_id: str, report: Report,
                     stores: Stores) -> int | None:
    """One snakemake invocation: its head is in the log, and each of its finished
    job runs has its entry, at or before that head. Returns the head's seq."""
    from danlu.audit.tracking import HEAD_TAG, LOG_TAG, MANIFEST_SHA_TAG, PARENT_TAG

    reader, store = stores.get(uri), stores.name(uri)
    try:
        parent = reader.run(parent_id)
        children = reader.runs_tagged(PARENT_TAG, parent_id)
    except Exception as err:  # noqa: BLE001 - a damaged store is a finding, not a crash
        report.problems.append(f"{store}: MLflow parent run {parent_id} unreadable "
                               f"({err.__class__.__name__})")
        return None
    if parent is None:
        report.problems.append(f"{log.name}: the MLflow parent run {parent_id} of its jobs' runs "
                               f"is not in {store} (deleted, or the store was replaced)")
    # A job's run ends FINISHED only after its log entry is appended (danlu.stage);
    # one that failed, was killed, or is still running need not have an entry.
    finished = [c for c in children if MANIFEST_SHA_TAG in c.tags and c.status == "FINISHED"]
    for c in children:
        if c not in finished:
            report.notes.append(f"MLflow run {c.run_id} ({c.stage}, {c.status}) in {store}: "
                                "its job did not finish")
    if parent is None or (HEAD_TAG not in parent.tags and not finished):
        return None  # an invocation that finished no job has no head to compare
    report.count("mlflow invocations")
    where = f"MLflow parent run {parent_id} in {store}"
    if parent.tags.get(LOG_TAG) != log.first_sha256:
        report.problems.append(f"{log.name}: its first entry is not the one {where} recorded "
                               f"({_short(parent.tags.get(LOG_TAG))}): the log was replaced or "
                               "rebuilt")
    head = _check_head(log, parent.tags.get(HEAD_TAG), where, report)
    by_run = log.by_run()
    for c in finished:
        report.count("mlflow job runs")
        entry = by_run.get(c.run_id)
        if entry is None:
            report.problems.append(
                f"{_manifest_of(c, root)}: MLflow run {c.run_id} ({c.stage}) in {store} finished "
                f"with manifest sha256 {_short(c.tags[MANIFEST_SHA_TAG])}, but no audit-log entry "
                f"records the job ({log.name} cut short, or the entry removed)")
        elif head is not None and entry.get("seq", 0) > head:
            report.problems.append(f"{log.name}: entry {entry.get('seq')} comes after the head "
                                   f"(entry {head}) its invocation's {where} recorded")
        check_artifacts(root, uri, c, report, stores)
    return head


def _check_head(log: AuditLog, tag: str | None, where: str, report: Report) -> int | None:
    """The head a parent run recorded is still the log's entry at that number."""
    try:
        seq_text, sha = (tag or "").split()
        seq = int(seq_text)
    except ValueError:
        report.problems.append(f"{log.name}: {where} records no audit-log head "
                               f"({tag!r}): its tag was removed or edited, or the run predates "
                               "danlu recording heads")
        return None
    if seq > len(log.lines):
        report.problems.append(f"{log.name}: cut short: it ends at entry {len(log.lines)}, but "
                               f"{where} recorded entry {seq} as the head")
    elif log.line_sha256(seq) != sha:
        report.problems.append(f"{log.name}: entry {seq} is not the one {where} recorded as the "
                               "head (it or an entry before it was edited, or the chain rebuilt)")
    return seq


def _manifest_of(run, root: Path) -> str:
    from danlu.audit.tracking import MANIFEST_TAG

    path = Path(run.tags.get(MANIFEST_TAG, "?"))
    return _name(path, root) if path.is_absolute() else path.as_posix()


def _witness_summary(log: AuditLog, heads: list[int], invocations: int, report: Report) -> None:
    total = len(log.lines)
    if not heads:
        report.witnesses.append("MLflow: runs checked, but no invocation recorded a log head")
        return
    top = max(heads)
    text = (f"MLflow: {invocations} invocation(s) witnessed the log up to entry {top} "
            f"of {total}")
    if top < total:
        text += f" (entries {top + 1}-{total} were logged with tracking off)"
        report.notes.append(f"{log.name}: entries {top + 1}-{total} have no MLflow witness")
    report.witnesses.append(text)


def _artifact_dir(root: Path, uri: str, run) -> Path | None:
    """Where a run's artifacts lie, if on this machine. A project store's
    artifacts (results/mlruns) move with the project: read them where it is now."""
    from urllib.parse import unquote, urlparse

    from danlu.audit.tracking import DEFAULT_ARTIFACTS

    if not run.artifact_uri or not run.artifact_uri.startswith("file:"):
        return None
    path = Path(unquote(urlparse(run.artifact_uri).path))
    if _project_store(uri) and path.parts[-3:-2] == ("mlruns",):
        return root / DEFAULT_ARTIFACTS / run.run_id / path.name
    return path


def check_artifacts(root: Path, uri: str, run, report: Report, stores: Stores) -> None:
    """The run's copy of its manifest, and of plots among its outputs, match the
    digests the run recorded (a local artifact store only)."""
    from danlu.audit.tracking import MANIFEST_SHA_TAG, MANIFEST_TAG

    directory = _artifact_dir(root, uri, run)
    if directory is None:
        return
    expected = _expected_artifacts(run)
    manifest = Path(run.tags.get(MANIFEST_TAG, "")).name
    if not (directory / manifest).is_file():
        report.problems.append(f"{_name(directory / manifest, root)}: missing (MLflow run "
                               f"{run.run_id}'s copy of its manifest)")
    expected.setdefault(manifest, set()).add(run.tags[MANIFEST_SHA_TAG])
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        report.count("mlflow artifacts")
        digests = expected.get(path.name)
        if digests is None:
            report.notes.append(f"{_name(path, root)}: an artifact no digest of its run covers")
        elif sha256_file(path) not in digests:
            report.problems.append(f"{_name(path, root)}: differs from the sha256 MLflow run "
                                   f"{run.run_id} in {stores.name(uri)} recorded for it")


def _expected_artifacts(run) -> dict[str, set[str]]:
    """File name -> the sha256 the run recorded for outputs of that name."""
    from danlu.audit.tracking import DIGEST_PREFIX, path_tag

    expected: dict[str, set[str]] = {}
    prefix = f"{DIGEST_PREFIX}output."
    for key, sha in run.tags.items():
        if key.startswith(prefix):
            path = run.tags.get(path_tag(key) or "") or key.removeprefix(prefix)
            expected.setdefault(Path(path).name, set()).add(sha)
    return expected


# --- exports, signatures and provenance --------------------------------------------------


def check_exports(root: Path, results: Path, log: AuditLog | None, manifests: dict[str, dict],
                  report: Report) -> None:
    """Once the audit job has run, its statement, signatures and key must all be
    there and verify; before, there is nothing to check."""
    audit = results / "audit"
    statement_path = audit / "provenance.intoto.json"
    entry = log.last_of_stage("audit") if log else None
    if entry is None and not statement_path.exists():
        report.witnesses.append("provenance: none yet (no audit job in the log)")
        return
    why = f"the audit job ran: audit-log entry {entry.get('seq')}" if entry else \
        "the audit job's files are there"
    required = [statement_path, audit / "provenance.sig", audit / "public_key.pem",
                audit / "exports.json"]
    for path in required:
        if not path.is_file():
            report.problems.append(f"{_name(path, root)}: missing ({why})")
    public_key = audit / "public_key.pem"
    exports = expected_exports(root, results, manifests, report)
    files = {}
    for name, directory in sorted(exports.items()):
        signature = audit / "signatures" / f"{name}.sig"
        if not signature.is_file():
            report.problems.append(f"{_name(signature, root)}: missing (the signature of "
                                   f"export {name}; {why})")
        elif public_key.is_file():
            _check_signature(root, root / directory, signature, public_key, report, model=True)
        for f in sorted((root / directory).rglob("*")):
            if f.is_file():
                files[_name(f, root)] = sha256_file(f)
    report.count("exports", len(exports))
    if not statement_path.is_file():
        return
    if public_key.is_file() and (audit / "provenance.sig").is_file():
        _check_signature(root, statement_path, audit / "provenance.sig", public_key, report)
    check_statement_against(root, statement_path, files, log, report)


def expected_exports(root: Path, results: Path, manifests: dict[str, dict],
                     report: Report) -> dict[str, str]:
    """Export name -> directory: those exports.json lists, those the audit job was
    asked for (its manifest's params) and those with a signature, so that losing
    one record does not shrink what is checked."""
    audit = results / "audit"
    exports: dict[str, str] = {}
    listing = audit / "exports.json"
    if listing.is_file():
        try:
            exports.update(json.loads(listing.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError) as err:
            report.problems.append(f"{_name(listing, root)}: unreadable ({err.__class__.__name__})")
    manifest = manifests.get(_name(audit / "manifest.json", root), {})
    names = set(manifest.get("params", {}).get("exports", {}))
    names |= {p.stem for p in (audit / "signatures").glob("*.sig")}
    for name in sorted(names - exports.keys()):
        exports[name] = _name(results / "export" / name, root)
    return exports


def _check_signature(root: Path, target: Path, signature: Path, public_key: Path,
                     report: Report, *, model: bool = False) -> None:
    from danlu.audit.signing import SignatureError, verify_file, verify_model

    try:
        (verify_model if model else verify_file)(target, signature, public_key)
        report.count("signatures")
    except SignatureError as err:
        report.problems.append(str(err).replace(f"{root}/", ""))
    except Exception as err:  # noqa: BLE001 - model-signing rejects a damaged key while loading it
        report.problems.append(f"{_name(target, root)}: signature check failed: public key "
                               f"{_name(public_key, root)} unusable ({err.__class__.__name__}: "
                               f"{' '.join(str(err).split())})")


def check_statement_against(root: Path, statement_path: Path, files: dict[str, str],
                            log: AuditLog | None, report: Report) -> None:
    """The statement's subjects are the export files; the log entry it signed as
    the head is still that entry, at that number."""
    from danlu.audit.provenance import check_statement, load_statement

    name = _name(statement_path, root)
    try:
        statement = load_statement(statement_path)
    except (OSError, ValueError) as err:
        report.problems.append(f"{name}: {str(err).replace(f'{statement_path}: ', '')}")
        return
    report.problems.extend(f"{name}: {p}" for p in check_statement(statement, files))
    signed = statement["predicate"]["buildDefinition"].get("internalParameters", {}) \
        .get("auditLog") or {}
    if log is None or not signed:
        return
    entries, head_sha = signed.get("entries", 0), signed.get("head_sha256")
    if entries == 0:
        return  # signed before any job was logged: nothing to compare
    if entries > len(log.lines):
        report.problems.append(f"{log.name}: cut short: it ends at entry {len(log.lines)}, but "
                               f"the signed provenance {name} ends it at entry {entries}")
    elif log.line_sha256(entries) != head_sha:
        report.problems.append(f"{log.name}: entry {entries} is not the one the signed "
                               f"provenance {name} ends at (edited, or the chain rebuilt)")
    else:
        report.witnesses.append(f"provenance: signed at log entry {entries}")


# --- all together ------------------------------------------------------------------------


def verify(results: Path, *, mlflow: bool = True) -> Report:
    """Run every check on `results` (its parent is the project root)."""
    results = Path(results)
    root = results.parent
    report = Report()
    if not results.is_dir():
        report.problems.append(f"{results}: no such results directory")
        return report
    log = load_log(root, results, report)
    manifests = load_manifests(root, results, log, report)
    check_logged(root, results, log, report)
    check_files(root, manifests, report)
    check_chain(root, manifests, report)
    if not mlflow:
        report.witnesses.append("MLflow: not checked (--no-mlflow)")
    elif log is None:
        report.witnesses.append("MLflow: not checked (no audit log to start from)")
    else:
        stores = Stores(root, report)
        try:
            check_mlflow(root, manifests, log.latest(), report, stores)
            check_mlflow_witness(root, log, report, stores)
        finally:
            stores.close()
    check_exports(root, results, log, manifests, report)
    # Two checks may meet the same absent record (a run both index and witness read).
    report.problems = list(dict.fromkeys(report.problems))
    return report


def main(args) -> None:

    report = verify(Path(args.results), mlflow=not args.no_mlflow)
    if args.json:
        print(json.dumps({"ok": report.ok, "problems": report.problems, "checked": report.checked,
                          "notes": report.notes, "witnesses": report.witnesses},
                         ensure_ascii=False, sort_keys=True))
    else:
        for problem in report.problems:
            print(f"PROBLEM {problem}")
        for note in report.notes if args.verbose else []:
            print(f"note    {note}")
        verdict = "OK" if report.ok else f"FAILED: {len(report.problems)} problem(s)"
        print(f"danlu verify {args.results}: {verdict} ({report.summary()})")
    if not report.ok:
        raise SystemExit(1)
