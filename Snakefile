# danlu: the whole fine-tuning pipeline as one Snakemake DAG.
#   snakemake --profile profiles/default         (this machine; `make demo`)
#   snakemake --profile profiles/slurm           (a cluster)
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"


wildcard_constraints:
    dataset="|".join(DATASETS) or "^$",
    shard=r"\d+",
    model="|".join(MODEL_NAMES),
    method="gptq|awq",


include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/export.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/audit.smk"


onstart:
    start_tracking()


onsuccess:
    finish_tracking("FINISHED")


onerror:
    finish_tracking("FAILED")


rule all:
    default_target: True
    input:
        final_outputs(),
