"""The canonical conversation record and the three source formats users have.

Canonical record (one JSON object per line in every stage's `records.jsonl`):
    {"id": "alpaca_finance-0000017",
     "source": {"file": "data/demo/alpaca_finance.jsonl", "line": 17},
     "messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...],
     "meta": {"dataset": "alpaca_finance", "format": "alpaca"}}

`to_messages` turns one raw source record into the message list or raises
RecordError(reason, field, detail); it never raises anything else for bad data.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any

from danlu.errors import InputError

if TYPE_CHECKING:
    import numpy as np

FORMATS = ("alpaca", "sharegpt", "messages")

# LLaMA-Factory's dataset_info `columns` / `tags` names and their defaults.
DEFAULT_COLUMNS = {
    "prompt": "instruction",
    "query": "input",
    "response": "output",
    "system": "system",
    "history": "history",
    "messages": None,  # per format: sharegpt "conversations", messages "messages"
}
DEFAULT_TAGS = {
    "role_tag": None,  # sharegpt "from", messages "role"
    "content_tag": None,  # sharegpt "value", messages "content"
    "user_tag": None,
    "assistant_tag": None,
    "system_tag": None,
}
_ROLE_ALIASES = {
    "human": "user", "user": "user",
    "gpt": "assistant", "assistant": "assistant", "model": "assistant", "bot": "assistant",
    "system": "system",
}


class RecordError(ValueError):
    """A record-level problem: becomes a reject with `reason` and `field`."""

    def __init__(self, reason: str, field: str, detail: str = ""):
        super().__init__(f"{reason} ({field}){': ' + detail if detail else ''}")
        self.reason, self.field, self.detail = reason, field, detail


@dataclass(frozen=True)
class FieldMap:
    """Where a dataset keeps each canonical field (LLaMA-Factory style)."""

    columns: Mapping[str, str | None] = field(default_factory=dict)
    tags: Mapping[str, str | None] = field(default_factory=dict)

    def column(self, name: str, fmt: str) -> str:
        given = self.columns.get(name) or DEFAULT_COLUMNS[name]
        if given is None and name == "messages":
            return "conversations" if fmt == "sharegpt" else "messages"
        return given

    def tag(self, name: str, fmt: str) -> str | None:
        given = self.tags.get(name) or DEFAULT_TAGS[name]
        if given is not None:
            return given
        if name == "role_tag":
            return "from" if fmt == "sharegpt" else "role"
        if name == "content_tag":
            return "value" if fmt == "sharegpt" else "content"
        return None


def detect_format(raw: Mapping[str, Any], fields: FieldMap = FieldMap()) -> str | None:
    """Guess the format of one raw record from its fields; None if nothing fits."""
    if fields.column("messages", "sharegpt") in raw:
        return "sharegpt"
    if fields.column("messages", "messages") in raw:
        return "messages"
    if fields.column("prompt", "alpaca") in raw or fields.column("response", "alpaca") in raw:
        return "alpaca"
    return None


def _maybe_json(value: Any, name: str) -> Any:
    """CSV/TSV cells hold lists as JSON text; decode them where a list is expected."""
    if isinstance(value, str) and value.strip()[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            raise RecordError("wrong_type", name, "a JSON list was expected") from None
    return value


def _text(raw: Mapping[str, Any], name: str, required: bool) -> str:
    value = raw.get(name)
    if value is None or (isinstance(value, float) and value != value):  # NaN from pandas
        if required:
            raise RecordError("missing_field", name)
        return ""
    if not isinstance(value, str):
        raise RecordError("wrong_type", name, f"expected a string, got {type(value).__name__}")
    return value


def _alpaca(raw: Mapping[str, Any], fm: FieldMap) -> list[dict]:
    prompt = _text(raw, fm.column("prompt", "alpaca"), required=True)
    query = _text(raw, fm.column("query", "alpaca"), required=False)
    response = _text(raw, fm.column("response", "alpaca"), required=True)
    system = _text(raw, fm.column("system", "alpaca"), required=False)
    history_col = fm.column("history", "alpaca")
    history = _maybe_json(raw.get(history_col), history_col) or []
    if not isinstance(history, list):
        raise RecordError("wrong_type", history_col, "expected a list of [user, assistant] pairs")
    messages = [{"role": "system", "content": system}] if system else []
    for i, pair in enumerate(history):
        if not (isinstance(pair, list | tuple) and len(pair) == 2
                and all(isinstance(t, str) for t in pair)):
            raise RecordError("wrong_type", f"{history_col}[{i}]", "expected [user, assistant]")
        messages += [{"role": "user", "content": pair[0]},
                     {"role": "assistant", "content": pair[1]}]
    user = prompt + ("\n" + query if query.strip() else "")
    return messages + [{"role": "user", "content": user},
                       {"role": "assistant", "content": response}]


def _turns(raw: Mapping[str, Any], fm: FieldMap, fmt: str) -> list[dict]:
    col = fm.column("messages", fmt)
    if col not in raw or raw[col] is None:
        raise RecordError("missing_field", col)
    turns = _maybe_json(raw[col], col)
    if not isinstance(turns, list):
        raise RecordError("wrong_type", col, f"expected a list, got {type(turns).__name__}")
    role_tag, content_tag = fm.tag("role_tag", fmt), fm.tag("content_tag", fmt)
    custom = {fm.tag(t, fmt): r for t, r in
              (("user_tag", "user"), ("assistant_tag", "assistant"), ("system_tag", "system"))
              if fm.tag(t, fmt)}
    messages = []
    system = raw.get(fm.column("system", fmt))
    if isinstance(system, str) and system.strip():
        messages.append({"role": "system", "content": system})
    for i, turn in enumerate(turns):
        where = f"{col}[{i}]"
        if not isinstance(turn, Mapping):
            raise RecordError("wrong_type", where, "expected an object")
        role = turn.get(role_tag)
        content = turn.get(content_tag)
        if role is None:
            raise RecordError("missing_field", f"{where}.{role_tag}")
        if content is None:
            raise RecordError("missing_field", f"{where}.{content_tag}")
        if not isinstance(content, str):
            raise RecordError("wrong_type", f"{where}.{content_tag}",
                              f"expected a string, got {type(content).__name__}")
        canonical = custom.get(role) or _ROLE_ALIASES.get(str(role).lower())
        if canonical is None:
            raise RecordError("unknown_role", f"{where}.{role_tag}", f"role {role!r}")
        messages.append({"role": canonical, "content": content})
    return messages


def to_messages(raw: Any, fmt: str, fields: FieldMap = FieldMap()) -> list[dict]:
    """Convert one raw record of format `fmt` to a canonical message list."""
    if not isinstance(raw, Mapping):
        raise RecordError("wrong_type", "<record>", f"expected an object, got {type(raw).__name__}")
    if fmt == "alpaca":
        return _alpaca(raw, fields)
    if fmt in ("sharegpt", "messages"):
        return _turns(raw, fields, fmt)
    raise ValueError(f"unknown format {fmt!r}")


def check_structure(messages: list[dict]) -> None:
    """Roles must be: optional system, then user/assistant alternating, ending
    with the assistant (the turn a model learns from)."""
    body = messages[1:] if messages and messages[0]["role"] == "system" else messages
    if not body:
        raise RecordError("empty_conversation", "messages")
    offset = len(messages) - len(body)
    for i, msg in enumerate(body):
        expected = "user" if i % 2 == 0 else "assistant"
        if msg["role"] != expected:
            raise RecordError("bad_role_order", f"messages[{i + offset}]",
                              f"{msg['role']} where {expected} was expected")
    if body[-1]["role"] != "assistant":
        raise RecordError("last_turn_not_assistant", f"messages[{len(messages) - 1}]")


def read_jsonl(path):
    """Yield the canonical records of a `records.jsonl` written by danlu; a line
    that is not one is an InputError naming the file and line."""
    for n, record, problem, _line in iter_records(Path(path)):
        if record is None:
            raise InputError(path, f"line {n}: {problem}")
        yield record


# What json.dumps(ensure_ascii=False, separators=(",", ":")) builds on every
# call, built once.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def dumps(record: Mapping[str, Any]) -> str:
    """One canonical JSONL line: key order fixed, Chinese kept readable."""
    return _ENCODER.encode(record) + "\n"


def parse_line(line: str) -> tuple[dict | None, str | None]:
    """A canonical record, or (None, why) for a line a hand-made file got wrong."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        return None, f"invalid JSON: {err.msg}"
    if not isinstance(record, dict):
        return None, "not a JSON object"
    if not isinstance(record.get("id"), str):
        return None, "field 'id' missing or not a string"
    messages = record.get("messages")
    if not (isinstance(messages, list) and messages and all(
            isinstance(m, dict) and isinstance(m.get("content"), str)
            and isinstance(m.get("role"), str) for m in messages)):
        return None, "field 'messages' is not a list of {role, content}"
    return record, None


def numbered_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, line) for every non-blank line. A file that is not UTF-8
    is unusable as a whole: InputError (exit 2)."""
    n = 0
    try:
        with open(path, encoding="utf-8") as fh:
            for n, line in enumerate(fh, start=1):
                if line.strip():
                    yield n, line
    except UnicodeDecodeError:
        raise InputError(path, f"not UTF-8 after line {n}") from None


def iter_records(path: Path) -> Iterator[tuple[int, dict | None, str | None, str]]:
    """(line number, record or None, problem, raw line) for every non-blank line."""
    for n, line in numbered_lines(path):
        record, problem = parse_line(line)
        yield n, record, problem, line


def rows_of_lines(path: Path, valid: np.ndarray) -> Iterator[tuple[int | None, int, str]]:
    """(row, line number, line) for each non-blank line of a file scanned
    before, whose valid records are at line numbers `valid`; row is None for
    a line that is not a valid record."""
    expected = chain.from_iterable(valid[lo : lo + 65536].tolist()
                                   for lo in range(0, len(valid), 65536))
    row, want = 0, next(expected, None)
    for n, line in numbered_lines(path):
        if n == want:
            yield row, n, line
            row, want = row + 1, next(expected, None)
        else:
            yield None, n, line
