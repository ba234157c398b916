"""Clean split into record-range shards: every shard layout reads the rows the
whole file gives, and `danlu combine` of the shards' outputs is byte for byte
`danlu clean` of the whole file (records, rejects, stats)."""

import gzip
import json
import os

import pandas as pd
import pytest
from workflow_utils import make_project, snakemake

from danlu.cli import main
from danlu.data.readers import read_rows
from danlu.data.shards import AUTO_SHARD_BYTES, Shard, plan_shards, read_shard

PHONE = "13912345678"
OUTPUTS = ("records.jsonl", "rejects.jsonl", "stats.json")


@pytest.fixture(autouse=True)
def _no_tracking(monkeypatch, tmp_path):
    monkeypatch.setenv("DANLU_TRACKING_DISABLED", "1")
    monkeypatch.chdir(tmp_path)


def _records(n: int) -> list[dict]:
    """Kept ones, PII to mask, and rejects (empty output, too short)."""
    out = []
    for i in range(n):
        answer = f"第{i}个回答，电话{PHONE}。" if i % 5 == 0 else f"答案{i} " + "资产负债" * (i % 7)
        out.append({"instruction": f"问题{i}：利率是多少？", "input": "", "output": answer})
    out[3]["output"] = ""  # empty_field
    out[8] = {"instruction": "问", "output": ""}
    return out


def _jsonl_bytes(records: list[dict]) -> bytes:
    """Lines as raw data has them: a BOM, CRLF and LF endings, blank lines, a
    broken line, a very long line, and no newline at the end."""
    lines = [json.dumps(r, ensure_ascii=False) for r in records]
    lines[5] = "{broken"
    lines[12] = json.dumps({"instruction": "长", "output": "很长的回答" * 60}, ensure_ascii=False)
    lines.insert(20, "")
    lines.insert(21, "   ")
    text = "\ufeff" + "".join(line + ("\r\n" if i % 3 == 0 else "\n") for i, line in enumerate(lines))
    return text.rstrip("\n").encode("utf-8")


@pytest.fixture
def files(tmp_path):
    records = _records(40)
    (tmp_path / "a.jsonl").write_bytes(_jsonl_bytes(records))
    (tmp_path / "b.json").write_text(json.dumps(records, ensure_ascii=False), "utf-8")
    pd.DataFrame(records).to_csv(tmp_path / "c.csv", index=False)
    # Row groups of 7 rows: shards start and end inside them.
    pd.DataFrame(records).to_parquet(tmp_path / "d.parquet", row_group_size=7)
    return {p.name: p for p in tmp_path.iterdir() if p.is_file()}


def _rows(rows) -> list[tuple]:
    return [(r.loc, r.data, r.error and r.error.reason, r.raw_text) for r in rows]


@pytest.mark.parametrize("name", ["a.jsonl", "b.json", "c.csv", "d.parquet"])
@pytest.mark.parametrize("count", [1, 2, 3, 7, 60])
def test_shards_read_the_rows_of_the_whole_file(files, name, count):
    whole = _rows(read_rows(files[name]))
    shards = [_rows(read_shard(files[name], "auto", Shard(i, count))) for i in range(count)]
    assert [row for shard in shards for row in shard] == whole
    if count == 3:  # a real split, not one shard holding everything
        assert all(0 < len(shard) < len(whole) for shard in shards)


def _clean(*args: str) -> None:
    assert main(["clean", *args]) == 0


@pytest.mark.parametrize("name", ["a.jsonl", "b.json", "c.csv", "d.parquet"])
def test_combined_shards_are_byte_identical_to_one_job(files, tmp_path, name):
    _clean(str(files[name]), "--out", "whole")
    parts = []
    for i in range(3):
        _clean(str(files[name]), "--out", f"part{i}", "--shard", str(i), "--shards", "3")
        parts.append(f"part{i}")
    assert main(["combine", *parts, "--out", "combined"]) == 0
    for out in OUTPUTS:
        assert (tmp_path / "combined" / out).read_bytes() == (tmp_path / "whole" / out).read_bytes()
    stats = json.loads((tmp_path / "whole" / "stats.json").read_text("utf-8"))
    assert stats["records_rejected"] >= 2 and stats["pii_masked_by_type"]["phone"] >= 7
    manifest = json.loads((tmp_path / "part1" / "manifest.json").read_text("utf-8"))
    assert manifest["params"]["shard"] == 1 and manifest["params"]["shards"] == 3


