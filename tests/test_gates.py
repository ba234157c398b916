"""export.gates: a quantised export ships only if it stays close to the merged
model on val tokens. Real GPTQ/AWQ exports pass the default thresholds; an
export whose weights were zeroed or mis-scaled after quantisation fails them,
in the gate function and through `danlu quantize` (exit 2, one line, no output).

The tiny random model the other tests use is too flat for this: its val
perplexity is about its vocabulary size and a zeroed copy scores no worse
(first test), so the model here is first trained a few steps on the same kind
of records it is scored on."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from workflow_utils import finance_records

from danlu.audit.export import ExportError, gate_lines, quality_gate, require_passed_gate
from danlu.cli import main
from danlu.config import ExportConfig, Gates, load_config, section
from danlu.data.tokenize import ExampleOptions, build_example, tokenize_splits
from danlu.model.loading import load_tokenizer
from danlu.model.quantize import (
    QualityGateError,
    QuantizeError,
    ValScores,
    calibration_texts,
    check_gate,
    gate_examples,
    gate_figures,
    quantize_model,
    score_val,
)

DEFAULT_GATES = section(load_config(None), "export", ExportConfig).gates
TRAIN_STEPS = 30  # enough for val perplexity ~4 (from ~2200): a zeroed model is then far worse


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # As in test_quantize: tiny matrices, and OpenMP spin-waiting on a shared runner.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _records(n: int, seed: int) -> list[dict]:
    return finance_records(n, seed, id_prefix=f"s{seed}-")


TRAIN, VAL = _records(32, seed=7), _records(8, seed=8)


def _examples(records, tokenizer) -> list[dict]:
    return [{k: [int(t) for t in v] for k, v in build_example(r, tokenizer).items()
             if k in ("input_ids", "labels")} for r in records]


def _train(model, examples, steps: int) -> None:
    """Full-batch AdamW on the answer tokens: peaked logits in seconds."""
    width = max(len(e["input_ids"]) for e in examples)
    ids = torch.tensor([e["input_ids"] + [0] * (width - len(e["input_ids"])) for e in examples])
    labels = torch.tensor([e["labels"] + [-100] * (width - len(e["labels"])) for e in examples])
    mask = torch.tensor([[1] * len(e["input_ids"]) + [0] * (width - len(e["input_ids"]))
                         for e in examples])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(steps):
        model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()


def _zero_linear_weights(model):
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.Linear) and name != "lm_head":
                module.weight.zero_()
    return model


def _break(model, how: str):
    """Tamper with a loaded export's quantisation scales, as a bug would:
    `zero` dequantises every weight to 0, `x2` doubles every weight."""
    scales = [m.weight_scale for m in model.modules() if hasattr(m, "weight_scale")]
    assert scales, "the export did not load in its compressed form"
    with torch.no_grad():
        for scale in scales:
            scale.mul_(0.0 if how == "zero" else 2.0)
    return model


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return load_tokenizer(tiny_model_dir)


@pytest.fixture(scope="module")
def val_examples(tokenizer):
    return gate_examples(_examples(VAL, tokenizer), DEFAULT_GATES.val_examples,
                         DEFAULT_GATES.max_tokens)


@pytest.fixture(scope="module")
def peaked_model_dir(tiny_model_dir, tokenizer, tmp_path_factory):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    _train(model, _examples(TRAIN, tokenizer), TRAIN_STEPS)
    out = tmp_path_factory.mktemp("peaked") / "model"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def merged_scores(peaked_model_dir, val_examples):
    from transformers import AutoModelForCausalLM

    return score_val(AutoModelForCausalLM.from_pretrained(peaked_model_dir), val_examples)


@pytest.fixture(scope="module")
def exports(peaked_model_dir, tokenizer, val_examples, tmp_path_factory):
    """GPTQ and AWQ exports made under the default gates (so making them passes)."""
    root = tmp_path_factory.mktemp("gated")
    texts = calibration_texts(TRAIN, tokenizer, n=16, seed=0)
    return {method: (root / method, quantize_model(
        peaked_model_dir, root / method, method=method, calibration_texts=texts,
        tokenizer=tokenizer, max_seq_length=256, val_examples=val_examples,
        gates=DEFAULT_GATES))
        for method in ("gptq", "awq")}


def _gate_on_zeroed_copy(model_dir, val_examples) -> dict:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    reference = score_val(model, val_examples)
    return gate_figures(reference, score_val(_zero_linear_weights(model), val_examples),
                        DEFAULT_GATES)


def test_the_random_tiny_model_is_too_flat_for_a_perplexity_gate(tiny_model_dir,
                                                                 peaked_model_dir, val_examples):
    flat = _gate_on_zeroed_copy(tiny_model_dir, val_examples)
    # Random weights: perplexity ~ the 2048-token vocabulary, and zeroing every
    # layer does not make it worse, so only agreement could catch it there.
    assert flat["val_perplexity_merged"] > 1000
    assert flat["ppl_ratio"] < DEFAULT_GATES.max_ppl_ratio
    peaked = _gate_on_zeroed_copy(peaked_model_dir, val_examples)
    assert peaked["val_perplexity_merged"] < 10
    assert peaked["ppl_ratio"] > 3 * DEFAULT_GATES.max_ppl_ratio
    assert not peaked["passed"]


@pytest.mark.parametrize("method", ["gptq", "awq"])
def test_real_exports_pass_the_default_gates(exports, method):
    out, stats = exports[method]
    gate = stats["gate"]
    assert out.is_dir() and gate["passed"] is True
    # Measured: agreement 0.99-1.0, ratio 0.98-1.01; far inside the defaults.
    assert gate["top1_agreement"] >= 0.95 and gate["ppl_ratio"] <= 1.1
    assert (gate["min_top1_agreement"], gate["max_ppl_ratio"]) == (
        DEFAULT_GATES.min_top1_agreement, DEFAULT_GATES.max_ppl_ratio)
    assert gate["val_tokens"] > 100 and stats["top1_agreement"] == gate["top1_agreement"]


@pytest.mark.parametrize("how", ["zero", "x2"])
@pytest.mark.parametrize("method", ["gptq", "awq"])
def test_an_export_broken_after_quantisation_fails(exports, merged_scores, val_examples,
                                                   method, how):
    from transformers import AutoModelForCausalLM

    out, _ = exports[method]
    broken = _break(AutoModelForCausalLM.from_pretrained(out), how)
    figures = gate_figures(merged_scores, score_val(broken, val_examples), DEFAULT_GATES)
    assert figures["passed"] is False
    # Measured: zero 0.61 / 21x, x2 0.23 / 8.3x: the ratio alone fails both.
    assert figures["ppl_ratio"] > 3 * DEFAULT_GATES.max_ppl_ratio
    with pytest.raises(QualityGateError) as err:
        check_gate(method, figures)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{method} export fails export.gates")
    assert "perplexity ratio" in message and "max_ppl_ratio 1.5" in message


def _scores(predictions, nll, tokens=None):
    predictions = [torch.tensor(p) for p in predictions]
    return ValScores(predictions, nll, tokens or sum(len(p) for p in predictions))


def test_gate_verdict_uses_both_thresholds_and_fails_nan():
    gates = Gates(min_top1_agreement=0.5, max_ppl_ratio=1.5, val_examples=4, max_tokens=64)
    merged = _scores([[1, 2, 3, 4]], nll=4.0)
    same = gate_figures(merged, _scores([[1, 2, 3, 4]], nll=4.0), gates)
    assert (same["top1_agreement"], same["ppl_ratio"], same["passed"]) == (1.0, 1.0, True)
    check_gate("gptq", same)  # no error
    low = gate_figures(merged, _scores([[1, 0, 0, 0]], nll=4.0), gates)
    assert low["passed"] is False
    with pytest.raises(QualityGateError, match=r"top-1 agreement .* 0\.2500 < min_top1"):
        check_gate("awq", low)
    # exp((6 - 4) / 4) = 1.65 > 1.5
    worse = gate_figures(merged, _scores([[1, 2, 3, 4]], nll=6.0), gates)
    assert worse["ppl_ratio"] == pytest.approx(1.6487, abs=1e-4) and worse["passed"] is False
    nan = gate_figures(merged, _scores([[1, 2, 3, 4]], nll=float("nan")), gates)
    assert nan["passed"] is False
    huge = gate_figures(merged, _scores([[1, 2, 3, 4]], nll=1e6), gates)
    assert huge["ppl_ratio"] == float("inf") and huge["passed"] is False
    unjudged = gate_figures(merged, _scores([[1, 0, 0, 0]], nll=9.0), None)
    assert unjudged["passed"] is None
    check_gate("gptq", unjudged)  # measured without gates: nothing to enforce


def test_gate_examples_cut_from_the_right_and_skip_examples_without_answers():
    examples = [
        {"input_ids": [1, 2, 3, 4], "labels": [-100, -100, -100, 4]},  # answer cut off at 3
        {"input_ids": [5, 6, 7], "labels": [5, -100, -100]},  # position 0 is never predicted
        {"input_ids": [8, 9, 10, 11], "labels": [-100, -100, 10, 11]},
        {"input_ids": [12, 13], "labels": [-100, 13]},
    ]
    assert gate_examples(examples, n=5, max_tokens=3) == [
        {"input_ids": [8, 9, 10], "labels": [-100, -100, 10]},
        {"input_ids": [12, 13], "labels": [-100, 13]},
    ]
    assert len(gate_examples(examples, n=1, max_tokens=3)) == 1
    with pytest.raises(QuantizeError, match="max_tokens"):
        gate_examples(examples[:2], n=5, max_tokens=3)


# --- through the CLI ----------------------------------------------------------------


@pytest.fixture()
def project(tmp_path, monkeypatch, peaked_model_dir, tokenizer):
    """What the quantize rule reads: the merged model, train records, the
    tokenised val split; run from a fresh directory without tracking."""
    monkeypatch.setenv("DANLU_TRACKING_DISABLED", "1")
    monkeypatch.chdir(tmp_path)
    model = tmp_path / "results" / "merge" / "model"
    shutil.copytree(peaked_model_dir, model)
    for split, rows in (("train", TRAIN), ("val", VAL)):
        (tmp_path / f"{split}.jsonl").write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    tokenize_splits({"val": tmp_path / "val.jsonl"}, tokenizer, ExampleOptions(),
                    tmp_path / "lengths")
    return tmp_path


def _quantize(method: str) -> int:
    params = {"calibration_samples": 16, "calibration_max_length": 256}
    return main(["quantize", "--method", method, "--model", "results/merge/model",
                 "--train", "train.jsonl", "--val", "lengths/val",
                 "--out", f"results/quantize/{method}",
                 "--manifest", f"results/quantize/{method}.manifest.json",
                 "--params", json.dumps(params)])


def test_cli_records_the_gate_in_the_manifest_and_card(project, capsys):
    assert _quantize("gptq") == 0
    out = capsys.readouterr().out
    assert "quantize gptq: passed export.gates on" in out
    manifest = json.loads((project / "results/quantize/gptq.manifest.json").read_text())
    gate = manifest["stats"]["gate"]
    assert gate["passed"] is True and manifest["stats"]["top1_agreement"] == gate["top1_agreement"]
    assert manifest["params"]["export"]["gates"] == load_config(None)["export"]["gates"]
    assert any(e["path"] == "lengths/val" or e["path"].startswith("lengths/val/")
               for e in manifest["inputs"])
    src = project / "results/quantize/gptq"
    assert quality_gate(src) == gate
    require_passed_gate("gptq", src)  # ships
    card = "\n".join(gate_lines(gate))
    assert "## Quality gate" in card and "passed" in card
    assert f"| top-1 agreement | {gate['top1_agreement']:.4f} | >= 0.5 |" in card


def test_cli_refuses_a_broken_quantize_step_in_one_line(project, capsys, monkeypatch):
    """A faulty quantisation step (weights zeroed after oneshot) stops the job:
    exit 2, one line naming the export and figure, and no export or manifest."""
    import llmcompressor

    real = llmcompressor.oneshot

    def faulty_oneshot(*args, **kwargs):
        result = real(*args, **kwargs)
        _zero_linear_weights(kwargs["model"])
        return result

    monkeypatch.setattr(llmcompressor, "oneshot", faulty_oneshot)
    assert _quantize("awq") == 2
    # stderr also holds the libraries' progress bars; the error is its last line, alone.
    lines = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in lines if line.startswith("danlu quantize: error:")]
    assert errors == lines[-1:]
    assert errors[0].startswith("danlu quantize: error: awq export fails export.gates on ")
    assert "val perplexity ratio" in errors[0]
    print(errors[0])  # the demo's closing note quotes it (pytest -s)
    written = project / "results" / "quantize"  # not even a temporary directory is left
    assert not written.exists() or not any(written.iterdir())


def test_audit_refuses_an_export_without_a_passed_gate(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DANLU_TRACKING_DISABLED", "1")
    monkeypatch.chdir(tmp_path)
    src = tmp_path / "results" / "quantize" / "gptq"
    src.mkdir(parents=True)
    (src / "config.json").write_text("{}")
    argv = ["audit", "--export", f"gptq={src}", "--config-json", "{}"]
    assert main(argv) == 2  # no manifest: made by hand or before gates existed
    assert "has no passed quality gate" in capsys.readouterr().err
    failed = {"stats": {"gate": {"passed": False}}}
    (src.parent / "gptq.manifest.json").write_text(json.dumps(failed))
    with pytest.raises(ExportError, match="gptq export"):
        require_passed_gate("gptq", src)
    assert main(argv) == 2
    assert not (tmp_path / "results" / "export").exists()
    require_passed_gate("merged", tmp_path)  # only quantised exports are gated
