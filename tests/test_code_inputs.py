"""A rule's code inputs are the import closure of the command it runs."""

from pathlib import Path

import pytest

from danlu.code_inputs import closure, command_code, command_entry, module_file

REPO = Path(__file__).resolve().parents[1]


def _names(command: str) -> set[str]:
    return {Path(p).relative_to(REPO / "src" / "danlu").as_posix()
            for p in (REPO / q for q in command_code(command, REPO))}


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch):
    monkeypatch.chdir(REPO)


def test_evaluate_runs_what_builds_its_perplexity_examples():
    # evaluate's perplexity uses train.prepare_split, which truncates with tokenize.
    assert {"model/train.py", "data/tokenize.py", "data/answer_spans.py",
            "evaluation/perplexity.py", "evaluation/evaluate.py", "stage.py",
            "audit/manifest.py"} <= _names("evaluate")


def test_a_command_runs_only_its_own_stage():
    clean, signatures = _names("clean"), _names("dedup-signatures")
    assert "data/pii.py" in clean and "data/minhash.py" not in clean
    assert "model/train.py" not in clean
    assert "data/minhash.py" in signatures and "data/pii.py" not in signatures
    # decontamination and the split are other stages: editing them re-signs nothing
    assert not {"data/decontamination.py", "data/split.py", "data/dedup.py"} & signatures
    assert "model/merge.py" not in _names("quantize")
    assert "model/quantize.py" not in _names("merge")


def test_package_data_a_module_names_is_an_input():
    assert "evaluation/benchmark_subjects.json" in _names("dedup")


def test_paths_are_relative_to_the_working_directory():
    assert all(p.startswith("src/danlu/") for p in command_code("train", REPO))


def test_imports_inside_functions_are_followed(tmp_path):
    pkg = tmp_path / "danlu"
    (pkg / "commands").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "commands" / "__init__.py").write_text("")
    (pkg / "commands" / "x.py").write_text(
        "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from danlu import e\n\n"
        "def cmd_a(args):\n    from danlu.a import run\n    helper()\n\n"
        "def helper():\n    import danlu.b\n\n"
        "def cmd_other(args):\n    from danlu.c import run\n")
    (pkg / "a.py").write_text("def run():\n    from danlu import d\n\ndef unused():\n"
                              "    from danlu import e\n")
    for name in "bcde":
        (pkg / f"{name}.py").write_text("")
    files = {p.relative_to(pkg).as_posix() for p in closure("danlu.commands.x", "cmd_a", pkg)}
    assert files == {"__init__.py", "commands/__init__.py", "commands/x.py", "a.py", "b.py",
                     "d.py"}


def test_every_cli_command_has_an_entry_in_the_package():
    for command in ("clean", "combine", "dedup", "tokenize", "train", "evaluate", "audit"):
        module, function = command_entry(command)
        # litgpt's pattern: the CLI calls the stage module's own entry function
        assert module.startswith("danlu.") and module_file(module) is not None
        assert function == "main"
    with pytest.raises(KeyError):
        command_entry("no-such-command")
