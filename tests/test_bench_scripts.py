"""The data benchmarks under scripts/ run and end with their JSON line (at toy
sizes: the figures themselves are measured by hand, never asserted here)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def _last_json(*args: str, timeout: int = 600) -> dict:
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          timeout=timeout, cwd=SCRIPTS.parent)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_bench_pii_reports_recall_and_false_positives_per_type():
    result = _last_json(str(SCRIPTS / "bench_pii.py"), "--per-spelling", "1",
                        "--decoys-per-kind", "20", "--no-peer")
    assert set(result["danlu"]["recall"]) == {"id_card", "bank_card", "phone", "email", "ip"}
    assert all(r == 1.0 for r in result["danlu"]["recall"].values())


def test_bench_dedup_runs_every_arm_on_the_same_documents():
    result = _last_json(str(SCRIPTS / "bench_dedup.py"), "--docs", "400",
                        "--arms", "danlu,datasketch_sha1")
    arms = result["arms"]
    assert {"danlu", "datasketch_sha1"} <= set(arms)
    assert arms["danlu"]["docs"] == arms["datasketch_sha1"]["docs"] == result["docs"]


@pytest.mark.slow
def test_bench_clean_compares_with_its_baseline():
    result = _last_json(str(SCRIPTS / "bench_clean.py"), "--records", "300", "--repeat", "1")
    assert all(result["identical"].values()), result["identical"]
    assert result["new"]["pure_records_per_s"] > 0


@pytest.mark.slow
def test_bench_data_reports_every_stage_and_size():
    result = _last_json(str(SCRIPTS / "bench_data.py"), "--sizes", "200,400", "--no-datatrove")
    assert set(result["danlu"]) == {"clean", "dedup", "tokenize"}
    assert set(result["danlu"]["clean"]) == {"200", "400"}
