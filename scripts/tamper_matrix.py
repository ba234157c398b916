"""Print the tamper matrix (kinds of artifact x attacks, detected/total) as
Markdown, for pasting into a note. It builds the tiny audited run that
tests/test_tamper.py uses (three snakemake invocations, about 7 minutes on two
cores), or reuses one built before with --keep:

    python scripts/tamper_matrix.py --keep /tmp/audited     # build, keep, print
    python scripts/tamper_matrix.py --keep /tmp/audited     # again: reuse, print

Every attack is undone afterwards; the run still verifies when it ends.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1] / "tests"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="build the run here, or reuse it")
    args = parser.parse_args()
    sys.path.insert(0, str(TESTS))
    from tamper import Stash, audited_targets, run_matrix
    from workflow_utils import audited_run_at

    from danlu.audit.verify import verify

    base = args.keep or Path(tempfile.mkdtemp(prefix="danlu-tamper-"))
    if not (base / "project").is_dir():
        print(f"building the audited run in {base} ...", file=sys.stderr, flush=True)
    run = audited_run_at(base)
    scratch = Path(tempfile.mkdtemp(prefix="danlu-tamper-scratch-"))
    started = time.time()
    matrix = run_matrix(run.root, audited_targets(run, scratch / "other-keys"),
                        Stash(scratch / "stash"),
                        progress=lambda o: print(f"{'ok    ' if o.detected else 'MISSED'} "
                                                 f"{o.kind} / {o.attack}: {o.problem}",
                                                 file=sys.stderr, flush=True))
    print(matrix.table())
    print(f"\n{len(matrix.outcomes)} verify runs in {time.time() - started:.0f} s", file=sys.stderr)
    if verify(run.root / "results").problems:
        print("the run no longer verifies after the matrix", file=sys.stderr)
        return 2
    return 1 if matrix.missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
