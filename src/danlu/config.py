"""Configuration: the JSON-Schema is the single source of keys, types and
defaults; each stage reads its section into a small frozen dataclass.

`validate_config` fills defaults and fails in one line on an unknown or
mistyped key, so a typo stops the workflow before any job starts.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from danlu.errors import UserError


class ConfigError(UserError, ValueError):
    """A config problem, always described in one line."""


def schema_path() -> Path:
    """The packaged schema (wheel installs) or the repository's (editable installs)."""
    packaged = resources.files("danlu") / "config.schema.yaml"
    if packaged.is_file():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"


def load_schema(schema: str | Path | None = None) -> dict:
    with open(schema or schema_path(), encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def _defaulting_validator(schema: dict):
    """A Draft 2020-12 validator that writes each property's default into the
    instance before validating it (the approach jsonschema's FAQ describes and
    Snakemake's `validate` uses)."""
    from jsonschema import Draft202012Validator, validators

    def set_defaults(validator, properties, instance, schema_):
        if isinstance(instance, dict):
            for key, sub in properties.items():
                if "default" in sub and key not in instance:
                    instance[key] = json.loads(json.dumps(sub["default"]))
        yield from Draft202012Validator.VALIDATORS["properties"](
            validator, properties, instance, schema_
        )

    cls = validators.extend(Draft202012Validator, {"properties": set_defaults})
    return cls(schema)


def _one_line(error) -> str:
    where = ".".join(str(p) for p in error.absolute_path) or "<top level>"
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        return f"config: {where}: unknown key {', '.join(map(repr, extra))} (allowed: {', '.join(allowed)})"
    return f"config: {where}: {error.message}"


def validate_config(config: dict, schema: str | Path | None = None) -> dict:
    """Fill defaults into `config` in place and check it; raise ConfigError in one line."""
    from jsonschema.exceptions import best_match

    validator = _defaulting_validator(load_schema(schema))
    error = best_match(validator.iter_errors(config))
    if error is not None:
        raise ConfigError(_one_line(error))
    return config


def load_config(path: str | Path | None) -> dict:
    """Read a danlu YAML config (or only the defaults when `path` is None)."""
    config: dict = {}
    if path is not None:
        with open(path, encoding="utf-8") as fh:
            config = yaml.safe_load(fh) or {}
    return validate_config(config)


def section(config: Mapping[str, Any], name: str, cls):
    """Build stage dataclass `cls` from config section `name` (already validated)."""
    return from_mapping(cls, config[name])


def from_mapping(cls, mapping: Mapping[str, Any]):
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(mapping) - names
    if unknown:
        raise ConfigError(f"{cls.__name__}: unknown key(s) {', '.join(sorted(unknown))}")
    return cls(**dict(mapping))


def to_json(obj) -> str:
    """Canonical JSON of a dataclass or mapping: what rules pass as `--params`."""
    if dataclasses.is_dataclass(obj):
        obj = dataclasses.asdict(obj)
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


# --- stage configs -------------------------------------------------------------
# Field names equal the schema's keys; defaults live in the schema only, so a
# dataclass is always built from a validated section (see `section`).


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """One entry of `datasets:` (LLaMA-Factory's dataset_info, as a list): a
    local file (`path`) or a hub dataset (`hf_hub_url`, subset, split, revision)."""

    name: str
    path: str | None
    format: str
    columns: dict
    tags: dict
    encoding: str
    # Defaults here too (unlike other stage configs): a local file's entry built
    # in code need not spell out the hub keys.
    hf_hub_url: str | None = None
    subset: str | None = None
    split: str = "train"
    revision: str | None = None

    def __post_init__(self) -> None:
        if (self.path is None) == (self.hf_hub_url is None):
            raise ConfigError(f"datasets: {self.name}: give `path` (a local file) or "
                              "`hf_hub_url` (a hub dataset), exactly one of them")

    @property
    def source(self) -> str:
        """How records name where they came from: the file, or the hub dataset
        with its subset and split (hf://datasets/owner/name[:subset]:split)."""
        if self.path is not None:
            return self.path
        where = self.hf_hub_url if Path(self.hf_hub_url).is_dir() else \
            f"hf://datasets/{self.hf_hub_url}"
        return ":".join([where, *([self.subset] if self.subset else []), self.split])


@dataclasses.dataclass(frozen=True)
class CleanConfig:
    mask_pii: bool
    pii_types: list
    min_chars: int
    max_chars: int
    max_non_text_share: float
    languages: list
    special_tokens: list | None
    shards: int | str  # jobs per file, or "auto": the workflow's layout, not a result

    def __post_init__(self) -> None:
        if self.min_chars > self.max_chars:
            raise ConfigError("clean: min_chars is larger than max_chars")


@dataclasses.dataclass(frozen=True)
class LengthsConfig:
    cutoff_len: int | str
    percentile: float
    min_cutoff: int
    max_cutoff: int
    overlength: str
    train_on_prompt: bool
    mask_history: bool
    enable_thinking: bool


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    quantization: str
    double_quant: bool
    compute_dtype: str
    lora_r: int
    lora_alpha: int
    lora_dropout: float
    lora_target: str | list
    use_dora: bool
    use_rslora: bool
    modules_to_save: list
    learning_rate: float
    lr_scheduler_type: str
    warmup_ratio: float
    weight_decay: float
    max_grad_norm: float
    num_epochs: float
    max_steps: int
    per_device_train_batch_size: int
    per_device_eval_batch_size: int
    gradient_accumulation_steps: int
    optim: str
    gradient_checkpointing: bool
    packing: bool
    attn_implementation: str
    use_liger_kernel: str
    logging_steps: int
    eval_steps: int
    save_steps: int
    save_total_limit: int
    num_processes: int
    accelerate_config: str | None

    def __post_init__(self) -> None:
        if self.quantization not in ("nf4", "none"):
            raise ConfigError(f"train: quantization must be nf4 or none, not {self.quantization!r}")
        if self.max_steps <= 0 and self.num_epochs <= 0:
            raise ConfigError("train: set num_epochs > 0 or max_steps > 0")


@dataclasses.dataclass(frozen=True)
class DedupConfig:
    threshold: float
    num_perm: int
    char_ngram: int
    word_ngram: int
    minhash_seed: int
    include_system: bool
    shards: int
    decontaminate: bool
    contamination_benchmarks: list
    contamination_threshold: float
    contamination_ngram: int
    val_size: float
    split_threshold: float

    def __post_init__(self) -> None:
        # The schema allows thresholds up to 1, but datasketch's LSH needs at
        # least 2 bands, which a threshold near 1 with few permutations cannot give.
        from danlu.data.minhash import lsh_bands

        for key in ("threshold", "split_threshold"):
            value = getattr(self, key)
            try:
                lsh_bands(self.minhash(value))
            except ValueError:
                raise ConfigError(
                    f"config: dedup.{key}: {value} with num_perm {self.num_perm} leaves "
                    "MinHash LSH fewer than 2 bands; lower it or raise dedup.num_perm") from None

    def minhash(self, threshold: float | None = None):
        from danlu.data.minhash import MinHashParams

        return MinHashParams(num_perm=self.num_perm, threshold=threshold or self.threshold,
                             char_ngram=self.char_ngram, word_ngram=self.word_ngram,
                             seed=self.minhash_seed)


@dataclasses.dataclass(frozen=True)
class Gates:
    """`export.gates`: the quality gate of each quantised export (the reasons
    for its defaults: the schema)."""

    min_top1_agreement: float  # share of val answer tokens where export and merged agree
    max_ppl_ratio: float  # export's val perplexity / the merged model's
    val_examples: int  # first val examples scored
    max_tokens: int  # each cut to this many tokens (prompt included)


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    """`export`: the merge and the quantised exports."""

    merge: bool
    merge_dtype: str
    merge_check_prompts: int
    quantize: list
    scheme: str
    group_size: int
    calibration_samples: int
    calibration_max_length: int
    dampening_frac: float
    gates: Gates

    def __post_init__(self) -> None:
        # The section nests `gates` as a mapping; the stages read it typed.
        if isinstance(self.gates, Mapping):
            object.__setattr__(self, "gates", from_mapping(Gates, self.gates))


def stage_params(args, name: str) -> dict:
    """The stage's config section: `--params` JSON (a rule passes the keys it
    depends on; the schema's defaults fill the rest), else `--config`/defaults."""
    if getattr(args, "params", None):
        return {**load_config(None)[name], **json.loads(args.params)}
    return load_config(getattr(args, "config", None))[name]
