"""Per-stage manifests: what went in, what came out, and how, with sha256.

Every stage job writes one `manifest.json` (or `<rule>.manifest.json` where two
rules share a directory) beside its outputs. Each names the manifests that
produced its inputs by their sha256, so manifests chain back to the raw data
and `danlu verify` can walk the chain.

Paths (`rel`): a file inside the project root (the directory Snakemake runs in)
is named relative to it, with forward slashes, so two checkouts' manifests
compare directly. A file outside it (a data set or base model kept in `~`, on
another mount, or behind a symlink) is named by its absolute, resolved posix
path: never `../..`, which would change meaning with the project's location
and which MLflow refuses in tag keys. `danlu verify` opens `root / path`,
which is that same absolute path.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import socket
import subprocess
import sys
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path

from danlu import __version__
from danlu.outputs import write_json

MANIFEST_SUFFIX = "manifest.json"
KEY_PACKAGES = (
    "torch", "transformers", "peft", "bitsandbytes", "accelerate", "datasets", "tokenizers",
    "datasketch", "snakemake", "mlflow", "pandas", "numpy", "pyarrow", "llmcompressor",
    "compressed-tensors",
)
_CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    """sha256 of a file, read in 1 MiB chunks (files may be many GB)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def sha256_file_once(path: str | Path) -> str:
    """sha256_file, remembered in this process while the file keeps its inode,
    size, mtime and ctime: a model job names its base model twice (its identity
    in the params, its files among the inputs), and a model may be many GB."""
    st = os.stat(path)
    return _sha256_memo(os.path.realpath(path), st.st_dev, st.st_ino, st.st_size,
                        st.st_mtime_ns, st.st_ctime_ns)


@lru_cache(maxsize=4096)
def _sha256_memo(path: str, *_stat: int) -> str:
    return sha256_file(path)


def rel(path: str | Path, root: Path | None = None) -> str:
    """How manifests name `path` (see module docstring): relative to the project
    root when inside it, else absolute and resolved."""
    root = (root or Path.cwd()).absolute()
    here = Path(path).absolute()
    inside = _inside(here, root)
    if inside is None:
        # Symlinks decide: a path that leads into the project through a link
        # (or names the project by a linked name) is still a project file.
        here = here.resolve()
        inside = _inside(here, root.resolve())
    return here.as_posix() if inside is None else inside


def _inside(path: Path, root: Path) -> str | None:
    """`path` relative to `root` (posix) if it lies under it, else None."""
    try:
        relative = Path(os.path.relpath(path, root)).as_posix()
    except ValueError:  # another drive (Windows)
        return None
    return None if relative == ".." or relative.startswith("../") else relative


def is_external(manifest_path: str) -> bool:
    """Whether a manifest path names a file outside the project."""
    return Path(manifest_path).is_absolute()


def _files_under(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".tmp-"))
    return [path]


def describe_files(paths: Iterable[str | Path], root: Path | None = None) -> list[dict]:
    """[{path, sha256, size}] for every file (directories expanded, sorted)."""
    entries = []
    for p in paths:
        for f in _files_under(Path(p)):
            entries.append({"path": rel(f, root), "sha256": sha256_file_once(f),
                            "size": f.stat().st_size})
    return sorted(entries, key=lambda e: e["path"])


def combined_digest(entries: Iterable[Mapping]) -> str:
    """One sha256 for a set of files (a model or Arrow directory): over the
    sorted "path sha256" lines of its entries."""
    lines = "".join(f"{e['path']} {e['sha256']}\n" for e in sorted(entries, key=lambda e: e["path"]))
    return hashlib.sha256(lines.encode()).hexdigest()


@lru_cache(maxsize=1)
def code_version() -> dict:
    """The git commit of the code and whether the work tree differs from it."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).resolve().parent).stdout.strip()
    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": dirty}


def package_versions() -> dict:
    versions = {}
    for name in KEY_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def find_producer(path: str | Path, root: Path | None = None) -> Path | None:
    """The manifest that lists `path` (a file, or any file inside a directory)
    among its outputs, searched from the file's directory up to the root."""
    root = (root or Path.cwd()).absolute()
    target = rel(path, root)
    if is_external(target):  # no job of this project wrote it: raw data or a base model
        return None
    here = Path(path).absolute()
    directory = here if here.is_dir() else here.parent
    while True:
        for candidate in sorted(directory.glob(f"*{MANIFEST_SUFFIX}")):
            outputs = _outputs_of(str(candidate), candidate.stat().st_mtime_ns)
            if target in outputs or any(o.startswith(target + "/") for o in outputs):
                return candidate
        if directory == root or root not in directory.parents:
            return None
        directory = directory.parent


@lru_cache(maxsize=256)
def _outputs_of(manifest_path: str, _mtime: int) -> frozenset:
    try:
        data = json.loads(Path(manifest_path).read_text(encoding="utf-8"))
        return frozenset(e["path"] for e in data.get("outputs", []))
    except (OSError, ValueError, KeyError, TypeError):
        return frozenset()


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def build_manifest(
    stage: str,
    inputs: Iterable[str | Path],
    outputs: Iterable[str | Path],
    params: Mapping,
    started: str,
    *,
    manifest_path: Path,
    nondeterministic: Mapping[str, str] | None = None,
    extra: Mapping | None = None,
    root: Path | None = None,
) -> dict:
    """Describe one finished stage job (see module docstring)."""
    inputs, outputs = list(inputs), list(outputs)
    upstream = {}
    for p in inputs:
        producer = find_producer(p, root)
        if producer is not None and producer.absolute() != manifest_path.absolute():
            upstream[rel(producer, root)] = sha256_file(producer)
    return {
        "stage": stage,
        "inputs": describe_files(inputs, root),
        "outputs": describe_files(outputs, root),
        "upstream_manifests": dict(sorted(upstream.items())),
        "params": params,
        # Outputs whose bytes legitimately differ between identical reruns, and why.
        "nondeterministic": dict(nondeterministic or {}),
        "danlu_version": __version__,
        "code": code_version(),
        "packages": package_versions(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "started": started,
        "finished": now(),
        **(extra or {}),
    }


def write_manifest(manifest: dict, path: Path) -> str:
    """Write the manifest and return its sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, manifest)
    return sha256_file(path)
