# Audit: ship each model with a card, sign it, and sign the provenance.


rule audit:
    input:
        unpack(export_inputs),
        compare="results/eval/compare.csv",
        code=code("audit"),
    output:
        provenance="results/audit/provenance.intoto.json",
        signature="results/audit/provenance.sig",
        public_key="results/audit/public_key.pem",
        exports_json="results/audit/exports.json",
        signatures=directory("results/audit/signatures"),
        exports=directory("results/export"),
        manifest="results/audit/manifest.json",
    log:
        "logs/audit.log",
    benchmark:
        "benchmarks/audit.tsv"
    conda:
        CONDA_ENV
    resources:
        **job_resources("audit"),
    params:
        exports=export_args(),
        config=audited_config(),
    shell:
        "danlu audit {params.exports} --config-json {params.config:q} "
        "--code {input.code:q} > {log} 2>&1"
