"""C-Eval and CMMLU: reading the question files and writing the prompts.

The loader reads a local directory in exactly the layout the official archives
unpack to (what `shared/benchmarks/README.md` describes):

    ceval/ceval-exam/{dev,val,test}/<subject>_<split>.csv   + ceval/subject_mapping.json
    cmmlu/data/{dev,test}/<subject>.csv                      + cmmlu/subject_mapping.json

or, without a local copy (`root` None), the same rows from the dataset hub
through `datasets.load_dataset(hub_id, subject, split=...)` (one config per
subject, as lm-evaluation-harness loads them), with subject names and
categories from the packaged `benchmark_subjects.json` (the hub datasets lack them).

The prompt functions reproduce lm-evaluation-harness's `ceval-valid_*` and
`cmmlu_*` task YAMLs character for character (the default scoring), and the
official CMMLU repository's `mp_utils.format_example` (the `last_token` scoring).

Every problem with the files is a `BenchmarkError` in one line that names the
file, subject or column, so a broken copy fails before any model is loaded.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from danlu.errors import UserError

CHOICES = ("A", "B", "C", "D")


class BenchmarkError(UserError, ValueError):
    """A problem with benchmark files or names, always described in one line."""


@dataclass(frozen=True)
class Layout:
    """Where one benchmark keeps its files and how lm-eval words its header."""

    name: str
    eval_split: str  # the split that is scored
    shot_split: str  # the split the few-shot examples come from
    question_column: str
    answer_column: str
    hub_id: str  # the dataset lm-eval itself loads
    header: str  # lm-eval's `description`, filled with the subject's Chinese name

    def csv_path(self, root: Path, subject: str, split: str) -> Path:
        if self.name == "ceval":
            return root / "ceval" / "ceval-exam" / split / f"{subject}_{split}.csv"
        return root / "cmmlu" / "data" / split / f"{subject}.csv"

    def mapping_path(self, root: Path) -> Path:
        return root / self.name / "subject_mapping.json"


LAYOUTS = {
    # C-Eval hides test answers, so lm-eval (and everyone else) scores `val`.
    "ceval": Layout(
        name="ceval",
        eval_split="val",
        shot_split="dev",
        question_column="question",
        answer_column="answer",
        hub_id="ceval/ceval-exam",
        header="以下是中国关于{}的单项选择题，请选出其中的正确答案。\n\n",
    ),
    "cmmlu": Layout(
        name="cmmlu",
        eval_split="test",
        shot_split="dev",
        question_column="Question",
        answer_column="Answer",
        hub_id="haonan-li/cmmlu",
        header="以下是关于{}的单项选择题，请直接给出正确答案的选项。\n\n",
    ),
}


@dataclass(frozen=True)
class Subject:
    name: str
    name_zh: str
    category: str  # STEM / Social Science / Humanities / Other
    overlays: tuple[str, ...] = ()  # CMMLU's "China specific", counted on top of category


@dataclass(frozen=True)
class Question:
    id: str
    question: str
    options: tuple[str, str, str, str]
    answer: str  # kept as read; `is_scorable` says whether it is one of A-D

    @property
    def is_scorable(self) -> bool:
        return self.answer in CHOICES


@dataclass(frozen=True)
class SubjectData:
    benchmark: str
    subject: Subject
    shots: tuple[Question, ...]  # the shot split in file order; the prompt takes the first k
    questions: tuple[Question, ...]  # the scored split in file order


def layout(benchmark: str) -> Layout:
    if benchmark not in LAYOUTS:
        raise BenchmarkError(f"unknown benchmark {benchmark!r} (known: {', '.join(LAYOUTS)})")
    return LAYOUTS[benchmark]


# Subject names, Chinese names and categories (no questions) for reading the hub.
SUBJECTS_FILE = Path(__file__).with_name("benchmark_subjects.json")


@dataclass(frozen=True)
class Source:
    """Where questions are read: a local copy (`root`), else the hub datasets in
    `hub` (benchmark -> hub id; a benchmark not named there uses its official id)."""

    root: Path | None
    hub: Mapping[str, str] = field(default_factory=dict)

    def hub_id(self, benchmark: str) -> str | None:
        return None if self.root else self.hub.get(benchmark, layout(benchmark).hub_id)

    def describe(self, benchmarks: Sequence[str]) -> str:
        if self.root:
            return str(self.root)
        return "the hub (" + ", ".join(f"{b}: {self.hub_id(b)}" for b in benchmarks) + ")"


def find_source(
    path: str | Path | None, hub: Mapping[str, str] | None = None, *, default_hub: bool = True
) -> tuple[Source | None, str]:
    """The local copy when `path` is a directory, else the hub: the ids in `hub`,
    or (with `default_hub`) the official ones. None when there is nothing to
    read. The second value says, for the job's log, why that source was taken."""
    if path and Path(path).is_dir():
        return Source(Path(path)), f"local copy {path}"
    why = f"{path} not found" if path else "no local copy given"
    unknown = sorted(set(hub or {}) - set(LAYOUTS))
    if unknown:
        raise BenchmarkError(f"unknown benchmark(s) in hub ids: {', '.join(unknown)}")
    if hub or default_hub:
        return Source(None, dict(hub or {})), f"{why}: reading the dataset hub"
    return None, why


