"""A clean rerun reproduces every data artifact byte for byte and the CPU
training losses exactly; what cannot be byte-identical is named, with the
reason, in its manifest's `nondeterministic`."""

import pytest

pytestmark = pytest.mark.slow


def test_clean_rerun_reproduces_every_data_artifact_and_the_losses(workflow_project):
    """The session's workflow project, as first built, against the same project
    built from scratch in another directory (conftest builds both at once),
    signed by the same key (one signer, as on a user's machine), with MLflow
    tracking off: no file may depend on it."""
    first, second = workflow_project.first, workflow_project.rerun
    assert first.losses == second.losses and first.losses
    assert set(first.outputs) == set(second.outputs)
    differing = sorted(p for p in first.outputs if first.outputs[p] != second.outputs[p])
    assert [p for p in differing if p not in first.excused] == []
    for path in differing:  # every excuse gives its reason
        assert first.excused[path].strip()
