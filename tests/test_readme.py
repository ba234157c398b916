"""The README's "Bring your own model and data" config is one users copy: it must
validate and, merged over the demo config as `--configfile` does, keep nothing
of the demo's."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import yaml
from workflow_utils import merge_config

from danlu.config import validate_config

REPO = Path(__file__).resolve().parents[1]


def _section(title: str) -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    return text.split(f"### {title}\n", 1)[1].split("\n### ", 1)[0]


def _blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, re.S)


def test_bring_your_own_config_validates_and_sets_every_demo_key():
    (config_text,) = _blocks(_section("Bring your own model and data"), "yaml")
    mine = yaml.safe_load(config_text)
    demo = yaml.safe_load((REPO / "config" / "config.yaml").read_text(encoding="utf-8"))
    merged = validate_config(merge_config(copy.deepcopy(demo), mine))
    assert merged == validate_config(copy.deepcopy(mine))
    assert merged["benchmarks"]["path"] is None and merged["lengths"]["enable_thinking"] is True
    kinds = {"hub" if d["hf_hub_url"] else "file" for d in merged["datasets"]}
    assert kinds == {"hub", "file"}


def test_bring_your_own_reasoning_record_is_valid_json():
    (record_text,) = _blocks(_section("Bring your own model and data"), "json")
    record = json.loads(record_text)
    assert record["messages"][-1]["content"].startswith("<think>\n")
