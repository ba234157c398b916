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
    """A local model directory is an input (its files hashed into the manifest,
    under their project-relative or absolute paths); a hub model lies in the
    user's cache, and model_facts identifies it instead."""
    from danlu.model.loading import local_model_dir

    local = local_model_dir(name)
    return [] if local is None else [str(local)]


def model_facts(args, model_path: Path) -> dict:
    """The base model as a model job records it: as named, and its identity
    (models.model_identity: every file's sha256, one combined digest, the hub
    commit), which the model card and the provenance repeat."""
    from danlu.model.loading import model_identity

    return {"base_model": args.model, "revision": args.revision,
            "base_model_identity": model_identity(args.model, args.revision, model_path)}
