# Evaluate: C-Eval and CMMLU (and val perplexity) for each model, then compare.


rule evaluate:
    input:
        unpack(eval_model_inputs),
        val="results/lengths/val",
        cutoff="results/lengths/cutoff.json",
        code=code("evaluate"),
    output:
        summary="results/eval/{model}/summary.json",
        predictions="results/eval/{model}/predictions.jsonl",
        subjects="results/eval/{model}/subjects.csv",
        categories="results/eval/{model}/categories.csv",
        perplexity="results/eval/{model}/perplexity.json",
        model_facts="results/eval/{model}/model.json",
        manifest="results/eval/{model}/manifest.json",
    log:
        "logs/evaluate/{model}.log",
    benchmark:
        "benchmarks/evaluate/{model}.tsv"
    conda:
        CONDA_ENV
    threads: job_threads("evaluate", workflow.cores)
    resources:
        **job_resources("evaluate"),
    params:
        evaluate=stage_params("evaluate", keys=EVAL_KEYS),
        model=eval_model_args,
        benchmarks=benchmark_args(),
        out=subpath(output.summary, parent=True),
    shell:
        "danlu evaluate --name {wildcards.model} {params.model} "
        "{params.benchmarks} --val {input.val:q} --cutoff {input.cutoff:q} "
        "--out {params.out:q} --params {params.evaluate:q} --code {input.code:q} > {log} 2>&1"


rule eval_compare:
    input:
        summaries=expand("results/eval/{model}/summary.json", model=EVAL_MODELS),
        code=code("eval-compare"),
    output:
        table="results/eval/compare.csv",
        page=report(
            "results/eval/compare.html",
            caption="../report/compare_table.rst",
            category="Evaluation",
        ),
        chart=report(
            "results/eval/compare.png",
            caption="../report/compare.rst",
            category="Evaluation",
        ),
        manifest="results/eval/compare.manifest.json",
    log:
        "logs/eval_compare.log",
    benchmark:
        "benchmarks/eval_compare.tsv"
    conda:
        CONDA_ENV
    resources:
        **job_resources("eval_compare"),
    params:
        out=subpath(output.table, parent=True),
    shell:
        "danlu eval-compare {input.summaries:q} --out {params.out:q} "
        "--code {input.code:q} > {log} 2>&1"
