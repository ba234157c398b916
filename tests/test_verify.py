"""`danlu verify` on a finished tiny run: clean, then each kind of tampering."""

import json
import shutil

import pytest
from workflow_utils import TINY_RUN, danlu, make_project, snakemake

pytestmark = pytest.mark.slow

ALPACA = [{"instruction": f"问题{i}：基金{i}的风险？", "output": f"回答{i}：风险等级{i % 5}，注意分散。"}
          for i in range(24)]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("verify")
    every_model = {"evaluate": {"models": ["base", "tuned", "merged", "gptq", "awq"]}}
    make_project(root, [{"name": "alp", "path": "data/alp.jsonl", "format": "alpaca"}],
                 TINY_RUN | every_model | {"evaluate": TINY_RUN["evaluate"] | every_model["evaluate"]})
    (root / "data" / "alp.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ALPACA), "utf-8")
    snakemake(root)
    return root


@pytest.fixture
def copy(finished, tmp_path):
    dst = tmp_path / "p"
    shutil.copytree(finished, dst, symlinks=True)
    return dst


def verify(root, *extra):
    proc = danlu(root, "verify", *extra)
    return proc.returncode, proc.stdout + proc.stderr


def test_fresh_run_verifies(finished):
    code, out = verify(finished)
    assert code == 0, out
    assert "OK" in out and "signatures" in out and "mlflow runs" in out
    report = json.loads(danlu(finished, "verify", "--json").stdout)
    assert report["ok"] and report["checked"]["manifests"] >= 10


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


def test_edited_manifest(copy):
    path = copy / "results/dedup/manifest.json"
    manifest = json.loads(path.read_text())
    manifest["params"]["dedup"]["threshold"] = 0.5
    path.write_text(json.dumps(manifest, indent=2))
    code, out = verify(copy)
    assert code == 1 and "results/dedup/manifest.json: edited after its job" in out


def test_edited_mlflow_digest(copy):
    from mlflow.tracking import MlflowClient

    log = [json.loads(line) for line in (copy / "results/audit/log.jsonl").read_text().splitlines()]
    entry = next(e for e in log if e["manifest"] == "results/clean/manifest.json")
    client = MlflowClient(tracking_uri=f"sqlite:///{copy}/results/mlflow.db")
    client.set_tag(entry["mlflow_run_id"], "danlu.sha256.output.results/clean/records.jsonl", "0" * 64)
    code, out = verify(copy)
    assert code == 1 and "results/clean/records.jsonl: MLflow run" in out


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


def test_bad_signature(copy):
    sig = copy / "results/audit/provenance.sig"
    bundle = json.loads(sig.read_text())
    envelope = bundle["dsseEnvelope"]
    envelope["signatures"][0]["sig"] = envelope["signatures"][0]["sig"][::-1]
    sig.write_text(json.dumps(bundle))
    code, out = verify(copy)
    assert code == 1 and "provenance.intoto.json" in out


def test_exported_model_card_and_signature(finished):
    card = (finished / "results/export/adapter/README.md").read_text("utf-8")
    for heading in ("## Base model", "## Data", "## Training", "## Evaluation",
                    "## Intended use and limits", "## Provenance"):
        assert heading in card
    statement = json.loads((finished / "results/audit/provenance.intoto.json").read_text())
    names = {s["name"] for s in statement["subject"]}
    assert "results/export/adapter/adapter_model.safetensors" in names


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
