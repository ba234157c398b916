"""`danlu verify`: fast checks of the witnesses on stages run in-process, then
the real DAG (the shared audited run, see conftest.audited_run): clean, then
each kind of tampering. The full tamper matrix is in test_tamper.py."""

import contextlib
import json
import shutil
from pathlib import Path

import pytest
from workflow_utils import danlu, snakemake

from danlu.audit import log as audit
from danlu.audit import tracking
from danlu.audit.verify import verify as verify_in_process
from danlu.stage import run_stage

slow = pytest.mark.slow


# --- the witnesses, on two tiny stages run in this process -------------------------------


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory):
    """An initialised MLflow SQLite store, copied for each test (creating the
    tables takes MLflow seconds)."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("store") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def project(tmp_path, monkeypatch, empty_store):
    """A project directory as jobs see it: cwd, the log's path, the default store."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results").mkdir()
    shutil.copy(empty_store, tmp_path / "results" / "mlflow.db")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "raw.txt").write_text("raw\n", "utf-8")
    monkeypatch.setenv(audit.ENV_LOG, "results/audit/log.jsonl")
    monkeypatch.setenv(tracking.ENV_URI, tracking.DEFAULT_URI)
    for name in (tracking.ENV_PARENT, tracking.ENV_DISABLED, tracking.ENV_EXPERIMENT):
        monkeypatch.delenv(name, raising=False)
    _forget_relative_store()
    yield tmp_path
    _forget_relative_store()


def _forget_relative_store():
    """Jobs here share the relative URI sqlite:///results/mlflow.db across test
    directories, in one process; MLflow caches the store, and SQLAlchemy fixed
    the file's absolute path when it made the engine. Separate job processes
    start afresh; here the caches are dropped between tests."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
    from mlflow.tracking._tracking_service.utils import _tracking_store_registry

    engine = SqlAlchemyStore._engine_map.pop(tracking.DEFAULT_URI, None)
    if engine is not None:
        engine.dispose()
    _tracking_store_registry._get_store_with_resolved_uri.cache_clear()


@contextlib.contextmanager
def invocation(monkeypatch, *, tracked: bool = True):
    """What the Snakefile's onstart/onsuccess do around one snakemake invocation."""
    if not tracked:
        monkeypatch.setenv(tracking.ENV_DISABLED, "1")
        yield None
        monkeypatch.delenv(tracking.ENV_DISABLED)
        return
    parent = tracking.start_parent_run(tracking.DEFAULT_URI, "test", "snakemake", {})
    monkeypatch.setenv(tracking.ENV_PARENT, parent)
    yield parent
    tracking.end_run(tracking.DEFAULT_URI, parent)
    monkeypatch.delenv(tracking.ENV_PARENT)


def stage(name: str, source: str, text: str, *, fail: bool = False, why: str = "") -> str:
    """One stage job: reads `source`, writes results/<name>/out.txt (`why` goes
    into its params: a rerun's manifest differs even within the same second)."""
    out = Path("results") / name / "out.txt"

    def work(run):
        if fail:
            raise RuntimeError("the job failed")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, "utf-8")
        return {"records": 1}

    run_stage(name, {"text": text, "why": why}, work, inputs=[source], outputs=[out],
              manifest_path=out.parent / "manifest.json")
    return out.as_posix()


def two_stages(monkeypatch, *, tracked: bool = True) -> None:
    with invocation(monkeypatch, tracked=tracked):
        stage("b", stage("a", "data/raw.txt", "A"), "B")


def test_two_invocations_and_a_rerun_verify(project, monkeypatch):
    two_stages(monkeypatch)
    with invocation(monkeypatch):  # a partial rerun with identical outputs
        stage("a", "data/raw.txt", "A", why="rerun")
    report = verify_in_process(project / "results")
    assert report.problems == []
    assert report.checked["mlflow invocations"] == 2 and report.checked["mlflow job runs"] == 3
    assert "MLflow: 2 invocation(s) witnessed the log up to entry 3 of 3" in report.witnesses
    assert "provenance: none yet (no audit job in the log)" in report.witnesses
    assert any("results/a/manifest.json was rewritten since" in n for n in report.notes)


def test_an_untracked_run_verifies_and_says_mlflow_was_no_witness(project, monkeypatch):
    two_stages(monkeypatch, tracked=False)
    report = verify_in_process(project / "results")
    assert report.problems == []
    assert "MLflow: not a witness (no logged job ran with tracking on)" in report.witnesses


def test_entries_logged_with_tracking_off_after_a_tracked_run(project, monkeypatch):
    two_stages(monkeypatch)
    with invocation(monkeypatch, tracked=False):
        stage("a", "data/raw.txt", "A", why="rerun")
    report = verify_in_process(project / "results")
    assert report.problems == []
    assert report.witnesses[0] == ("MLflow: 1 invocation(s) witnessed the log up to entry 2 of 3 "
                                   "(entries 3-3 were logged with tracking off)")


