"""The evaluate stage: score a causal LM on C-Eval and CMMLU multiple choice.

Default scoring (`loglikelihood`) is lm-evaluation-harness's `ceval-valid` /
`cmmlu` exactly: the same prompt text (see `benchmarks.lm_eval_context`), the
same split of context and continuation into tokens (HFLM `_encode_pair`), the
summed log-likelihood of " A".." D", argmax. `last_token` is the official CMMLU
method: argmax of the last position's logits over the tokens `A`..`D`.

Why it is faster than lm-eval while giving the same numbers: within a subject
every prompt starts with the same header and shots, so that shared token
prefix is run once and its key/value cache reused for every question; only the
question tails go through the model, batched by length. The split into
prefix/tail is taken from the token ids lm-eval's tokenisation produces, so
nothing about tokenisation changes.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from danlu.config import ConfigError, from_mapping, stage_params, validate_config
from danlu.evaluation.benchmarks import (
    CHOICES,
    LAYOUTS,
    BenchmarkError,
    SubjectData,
    layout,
    lm_eval_context,
    load_benchmark,
    load_subjects,
    official_context,
)
from danlu.evaluation.report import QuestionResult, write_outputs
from danlu.evaluation.scoring import score_rows

LM_EVAL_DEFAULT_MAX_LENGTH = 2048  # HFLM's fallback when neither config nor tokenizer says


@dataclass(frozen=True)
class EvalConfig:
    """How one model is evaluated: the schema's `evaluate` section (its keys,
    meanings, defaults and bounds are there) less `models`, plus `hub`.
    Build it with `from_section` or `eval_config`, which check it against the schema.

    Arguments beyond the schema's:
        hub: benchmark -> dataset hub id, to read questions from the hub instead of
            local files (e.g. {"ceval": "ceval/ceval-exam"}); with no local copy
            (`benchmarks_root` None) a benchmark not named here uses its official id.
    """

    benchmarks: tuple[str, ...]
    num_fewshot: int
    scoring: str
    max_per_subject: int | None
    subjects: tuple[str, ...] | None
    batch_size: int
    share_prefix: bool
    max_length: int | None
    hub: dict[str, str]

    def __post_init__(self) -> None:
        # Lists arrive from YAML/JSON; tuples keep the frozen config from changing under us.
        object.__setattr__(self, "benchmarks", tuple(self.benchmarks))
        if self.subjects is not None:
            object.__setattr__(self, "subjects", tuple(self.subjects))
        # `hub` comes from the `benchmarks` section and code, not from `evaluate`.
        unknown = sorted(set(self.hub) - set(LAYOUTS))
        if unknown:
            raise ConfigError(f"evaluate: hub ids for unknown benchmarks {unknown} "
                              f"(known: {', '.join(LAYOUTS)})")

    @classmethod
    def from_section(
        cls, section: Mapping[str, Any], *, hub: Mapping[str, str] | None = None
    ) -> EvalConfig:
        """From (part of) the `evaluate` section: checked against the schema, which
        fills the missing keys with its defaults (a bad value is a ConfigError in
        one line). `models` says which models are evaluated, not how, so it is
        dropped. `section` itself is left as it was."""
        # JSON has only lists; code may pass tuples (as EvalConfig keeps them).
        plain = {k: list(v) if isinstance(v, tuple) else v for k, v in section.items()}
        full = validate_config({"evaluate": plain})["evaluate"]
        del full["models"]
        return from_mapping(cls, {**full, "hub": dict(hub or {})})


def eval_config(*, hub: Mapping[str, str] | None = None, **overrides: Any) -> EvalConfig:
    """The schema's defaults with `overrides`: for code and tests that set a few keys."""
    return EvalConfig.from_section(overrides, hub=hub)


def evaluate_model(
    model, tokenizer, config: EvalConfig, *, benchmarks_root: Path | None, out_dir: Path,
    model_digest: str,
) -> dict:
    """Score `model` on the configured benchmarks and write the report files to `out_dir`.
    `benchmarks_root` None reads the questions from the hub (`config.hub`).

    Returns per benchmark the micro/macro accuracy and the question counts.
    """
    data = load_selected(config, Path(benchmarks_root) if benchmarks_root else None)
    results = score_subjects(model, tokenizer, [s for subs in data.values() for s in subs], config)
    summary = write_outputs(results, config_facts(config), Path(out_dir), model_digest)
    return {
        name: {
            k: b[k]
            for k in ("micro_accuracy", "macro_accuracy", "questions", "skipped", "shots_dropped")
        }
        for name, b in summary["benchmarks"].items()
    }


