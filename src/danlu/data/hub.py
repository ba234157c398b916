"""Reading a `datasets:` entry from the Hugging Face hub.

`hub_rows` loads the entry with `datasets.load_dataset(hf_hub_url, subset,
split=..., revision=...)` and yields its rows as the file readers do, so clean
treats a hub dataset like a parquet file. What was read is recorded in `facts`:
the revision requested, the commit actually read (resolved before loading, so
the rows are those of that commit), and the sha256 of the rows as canonical
JSON lines, which changes exactly when the data does.

`hf_hub_url` may also name a local directory that `load_dataset` reads the same
way (parquet or jsonl files, or a README.md declaring configs): the tests use
one, so the loading code runs offline.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

from danlu.config import DatasetSpec
from danlu.data.readers import RawRow
from danlu.errors import InputError

_BATCH_ROWS = 1024


def canonical_line(row: dict) -> bytes:
    """One row as a canonical JSON line (keys sorted, UTF-8, no spaces): what the
    rows digest is taken over. Values JSON lacks (dates, bytes) become strings."""
    text = json.dumps(row, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return (text + "\n").encode("utf-8")


def resolve_revision(repo: str, revision: str | None) -> str | None:
    """The commit sha that `revision` (None: the main branch) names on the hub, or
    None when it cannot be asked (a local directory, offline mode, no network)."""
    if Path(repo).is_dir():
        return None
    try:
        from huggingface_hub import HfApi

        return HfApi().dataset_info(repo, revision=revision).sha
    except Exception:  # offline, unknown repo, no network: load_dataset reports what matters
        return None


def load_rows(spec: DatasetSpec, revision: str | None):
    """The split as a `datasets.Dataset`; every failure is one InputError line."""
    try:
        import datasets

        return datasets.load_dataset(spec.hf_hub_url, spec.subset, split=spec.split,
                                     revision=revision)
    except Exception as err:  # network, auth, unknown config or split: one line for the user
        first_line = str(err).splitlines()[0] if str(err) else ""
        raise InputError(spec.source, f"cannot load from the hub: {type(err).__name__}: "
                                      f"{first_line}") from None


def hub_rows(spec: DatasetSpec, facts: dict) -> Iterator[RawRow]:
    """The rows of a hub dataset as RawRows (`{"row": n}`, from 1, as for parquet).

    `facts` gets the dataset's coordinates and revisions when loading starts, and
    the row count and sha256 once the last row has been yielded."""
    commit = resolve_revision(spec.hf_hub_url, spec.revision)
    facts.update(hf_hub_url=spec.hf_hub_url, subset=spec.subset, split=spec.split,
                 revision_requested=spec.revision, revision=commit or spec.revision,
                 revision_is_commit=commit is not None)
    # Loading the resolved commit, not the branch, makes the rows those of `revision`.
    table = load_rows(spec, commit or spec.revision)
    digest, n = hashlib.sha256(), 0
    for batch in table.with_format("arrow").iter(batch_size=_BATCH_ROWS):
        for row in batch.to_pylist():
            n += 1
            digest.update(canonical_line(row))
            yield RawRow({"row": n}, data=row)
    facts.update(rows=n, rows_sha256=digest.hexdigest())
