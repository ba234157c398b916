#!/usr/bin/env bash
# Runs once inside the new conda env, from the workflow's working directory
# (the project root), after Snakemake created the env.
set -euo pipefail
python -m pip install -c requirements/constraints.txt -e .
