"""The SLSA provenance statement: shape, stable bytes, and the subject check."""

import pytest

from danlu.audit.provenance import (
    PREDICATE_TYPE,
    build_statement,
    check_statement,
    dumps_statement,
    load_statement,
)

ADAPTER = "results/train/adapter_model.safetensors"
MERGED = "results/merge/model/model.safetensors"
DIGESTS = {ADAPTER: "a" * 64, MERGED: "b" * 64}


def _statement_args():
    return dict(
        materials=[
            {"uri": "file:data/demo/finance.jsonl", "sha256": "c" * 64},
            {"name": "Qwen/Qwen2.5-7B", "uri": "https://huggingface.co/Qwen/Qwen2.5-7B",
             "digest": {"gitCommit": "d" * 40}},
        ],
        build_type="https://example.org/danlu/build/v1",
        parameters={"train": {"epochs": 3, "learning_rate": 2e-4}, "seed": 42, "名称": "丹炉"},
        builder_id="https://example.org/danlu/builder",
        invocation_id="run-0001",
        started="2025-01-02T03:04:05+00:00",
        finished="2025-01-02T04:04:05+00:00",
        code={"commit": "e" * 40, "dirty": False},
        internal={"danluVersion": "0.1.0"},
    )


def _statement(**overrides):
    return build_statement(list(DIGESTS.items()), **{**_statement_args(), **overrides})


def test_statement_shape():
    s = _statement()
    assert s["_type"] == "https://in-toto.io/Statement/v1"
    assert s["predicateType"] == PREDICATE_TYPE == "https://slsa.dev/provenance/v1"
    assert {x["name"]: x["digest"] for x in s["subject"]} == {
        name: {"sha256": d} for name, d in DIGESTS.items()}
    definition = s["predicate"]["buildDefinition"]
    # Integers stay integers (protobuf Struct alone would make 3 into 3.0).
    assert definition["externalParameters"]["train"]["epochs"] == 3
    assert isinstance(definition["externalParameters"]["train"]["epochs"], int)
    deps = definition["resolvedDependencies"]
    assert deps[0]["digest"] == {"sha256": "c" * 64}
    assert deps[-1]["digest"] == {"gitCommit": "e" * 40}
    metadata = s["predicate"]["runDetails"]["metadata"]
    assert metadata == {"invocationId": "run-0001", "startedOn": "2025-01-02T03:04:05Z",
                        "finishedOn": "2025-01-02T04:04:05Z"}


def test_round_trip_is_byte_identical(tmp_path):
    text = dumps_statement(_statement())
    path = tmp_path / "provenance.json"
    path.write_bytes(text.encode("utf-8"))
    assert dumps_statement(load_statement(path)).encode("utf-8") == path.read_bytes()


def test_same_inputs_same_bytes():
    assert dumps_statement(_statement()) == dumps_statement(_statement())


def test_check_reports_changed_missing_and_unlisted():
    s = _statement()
    assert check_statement(s, DIGESTS) == []
    problems = check_statement(s, {ADAPTER: "f" * 64, "results/extra.bin": "0" * 64})
    assert len(problems) == 3
    assert any(p.startswith(ADAPTER) and "differs" in p for p in problems)
    assert any(p.startswith(MERGED) and "missing" in p for p in problems)
    assert any(p.startswith("results/extra.bin") and "not listed" in p for p in problems)


def test_bad_subject_digest_refused():
    with pytest.raises(ValueError, match="64 lowercase hex"):
        build_statement([(ADAPTER, "ABC")], **_statement_args())


@pytest.mark.parametrize("bad", [{"started": "yesterday"}, {"parameters": {"lr": float("nan")}}])
def test_bad_input_is_one_line_error(bad):
    with pytest.raises(ValueError) as err:
        _statement(**bad)
    assert "\n" not in str(err.value)


def test_load_rejects_tampered_structure(tmp_path):
    s = _statement()
    s["predicate"]["buildDefinition"]["buildTipe"] = "typo"
    path = tmp_path / "bad.json"
    path.write_text(dumps_statement(s), encoding="utf-8")
    with pytest.raises(ValueError, match="bad.json: not a valid"):
        load_statement(path)
