"""The config schema, the demo config, and the example setups users copy."""

import copy
import dataclasses
import re
import shlex
from pathlib import Path

import pytest
import yaml
from workflow_utils import merge_config

from danlu.cli import main as danlu_main
from danlu.config import (
    CleanConfig,
    ConfigError,
    DedupConfig,
    ExportConfig,
    Gates,
    LengthsConfig,
    TrainConfig,
    from_mapping,
    load_config,
    load_schema,
    section,
)

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((REPO / "config" / "examples").glob("*.yaml"))
ACCELERATE = sorted((REPO / "config" / "accelerate").glob("*.yaml"))
# Per-rule resources have no default on purpose: an absent key means "the
# rule's own value, else the executor's" (a default would be filled in and
# override the rule's threads, or ask every job for a partition).
NO_DEFAULT = {"resources.*"}


def _schema_keys(node: dict, path: str = ""):
    """(dotted path, schema, required) of every entry under a `properties:`
    mapping, at any depth (objects, array items, additionalProperties)."""
    required = set(node.get("required", []))
    for name, sub in node.get("properties", {}).items():
        yield f"{path}{name}", sub, name in required
        yield from _schema_keys(sub, f"{path}{name}.")
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            yield from _schema_keys(node[key], f"{path}*." if key != "items" else path)


def test_every_schema_key_has_type_default_and_description():
    problems = []
    keys = list(_schema_keys(load_schema()))
    assert len(keys) > 100
    for path, sub, required in keys:
        if "description" not in sub:
            problems.append(f"{path}: no description")
        if not {"type", "anyOf", "oneOf", "const", "enum"} & set(sub):
            problems.append(f"{path}: no type")
        exempt = any(re.fullmatch(p.replace(".", r"\.").replace("*", r"[^.]+") + r"\..+", path)
                     for p in NO_DEFAULT)
        if "default" not in sub and not required and not exempt:
            problems.append(f"{path}: no default")
    assert problems == []


def test_demo_config_validates():
    config = load_config(REPO / "config" / "config.yaml")
    assert config["base_model"] == "demo"


def test_a_bad_key_fails_in_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lora_rank: 8\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="train: unknown key 'lora_rank'") as err:
        load_config(bad)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_validates_and_names_its_command(path):
    config = load_config(path)
    assert config["base_model"] != "demo"
    header = path.read_text(encoding="utf-8").split("\n\n", 1)[0]
    assert f"--configfile config/examples/{path.name}" in header
    accelerate = config["train"]["accelerate_config"]
    assert accelerate is None or (REPO / accelerate).is_file()


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_no_demo_setting_leaks_into_an_example(path):
    """`--configfile` merges over config/config.yaml: the example must set
    every key the demo sets, or it trains with the demo's values."""
    demo = yaml.safe_load((REPO / "config" / "config.yaml").read_text(encoding="utf-8"))
    example = yaml.safe_load(path.read_text(encoding="utf-8"))
    merged = load_config_from(merge_config(copy.deepcopy(demo), example))
    assert merged == load_config_from(example)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_estimate_matches_danlu_estimate(path, capsys, monkeypatch):
    """The memory figures pasted into the header are what the command prints."""
    monkeypatch.chdir(REPO)
    text = path.read_text(encoding="utf-8")
    command = re.search(r"^# (danlu estimate .*)$", text, re.M).group(1)
    pasted = text.split(command + "\n", 1)[1].split("\n\n", 1)[0]
    danlu_main(shlex.split(command)[1:])
    printed = capsys.readouterr().out
    assert [line.removeprefix("#").strip() for line in pasted.splitlines()] == [
        line.strip() for line in printed.splitlines()]


@pytest.mark.parametrize("path", ACCELERATE, ids=lambda p: p.name)
def test_accelerate_config_loads(path):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(path))  # unknown keys raise
    assert config.mixed_precision == "no"  # train.compute_dtype decides, not this file
    assert config.num_machines == 1


def load_config_from(mapping: dict) -> dict:
    """load_config for a mapping instead of a file."""
    from danlu.config import validate_config

    return validate_config(copy.deepcopy(mapping))


@pytest.mark.parametrize(("name", "cls"), [("clean", CleanConfig), ("dedup", DedupConfig),
                                           ("lengths", LengthsConfig), ("train", TrainConfig),
                                           ("export", ExportConfig)])
def test_stage_configs_have_the_schema_keys_and_its_defaults(name, cls):
    keys = load_schema()["properties"][name]["properties"]
    assert [f.name for f in dataclasses.fields(cls)] == list(keys)
    assert all(f.default is dataclasses.MISSING for f in dataclasses.fields(cls))
    defaults = load_config(None)[name]
    built = section(load_config(None), name, cls)
    assert dataclasses.asdict(built) == defaults


def test_export_gates_are_typed():
    export = section(load_config_from({"export": {"gates": {"max_ppl_ratio": 2}}}), "export",
                     ExportConfig)
    assert isinstance(export.gates, Gates) and export.gates.max_ppl_ratio == 2


def test_dedup_minhash_takes_the_schema_bounds_of_num_perm():
    bounds = load_schema()["properties"]["dedup"]["properties"]["num_perm"]
    for num_perm in (bounds["minimum"], bounds["maximum"]):
        config = load_config_from({"dedup": {"num_perm": num_perm}})
        assert section(config, "dedup", DedupConfig).minhash().num_perm == num_perm
    with pytest.raises(ConfigError, match="dedup.num_perm"):
        load_config_from({"dedup": {"num_perm": bounds["maximum"] + 1}})


@pytest.mark.parametrize("key", ["threshold", "split_threshold"])
def test_a_threshold_lsh_cannot_band_is_one_line_naming_the_key(key):
    section = {**load_config(None)["dedup"], key: 1.0}
    with pytest.raises(ConfigError, match=rf"^config: dedup\.{key}: 1\.0 with num_perm 128 .*fewer than 2 bands"):
        from_mapping(DedupConfig, section)
