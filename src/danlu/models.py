"""Finding and loading models and tokenizers: a hub id, a local directory, or
the demo build, all through `from_pretrained` like any Hugging Face model."""

from __future__ import annotations

import json
from pathlib import Path

from danlu.templates import resolve_template


class ModelError(ValueError):
    """A model or adapter that cannot be used; one line."""


def resolve_model_path(name_or_path: str, revision: str | None = None) -> Path:
    """A local directory as is; a hub id through the local Hugging Face cache
    (downloaded if allowed, `HF_HUB_OFFLINE=1` to forbid)."""
    path = Path(name_or_path)
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelError(f"{path}: not a model directory (no config.json)")
        return path
    if name_or_path.count("/") != 1 or name_or_path.startswith((".", "/")):
        raise ModelError(f"{name_or_path}: no such directory, and not a hub id (owner/name)")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(name_or_path, revision=revision,
                                      allow_patterns=["*.json", "*.safetensors", "*.model",
                                                      "*.txt", "*.jinja", "*.tiktoken"]))
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as err:
        raise ModelError(f"{name_or_path}: cannot fetch from the hub ({err.__class__.__name__})") from None


def model_config(path: Path) -> dict:
    return json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))


def max_positions(path: Path) -> int | None:
    cfg = model_config(path)
    cfg = cfg.get("text_config", cfg)
    return cfg.get("max_position_embeddings")


def load_tokenizer(path: Path, template: str = "chatml", trust_remote_code: bool = False):
    """The model's tokenizer; the configured template only if it ships none,
    and a pad token (eos) where the model defines none."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if not tokenizer.chat_template:
        tokenizer.chat_template = resolve_template(template)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
