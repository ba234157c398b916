"""Tampering with a finished, audited run, as an auditor and an attacker would:
the matrix of every kind of artifact x four attacks (tests/tamper.py), and the
attacks of issue #16 that remove whole records. Every case must make verify fail
with a line naming the file; every file is put back exactly afterwards.

`pytest tests/test_tamper.py -s` prints the matrix (scripts/tamper_matrix.py
prints it for any project built by workflow_utils.build_audited_run)."""

import json

import pytest
from tamper import Saved, Stash, audited_targets, fingerprint, run_matrix

from danlu.audit.verify import verify

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(audited_run, tmp_path_factory):
    """The shared run, checked untouched before and after this module's tampering."""
    root = audited_run.root
    before = fingerprint(root)
    report = verify(root / "results")
    assert report.problems == [], report.problems
    yield audited_run
    assert fingerprint(root) == before, "a tampered file was not put back exactly"
    assert verify(root / "results").problems == []


@pytest.fixture
def stash(tmp_path):
    return Stash(tmp_path / "stash")


def test_every_attack_on_every_kind_is_detected(run, stash, tmp_path):
    matrix = run_matrix(run.root, audited_targets(run, tmp_path / "other-keys"), stash)
    print("\n" + matrix.table())
    assert matrix.missed == [], "\n".join(f"{o.kind} / {o.attack}: {o.problem}"
                                          for o in matrix.missed)


# --- records that disappear (issue #16) --------------------------------------------------


class Tampering:
    """Several files changed at once, all put back afterwards."""

    def __init__(self, root, stash):
        self.root, self.stash, self.undo = root, stash, []

    def delete(self, *paths):
        for path in paths:
            self.undo.append(self.stash.delete(self.root / path))

    def write(self, path, data: bytes):
        from tamper import write_in_place

        saved = Saved.of(self.root / path)
        write_in_place(self.root / path, data)
        self.undo.append(saved.restore)

    def problems(self):
        return verify(self.root / "results").problems

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for undo in reversed(self.undo):
            undo()


def test_deleted_provenance_and_audit_manifest(run, stash):
    """Issue #16, 1: verify used to start from the manifests it found, say OK
    and check no export at all."""
    with Tampering(run.root, stash) as t:
        t.delete("results/audit/provenance.intoto.json", "results/audit/manifest.json")
        problems = t.problems()
    assert any(p.startswith("results/audit/provenance.intoto.json: missing (the audit job ran")
               for p in problems), problems
    assert any(p.startswith("results/audit/manifest.json: missing (its audit job logged it")
               for p in problems), problems


def test_a_logged_manifest_that_is_gone(run, stash):
    """Issue #16, 2: a log entry whose manifest file is gone (a leaf: no manifest
    names it upstream)."""
    with Tampering(run.root, stash) as t:
        t.delete("results/eval/compare.manifest.json")
        problems = t.problems()
    assert any(p.startswith("results/eval/compare.manifest.json: missing (its eval_compare job "
                            "logged it") for p in problems), problems


def test_an_mlflow_run_whose_manifest_and_entry_are_gone(run, stash):
    """Issue #16, 2: the audit job's manifest deleted and its log entry cut off:
    MLflow still has the job's run and the head."""
    log = run.root / "results/audit/log.jsonl"
    lines = log.read_bytes().splitlines(keepends=True)
    with Tampering(run.root, stash) as t:
        t.delete("results/audit/manifest.json")
        t.write("results/audit/log.jsonl", b"".join(lines[:-1]))
        problems = t.problems()
    assert any(p.startswith("results/audit/manifest.json: MLflow run") and "(audit)" in p
               and "no audit-log entry records the job" in p for p in problems), problems
    assert any(p.startswith("results/audit/log.jsonl: cut short") for p in problems), problems


AUDIT_FILES = ["results/audit/log.jsonl", "results/audit/manifest.json",
               "results/audit/provenance.intoto.json", "results/audit/provenance.sig",
               "results/audit/exports.json", "results/audit/public_key.pem",
               *(f"results/audit/signatures/{n}.sig" for n in ("adapter", "merged", "gptq", "awq"))]


def _roll_back(t, run, files):
    for path in files:
        t.write(path, (run.second / path).read_bytes())


def test_rolling_back_the_last_invocation_is_caught_by_mlflow(run, stash):
    """The audit job's rerun undone on disk, every file consistent with the log
    as it was: only the MLflow witness, which results/ does not hold, can tell."""
    with Tampering(run.root, stash) as t:
        _roll_back(t, run, AUDIT_FILES)
        problems = t.problems()
    assert problems and all("MLflow" in p for p in problems), problems
    assert any(p.startswith("results/audit/log.jsonl: cut short") for p in problems), problems


def test_with_the_store_inside_results_a_whole_rollback_is_not_detectable(run, stash):
    """The limit docs/AUDIT.md states: whoever can rewrite results/ and the
    tracking store (here results/mlflow.db) can put back an earlier, consistent
    state. Keep the store (and the signing key) out of their reach."""
    with Tampering(run.root, stash) as t:
        _roll_back(t, run, [*AUDIT_FILES, "results/mlflow.db"])
        report = verify(run.root / "results")
    assert report.ok, report.problems
    head = json.loads((run.second / "results/audit/log.jsonl").read_text().splitlines()[-1])
    assert f"up to entry {head['seq']} of {head['seq']}" in report.witnesses[0]
