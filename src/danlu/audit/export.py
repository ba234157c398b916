"""Exports: the shipped form of each model (`results/export/<name>/`), with a
model card, signed, and the provenance statement that ties them to the data,
code and parameters that made them.

An export directory holds hard links to the files of the stage that made the
model (no copy of multi-GB weights) plus its `README.md` model card.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from danlu.errors import UserError

QUANTIZED = ("gptq", "awq")


class ExportError(UserError):
    """A model that must not be shipped; one line."""

CARD_LIMITS = """\
## Intended use and limits

- Made for research and internal evaluation of fine-tuning on the listed data;
  not assessed for safety, bias or fitness for any decision about people.
- Benchmark scores are multiple-choice log-likelihood accuracy on C-Eval (val)
  and CMMLU (test); they say little about free-text answers.
- Quantised exports trade accuracy for size: compare their rows above with
  the merged model's before shipping one.
- Training data were PII-masked by pattern (IDs with valid check digits, phones,
  cards passing Luhn, emails, IPs); other personal data may remain.
"""


# Not part of a shipped model: resumable checkpoints and the stage's own records.
SKIP = ("checkpoints", "manifest.json", "trainer_state.json", "train_metrics.json", "loss.png",
        "training_args.bin")


def link_tree(src: Path, dst: Path) -> list[Path]:
    """Hard-link the model files of `src` into `dst` (copy across file systems)."""
    made = []
    for f in sorted(p for p in src.rglob("*") if p.is_file()):
        if any(part in SKIP for part in f.relative_to(src).parts):
            continue
        target = dst / f.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(f, target)
        except OSError:
            shutil.copy2(f, target)
        made.append(target)
    return made


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def model_card(name: str, facts: dict) -> str:
    """A model card (README.md) from what the pipeline recorded."""
    lines = [f"# {facts['title']}", "", facts["what"], "",
             "## Base model", "", *base_model_lines(facts["base_model"], facts["base_identity"]), "",
             "## Data", ""]
    for ds in facts["datasets"]:
        lines.append(f"- `{ds['path']}`: sha256 `{ds['sha256']}`")
    counts = facts["counts"]
    lines += ["", f"Records: {counts['raw']} read, {counts['cleaned']} after cleaning, "
                  f"{counts['deduplicated']} after dedup and decontamination, "
                  f"{counts['train']} train / {counts['val']} val.", "",
              "## Training", "", "| parameter | value |", "|---|---|"]
    lines += [f"| `{k}` | `{_fmt(v)}` |" for k, v in sorted(facts["training"].items())]
    lines += ["", "## Evaluation", ""]
    evals = facts.get("evaluation")
    if evals:
        lines += ["| benchmark | split | shots | questions | micro acc. | macro acc. |",
                  "|---|---|---|---|---|---|"]
        for bench, b in sorted(evals["benchmarks"].items()):
            lines.append(f"| {bench} | {b['split']} | {b['shots']} | {b['questions']} | "
                         f"{_fmt(b['micro_accuracy'])} | {_fmt(b['macro_accuracy'])} |")
        settings = evals["settings"]
        lines += ["", "Micro: over questions (lm-evaluation-harness); macro: mean over subjects. "
                      f"Scoring: {settings['scoring']}."]
        if settings.get("max_per_subject"):
            lines.append(f"Capped at {settings['max_per_subject']} questions per subject: "
                         "a smoke test, not a published-comparable score.")
        if facts.get("perplexity") is not None:
            lines.append(f"Val-split perplexity: {_fmt(facts['perplexity'])}.")
    else:
        lines.append("Not evaluated.")
    if facts.get("quantization"):
        lines += ["", "## Quantisation", ""]
        lines += [f"- {k}: `{_fmt(v)}`" for k, v in sorted(facts["quantization"].items())]
    if facts.get("quality_gate"):
        lines += ["", *gate_lines(facts["quality_gate"])]
    lines += ["", CARD_LIMITS, "## Provenance", "",
              "Every file here is listed with its sha256 in `results/audit/provenance.intoto.json` "
              "(in-toto Statement v1, SLSA Provenance v1), signed in `results/audit/`. Check it with "
              "`danlu verify`.", ""]
    return "\n".join(lines)


def gate_lines(gate: dict) -> list[str]:
    """The card's quality gate: what the quantize job measured against the
    merged model on val answer tokens, beside the thresholds it had to meet."""
    return [
        "## Quality gate", "",
        f"Checked against the merged model on {gate['val_tokens']} answer tokens of "
        f"{gate['val_examples']} val example{'' if gate['val_examples'] == 1 else 's'} "
        f"(`export.gates`): {'passed' if gate['passed'] else 'NOT passed'}.", "",
        "| figure | measured | threshold |", "|---|---|---|",
        f"| top-1 agreement | {_fmt(gate['top1_agreement'])} | >= {gate['min_top1_agreement']} |",
        f"| val perplexity ratio (export / merged) | {_fmt(gate['ppl_ratio'])} "
        f"| <= {gate['max_ppl_ratio']} |",
        f"| val perplexity, merged -> export | {_fmt(gate['val_perplexity_merged'])} -> "
        f"{_fmt(gate['val_perplexity_export'])} | |",
    ]


def quality_gate(src: Path) -> dict | None:
    """The gate figures the quantize job recorded for the export in `src`
    (stats.gate of `<src>.manifest.json`, e.g. results/quantize/gptq.manifest.json),
    or None where there are none."""
    manifest = src.parent / f"{src.name}.manifest.json"
    if not manifest.is_file():
        return None
    return json.loads(manifest.read_text(encoding="utf-8")).get("stats", {}).get("gate")


def require_passed_gate(name: str, src: Path) -> None:
    """Refuse to ship a quantised export whose quantize job recorded no passed
    gate (one made before gates existed, by hand, or a manifest edited since):
    the DAG never reaches audit after a failed gate, this covers the rest."""
    if name not in QUANTIZED:
        return
    gate = quality_gate(src)
    if not gate or gate.get("passed") is not True:
        raise ExportError(f"{name} export {src} has no passed quality gate in "
                          f"{src.parent / f'{src.name}.manifest.json'} (stats.gate); rerun "
                          "its quantize job, which checks export.gates, before shipping it")


def base_model_lines(name: str, identity: dict | None) -> list[str]:
    """The card's base model: its name, where it came from (a local directory,
    or a hub id at a revision and the commit that resolved to), the combined
    sha256 over its files (models.model_identity) and each file's sha256."""
    if not identity:
        return [f"- `{name}`: not identified (the train manifest records no base-model identity)"]
    if identity["source"] == "hub":
        where = (f"hub id `{identity['id']}`, revision `{identity.get('revision') or 'main'}`, "
                 f"commit `{identity.get('commit') or 'unknown'}`")
    else:
        where = f"local directory `{identity['path']}`"
    files = identity["files"]
    lines = [f"- `{name}`: {where}",
             f"- combined sha256 of its {len(files)} files: `{identity['sha256']}`"]
    return lines + [f"  - `{f}`: `{sha}`" for f, sha in sorted(files.items())]


