"""A clean rerun reproduces every data artifact byte for byte and the CPU
training losses exactly; what cannot be byte-identical is named, with the
reason, in its manifest's `nondeterministic`."""

import pytest
from workflow_utils import make_workflow_project, run_record, snakemake

pytestmark = pytest.mark.slow


def test_clean_rerun_reproduces_every_data_artifact_and_the_losses(workflow_project, tmp_path):
    """The session's workflow project, as first built, against the same
    project built again from scratch elsewhere, signed by the same key (one
    signer, as on a user's machine)."""
    first = workflow_project.first
    root = make_workflow_project(tmp_path / "again")
    snakemake(root, key_dir=workflow_project.root / ".keys")
    second = run_record(root)
    assert first.losses == second.losses and first.losses
    assert set(first.outputs) == set(second.outputs)
    differing = sorted(p for p in first.outputs if first.outputs[p] != second.outputs[p])
    assert [p for p in differing if p not in first.excused] == []
    for path in differing:  # every excuse gives its reason
        assert first.excused[path].strip()