def config_facts(config: EvalConfig) -> dict:
    """What the report records about how the numbers were produced."""
    return {
        "num_fewshot": config.num_fewshot,
        "scoring": config.scoring,
        "max_per_subject": config.max_per_subject,
        "splits": {b: [layout(b).eval_split, layout(b).shot_split] for b in config.benchmarks},
        "hub": dict(sorted(config.hub.items())),
    }


def load_selected(config: EvalConfig, root: Path | None) -> dict[str, list[SubjectData]]:
    """Load every selected benchmark. A subject is named plainly (then every benchmark
    that has it: `high_school_physics` is in both) or as `benchmark/subject`; a name
    found in none of the selected benchmarks is an error."""
    data, found = {}, set()
    for name in config.benchmarks:
        subjects = None
        if config.subjects is not None:
            known = load_subjects(name, root)
            picked = {w: w.rpartition("/") for w in config.subjects}
            picked = {w: s for w, (b, _, s) in picked.items() if b in ("", name) and s in known}
            subjects = sorted(set(picked.values()))
            found.update(picked)
        data[name] = load_benchmark(
            name,
            root,
            subjects=subjects,
            max_per_subject=config.max_per_subject,
            hub_id=config.hub.get(name),
        )
    missing = sorted(set(config.subjects or ()) - found)
    if missing:
        raise BenchmarkError(
            f"unknown subject(s) in {', '.join(config.benchmarks)}: {', '.join(missing)}"
        )
    return data


def model_max_length(model, tokenizer) -> int:
    """The context length lm-eval's HFLM assumes (`resolve_max_length`): the model
    config's n_positions / max_position_embeddings / n_ctx, else the tokenizer's
    model_max_length unless it is the "unset" sentinel, else 2048."""
    config = getattr(model, "config", None)
    config = getattr(config, "text_config", None) or config
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(config, attr, None)
        if value is not None:
            return int(value)
    value = getattr(tokenizer, "model_max_length", None)
    if value is not None and value < int(1e29):  # transformers' VERY_LARGE_INTEGER = unset
        return int(value)
    return LM_EVAL_DEFAULT_MAX_LENGTH


# ---- turning questions into token work -------------------------------------------------


@dataclass
class PromptTokens:
    """One question's model work: the distinct input rows, and for each of A-D the row
    it is read from and the tokens scored at that row's last positions."""

    data: SubjectData
    index: int  # position of the question in data.questions
    shots: int
    truncated: bool
    rows: list[list[int]]
    targets: list[tuple[int, list[int]]]


class _LmEvalEncoder:
    """HFLM.tok_encode with `add_bos_token` unset: the tokenizer's own default for
    special tokens (so a BOS only where the tokenizer adds one), except none when the
    text already starts with the prefix token's text."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        prefix_id = tokenizer.bos_token_id
        prefix_id = tokenizer.eos_token_id if prefix_id is None else prefix_id
        self.prefix_text = None if prefix_id is None else tokenizer.decode(prefix_id)

    def __call__(self, texts: list[str]) -> list[list[int]]:
        out: list[list[int] | None] = [None] * len(texts)
        for special in (True, False):
            idx = [i for i, t in enumerate(texts) if self._adds_special(t) == special]
            if idx:
                ids = self.tokenizer([texts[i] for i in idx], add_special_tokens=special)
                for i, enc in zip(idx, ids["input_ids"], strict=True):
                    out[i] = list(enc)
        return out  # type: ignore[return-value]

    def _adds_special(self, text: str) -> bool:
        return not (self.prefix_text is not None and text.startswith(self.prefix_text))


def _loglikelihood_item(data, index, shots, encode, max_length) -> PromptTokens | None:
    """lm-eval's `_encode_pair` for the four continuations; None when too long."""
    context = lm_eval_context(data, data.questions[index], shots)
    stripped = context.rstrip()  # trailing whitespace moves into the continuation
    continuations = [context[len(stripped) :] + " " + c for c in CHOICES]
    encoded = encode([stripped] + [stripped + c for c in continuations])
    context_ids = encoded[0]
    conts = [whole[len(context_ids) :] for whole in encoded[1:]]
    if not all(conts):
        raise BenchmarkError(f"tokenizer gives an empty continuation for {continuations}")
    fits = len(context_ids) + max(map(len, conts)) <= max_length + 1  # lm-eval's limit
    if not fits and shots:
        return None
    rows: dict[tuple[int, ...], int] = {}
    targets = []
    for cont in conts:
        # lm-eval feeds (context + continuation)[:-1], left-truncated to max_length.
        row = tuple((context_ids + cont)[:-1][-max_length:])
        targets.append((rows.setdefault(row, len(rows)), cont))
    return PromptTokens(data, index, len(shots), not fits, [list(r) for r in rows], targets)