def test_empty_shards_combine_and_an_empty_file_still_fails(tmp_path, capsys):
    (tmp_path / "one.jsonl").write_text('{"instruction": "问", "output": "答"}\n', "utf-8")
    for i in range(4):  # one line, four shards: three of them empty
        _clean("one.jsonl", "--out", f"p{i}", "--shard", str(i), "--shards", "4")
    assert main(["combine", "p0", "p1", "p2", "p3", "--out", "all"]) == 0
    _clean("one.jsonl", "--out", "whole")
    for out in OUTPUTS:
        assert (tmp_path / "all" / out).read_bytes() == (tmp_path / "whole" / out).read_bytes()
    (tmp_path / "header.csv").write_text("instruction,output\n", "utf-8")  # no records
    assert main(["clean", "header.csv", "--out", "hwhole", "--format", "alpaca"]) == 2
    for i in range(2):
        _clean("header.csv", "--out", f"h{i}", "--shard", str(i), "--shards", "2",
               "--format", "alpaca")
    capsys.readouterr()
    assert main(["combine", "h0", "h1", "--out", "hall"]) == 2
    assert "header.csv: no records" in capsys.readouterr().err
    assert not (tmp_path / "hall" / "records.jsonl").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--shard", "3", "--shards", "3"], "need 0 <= shard < shards"),
    (["--shard", "0", "--shards", "2"], "cannot be split cheaply"),
])
def test_bad_shard_requests_exit_2_in_one_line(tmp_path, capsys, args, message):
    with gzip.open(tmp_path / "z.jsonl.gz", "wt", encoding="utf-8") as fh:
        fh.write('{"instruction": "问", "output": "答"}\n')
    assert main(["clean", "z.jsonl.gz", "--out", "out", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.count("\n") == 0


def test_clean_logs_progress_with_a_rate(files, capsys):
    _clean(str(files["a.jsonl"]), "--out", "out", "--shard", "1", "--shards", "2")
    out = capsys.readouterr().out
    assert "clean a shard 1 of 2: " in out and "records/s), done" in out


def test_plan_shards(tmp_path):
    big = tmp_path / "big.jsonl"
    with open(big, "wb") as fh:  # sparse: the size without the disk
        fh.truncate(2 * AUTO_SHARD_BYTES + 1)
    assert plan_shards(str(big), "auto") == (3, None)
    assert plan_shards(str(big), 5) == (5, None)
    small = tmp_path / "small.csv"
    small.write_text("instruction,output\n问,答\n", "utf-8")
    assert plan_shards(str(small), "auto") == (1, None)
    assert plan_shards(str(tmp_path / "later.jsonl"), "auto") == (1, None)  # written by a rule
    packed = tmp_path / "big.jsonl.gz"
    os.link(big, packed)
    count, note = plan_shards(str(packed), "auto")
    assert count == 1 and "gzip" in note
    assert plan_shards(None, "auto") == (1, None)
    assert plan_shards(None, 4)[0] == 1


# --- the workflow: clean.shards spreads each file over jobs -----------------------------


def _project(root, shards):
    root.mkdir()
    make_project(root, [{"name": "alp", "path": "data/alp.jsonl", "format": "alpaca"},
                        {"name": "tab", "path": "data/tab.csv", "format": "auto"}],
                 {"clean": {"shards": shards}, "tracking": {"enabled": False}})
    records = _records(30)
    (root / "data" / "alp.jsonl").write_bytes(_jsonl_bytes(records))
    pd.DataFrame(records).to_csv(root / "data" / "tab.csv", index=False)
    snakemake(root, "results/clean/records.jsonl")
    return root


@pytest.mark.slow
def test_three_clean_shards_per_file_give_the_bytes_of_one(tmp_path):
    one = _project(tmp_path / "one", 1)
    three = _project(tmp_path / "three", 3)
    parts = sorted(p.parent.relative_to(three / "results/clean/parts").as_posix()
                   for p in (three / "results/clean/parts").glob("**/stats.json"))
    assert parts == [f"{name}/shard-{i}-of-3" for name in ("alp", "tab") for i in range(3)]
    assert "records/s), done" in (three / "logs/clean/alp/shard-2-of-3.log").read_text("utf-8")
    for name in OUTPUTS:
        assert (three / "results/clean" / name).read_bytes() == \
            (one / "results/clean" / name).read_bytes(), name