def parse_hub_ids(items: Sequence[str]) -> dict[str, str]:
    """`--benchmark-hub NAME=ID` flags -> {name: id}."""
    pairs = [item.partition("=") for item in items]
    bad = [item for item, (_, eq, value) in zip(items, pairs, strict=True) if not eq or not value]
    if bad:
        raise BenchmarkError(f"--benchmark-hub takes NAME=HUB_ID, got {', '.join(bad)}")
    return {name: value for name, _, value in pairs}


def load_subjects(benchmark: str, root: Path | None) -> dict[str, Subject]:
    """Subject name -> Subject, from `<root>/<benchmark>/subject_mapping.json`, or
    from the packaged table when there is no local copy (`root` None)."""
    spec = layout(benchmark)
    if root is None:
        table = json.loads(SUBJECTS_FILE.read_text(encoding="utf-8"))[benchmark]
        return {s: Subject(s, v[0], v[1], tuple(v[2:])) for s, v in table.items()}
    if not (root / benchmark).is_dir():
        raise BenchmarkError(f"{benchmark}: benchmark directory not found: {root / benchmark}")
    path = spec.mapping_path(root)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BenchmarkError(f"{benchmark}: subject mapping not found: {path}") from None
    except json.JSONDecodeError as err:
        raise BenchmarkError(f"{benchmark}: {path}: not valid JSON ({err.msg})") from None
    try:
        if benchmark == "ceval":
            # subject -> [English name, Chinese name, category]
            return {s: Subject(s, v[1], v[2]) for s, v in raw.items()}
        # CMMLU's file is its `categories.py` as JSON: Chinese names, and per subject a
        # list whose first entry is the category and the rest overlays ("China specific").
        cats = raw["subject_to_categories"]
        return {
            s: Subject(s, zh, cats[s][0], tuple(cats[s][1:])) for s, zh in raw["name_en2zh"].items()
        }
    except (KeyError, IndexError, TypeError, AttributeError) as err:
        raise BenchmarkError(
            f"{benchmark}: {path}: unexpected structure ({type(err).__name__}: {err})"
        ) from None


def select_subjects(subjects: dict[str, Subject], wanted: Sequence[str] | None) -> list[Subject]:
    """The subjects to evaluate, sorted by name: all of them, or those named in `wanted`."""
    names = sorted(subjects) if wanted is None else sorted(set(wanted) & set(subjects))
    return [subjects[n] for n in names]


def load_benchmark(
    benchmark: str,
    root: Path | None,
    *,
    subjects: Sequence[str] | None = None,
    max_per_subject: int | None = None,
    hub_id: str | None = None,
) -> list[SubjectData]:
    """Shots and scored questions of each selected subject, subjects sorted by name.

    `max_per_subject` keeps the first N scored rows (what lm-eval's `--limit` does).
    With `hub_id` the rows come from the dataset hub; the subject mapping (Chinese
    names and categories, which the hub datasets lack) is still read from `root`.
    Without a local copy (`root` None) the rows come from the hub (`hub_id`, by
    default the official dataset) and the mapping from the packaged table.
    """
    spec = layout(benchmark)
    if root is None:
        hub_id = hub_id or spec.hub_id
    known = load_subjects(benchmark, root)
    if subjects is not None:
        unknown = sorted(set(subjects) - set(known))
        if unknown:
            raise BenchmarkError(f"{benchmark}: unknown subject(s): {', '.join(unknown)}")
    loaded = []
    for subject in select_subjects(known, subjects):
        if hub_id:
            shots = _hub_questions(spec, hub_id, subject.name, spec.shot_split)
            questions = _hub_questions(spec, hub_id, subject.name, spec.eval_split)
        else:
            shots = read_questions(spec, spec.csv_path(root, subject.name, spec.shot_split))
            questions = read_questions(spec, spec.csv_path(root, subject.name, spec.eval_split))
        if max_per_subject is not None:
            questions = questions[:max_per_subject]
        loaded.append(SubjectData(benchmark, subject, tuple(shots), tuple(questions)))
    return loaded


