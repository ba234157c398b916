"""What every command shares: its config section, model facts, usage errors."""

from __future__ import annotations

import json
from pathlib import Path

from danlu.config import load_config
from danlu.errors import UserError


class UsageError(UserError):
    """Bad input or arguments: printed as one line, exit status 2."""


def stage_params(args, name: str) -> dict:
    """The stage's config section: `--params` JSON (a rule passes the keys it
    depends on; the schema's defaults fill the rest), else `--config`/defaults."""
    if getattr(args, "params", None):
        return {**load_config(None)[name], **json.loads(args.params)}
    return load_config(getattr(args, "config", None))[name]


def model_inputs(name: str) -> list[str]:
    """A local model directory is an input (hashed into the manifest); a hub
    model is recorded by id and resolved revision instead."""
    return [name] if Path(name).exists() else []


def model_facts(args, model_path: Path) -> dict:
    return {"base_model": args.model, "revision": args.revision,
            "resolved_path": model_path.as_posix() if Path(args.model).exists()
            else model_path.name}  # a hub snapshot directory is named by its commit