def eval_summary(results: Path, name: str) -> tuple[dict | None, float | None]:
    """The evaluation summary and val perplexity of one model, if it was evaluated."""
    folder = results / "eval" / {"adapter": "tuned"}.get(name, name)
    summary = folder / "summary.json"
    if not summary.is_file():
        return None, None
    data = json.loads(summary.read_text(encoding="utf-8"))
    ppl = folder / "perplexity.json"
    value = json.loads(ppl.read_text(encoding="utf-8"))["val_perplexity"] if ppl.is_file() else None
    return data, value


def pipeline_facts(results: Path, config: dict) -> dict:
    """What every card repeats: base model, data digests and counts, training."""
    def manifest(path: str) -> dict:
        p = results / path
        return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else {}

    clean = json.loads((results / "clean" / "stats.json").read_text(encoding="utf-8"))
    dedup = json.loads((results / "dedup" / "stats.json").read_text(encoding="utf-8"))
    split = json.loads((results / "dedup" / "split_stats.json").read_text(encoding="utf-8"))
    # A dataset's manifest, or each of its shards' (parts/<name>/shard-<i>-of-<n>/).
    raw = {e["path"]: e["sha256"] for part in (results / "clean" / "parts").glob("**/manifest.json")
           for e in json.loads(part.read_text(encoding="utf-8"))["inputs"]
           if not e["path"].startswith("src/")}
    # A hub dataset has no file: the digest of its rows at the commit read stands for it.
    raw.update({f"{src}@{f['revision']}" if f["revision"] else src: f["rows_sha256"]
                for src, f in clean["files"].items() if "rows_sha256" in f})
    train = manifest("train/manifest.json")
    params = train.get("params", {}).get("train", config.get("train", {}))
    return {
        "base_model": config["base_model"] if config["base_model"] != "demo"
        else "demo (tiny random Llama built from data/demo)",
        # What the train job identified (the files it trained on), not a
        # re-reading of the config, which names a path or a moving revision.
        "base_identity": train.get("params", {}).get("base_model_identity"),
        "datasets": [{"path": p, "sha256": s} for p, s in sorted(raw.items())],
        "counts": {"raw": clean["records_in"], "cleaned": clean["records_kept"],
                   "deduplicated": dedup["records_kept"], "train": split["train"],
                   "val": split["val"]},
        "training": {k: params[k] for k in ("quantization", "lora_r", "lora_alpha", "lora_dropout",
                                            "lora_target", "learning_rate", "num_epochs",
                                            "max_steps", "per_device_train_batch_size",
                                            "gradient_accumulation_steps", "packing")
                     if k in params} | {"seed": config.get("seed")},
    }


