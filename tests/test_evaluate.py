"""Scoring: danlu against lm-evaluation-harness itself, shot dropping, skipped answers,
the two averages, the official CMMLU method, and byte-identical outputs."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from workflow_utils import BENCHMARKS, needs_benchmarks  # noqa: E402

from danlu.config import ConfigError, load_config
from danlu.evaluation.benchmarks import (
    BenchmarkError,
    Question,
    Subject,
    SubjectData,
    lm_eval_context,
    official_context,
)
from danlu.evaluation.evaluate import (
    EvalConfig,
    build_items,
    config_facts,
    eval_config,
    evaluate_model,
    letter_token_ids,
    load_selected,
    score_subjects,
)
from danlu.evaluation.lm_eval_reference import lm_eval_task
from danlu.evaluation.report import (
    QuestionResult,
    category_table,
    subject_table,
    write_comparison,
    write_outputs,
)

# `high_school_physics` exists in both benchmarks: qualified names pick one.
SUBJECTS = ("ceval/accountant", "ceval/high_school_physics", "cmmlu/agronomy", "cmmlu/college_law")
PER_SUBJECT = 6


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    return model, AutoTokenizer.from_pretrained(tiny_model_dir)


def _config(**overrides) -> EvalConfig:
    return eval_config(
        **{"subjects": SUBJECTS, "max_per_subject": PER_SUBJECT, "batch_size": 4, **overrides}
    )


# ---- lm-evaluation-harness as the reference ------------------------------------------


@pytest.fixture(scope="module")
def lm_eval_samples(tiny, tmp_path_factory):
    """lm-eval's logged samples, {(num_fewshot, benchmark, subject): [sample by doc_id]}:
    the real pipeline (jinja templates, first_n sampler, HFLM._encode_pair and
    _loglikelihood_tokens) on the same model instance, batch size 1."""
    pytest.importorskip("lm_eval")
    if not BENCHMARKS.is_dir():
        pytest.skip(f"local C-Eval/CMMLU copies not found at {BENCHMARKS}")
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    model, tokenizer = tiny
    cache_dir = tmp_path_factory.mktemp("datasets_cache")
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=1)
    # The task dicts are complete (their `include` is resolved), so the manager need
    # not index lm-eval's thousands of bundled YAMLs.
    task_manager = TaskManager(include_defaults=False)
    samples = {}
    for shots in (0, 5):
        tasks, names = [], {}
        for qualified in SUBJECTS:
            benchmark, _, subject = qualified.partition("/")
            task = lm_eval_task(benchmark, subject, BENCHMARKS, cache_dir)
            tasks.append(task)
            names[task["task"]] = (shots, benchmark, subject)
        out = lm_eval.simple_evaluate(
            model=lm,
            tasks=tasks,
            num_fewshot=shots,
            limit=PER_SUBJECT,
            log_samples=True,
            bootstrap_iters=0,
            task_manager=task_manager,
        )
        for task_name, logged in out["samples"].items():
            samples[names[task_name]] = sorted(logged, key=lambda s: s["doc_id"])
    return samples


@needs_benchmarks
@pytest.mark.parametrize("shots", [0, 5])
def test_prompts_equal_lm_eval_contexts(lm_eval_samples, shots):
    data = load_selected(_config(num_fewshot=shots), BENCHMARKS)
    for subjects in data.values():
        for d in subjects:
            logged = lm_eval_samples[(shots, d.benchmark, d.subject.name)]
            assert len(logged) == len(d.questions) == PER_SUBJECT
            for q, sample in zip(d.questions, logged, strict=True):
                expected = lm_eval_context(d, q, d.shots[:shots])
                assert [tuple(a) for a in sample["arguments"]] == [
                    (expected, f" {c}") for c in "ABCD"
                ]


@needs_benchmarks
@pytest.mark.parametrize("shots", [0, 5])
def test_scores_equal_lm_eval(tiny, lm_eval_samples, shots):
    model, tokenizer = tiny
    config = _config(num_fewshot=shots)
    data = load_selected(config, BENCHMARKS)
    results = score_subjects(model, tokenizer, [s for v in data.values() for s in v], config)
    assert len(results) == len(SUBJECTS) * PER_SUBJECT
    worst = 0.0
    for r in results:
        sample = lm_eval_samples[(shots, r.benchmark, r.subject)][int(r.id)]
        theirs = [resp[0][0] for resp in sample["resps"]]
        worst = max(worst, max(abs(a - b) for a, b in zip(r.scores, theirs, strict=True)))
        assert r.prediction == "ABCD"[max(range(4), key=lambda i: (theirs[i], -i))]
        assert r.shots == shots and not r.truncated
    assert worst < 1e-4


@needs_benchmarks
def test_shared_prefix_changes_nothing(tiny):
    model, tokenizer = tiny
    data = [s for v in load_selected(_config(), BENCHMARKS).values() for s in v]
    shared = score_subjects(model, tokenizer, data, _config(share_prefix=True, batch_size=3))
    full = score_subjects(model, tokenizer, data, _config(share_prefix=False, batch_size=1))
    assert [r.prediction for r in shared] == [r.prediction for r in full]
    diffs = [
        abs(a - b)
        for s, f in zip(shared, full, strict=True)
        for a, b in zip(s.scores, f.scores, strict=True)
    ]
    assert max(diffs) < 1e-4


# ---- behaviour on hand-made or constrained inputs ----------------------------------------


@needs_benchmarks
def test_shots_are_dropped_from_the_front_when_the_context_is_short(tiny, tiny_model_dir, tmp_path):
    from transformers import AutoConfig, AutoModelForCausalLM

    _, tokenizer = tiny
    config = _config(subjects=["ceval/accountant"])
    (data,) = load_selected(config, BENCHMARKS)["ceval"]
    three_shot = len(
        tokenizer(lm_eval_context(data, data.questions[0], data.shots[2:5]))["input_ids"]
    )
    short = AutoConfig.from_pretrained(tiny_model_dir)
    short.max_position_embeddings = three_shot + 40  # room for about three shots
    model = AutoModelForCausalLM.from_config(short)

    items = build_items(tokenizer, data, config, short.max_position_embeddings)
    assert all(i.shots < 5 and not i.truncated for i in items)
    assert any(i.shots >= 2 for i in items)
    for item in items:
        assert all(len(row) <= short.max_position_embeddings for row in item.rows)
        # the context kept the last shots, nearest the question
        context = lm_eval_context(data, data.questions[item.index], data.shots[5 - item.shots : 5])
        context_ids = tokenizer(context)["input_ids"]
        assert item.rows[0][: len(context_ids)] == context_ids

    tiny_context = _config(subjects=["ceval/accountant"], max_length=24)
    truncated = score_subjects(model, tokenizer, [data], tiny_context)
    assert all(r.truncated and r.shots == 0 and r.prediction for r in truncated)

    results = score_subjects(model, tokenizer, [data], config)
    assert [r.shots for r in results] == [i.shots for i in items]
    summary = write_outputs(results, config_facts(config), tmp_path, "short")
    assert summary["benchmarks"]["ceval"]["shots_dropped"] == PER_SUBJECT
    assert summary["benchmarks"]["ceval"]["truncated"] == 0


def _made_up_subject(answers: list[str]) -> SubjectData:
    shots = tuple(
        Question(str(i), f"示例{i}", ("一", "二", "三", "四"), "ABCD"[i % 4]) for i in range(5)
    )
    questions = tuple(
        Question(str(i), f"问题{i}？", ("甲", "乙", "丙", "丁"), a) for i, a in enumerate(answers)
    )
    return SubjectData(
        "cmmlu", Subject("arts", "艺术学", "Humanities", ("China specific",)), shots, questions
    )


def test_answers_outside_a_to_d_are_skipped_and_reported(tiny, tmp_path):
    model, tokenizer = tiny
    data = _made_up_subject(["A", "E", "", "d", "C"])
    config = eval_config(benchmarks=["cmmlu"])
    results = score_subjects(model, tokenizer, [data], config)
    assert [r.skipped for r in results] == [False, True, True, True, False]
    summary = write_outputs(results, config_facts(config), tmp_path, "digest")
    assert summary["benchmarks"]["cmmlu"]["skipped"] == 3
    assert summary["benchmarks"]["cmmlu"]["questions"] == 2


def _result(subject: str, category: str, correct: bool, overlays=()) -> QuestionResult:
    return QuestionResult(
        "cmmlu",
        subject,
        category,
        tuple(overlays),
        "0",
        "A",
        (0.0, -1.0, -2.0, -3.0),
        "A" if correct else "B",
        5,
        False,
    )


def test_micro_and_macro_averages():
    results = [_result("law", "Humanities", c) for c in (True, True, True, False)]
    results += [_result("arts", "Humanities", False, ["China specific"])]
    results += [_result("physics", "STEM", True)]
    table = category_table(subject_table(results, 5)).set_index("category")
    assert table.loc["overall", "micro_accuracy"] == pytest.approx(4 / 6)
    assert table.loc["overall", "macro_accuracy"] == pytest.approx((0.75 + 0 + 1) / 3)
    assert table.loc["Humanities", "micro_accuracy"] == pytest.approx(3 / 5)
    assert table.loc["Humanities", "macro_accuracy"] == pytest.approx(0.375)
    assert table.loc["China specific", "questions"] == 1


class _NoLogitsToKeep(torch.nn.Module):
    """A causal LM whose forward knows nothing of `logits_to_keep` (older or custom code)."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.config = inner, inner.config

    def forward(self, input_ids, past_key_values=None, use_cache=None):
        return self.inner(input_ids=input_ids, past_key_values=past_key_values, use_cache=use_cache)

    def get_input_embeddings(self):
        return self.inner.get_input_embeddings()