def test_a_failed_job_leaves_a_run_without_manifest_and_no_entry(project, monkeypatch):
    with invocation(monkeypatch):
        a = stage("a", "data/raw.txt", "A")
        with pytest.raises(RuntimeError):
            stage("b", a, "B", fail=True)
    report = verify_in_process(project / "results")
    assert report.problems == []
    assert any("(b, FAILED)" in n and n.endswith("its job did not finish") for n in report.notes)


def test_a_job_that_fails_after_its_run_recorded_the_manifest(project, monkeypatch):
    """Killed or failed between MLflow and the log: the run has the manifest's
    digest but is not FINISHED, and Snakemake removes a failed job's outputs."""
    import danlu.stage

    def no_log(**_):
        raise OSError("the log's disk is full")

    with invocation(monkeypatch):
        a = stage("a", "data/raw.txt", "A")
        monkeypatch.setattr(danlu.stage, "record_job", no_log)
        with pytest.raises(OSError):
            stage("b", a, "B")
    for name in ("out.txt", "manifest.json"):
        (project / "results/b" / name).unlink()
    report = verify_in_process(project / "results")
    assert report.problems == []
    assert any("(b, FAILED)" in n for n in report.notes)


def test_a_log_cut_short_with_its_job_undone_is_caught_by_mlflow(project, monkeypatch):
    two_stages(monkeypatch)
    log = project / "results/audit/log.jsonl"
    log.write_text("".join(log.read_text("utf-8").splitlines(keepends=True)[:-1]), "utf-8")
    shutil.rmtree(project / "results/b")  # as if b never ran: no manifest, no outputs
    problems = verify_in_process(project / "results").problems
    assert any(p.startswith("results/audit/log.jsonl: cut short: it ends at entry 1, but MLflow "
                            "parent run") for p in problems), problems
    assert any(p.startswith("results/b/manifest.json: MLflow run") and "(b)" in p
               and "no audit-log entry records the job" in p for p in problems), problems


def test_a_rebuilt_chain_is_caught_by_the_recorded_head(project, monkeypatch):
    two_stages(monkeypatch)
    log = project / "results/audit/log.jsonl"
    entries = [json.loads(line) for line in log.read_text("utf-8").splitlines()]
    entries[0]["user"] = "someone-else"
    lines, prev = [], audit.GENESIS
    for entry in entries:  # every link made good again
        line = json.dumps({**entry, "prev_sha256": prev}, sort_keys=True, ensure_ascii=False)
        lines.append(line)
        prev = audit.line_digest(line)
    log.write_text("\n".join(lines) + "\n", "utf-8")
    problems = verify_in_process(project / "results").problems
    assert not any("hash chain broken" in p for p in problems)
    assert any(p.startswith("results/audit/log.jsonl: entry 2 is not the one MLflow parent run")
               for p in problems), problems
    assert any(p.startswith("results/audit/log.jsonl: its first entry is not the one")
               for p in problems), problems


def test_a_logged_manifest_that_is_gone(project, monkeypatch):
    two_stages(monkeypatch)
    (project / "results/b/manifest.json").unlink()
    problems = verify_in_process(project / "results").problems
    assert "results/b/manifest.json: missing (its b job logged it as audit-log entry 2)" in problems


def test_a_deleted_store_is_a_problem_and_not_made_anew(project, monkeypatch):
    two_stages(monkeypatch)
    (project / "results/mlflow.db").unlink()
    problems = verify_in_process(project / "results").problems
    assert any(p.startswith("results/mlflow.db: MLflow store unreadable (FileNotFoundError")
               for p in problems), problems
    assert not (project / "results/mlflow.db").exists()


# --- the real DAG ------------------------------------------------------------------------


@pytest.fixture
def finished(audited_run):
    return audited_run.root


@pytest.fixture
def copy(finished, tmp_path):
    dst = tmp_path / "p"
    shutil.copytree(finished, dst, symlinks=True)
    return dst


def verify(root, *extra):
    proc = danlu(root, "verify", *extra)
    return proc.returncode, proc.stdout + proc.stderr


@slow
def test_fresh_run_verifies(finished):
    code, out = verify(finished)
    assert code == 0, out
    assert "OK" in out and "signatures" in out and "mlflow runs" in out
    # three invocations (the first data, the final data, the audit job again)
    assert "MLflow: 3 invocation(s) witnessed the log up to entry" in out
    assert "provenance: signed at log entry" in out
    report = json.loads(danlu(finished, "verify", "--json").stdout)
    assert report["ok"] and report["checked"]["manifests"] >= 10
    assert report["checked"]["mlflow invocations"] == 3
    head = len((finished / "results/audit/log.jsonl").read_text("utf-8").splitlines())
    assert f"witnessed the log up to entry {head} of {head}" in report["witnesses"][0]


