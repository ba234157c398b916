"""Audit commands: signed exports with provenance, and verify."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path


def cmd_audit(args) -> None:
    """Exports with model cards, signatures and the signed provenance statement."""
    from danlu.audit import log as audit
    from danlu.audit import provenance, signing
    from danlu.audit.export import pipeline_facts, require_passed_gate, write_export
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


def cmd_verify(args) -> None:
    from danlu.audit.verify import verify

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