def test_peft_wrapped_and_plain_forward_models_score_alike(tiny):
    """A peft LoRA wrapper (B initialised to zero, so the same function) and a model
    without `logits_to_keep` go through the other code paths and give the same scores;
    10 questions in batches of 3 also exercise the shrinking last batch."""
    from peft import LoraConfig, get_peft_model

    model, tokenizer = tiny
    data = _made_up_subject(["ABCD"[i % 4] for i in range(10)])
    config = eval_config(benchmarks=["cmmlu"], batch_size=3)
    plain = score_subjects(model, tokenizer, [data], config)
    lora = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    try:
        wrapped = score_subjects(lora, tokenizer, [data], config)
    finally:
        lora.unload()  # give the shared fixture model back unwrapped
    bare = score_subjects(_NoLogitsToKeep(model), tokenizer, [data], config)
    for other in (wrapped, bare):
        assert [r.prediction for r in other] == [r.prediction for r in plain]
        for a, b in zip(plain, other, strict=True):
            assert a.scores == pytest.approx(b.scores, abs=1e-5)


def test_last_token_is_the_official_cmmlu_method(tiny):
    model, tokenizer = tiny
    data = _made_up_subject(["A", "B", "C"])
    config = eval_config(benchmarks=["cmmlu"], scoring="last_token")
    results = score_subjects(model, tokenizer, [data], config)
    letters = letter_token_ids(tokenizer)
    for q, r in zip(data.questions, results, strict=True):
        prompt = official_context(data, q, data.shots)
        assert prompt.startswith(
            "以下是关于艺术学的单项选择题，请直接给出正确答案的选项。\n\n题目：示例0\n"
        )
        assert prompt.endswith(f"题目：{q.question}\nA. 甲\nB. 乙\nC. 丙\nD. 丁\n答案是：")
        with torch.no_grad():
            logits = model(**tokenizer(prompt, return_tensors="pt")).logits[0, -1, letters]
        assert r.scores == pytest.approx(logits.tolist(), abs=1e-4)
        assert r.prediction == "ABCD"[int(logits.argmax())]


