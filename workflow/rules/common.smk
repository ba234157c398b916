# Shared helpers: config validation, input functions, stage parameters and the
# MLflow parent run. Rules only wire files together; logic lives in src/danlu.
import json
import os
import re
import shlex
import sys
import time
from pathlib import Path

from danlu.audit import log as audit

from danlu.audit import tracking
from danlu.code_inputs import command_code
from danlu.model.loading import local_model_dir
from danlu.config import DatasetSpec, from_mapping, to_json, validate_config
from danlu.data.shards import plan_shards

validate_config(config, schema=workflow.source_path("../schemas/config.schema.yaml"))

DATASETS = {d["name"]: d for d in config["datasets"]}
if len(DATASETS) != len(config["datasets"]):
    raise WorkflowError("config: datasets: names must be unique")
for entry in config["datasets"]:
    from_mapping(DatasetSpec, entry)  # a file or a hub dataset, one line if neither
LEAK = "results/demo/benchmark_leak.jsonl"
if config["demo"]["plant_benchmark_leak"]:
    DATASETS["benchmark_leak"] = {
        "name": "benchmark_leak",
        "path": LEAK,
        "format": "alpaca",
        "columns": {},
        "tags": {},
        "encoding": "auto",
    }

# Software for `--software-deployment-method conda`; by default the rules use
# the environment snakemake runs in (the .venv that `make` builds).
CONDA_ENV = "../envs/danlu.yaml"


def use_snakemake_environment():
    """Put the bin directory of the Python running Snakemake first on PATH.

    Rules call `danlu` (and `accelerate`) by name; this makes the name mean the
    danlu installed beside Snakemake (`.venv/bin/snakemake` without an activated
    venv included), not whatever else PATH holds. Jobs inherit this PATH. With
    `--software-deployment-method conda` the job's shell activates the rule's
    env after that, which puts the env's bin first: there the conda env's danlu
    runs, as it must (the host's may not exist on the node or match the env)."""
    bindir = os.path.dirname(sys.executable)
    paths = os.environ.get("PATH", "").split(os.pathsep)
    if paths[0] != bindir:
        os.environ.update(PATH=os.pathsep.join([bindir, *paths]))


use_snakemake_environment()

SHARDS = range(config["dedup"]["shards"])
EVAL_MODELS = config["evaluate"]["models"]
if not config["export"]["merge"] and set(EVAL_MODELS) & {"merged", "gptq", "awq"}:
    raise WorkflowError(
        "config: evaluate.models names an export but export.merge is false"
    )
missing = set(EVAL_MODELS) & {"gptq", "awq"} - set(config["export"]["quantize"])
if missing:
    raise WorkflowError(
        f"config: evaluate.models names {sorted(missing)} not in export.quantize"
    )
# The evaluate keys that change scores (`models` only picks which jobs exist).
EVAL_KEYS = [k for k in config["evaluate"] if k != "models"]


MODEL_NAMES = ["base", "tuned", "merged", "gptq", "awq"]

# Rules that benefit from a GPU on a cluster: they ask for one there.
GPU_RULES = {"train", "evaluate", "merge", "quantize"}


def job_resources(name):
    """Resources of the job `name` from config: `resources.default`, then
    `resources.<name>`; GPU rules ask for `gpus` (train: num_processes)."""
    settings = {
        **config["resources"].get("default", {}),
        **config["resources"].get(name, {}),
    }
    settings.pop("threads", None)
    default_gpus = config["train"]["num_processes"] if name == "train" else 0
    gpus = settings.pop("gpus", default_gpus)
    if gpus and name in GPU_RULES:
        settings["gpu"] = gpus
    else:  # a GPU type on a CPU job would make SLURM allocate a GPU for it
        settings.pop("gpu_model", None)
        settings.pop("gpu_manufacturer", None)
    return settings


def job_threads(name, default=1):
    settings = {
        **config["resources"].get("default", {}),
        **config["resources"].get(name, {}),
    }
    return settings.get("threads", default)


def code(command):
    """The source files `danlu <command>` runs, derived from its imports
    (danlu.code_inputs): editing one reruns the rule and what follows, and
    their digests go into its manifest."""
    return command_code(command, Path(workflow.main_snakefile).parent)