@slow
def test_flipped_byte_in_the_adapter(copy):
    # Export files are hard links of the stage's (copytree made them copies): flip both.
    for path in (copy / "results/train/adapter_model.safetensors",
                 copy / "results/export/adapter/adapter_model.safetensors"):
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
    code, out = verify(copy)
    assert code == 1
    assert "results/train/adapter_model.safetensors: sha256" in out
    assert "results/export/adapter: signature check failed: changed adapter_model.safetensors" in out
    assert "provenance.intoto.json: " in out  # the signed subject digest no longer matches


@slow
def test_edited_manifest(copy):
    path = copy / "results/dedup/manifest.json"
    manifest = json.loads(path.read_text())
    manifest["params"]["dedup"]["threshold"] = 0.5
    path.write_text(json.dumps(manifest, indent=2))
    code, out = verify(copy)
    assert code == 1 and "results/dedup/manifest.json: edited after its job" in out


@slow
def test_edited_mlflow_digest(copy):
    from mlflow.tracking import MlflowClient

    log = [json.loads(line) for line in (copy / "results/audit/log.jsonl").read_text().splitlines()]
    # the latest job that wrote it (the first data's job was superseded by a rerun)
    entry = [e for e in log if e["manifest"] == "results/clean/manifest.json"][-1]
    client = MlflowClient(tracking_uri=f"sqlite:///{copy}/results/mlflow.db")
    client.set_tag(entry["mlflow_run_id"], "danlu.sha256.output.results/clean/records.jsonl", "0" * 64)
    code, out = verify(copy)
    assert code == 1 and "results/clean/records.jsonl: MLflow run" in out


@slow
@pytest.mark.parametrize("how", ["delete", "edit", "swap"])
def test_tampered_audit_log(copy, how):
    path = copy / "results/audit/log.jsonl"
    lines = path.read_text().splitlines()
    if how == "delete":
        del lines[2]
    elif how == "edit":
        entry = json.loads(lines[1])
        entry["user"] = "someone-else"
        lines[1] = json.dumps(entry, sort_keys=True)
    else:
        lines[1], lines[2] = lines[2], lines[1]
    path.write_text("\n".join(lines) + "\n")
    code, out = verify(copy)
    assert code == 1 and "results/audit/log.jsonl: line" in out and "hash chain broken" in out


@slow
def test_bad_signature(copy):
    sig = copy / "results/audit/provenance.sig"
    bundle = json.loads(sig.read_text())
    envelope = bundle["dsseEnvelope"]
    envelope["signatures"][0]["sig"] = envelope["signatures"][0]["sig"][::-1]
    sig.write_text(json.dumps(bundle))
    code, out = verify(copy)
    assert code == 1 and "provenance.intoto.json" in out


@slow
def test_exported_model_card_and_signature(finished):
    card = (finished / "results/export/adapter/README.md").read_text("utf-8")
    for heading in ("## Base model", "## Data", "## Training", "## Evaluation",
                    "## Intended use and limits", "## Provenance"):
        assert heading in card
    statement = json.loads((finished / "results/audit/provenance.intoto.json").read_text())
    names = {s["name"] for s in statement["subject"]}
    assert "results/export/adapter/adapter_model.safetensors" in names


@slow
def test_report_builds_offline_and_shows_every_figure(finished, tmp_path):
    import shutil
    import subprocess
    import sys

    snakemake(finished, "--report", "results/report.html")
    assert (finished / "results/report.html").stat().st_size > 10_000
    pytest.importorskip("playwright", reason="playwright (dev extra) not installed")
    if not (shutil.which("chromium") or shutil.which("chromium-browser")):
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium)")
    script = __import__("workflow_utils").REPO / "scripts" / "check_report.py"
    proc = subprocess.run([sys.executable, str(script), str(finished / "results/report.html"),
                           "--shots", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {"loss.png", "lengths.png", "compare.png", "clusters.png", "compare.html"} <= {
        name.rsplit("/", 1)[-1] for name in seen["shown"]}


@slow
def test_exports_keep_the_merged_models_perplexity(finished):
    """The bound: 4-bit exports within 10% of the merged model's val perplexity
    (on the demo they are within 0.1%; a tiny random model is noisier)."""
    ppl = {m: json.loads((finished / f"results/eval/{m}/perplexity.json").read_text())["val_perplexity"]
           for m in ("tuned", "merged", "gptq", "awq")}
    # tuned runs on the nf4 base as trained, merged on the full-precision base
    assert ppl["merged"] == pytest.approx(ppl["tuned"], rel=0.05)
    for name in ("gptq", "awq"):
        assert ppl[name] == pytest.approx(ppl["merged"], rel=0.10), name
    compare = (finished / "results/eval/compare.csv").read_text()
    assert all(m in compare for m in ("base", "tuned", "merged", "gptq", "awq"))
