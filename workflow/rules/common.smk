# Shared helpers: config validation, input functions, stage parameters and the
# MLflow parent run. Rules only wire files together; logic lives in src/danlu.
import json
import os
import shlex
import time

from danlu import audit, tracking
from danlu.config import to_json, validate_config

validate_config(config, schema=workflow.source_path("../schemas/config.schema.yaml"))

DATASETS = {d["name"]: d for d in config["datasets"]}
if len(DATASETS) != len(config["datasets"]):
    raise WorkflowError("config: datasets: names must be unique")
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

# The modules each stage's results depend on: editing one reruns that stage
# and everything after it (and their digests go into the stage's manifest).
STAGE_CODE = {
    "demo_model": ["demo.py", "templates.py"],
    "clean": ["clean.py", "readers.py", "records.py", "pii.py", "text.py"],
    "clean_combine": ["clean.py"],
    "dedup_signatures": ["dedup.py", "minhash.py"],
    "dedup": ["dedup.py", "minhash.py", "benchmarks.py"],
    "split": ["dedup.py", "minhash.py"],
    "tokenize": ["lengths.py", "models.py", "templates.py"],
    "cutoff": ["lengths.py"],
    "train": ["train.py", "lengths.py", "models.py"],
    "evaluate": ["evaluate.py", "eval_scoring.py", "eval_report.py", "benchmarks.py"]
    + ["perplexity.py", "models.py"],
    "eval_compare": ["eval_report.py"],
    "merge": ["merge.py", "models.py"],
    "quantize": ["quantize.py", "models.py"],
    "audit": ["export.py", "signing.py", "provenance.py", "audit.py"],
}


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


def code(stage):
    return [f"src/danlu/{name}" for name in STAGE_CODE[stage]]


def stage_params(name, keys=None):
    """A config section (or some of its keys) as canonical JSON: each job
    reruns when, and only when, a value it passes changes."""
    section = config[name]
    return to_json({k: section[k] for k in keys} if keys else section)


def model_args():
    """The base-model flags every model-reading command takes."""
    args = f"--model {base_model_dir()} --template {config['template']}"
    if config["base_model_revision"]:
        args += f" --revision {config['base_model_revision']}"
    if config["trust_remote_code"]:
        args += " --trust-remote-code"
    return args


def base_model_input():
    """The base model as a file input when it is local (demo build or a
    directory), so a rebuilt model reruns what used it; none for a hub id."""
    path = base_model_dir()
    return [path] if config["base_model"] == "demo" or os.path.isdir(path) else []


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
    return config["base_model"]


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
    return inputs


def export_args():
    return " ".join(f"--export {n}={d}" for n, d in export_sources().items())


def audited_config():
    """The resolved config the provenance records (settings that change no
    result, tracking and resources, left out so they rerun nothing)."""
    return to_json(
        {k: v for k, v in config.items() if k not in ("tracking", "resources")}
    )


def dataset_path(wildcards):
    return DATASETS[wildcards.dataset]["path"]


def dataset_json(wildcards):
    return to_json(DATASETS[wildcards.dataset])


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