def read_questions(spec: Layout, path: Path) -> list[Question]:
    """Rows of one CSV. The csv module with newline="" keeps quoted newlines and reads
    the CRLF files as-is, giving exactly the strings pandas would."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
            columns = reader.fieldnames or []
    except FileNotFoundError:
        raise BenchmarkError(f"{spec.name}: missing subject file: {path}") from None
    except (UnicodeDecodeError, csv.Error) as err:
        raise BenchmarkError(f"{spec.name}: {path}: unreadable CSV ({err})") from None
    return _to_questions(spec, rows, columns, str(path))


def _hub_questions(spec: Layout, hub_id: str, subject: str, split: str) -> list[Question]:
    try:
        import datasets

        rows = datasets.load_dataset(hub_id, subject, split=split)
    except Exception as err:  # network, auth, missing config: all one line for the user
        first_line = str(err).splitlines()[0] if str(err) else ""
        raise BenchmarkError(
            f"{spec.name}: cannot load {hub_id} subject {subject!r} split {split!r}: "
            f"{type(err).__name__}: {first_line}"
        ) from None
    where = f"{hub_id}:{subject}:{split}"
    return _to_questions(spec, [dict(r) for r in rows], list(rows.column_names), where)


def _to_questions(
    spec: Layout, rows: Iterable[dict], columns: Sequence[str], where: str
) -> list[Question]:
    needed = [spec.question_column, *CHOICES, spec.answer_column]
    missing = [c for c in needed if c not in columns]
    if missing:
        raise BenchmarkError(
            f"{spec.name}: {where}: missing column {', '.join(map(repr, missing))} "
            f"(has: {', '.join(map(repr, columns))})"
        )
    # C-Eval has an `id` column; CMMLU's first column is an unnamed row index.
    id_column = "id" if "id" in columns else "" if "" in columns else None
    out = []
    for number, row in enumerate(rows):
        out.append(
            Question(
                id=_text(row[id_column]) if id_column is not None else str(number),
                question=_text(row[spec.question_column]),
                options=tuple(_text(row[c]) for c in CHOICES),
                answer=_text(row[spec.answer_column]).strip(),
            )
        )
    return out


def _text(value) -> str:
    # Hub rows may hold None for an empty cell; the CSV reader gives "".
    return "" if value is None else str(value)


# ---- prompts -------------------------------------------------------------------------


def header(benchmark: str, subject: Subject) -> str:
    return layout(benchmark).header.format(subject.name_zh)


def lm_eval_question(q: Question) -> str:
    """lm-eval's `doc_to_text`: `{{question.strip()}}\\nA. {{A}}...\\n答案：` (options unstripped)."""
    a, b, c, d = q.options
    return f"{q.question.strip()}\nA. {a}\nB. {b}\nC. {c}\nD. {d}\n答案："


def lm_eval_context(data: SubjectData, q: Question, shots: Sequence[Question]) -> str:
    """lm-eval's `fewshot_context`: description, then each shot as `text + " " + answer`
    followed by the fewshot delimiter `\\n\\n`, then the question. The continuations
    scored after it are `" A"`..`" D"` (target_delimiter + choice)."""
    examples = "".join(f"{lm_eval_question(s)} {s.answer}\n\n" for s in shots)
    return header(data.benchmark, data.subject) + examples + lm_eval_question(q)


def official_question(q: Question, answer: str | None = None) -> str:
    """The official CMMLU `format_example`: `题目：{q}\\nA. …\\n答案是：` (question unstripped);
    a shot appends `{answer}\\n\\n`."""
    a, b, c, d = q.options
    text = f"题目：{q.question}\nA. {a}\nB. {b}\nC. {c}\nD. {d}\n答案是："
    return text if answer is None else f"{text}{answer}\n\n"


def official_context(data: SubjectData, q: Question, shots: Sequence[Question]) -> str:
    examples = "".join(official_question(s, s.answer) for s in shots)
    return header(data.benchmark, data.subject) + examples + official_question(q)


def benchmark_source(args, *, default_hub: bool):
    """The benchmarks a command reads (`--benchmarks`, `--benchmark-hub`), said in its log."""

    source, why = find_source(args.benchmarks, parse_hub_ids(args.benchmark_hub),
                              default_hub=default_hub)
    print(f"{args.command}: benchmarks: {why}")
    return source