def _last_token_item(data, index, shots, tokenizer, choice_ids, max_length) -> PromptTokens | None:
    """The official CMMLU run: `tokenizer(prompt)` with its default special tokens."""
    ids = tokenizer(official_context(data, data.questions[index], shots))["input_ids"]
    fits = len(ids) <= max_length
    if not fits and shots:
        return None
    return PromptTokens(
        data, index, len(shots), not fits, [list(ids)[-max_length:]], [(0, [c]) for c in choice_ids]
    )


def letter_token_ids(tokenizer) -> list[int]:
    """The official CMMLU `convert_tokens_to_ids("A")`...; a tokenizer without such a
    token gets the last id of encoding the bare letter instead."""
    ids = []
    for letter in CHOICES:
        tid = tokenizer.convert_tokens_to_ids(letter)
        if tid is None or tid == tokenizer.unk_token_id:
            tid = tokenizer(letter, add_special_tokens=False)["input_ids"][-1]
        ids.append(int(tid))
    return ids


def build_items(
    tokenizer, data: SubjectData, config: EvalConfig, max_length: int
) -> list[PromptTokens]:
    """Token work for every scorable question; shots are dropped from the front (the
    shot farthest from the question goes first) until the prompt fits."""
    usable = [s for s in data.shots if s.is_scorable]
    if len(usable) < config.num_fewshot:
        raise BenchmarkError(
            f"{data.benchmark}: subject {data.subject.name}: only {len(usable)} "
            f"shots with an A-D answer, {config.num_fewshot} asked"
        )
    encode = _LmEvalEncoder(tokenizer)
    choice_ids = letter_token_ids(tokenizer) if config.scoring == "last_token" else []
    items = []
    for index, question in enumerate(data.questions):
        if not question.is_scorable:
            continue
        for drop in range(config.num_fewshot + 1):
            shots = usable[drop : config.num_fewshot]
            if config.scoring == "loglikelihood":
                item = _loglikelihood_item(data, index, shots, encode, max_length)
            else:
                item = _last_token_item(data, index, shots, tokenizer, choice_ids, max_length)
            if item is not None:
                items.append(item)
                break
    return items


# ---- running the model -------------------------------------------------------------------


def score_subjects(model, tokenizer, subjects: Sequence[SubjectData], config: EvalConfig):
    """One QuestionResult per question (skipped ones included), in input order."""
    max_length = config.max_length or model_max_length(model, tokenizer)
    use_log_softmax = config.scoring == "loglikelihood"
    was_training = model.training
    model.eval()  # dropout off; restored below so a caller's training run is untouched
    results = []
    try:
        with torch.inference_mode():
            for data in subjects:
                items = build_items(tokenizer, data, config, max_length)
                scores = _score_items(model, tokenizer, items, config, use_log_softmax)
                results.extend(_results(data, items, scores, config.num_fewshot))
    finally:
        model.train(was_training)
    return results


def _score_items(model, tokenizer, items, config, use_log_softmax) -> torch.Tensor:
    """(len(items), 4) scores. Items that share a shot count share a prompt prefix."""
    scores = torch.zeros(len(items) * 4, dtype=torch.float64)
    groups = defaultdict(list)
    for i, item in enumerate(items):
        groups[item.shots].append(i)
    for members in groups.values():
        rows, row_targets = [], []
        for i in members:
            base = len(rows)
            rows.extend(items[i].rows)
            row_targets.extend([] for _ in items[i].rows)
            for choice, (row, tokens) in enumerate(items[i].targets):
                row_targets[base + row].append((i * 4 + choice, tokens))
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        scores += score_rows(
            model,
            rows,
            row_targets,
            len(scores),
            batch_size=config.batch_size,
            share_prefix=config.share_prefix,
            log_softmax=use_log_softmax,
            pad_id=pad_id,
        )
    return scores.view(len(items), 4)


