"""Finding and loading models and tokenizers: a hub id, a local directory, or
the demo build, all through `from_pretrained` like any Hugging Face model."""

from __future__ import annotations

import json
import re
from pathlib import Path

from danlu.audit.manifest import combined_digest, rel, sha256_file_once
from danlu.data.templates import resolve_template
from danlu.errors import UserError

_COMMIT = re.compile(r"[0-9a-f]{40}")


class ModelError(UserError, ValueError):
    """A model or adapter that cannot be used; one line."""


def resolve_model_path(name_or_path: str, revision: str | None = None) -> Path:
    """A local directory as is; a hub id through the local Hugging Face cache
    (downloaded if allowed, `HF_HUB_OFFLINE=1` to forbid)."""
    path = local_model_dir(name_or_path)
    if path is not None:
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


def local_model_dir(name_or_path: str) -> Path | None:
    """`name_or_path` as a local directory, `~` expanded (a quoted argument or a
    config value reaches danlu unexpanded); None for a hub id."""
    path = Path(name_or_path).expanduser()
    return path if path.exists() else None


def model_identity(name_or_path: str, revision: str | None, model_path: Path) -> dict:
    """Which base model a job used, wherever it lies. Every file it holds by
    sha256, named relative to the model directory, and one digest over them
    (manifest.combined_digest: the same files give the same digest in any
    directory); plus where it came from: a local directory by its path (named as
    manifests name paths), a hub id by the revision asked for and the commit it
    resolved to (the snapshot directory's name in the Hugging Face cache)."""
    files = model_files(model_path)
    digest = combined_digest({"path": name, "sha256": sha} for name, sha in files.items())
    local = local_model_dir(name_or_path)
    if local is not None:
        return {"source": "local", "path": rel(local), "sha256": digest, "files": files}
    return {"source": "hub", "id": name_or_path, "revision": revision,
            "commit": snapshot_commit(model_path), "sha256": digest, "files": files}


def model_files(model_dir: Path) -> dict[str, str]:
    """{file name relative to the model directory: sha256}. Hidden files and
    folders are bookkeeping, not the model (`.cache/` that `huggingface-cli
    download --local-dir` keeps, `.git/`), and would change the digest."""
    root = Path(model_dir)
    files = {}
    for f in sorted(root.rglob("*")):
        name = f.relative_to(root)
        if f.is_file() and not any(part.startswith(".") for part in name.parts):
            files[name.as_posix()] = sha256_file_once(f)
    return files


def snapshot_commit(model_path: Path) -> str | None:
    """The commit a hub snapshot holds: huggingface_hub names each snapshot
    directory (`.../snapshots/<sha>`) after the commit its revision resolved to."""
    path = Path(model_path)
    return path.name if path.parent.name == "snapshots" and _COMMIT.fullmatch(path.name) else None


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


def resolve_dtype(name: str):
    """torch dtype of a config name; auto = bf16 on GPUs that have it, else fp32."""
    import torch

    if name == "auto":
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32  # CPU: fp32 keeps runs bit-reproducible and tests tight
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[name]


def load_model(model_dir, *, quantization: str = "none", double_quant: bool = True,
               compute_dtype: str = "auto", attn_implementation: str = "auto",
               trust_remote_code: bool = False):
    """A causal LM from a directory or hub id: `nf4` loads the weights in 4-bit
    (bitsandbytes, QLoRA's form), `none` in the compute dtype. A directory that
    carries its own quantization_config (GPTQ/AWQ exports) loads as saved."""
    import os

    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    dtype = resolve_dtype(compute_dtype)
    kwargs = {"dtype": dtype, "trust_remote_code": trust_remote_code}
    if attn_implementation != "auto":
        kwargs["attn_implementation"] = attn_implementation
    if quantization == "nf4":
        # FSDP/DeepSpeed shard only float tensors and place shards themselves:
        # store the 4-bit weights in the compute dtype and give no device_map.
        sharded = sharded_training()
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=double_quant, bnb_4bit_compute_dtype=dtype,
            bnb_4bit_quant_storage=dtype if sharded else torch.uint8,
        )
        if not sharded:
            local_rank = int(os.environ.get("LOCAL_RANK", 0))
            kwargs["device_map"] = {"": local_rank if torch.cuda.is_available() else "cpu"}
    return AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)


def sharded_training() -> bool:
    """Whether `accelerate launch` started this process under FSDP or DeepSpeed."""
    import os

    return any(os.environ.get(v, "").lower() in ("1", "true")
               for v in ("ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED"))


def model_inputs(name: str) -> list[str]:
    """A local model directory is an input (its files hashed into the manifest,
    under their project-relative or absolute paths); a hub model lies in the
    user's cache, and model_facts identifies it instead."""

    local = local_model_dir(name)
    return [] if local is None else [str(local)]


def model_facts(args, model_path: Path) -> dict:
    """The base model as a model job records it: as named, and its identity
    (models.model_identity: every file's sha256, one combined digest, the hub
    commit), which the model card and the provenance repeat."""

    return {"base_model": args.model, "revision": args.revision,
            "base_model_identity": model_identity(args.model, args.revision, model_path)}
