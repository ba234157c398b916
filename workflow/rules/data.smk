# Data stages: the demo model, clean (one job per input file, or per record
# range of a big file: clean.shards) and combine.


rule demo_model:
    input:
        corpus=config["demo"]["corpus"],
        code=code("demo-model"),
    output:
        model=directory("results/demo_model/model"),
        manifest="results/demo_model/manifest.json",
    log:
        "logs/demo_model.log",
    benchmark:
        "benchmarks/demo_model.tsv"
    conda:
        CONDA_ENV
    resources:
        **job_resources("demo_model"),
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
        records="results/clean/parts/{part}/records.jsonl",
        rejects="results/clean/parts/{part}/rejects.jsonl",
        stats="results/clean/parts/{part}/stats.json",
        manifest="results/clean/parts/{part}/manifest.json",
    log:
        "logs/clean/{part}.log",
    benchmark:
        "benchmarks/clean/{part}.tsv"
    wildcard_constraints:
        part=CLEAN_PART,
    conda:
        CONDA_ENV
    resources:
        **job_resources("clean"),
    params:
        out=subpath(output.records, parent=True),
        dataset=dataset_json,
        shard=shard_args,
        clean=stage_params("clean", keys=CLEAN_KEYS),
    shell:
        "danlu clean {input.data:q} --out {params.out:q} --dataset {params.dataset:q} "
        "{params.shard} --params {params.clean:q} --code {input.code:q} > {log} 2>&1"


rule clean_combine:
    input:
        parts=expand("results/clean/parts/{part}/stats.json", part=CLEAN_PARTS),
        records=expand("results/clean/parts/{part}/records.jsonl", part=CLEAN_PARTS),
        rejects=expand("results/clean/parts/{part}/rejects.jsonl", part=CLEAN_PARTS),
        code=code("combine"),
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
    resources:
        **job_resources("clean_combine"),
    params:
        parts=expand("results/clean/parts/{part}", part=CLEAN_PARTS),
        out=subpath(output.records, parent=True),
    shell:
        "danlu combine {params.parts:q} --out {params.out:q} --code {input.code:q} > {log} 2>&1"


rule dedup_signatures:
    input:
        records="results/clean/records.jsonl",
        code=code("dedup-signatures"),
    output:
        lines="results/dedup/signatures/shard-{shard}.lines.npy",
        sig="results/dedup/signatures/shard-{shard}.sig.npy",
        sha="results/dedup/signatures/shard-{shard}.sha.npy",
        manifest="results/dedup/signatures/shard-{shard}.manifest.json",
    log:
        "logs/dedup_signatures/shard-{shard}.log",
    benchmark:
        "benchmarks/dedup_signatures/shard-{shard}.tsv"
    conda:
        CONDA_ENV
    threads: job_threads("dedup_signatures")
    resources:
        **job_resources("dedup_signatures"),
    params:
        dedup=stage_params("dedup", keys=SIGNATURE_KEYS),
        shards=config["dedup"]["shards"],
        prefix=signature_prefix,
    shell:
        "danlu dedup-signatures {input.records:q} --shard {wildcards.shard} "
        "--shards {params.shards} --out {params.prefix:q} --params {params.dedup:q} "
        "--code {input.code:q} > {log} 2>&1"


rule dedup:
    input:
        records="results/clean/records.jsonl",
        signatures=expand(
            "results/dedup/signatures/shard-{shard}.{part}.npy",
            shard=SHARDS,
            part=["lines", "sig", "sha"],
        ),
        code=code("dedup"),
    output:
        records="results/dedup/records.jsonl",
        removed="results/dedup/removed.jsonl",
        clusters="results/dedup/clusters.jsonl",
        stats="results/dedup/stats.json",
        plot=report(
            "results/dedup/clusters.png",
            caption="../report/clusters.rst",
            category="Data",
        ),
        manifest="results/dedup/manifest.json",
    log:
        "logs/dedup.log",
    benchmark:
        "benchmarks/dedup.tsv"
    conda:
        CONDA_ENV
    resources:
        **job_resources("dedup"),
    params:
        dedup=stage_params("dedup", keys=DEDUP_KEYS),
        prefixes=expand("results/dedup/signatures/shard-{shard}", shard=SHARDS),
        benchmarks=benchmark_args(),
        out=subpath(output.records, parent=True),
    shell:
        "danlu dedup {input.records:q} --out {params.out:q} "
        "--signatures {params.prefixes:q} {params.benchmarks} "
        "--params {params.dedup:q} --code {input.code:q} > {log} 2>&1"


rule split:
    input:
        records="results/dedup/records.jsonl",
        code=code("split"),
    output:
        train="results/dedup/train.jsonl",
        val="results/dedup/val.jsonl",
        stats="results/dedup/split_stats.json",
        manifest="results/dedup/split.manifest.json",
    log:
        "logs/split.log",
    benchmark:
        "benchmarks/split.tsv"
    conda:
        CONDA_ENV
    resources:
        **job_resources("split"),
    params:
        dedup=stage_params(
            "dedup",
            keys=[
                "val_size",
                "split_threshold",
                "num_perm",
                "char_ngram",
                "word_ngram",
            ]
            + ["minhash_seed", "include_system"],
        ),
        seed=config["seed"],
        out=subpath(output.train, parent=True),
    shell:
        "danlu split {input.records:q} --out {params.out:q} --seed {params.seed} "
        "--params {params.dedup:q} --code {input.code:q} > {log} 2>&1"


rule demo_leak:
    output:
        LEAK,
    log:
        "logs/demo_leak.log",
    benchmark:
        "benchmarks/demo_leak.tsv"
    conda:
        CONDA_ENV
    resources:
        **job_resources("demo_leak"),
    params:
        benchmarks=benchmark_args(),
    shell:
        "danlu demo-leak {params.benchmarks} --out {output:q} > {log} 2>&1"