def _results(data: SubjectData, items, scores, num_fewshot) -> list[QuestionResult]:
    by_index = {item.index: (item, scores[i].tolist()) for i, item in enumerate(items)}
    out = []
    for index, q in enumerate(data.questions):
        item, four = by_index.get(index, (None, None))
        out.append(
            QuestionResult(
                benchmark=data.benchmark,
                subject=data.subject.name,
                category=data.subject.category,
                overlays=data.subject.overlays,
                id=q.id,
                answer=q.answer,
                scores=None if item is None else tuple(four),
                # first maximum on ties, like numpy.argmax in lm-eval
                prediction=None
                if item is None
                else CHOICES[max(range(4), key=lambda c: (four[c], -c))],
                shots=num_fewshot if item is None else item.shots,
                truncated=False if item is None else item.truncated,
            )
        )
    return out


def main(args) -> None:
    from danlu.audit.manifest import combined_digest, describe_files
    from danlu.evaluation.benchmarks import benchmark_source
    from danlu.model.loading import load_model, load_tokenizer, local_model_dir, resolve_model_path
    from danlu.outputs import write_json
    from danlu.stage import run_stage

    params = stage_params(args, "evaluate")
    # Without a local copy the questions come from the hub (official ids by default).
    source = benchmark_source(args, default_hub=True)
    cfg = EvalConfig.from_section(
        params, hub={} if source.root else {b: source.hub_id(b) for b in params["benchmarks"]})
    load = json.loads(args.load) if args.load else {}
    model_path = resolve_model_path(args.model, args.revision)
    # The adapter directory also holds checkpoints and reports: only the adapter counts.
    adapter_files = [str(p) for p in sorted(Path(args.adapter).glob("adapter_*"))] if args.adapter else []
    local = [str(p) for p in (local_model_dir(args.model),) if p] + adapter_files
    described = describe_files(local)  # hashed once: a model may be many GB
    digest = combined_digest(described) if local else f"{args.model}@{args.revision}"
    out = Path(args.out)

    def work(run):
        tokenizer = load_tokenizer(Path(args.adapter or model_path), args.template,
                                   args.trust_remote_code)
        model = load_model(model_path, trust_remote_code=args.trust_remote_code, **load)
        if args.adapter:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, args.adapter)
        stats = evaluate_model(model, tokenizer, cfg, benchmarks_root=source.root,
                               out_dir=out, model_digest=digest)
        if args.val:
            from danlu.evaluation.perplexity import perplexity
            from danlu.model.train import prepare_split

            cutoff = json.loads(Path(args.cutoff).read_text(encoding="utf-8"))
            val = prepare_split(Path(args.val), int(cutoff["cutoff_len"]), cutoff["overlength"])
            stats["val"] = perplexity(model, [val[i] for i in range(len(val))], cfg.batch_size)
            write_json(out / "perplexity.json", stats["val"])
        stats["model_bytes"] = sum(e["size"] for e in described)
        write_json(out / "model.json", {
            "name": args.name, "bytes": stats["model_bytes"], "digest": digest, "load": load,
            "val_perplexity": stats.get("val", {}).get("val_perplexity")})
        return stats

    names = ["predictions.jsonl", "subjects.csv", "categories.csv", "summary.json", "model.json"]
    names += ["perplexity.json"] if args.val else []
    inputs = [*local, *([args.val, args.cutoff] if args.val else []), *args.code]
    record = {"evaluate": params, "load": load, "model": args.name,
              "benchmarks": source.describe(cfg.benchmarks)}
    stats = run_stage(f"evaluate_{args.name}", record,
                      work, inputs=inputs, outputs=[out / n for n in names],
                      manifest_path=out / "manifest.json")
    for bench in cfg.benchmarks:
        b = stats[bench]
        print(f"evaluate {args.name}: {bench} micro {b['micro_accuracy']:.4f} "
              f"macro {b['macro_accuracy']:.4f} over {b['questions']} questions")
