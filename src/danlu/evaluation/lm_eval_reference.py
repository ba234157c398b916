"""lm-evaluation-harness's own C-Eval/CMMLU tasks, pointed at local copies:
the reference danlu's scores are compared with (tests, scripts/bench_eval.py).
Needs the `lm-eval` package (a dev extra)."""

from __future__ import annotations

from pathlib import Path


def lm_eval_task(benchmark: str, subject: str, root: Path, cache_dir: Path) -> dict:
    """lm-eval's installed task config for one subject, reading the local CSVs."""
    import datasets
    import lm_eval
    from lm_eval.tasks._yaml_loader import load_yaml

    tasks = Path(lm_eval.__file__).parent / "tasks"
    if benchmark == "ceval":
        cfg = load_yaml(tasks / "ceval" / f"ceval-valid_{subject}.yaml", resolve_func=True)
        files = {
            s: root / "ceval" / "ceval-exam" / s / f"{subject}_{s}.csv" for s in ("val", "dev")
        }
    else:
        cfg = load_yaml(tasks / "cmmlu" / f"cmmlu_{subject}.yaml", resolve_func=True)
        files = {s: root / "cmmlu" / "data" / s / f"{subject}.csv" for s in ("test", "dev")}

    def local_dataset(**_metadata):
        return {
            split: datasets.load_dataset("csv", data_files=str(p), cache_dir=str(cache_dir))[
                "train"
            ]
            for split, p in files.items()
        }

    return {**cfg, "custom_dataset": local_dataset}