def test_config_rejects_bad_values_in_one_line():
    for bad in (
        {"num_fewshot": 3},
        {"scoring": "ppl"},
        {"benchmarks": ["mmlu"]},
        {"benchmarks": []},
        {"batch_size": 0},
        {"max_length": 8},
        {"hub": {"mmlu": "cais/mmlu"}},
    ):
        with pytest.raises(ConfigError) as excinfo:
            eval_config(**bad)
        assert str(excinfo.value).count("evaluate") == 1 and "\n" not in str(excinfo.value)


def test_config_is_the_schema_section_without_models():
    section = load_config(None)["evaluate"]
    config = EvalConfig.from_section(section)
    assert "models" in section  # untouched: the manifest records the section as given
    kept = {k: v for k, v in section.items() if k != "models"}
    assert vars(config) == {**kept, "benchmarks": tuple(kept["benchmarks"]), "hub": {}}
    assert eval_config() == config
    assert eval_config(scoring="last_token") == replace(config, scoring="last_token")


@needs_benchmarks
def test_subject_names_plain_qualified_and_unknown():
    both = load_selected(eval_config(subjects=["high_school_physics"]), BENCHMARKS)
    assert [[d.subject.name for d in v] for v in both.values()] == [["high_school_physics"]] * 2
    one = load_selected(eval_config(subjects=["cmmlu/high_school_physics"]), BENCHMARKS)
    assert (len(one["ceval"]), len(one["cmmlu"])) == (0, 1)
    with pytest.raises(BenchmarkError) as excinfo:
        load_selected(eval_config(subjects=["accountant", "ceval/agronomy"]), BENCHMARKS)
    assert str(excinfo.value).endswith("ceval/agronomy") and "\n" not in str(excinfo.value)


@needs_benchmarks
def test_outputs_are_byte_identical_on_rerun(tiny, tmp_path):
    model, tokenizer = tiny
    config = _config(max_per_subject=3)
    for run in ("a", "b"):
        stats = evaluate_model(
            model,
            tokenizer,
            config,
            benchmarks_root=BENCHMARKS,
            out_dir=tmp_path / run,
            model_digest="sha256:tiny",
        )
    assert set(stats) == {"ceval", "cmmlu"}
    names = ["predictions.jsonl", "subjects.csv", "categories.csv", "summary.json"]
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    import json

    summary = json.loads((tmp_path / "a" / "summary.json").read_text(encoding="utf-8"))
    assert summary["model_digest"] == "sha256:tiny"
    assert {
        "micro_accuracy",
        "macro_accuracy",
        "split",
        "shots",
        "scoring",
        "skipped",
        "shots_dropped",
        "questions",
    } <= set(summary["benchmarks"]["ceval"])
    other = {**summary, "model_digest": "other"}
    for run in ("c", "d"):
        paths = write_comparison({"tiny": summary, "other": other}, tmp_path / run)
    for kind in ("csv", "png"):
        assert paths[kind].read_bytes() == (tmp_path / "c" / paths[kind].name).read_bytes()
    compare = paths["csv"].read_text(encoding="utf-8")
    assert "cmmlu,overall,tiny," in compare and "cmmlu,overall,other," in compare
