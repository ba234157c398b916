# Lengths (tokenise under the chat template, choose cutoff_len) and training.


rule tokenize:
    input:
        train="results/dedup/train.jsonl",
        val="results/dedup/val.jsonl",
        model=base_model_input(),
        code=code("tokenize"),
    output:
        train=directory("results/lengths/train"),
        val=directory("results/lengths/val"),
        manifest="results/lengths/tokenize.manifest.json",
    log:
        "logs/tokenize.log",
    benchmark:
        "benchmarks/tokenize.tsv"
    conda:
        CONDA_ENV
    threads: job_threads("tokenize", 2)
    resources:
        **job_resources("tokenize"),
    params:
        lengths=stage_params(
            "lengths", keys=["train_on_prompt", "mask_history", "enable_thinking"]
        ),
        model=model_args(),
        out=subpath(output.manifest, parent=True),
    shell:
        "danlu tokenize --train {input.train:q} --val {input.val:q} --out {params.out:q} "
        "--manifest {output.manifest:q} --num-proc {threads} {params.model} "
        "--params {params.lengths:q} --code {input.code:q} > {log} 2>&1"


rule cutoff:
    input:
        train="results/lengths/train",
        val="results/lengths/val",
        model=base_model_input(),
        code=code("cutoff"),
    output:
        cutoff="results/lengths/cutoff.json",
        stats="results/lengths/stats.json",
        plot=report(
            "results/lengths/lengths.png",
            caption="../report/lengths.rst",
            category="Data",
        ),
        manifest="results/lengths/manifest.json",
    log:
        "logs/cutoff.log",
    benchmark:
        "benchmarks/cutoff.tsv"
    conda:
        CONDA_ENV
    resources:
        **job_resources("cutoff"),
    params:
        lengths=stage_params(
            "lengths",
            keys=[
                "cutoff_len",
                "percentile",
                "min_cutoff",
                "max_cutoff",
                "overlength",
            ],
        ),
        model=model_args(),
        data=subpath(output.cutoff, parent=True),
    shell:
        "danlu cutoff --data {params.data:q} --out {params.data:q} "
        "--manifest {output.manifest:q} {params.model} --params {params.lengths:q} "
        "--code {input.code:q} > {log} 2>&1"


rule train:
    input:
        train="results/lengths/train",
        val="results/lengths/val",
        cutoff="results/lengths/cutoff.json",
        model=base_model_input(),
        code=code("train"),
    output:
        adapter="results/train/adapter_model.safetensors",
        adapter_config="results/train/adapter_config.json",
        metrics="results/train/train_metrics.json",
        state="results/train/trainer_state.json",
        loss=report(
            "results/train/loss.png",
            caption="../report/loss.rst",
            category="Training",
        ),
        manifest="results/train/manifest.json",
    log:
        "logs/train.log",
    benchmark:
        "benchmarks/train.tsv"
    conda:
        CONDA_ENV
    threads: job_threads("train", workflow.cores)
    resources:
        **job_resources("train"),
    params:
        train=stage_params("train"),
        model=model_args(),
        seed=config["seed"],
        launcher=train_launcher(),
        data=subpath(input.cutoff, parent=True),
        out=subpath(output.adapter, parent=True),
    shell:
        "{params.launcher} train --data {params.data:q} --cutoff {input.cutoff:q} "
        "--out {params.out:q} --seed {params.seed} {params.model} "
        "--params {params.train:q} --code {input.code:q} > {log} 2>&1"
