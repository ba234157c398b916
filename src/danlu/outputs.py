"""Writing outputs so that a failed job leaves nothing half-written behind."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path


def _tmp_name(path: Path) -> Path:
    # Keep the suffix: writers such as matplotlib pick the format from it.
    return path.with_name(f".tmp-{os.getpid()}-{path.name}")


@contextlib.contextmanager
def atomic_outputs(paths: Sequence[Path]) -> Iterator[list[Path]]:
    """Yield temporary paths beside `paths`; rename them into place only if the
    block finishes, delete them if it raises."""
    paths = [Path(p) for p in paths]
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)
    tmps = [_tmp_name(p) for p in paths]
    try:
        yield tmps
    except BaseException:
        for t in tmps:
            _remove(t)
        raise
    for t, p in zip(tmps, paths, strict=True):
        if t.exists():
            _remove(p)
            os.replace(t, p)


@contextlib.contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Like atomic_outputs for one directory output (a model, an Arrow set)."""
    with atomic_outputs([path]) as (tmp,):
        _remove(tmp)
        tmp.mkdir(parents=True)
        yield tmp


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def write_json(path: str | Path, obj) -> None:
    """Deterministic JSON: sorted keys, readable Chinese, trailing newline, so
    an unchanged result is byte-identical and Snakemake's checksum sees it."""
    Path(path).write_text(
        json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8"
    )


def bytes_on_disk(path: str | Path) -> int:
    """Total size of the files under a directory (or of one file)."""
    path = Path(path)
    return path.stat().st_size if path.is_file() else \
        sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