# The dedup keys each rule's job reads, so that changing one reruns only the
# jobs that use it (val_size and split_threshold: split alone).
SIGNATURE_KEYS = [
    "num_perm",
    "char_ngram",
    "word_ngram",
    "minhash_seed",
    "include_system",
]
DEDUP_KEYS = SIGNATURE_KEYS + ["threshold", "decontaminate", "contamination_benchmarks"]
DEDUP_KEYS += ["contamination_threshold", "contamination_ngram"]


def stage_params(name, keys=None):
    """A config section (or some of its keys) as canonical JSON: each job
    reruns when, and only when, a value it passes changes."""
    section = config[name]
    return to_json({k: section[k] for k in keys} if keys else section)


def model_args():
    """The base-model flags every model-reading command takes."""
    args = f"--model {shlex.quote(base_model_dir())} --template {config['template']}"
    if config["base_model_revision"]:
        args += f" --revision {shlex.quote(config['base_model_revision'])}"
    if config["trust_remote_code"]:
        args += " --trust-remote-code"
    return args


def benchmark_args():
    """Where dedup, evaluate and demo-leak read C-Eval/CMMLU: the local copy at
    benchmarks.path where it exists (the job checks, and logs what it read),
    else the hub datasets of benchmarks.hub."""
    settings = config["benchmarks"]
    hub = [f"{name}={repo}" for name, repo in settings["hub"].items()]
    args = [f"--benchmark-hub {shlex.quote(item)}" for item in hub]
    if settings["path"]:
        args.insert(0, f"--benchmarks {shlex.quote(settings['path'])}")
    return " ".join(args)


def base_model_input():
    """The base model as a file input when it is local (demo build or a
    directory), so a rebuilt model reruns what used it; none for a hub id."""
    path = base_model_dir()
    return [path] if config["base_model"] == "demo" or local_model_dir(path) else []


def train_launcher():
    """`danlu` in-process, or `accelerate launch` over num_processes devices."""
    settings = config["train"]
    if settings["num_processes"] <= 1:
        return "danlu"
    launcher = f"accelerate launch --num_processes {settings['num_processes']}"
    if settings["accelerate_config"]:
        launcher += f" --config_file {settings['accelerate_config']}"
    else:
        launcher += " --multi_gpu"
    return f"{launcher} -m danlu.cli"


def base_model_dir():
    """Where the base model lives: the demo build, or the configured path/id."""
    if config["base_model"] == "demo":
        return "results/demo_model/model"
    # `~/models/x` is a directory; Snakemake and the shell would not expand it.
    return os.path.expanduser(config["base_model"])


def signature_prefix(wildcards):
    return f"results/dedup/signatures/shard-{wildcards.shard}"


def eval_model_inputs(wildcards):
    """The files a model's evaluation reads: the base (and adapter) or an export."""
    if wildcards.model in ("base", "tuned"):
        inputs = {"model": base_model_input()}
        if wildcards.model == "tuned":
            inputs["adapter"] = "results/train/adapter_model.safetensors"
        return inputs
    if wildcards.model == "merged":
        return {"model": "results/merge/model"}
    return {"model": f"results/quantize/{wildcards.model}"}


def eval_model_args(wildcards):
    """How `danlu evaluate` loads each model: base and tuned as trained (nf4
    for QLoRA), the exports as saved."""
    if wildcards.model in ("base", "tuned"):
        load = {
            k: config["train"][k]
            for k in ("quantization", "double_quant", "compute_dtype")
        }
        args = f"{model_args()} --load {shlex.quote(to_json(load))}"
        return args + (" --adapter results/train" if wildcards.model == "tuned" else "")
    path = (
        "results/merge/model"
        if wildcards.model == "merged"
        else f"results/quantize/{wildcards.model}"
    )
    return f"--model {path} --template {config['template']}"


def export_sources():
    """Model directories to ship: the adapter, and the merged and quantised
    models when the export stages are on."""
    sources = {"adapter": "results/train"}
    if config["export"]["merge"]:
        sources["merged"] = "results/merge/model"
        sources.update(
            {m: f"results/quantize/{m}" for m in config["export"]["quantize"]}
        )
    return sources


