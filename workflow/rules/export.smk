# Export: merge the adapter (verified), then GPTQ and AWQ 4-bit models, each
# written only if it passes export.gates against the merged model on val tokens.


rule merge:
    input:
        adapter="results/train/adapter_model.safetensors",
        val="results/dedup/val.jsonl",
        model=base_model_input(),
        code=code("merge"),
    output:
        model=directory("results/merge/model"),
        manifest="results/merge/manifest.json",
    log:
        "logs/merge.log",
    benchmark:
        "benchmarks/merge.tsv"
    conda:
        CONDA_ENV
    resources:
        **job_resources("merge"),
    params:
        export=stage_params("export", keys=["merge_dtype", "merge_check_prompts"]),
        model=model_args(),
        adapter=subpath(input.adapter, parent=True),
    shell:
        "danlu merge {params.model} --adapter {params.adapter:q} --val {input.val:q} "
        "--out {output.model:q} --manifest {output.manifest:q} --params {params.export:q} "
        "--code {input.code:q} > {log} 2>&1"


rule quantize:
    input:
        model="results/merge/model",
        train="results/dedup/train.jsonl",
        val="results/lengths/val",
        code=code("quantize"),
    output:
        model=directory("results/quantize/{method}"),
        manifest="results/quantize/{method}.manifest.json",
    log:
        "logs/quantize/{method}.log",
    benchmark:
        "benchmarks/quantize/{method}.tsv"
    conda:
        CONDA_ENV
    threads: job_threads("quantize", workflow.cores)
    resources:
        **job_resources("quantize"),
    params:
        export=stage_params(
            "export",
            keys=[
                "scheme",
                "group_size",
                "calibration_samples",
                "calibration_max_length",
                "dampening_frac",
                "gates",
            ],
        ),
        template=config["template"],
        seed=config["seed"],
    shell:
        "danlu quantize --method {wildcards.method} --model {input.model:q} "
        "--template {params.template} --train {input.train:q} --val {input.val:q} "
        "--out {output.model:q} --manifest {output.manifest:q} --seed {params.seed} "
        "--params {params.export:q} --code {input.code:q} > {log} 2>&1"