TITLES = {
    "adapter": ("LoRA adapter", "A PEFT LoRA adapter; load it on the base model with "
                "`PeftModel.from_pretrained(base, this_dir)`."),
    "merged": ("Merged model", "The base model with the adapter merged in, full precision; "
               "loads with `AutoModelForCausalLM.from_pretrained(this_dir)`."),
    "gptq": ("GPTQ 4-bit model", "W4A16 GPTQ export (llm-compressor), saved in the "
             "compressed-tensors `pack-quantized` format that vLLM's loader reads (not run in vLLM "
             "by danlu); loads with `from_pretrained`."),
    "awq": ("AWQ 4-bit model", "W4A16 AWQ export (llm-compressor), saved in the "
            "compressed-tensors `pack-quantized` format that vLLM's loader reads (not run in vLLM "
            "by danlu); loads with `from_pretrained`."),
}


def write_export(name: str, src: Path, dst: Path, results: Path, facts: dict) -> list[Path]:
    """Link one model's files into its export directory and add the card."""
    files = link_tree(src, dst)
    evaluation, ppl = eval_summary(results, name)
    card_facts = dict(facts, title=TITLES[name][0], what=TITLES[name][1], evaluation=evaluation,
                      perplexity=ppl)
    quant = src / "config.json"
    if name in QUANTIZED and quant.is_file():
        qcfg = json.loads(quant.read_text(encoding="utf-8")).get("quantization_config", {})
        card_facts["quantization"] = {"method": name, "format": qcfg.get("format"),
                                      "quant_method": qcfg.get("quant_method"),
                                      "ignore": ", ".join(qcfg.get("ignore", []))}
        card_facts["quality_gate"] = quality_gate(src)
    card = dst / "README.md"
    if card.exists():  # a card linked from the source (peft writes one) is replaced, not edited
        card.unlink()
    card.write_text(model_card(name, card_facts), encoding="utf-8")
    return sorted(set(files) | {card})


def main(args) -> None:
    """Exports with model cards, signatures and the signed provenance statement."""
    from danlu.audit import log as audit
    from danlu.audit import provenance, signing
    from danlu.audit.manifest import code_version, now, rel, sha256_file
    from danlu.outputs import write_json
    from danlu.stage import run_stage

    config = json.loads(args.config_json)
    results, out, exports_dir = Path(args.results), Path(args.out), Path(args.exports)
    sources = dict(item.split("=", 1) for item in args.export)
    for name, src in sources.items():  # before anything is signed
        require_passed_gate(name, Path(src))
    started = now()

    def work(run):
        facts = pipeline_facts(results, config)
        files: dict[str, str] = {}
        private, public = signing.ensure_key_pair(signing.default_key_dir())
        (out / "signatures").mkdir(parents=True, exist_ok=True)
        for name, src in sources.items():
            dst = exports_dir / name
            if dst.exists():
                shutil.rmtree(dst)
            for f in write_export(name, Path(src), dst, results, facts):
                files[rel(f)] = sha256_file(f)
            signing.sign_model(dst, out / "signatures" / f"{name}.sig", private)
        materials = [{"uri": d["path"], "sha256": d["sha256"]} for d in facts["datasets"]]
        materials.append(provenance.base_model_material(config["base_model"],
                                                        facts["base_identity"]))
        internal = {**provenance.internal_parameters(),
                    "auditLog": audit.head(out / "log.jsonl")}
        statement = provenance.build_statement(
            sorted(files.items()), materials=materials,
            build_type="urn:danlu:buildtype:snakemake-finetune:v1",
            parameters=config, builder_id=f"urn:danlu:builder:snakemake:danlu-{_version()}",
            invocation_id=os.environ.get("DANLU_PARENT_RUN_ID") or started,
            started=started, finished=now(), code=code_version(), internal=internal)
        statement_path = out / "provenance.intoto.json"
        statement_path.write_text(provenance.dumps_statement(statement), encoding="utf-8")
        signing.sign_file(statement_path, out / "provenance.sig", private)
        signing.copy_public_key(public, out / "public_key.pem")
        write_json(out / "exports.json", {n: rel(exports_dir / n) for n in sources})
        return {"exports": len(sources), "files": len(files),
                "public_key_sha256": signing.public_key_fingerprint(public)}

    def outputs():
        return [*(p for n in sources for p in sorted((exports_dir / n).rglob("*")) if p.is_file()),
                out / "provenance.intoto.json", out / "provenance.sig", out / "public_key.pem",
                out / "exports.json", *sorted((out / "signatures").glob("*.sig"))]

    run_stage("audit", {"exports": sources}, work, inputs=[*sources.values(), *args.code],
              outputs=outputs, manifest_path=out / "manifest.json", log_stats=False,
              nondeterministic={
                  rel(out / "provenance.intoto.json"): "records the time of the run",
                  rel(out / "provenance.sig"): "ECDSA signatures use a fresh random nonce",
                  **{rel(out / "signatures" / f"{n}.sig"): "ECDSA signatures use a fresh random nonce"
                     for n in sources},
              })
    print(f"audit: {len(sources)} exports signed; provenance in {out / 'provenance.intoto.json'}")


def _version() -> str:
    from danlu import __version__

    return __version__