def export_inputs(wildcards):
    inputs = {"adapter": "results/train/adapter_model.safetensors"}
    inputs.update({n: d for n, d in export_sources().items() if n != "adapter"})
    # audit reads each quantised export's gate figures from its quantize manifest
    inputs.update(
        {
            f"{n}_gate": f"{d}.manifest.json"
            for n, d in export_sources().items()
            if n in ("gptq", "awq")
        }
    )
    return inputs


def export_args():
    return " ".join(f"--export {n}={d}" for n, d in export_sources().items())


def audited_config():
    """The resolved config the provenance records (settings that change no
    result, tracking and resources, left out so they rerun nothing)."""
    return to_json(
        {k: v for k, v in config.items() if k not in ("tracking", "resources")}
    )


# The keys of a hub dataset entry (LLaMA-Factory's names, and the revision).
HUB_KEYS = ("hf_hub_url", "subset", "split", "revision")


def clean_parts():
    """The clean jobs, {part: (dataset, shard, shards)}, in the order
    clean_combine concatenates them: datasets in config order, each cleaned
    whole (the part is its name) or in `clean.shards` record ranges (parts
    <name>/shard-<i>-of-<n>, so a new layout never mixes with an old one)."""
    parts = {}
    for name, entry in DATASETS.items():
        path = entry["path"] and os.path.expanduser(entry["path"])
        count, note = plan_shards(path, config["clean"]["shards"])
        if note:
            print(f"clean: {name}: {note}", file=sys.stderr)
        for i in range(count):
            part = name if count == 1 else f"{name}/shard-{i}-of-{count}"
            parts[part] = (name, i, count)
    return parts


CLEAN_PARTS = clean_parts()
CLEAN_PART = "|".join(map(re.escape, CLEAN_PARTS)) or "^$"
# The clean keys that change records (`shards` only lays out jobs): a new
# layout reruns clean for its new parts, not because a parameter changed.
CLEAN_KEYS = [k for k in config["clean"] if k != "shards"]


def part_dataset(wildcards):
    return DATASETS[CLEAN_PARTS[wildcards.part][0]]


def shard_args(wildcards):
    _, shard, shards = CLEAN_PARTS[wildcards.part]
    return f"--shard {shard} --shards {shards}"


def dataset_path(wildcards):
    """The clean job's file input; none for a hub dataset (read by the job)."""
    path = part_dataset(wildcards)["path"]
    return [os.path.expanduser(path)] if path else []


def dataset_json(wildcards):
    """The entry the clean job gets. A file's entry leaves out the hub keys, which
    mean nothing for it, so their arrival reran no existing clean job."""
    entry = part_dataset(wildcards)
    if entry["path"]:
        entry = {k: v for k, v in entry.items() if k not in HUB_KEYS}
        entry["path"] = os.path.expanduser(entry["path"])  # the file the job is given
    return to_json(entry)


def final_outputs():
    outputs = ["results/clean/records.jsonl", "results/train/manifest.json"]
    outputs += ["results/eval/compare.csv", "results/audit/manifest.json"]
    if config["base_model"] == "demo":
        outputs.append("results/demo_model/manifest.json")
    return outputs


def start_tracking():
    """Create the parent MLflow run and hand its id (and the audit log's
    path) to every job's environment."""
    os.environ[audit.ENV_LOG] = "results/audit/log.jsonl"
    settings = config["tracking"]
    if not settings["enabled"]:
        os.environ[tracking.ENV_DISABLED] = "1"
        return
    uri = tracking.resolve_uri(settings["tracking_uri"])
    os.environ[tracking.ENV_URI] = uri
    os.environ[tracking.ENV_EXPERIMENT] = settings["experiment"]
    run_id = tracking.start_parent_run(
        uri,
        settings["experiment"],
        run_name=f"snakemake {time.strftime('%Y-%m-%d %H:%M:%S')}",
        tags={
            "danlu.config": json.dumps(config, sort_keys=True, ensure_ascii=False)[
                :5000
            ]
        },
    )
    if run_id:
        os.environ[tracking.ENV_PARENT] = run_id


def finish_tracking(status):
    if os.environ.get(tracking.ENV_PARENT):
        tracking.end_run(
            os.environ[tracking.ENV_URI], os.environ[tracking.ENV_PARENT], status
        )
