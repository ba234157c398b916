# make demo : build .venv if needed, then run the whole pipeline on the demo
# make test : build .venv if needed, then run the test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
# The CPU build of torch. Elsewhere add its index, e.g.
#   make TORCH_INDEX=--extra-index-url=https://download.pytorch.org/whl/cpu demo
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
PYTEST_ARGS ?=
export PATH := $(BIN):$(PATH)

.PHONY: demo test test-fast lint report clean-results venv

venv: $(VENV)/.installed

# torch goes in first, alone, so no later resolution can pull a CUDA build;
# the constraints file pins every other package to the versions tested here.
$(VENV)/.installed: pyproject.toml requirements/constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_INDEX) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -c requirements/constraints.txt -e ".[dev]"
	touch $@

demo: venv
	$(BIN)/snakemake --profile profiles/default

test: venv
	$(BIN)/pytest $(PYTEST_ARGS)

test-fast: venv
	$(BIN)/pytest -m "not slow" $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/snakefmt --check Snakefile workflow
	$(BIN)/snakemake --lint

report: venv
	$(BIN)/snakemake --profile profiles/default --report results/report.html

clean-results:
	rm -rf results logs benchmarks .snakemake
