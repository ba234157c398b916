# Data stages: the demo model, clean (one job per input file) and combine.


rule demo_model:
    input:
        corpus=config["demo"]["corpus"],
        code=code("demo_model"),
    output:
        model=directory("results/demo_model/model"),
        manifest="results/demo_model/manifest.json",
    log:
        "logs/demo_model.log",
    benchmark:
        "benchmarks/demo_model.tsv"
    conda:
        CONDA_ENV
    params:
        demo=stage_params("demo"),
    shell:
        "danlu demo-model --corpus {input.corpus:q} --out {output.model:q} "
        "--manifest {output.manifest:q} --params {params.demo:q} --code {input.code:q} "
        "> {log} 2>&1"


rule clean:
    input:
        data=dataset_path,
        code=code("clean"),
    output:
        records="results/clean/parts/{dataset}/records.jsonl",
        rejects="results/clean/parts/{dataset}/rejects.jsonl",
        stats="results/clean/parts/{dataset}/stats.json",
        manifest="results/clean/parts/{dataset}/manifest.json",
    log:
        "logs/clean/{dataset}.log",
    benchmark:
        "benchmarks/clean/{dataset}.tsv"
    conda:
        CONDA_ENV
    params:
        out=subpath(output.records, parent=True),
        dataset=dataset_json,
        clean=stage_params("clean"),
    shell:
        "danlu clean {input.data:q} --out {params.out:q} --dataset {params.dataset:q} "
        "--params {params.clean:q} --code {input.code:q} > {log} 2>&1"


rule clean_combine:
    input:
        parts=expand("results/clean/parts/{dataset}/stats.json", dataset=DATASETS),
        records=expand("results/clean/parts/{dataset}/records.jsonl", dataset=DATASETS),
        rejects=expand("results/clean/parts/{dataset}/rejects.jsonl", dataset=DATASETS),
        code=code("clean_combine"),
    output:
        records="results/clean/records.jsonl",
        rejects="results/clean/rejects.jsonl",
        stats="results/clean/stats.json",
        manifest="results/clean/manifest.json",
    log:
        "logs/clean_combine.log",
    benchmark:
        "benchmarks/clean_combine.tsv"
    conda:
        CONDA_ENV
    params:
        parts=expand("results/clean/parts/{dataset}", dataset=DATASETS),
        out=subpath(output.records, parent=True),
    shell:
        "danlu combine {params.parts:q} --out {params.out:q} --code {input.code:q} > {log} 2>&1"
