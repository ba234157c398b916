"""Dedup: exact and near duplicates, decontamination, shards, the split."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
from workflow_utils import BENCHMARKS

from danlu import progress
from danlu.cli import main
from danlu.config import DedupConfig, from_mapping, load_config
from danlu.data import decontamination
from danlu.data.dedup import dedup_file
from danlu.data.minhash import signatures
from danlu.data.records import dumps
from danlu.data.signatures import Block, dedup_text, shard_signatures
from danlu.data.split import split_file


@pytest.fixture(autouse=True)
def _no_tracking(monkeypatch, tmp_path):
    monkeypatch.setenv("DANLU_TRACKING_DISABLED", "1")
    monkeypatch.chdir(tmp_path)


def cfg(**overrides) -> DedupConfig:
    return from_mapping(DedupConfig, {**load_config(None)["dedup"], **overrides})


def record(i: int, user: str, answer: str) -> dict:
    return {"id": f"r-{i:04d}", "source": {"file": "t", "line": i},
            "messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}],
            "meta": {}}


def corpus(n: int = 60) -> list[dict]:
    rng = np.random.default_rng(0)
    words = ["股票", "债券", "基金", "利率", "汇率", "通胀", "存款", "贷款", "保险", "税收", "资产", "负债",
             "现金流", "市盈率", "分红", "回购", "风险", "收益", "期权", "期货"]
    out = []
    for i in range(n):
        answer = "，".join("".join(rng.choice(words, 3)) + str(rng.integers(1000)) for _ in range(12))
        out.append(record(i, f"问题{i}：请解释{rng.choice(words)}的含义", answer + "。"))
    return out


def write(path: Path, records) -> Path:
    path.write_text("".join(r if isinstance(r, str) else dumps(r) for r in records), "utf-8")
    return path


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


def planted(tmp_path: Path) -> Path:
    base = corpus()
    exact = dict(base[3], id="r-exact")
    near = json.loads(json.dumps(base[5]))
    near["id"] = "r-near"
    near["messages"][1]["content"] = near["messages"][1]["content"][:-8] + "另有补充说明。"
    return write(tmp_path / "in.jsonl", [*base, exact, near, "{oops\n"])


def test_planted_exact_near_and_invalid_lines_are_removed_with_reasons(tmp_path):
    path = planted(tmp_path)
    block = shard_signatures(path, cfg())
    stats = dedup_file(path, block, cfg(), tmp_path / "out")
    removed = {r.get("id", f"line {r['line']}"): r for r in read(tmp_path / "out" / "removed.jsonl")}
    assert removed["r-exact"]["reason"] == "exact" and removed["r-exact"]["duplicate_of"] == "r-0003"
    assert removed["r-near"]["reason"] == "near" and removed["r-near"]["duplicate_of"] == "r-0005"
    assert 0.8 <= removed["r-near"]["jaccard"] < 1.0
    assert removed["line 63"]["reason"] == "invalid"
    assert stats["records_in"] == 63 and stats["records_kept"] == 60
    kept = [r["id"] for r in read(tmp_path / "out" / "records.jsonl")]
    assert kept == [f"r-{i:04d}" for i in range(60)]  # input order, earliest kept
    clusters = read(tmp_path / "out" / "clusters.jsonl")
    assert {c["kept"] for c in clusters} == {"r-0003", "r-0005"}


@pytest.mark.skipif(not BENCHMARKS.is_dir(), reason="../shared/benchmarks not present")
def test_copied_ceval_question_is_contaminated(tmp_path):
    from danlu.data.demo_leak import benchmark_leak_records

    leak = benchmark_leak_records(BENCHMARKS)[0]
    leaked = record(99, leak["instruction"], leak["output"])
    path = write(tmp_path / "in.jsonl", [*corpus(20), leaked])
    assert main(["dedup", str(path), "--out", "out", "--benchmarks", str(BENCHMARKS)]) == 0
    removed = read(tmp_path / "out" / "removed.jsonl")
    assert [(r["id"], r["reason"], r["benchmark"]) for r in removed] == [("r-0099", "contaminated", "ceval")]
    assert removed[0]["ngram_overlap"] == 1.0
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert sum(stats["contaminated_by_subject"].values()) == 1


def test_three_shards_equal_one_byte_for_byte(tmp_path):
    path = planted(tmp_path)
    for shards in (1, 3):
        assert main(["dedup", str(path), "--out", f"s{shards}", "--shards", str(shards),
                     "--benchmarks", str(BENCHMARKS)]) == 0
    for name in ("records.jsonl", "removed.jsonl", "clusters.jsonl", "stats.json", "clusters.png"):
        assert (tmp_path / "s1" / name).read_bytes() == (tmp_path / "s3" / name).read_bytes(), name
    blocks = [shard_signatures(path, cfg(), i, 3) for i in range(3)]
    whole = shard_signatures(path, cfg())
    merged = Block.concat(blocks)
    assert np.array_equal(merged.sig, whole.sig) and np.array_equal(merged.lines, whole.lines)


def test_split_keeps_similar_records_together_and_is_stable(tmp_path):
    base = corpus(200)
    family = [record(500 + k, f"模板问题{k}", base[0]["messages"][1]["content"][:-6] + f"附注{k}。")
              for k in range(6)]  # six records about 0.9 similar to each other
    path = write(tmp_path / "kept.jsonl", [*base, *family])
    c = cfg(val_size=0.2, threshold=0.95)
    stats = split_file(path, c, 7, tmp_path / "a")
    train, val = (read(tmp_path / "a" / f"{s}.jsonl") for s in ("train", "val"))
    assert stats["train"] + stats["val"] == 206 and 10 < len(val) < 80
    sides = {r["id"]: side for side, rs in (("train", train), ("val", val)) for r in rs}
    assert len({sides[r["id"]] for r in family} | {sides["r-0000"]}) == 1
    # A record appended elsewhere moves nobody.
    write(tmp_path / "kept.jsonl", [*base, *family, record(999, "全新的问题", "全新的回答内容。")])
    split_file(tmp_path / "kept.jsonl", c, 7, tmp_path / "b")
    again = {r["id"]: s for s in ("train", "val") for r in read(tmp_path / "b" / f"{s}.jsonl")}
    assert all(again[k] == v for k, v in sides.items())


def test_bad_inputs_exit_2_with_one_line(tmp_path, capsys):
    assert main(["dedup", "missing.jsonl", "--out", "out"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "missing.jsonl: no such file" in err
    (tmp_path / "latin.jsonl").write_bytes('{"id": "é"}\n'.encode("latin-1"))
    assert main(["split", "latin.jsonl", "--out", "out"]) == 2
    assert "not UTF-8" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_shard_files_from_the_workflow_give_the_same_outputs(tmp_path):
    """`dedup --signatures` (the workflow's path: shards signed by separate
    jobs, merged here) writes what signing in-process writes, byte for byte."""
    path = planted(tmp_path)
    prefixes = [str(tmp_path / f"sig-{i}") for i in range(3)]
    for i, prefix in enumerate(prefixes):
        assert main(["dedup-signatures", str(path), "--shard", str(i), "--shards", "3",
                     "--out", prefix]) == 0
    assert main(["dedup", str(path), "--out", "given", "--signatures", *prefixes]) == 0
    assert main(["dedup", str(path), "--out", "here"]) == 0
    for name in ("records.jsonl", "removed.jsonl", "clusters.jsonl", "stats.json", "clusters.png"):
        assert (tmp_path / "given" / name).read_bytes() == (tmp_path / "here" / name).read_bytes()
    merged = Block.load_shards([Path(p) for p in prefixes])
    whole = shard_signatures(path, cfg())
    for part in ("lines", "sig", "sha"):
        assert np.array_equal(getattr(merged, part), getattr(whole, part)), part


def test_signatures_of_another_file_are_refused(tmp_path, capsys):
    path = planted(tmp_path)
    other = write(tmp_path / "other.jsonl", corpus(30))
    shard_signatures(other, cfg()).save(tmp_path / "sig")
    assert main(["dedup", str(path), "--out", "out", "--signatures", str(tmp_path / "sig")]) == 2
    assert "not this file's" in capsys.readouterr().err


def test_lines_are_copied_only_when_already_canonical(tmp_path):
    """Kept lines are copied without re-serialising them only when they are
    byte for byte what `dumps` writes; any other spelling is rewritten."""
    base = corpus(6)
    spaced = json.dumps(base[2], ensure_ascii=True) + "\n"  # valid, not canonical
    path = write(tmp_path / "in.jsonl", [base[0], base[1], spaced, *base[3:]])
    dedup_file(path, None, cfg(), tmp_path / "out")
    assert (tmp_path / "out" / "records.jsonl").read_text("utf-8") == "".join(map(dumps, base))


def test_long_passes_log_records_per_second(tmp_path, monkeypatch, capsys):
    """Every pass over the records says how far it got and how fast while it
    runs (here at every clock check, every 1024 records), and when it ends."""
    monkeypatch.setattr(progress, "PROGRESS_EVERY", 0.0)
    path = write(tmp_path / "in.jsonl", corpus(1100))
    dedup_file(path, None, cfg(), tmp_path / "out")
    split_file(tmp_path / "out" / "records.jsonl", cfg(), 1, tmp_path / "split")
    out = capsys.readouterr().out
    for label in ("dedup signatures", "dedup write", "split signatures", "split write"):
        line = rf"^{label}: [\d,]+ records in [\d.]+ s \([\d,]+ records/s\)"
        assert re.search(line + "$", out, re.M), label  # while running
        assert re.search(line + ", done$", out, re.M), label


def _question(i: int, rng: np.random.Generator) -> decontamination.BenchmarkItem:
    chars = "".join(map(chr, rng.integers(0x4E00, 0x4E00 + 3000, 40).tolist()))
    options = tuple("".join(map(chr, rng.integers(0x4E00, 0x4E00 + 3000, 15).tolist()))
                    for _ in range(4))
    return decontamination.BenchmarkItem("ceval", "subject", "val", str(i), (chars, *options))


def test_decontamination_work_grows_with_the_records_not_records_times_questions(monkeypatch):
    """Each record's n-grams and LSH bands are looked up once in indexes built
    once: doubling the records doubles every lookup, four times the questions
    changes none, and nothing of records x questions size is ever built."""
    rng = np.random.default_rng(1)
    questions = [_question(i, rng) for i in range(400)]
    texts = [dedup_text(r) for r in corpus(40)]
    texts[7] += "\n".join(questions[5].segments)  # one leak, to be found
    sizes: list[int] = []  # of every array handed to a lookup or a pairwise comparison

    def counted(function, size_of):
        def wrapper(*args, **kwargs):
            sizes.append(size_of(*args, **kwargs))
            return function(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(decontamination.HashSet, "find", counted(decontamination.HashSet.find, lambda self, h: len(h)))
    monkeypatch.setattr(decontamination.BucketIndex, "candidates",
                        counted(decontamination.BucketIndex.candidates, lambda self, q: len(q)))
    monkeypatch.setattr(decontamination, "estimated_jaccard",
                        counted(decontamination.estimated_jaccard, lambda sig, pairs, **kw: len(pairs)))

    def work(n_questions: int, batch: list[str]) -> tuple[list[int], list]:
        index = decontamination.ContaminationIndex(questions[:n_questions], cfg())
        sizes.clear()
        found = index.matches(batch, signatures(batch, cfg().minhash()))
        return list(sizes), found

    once, found = work(100, texts)
    assert [(t, item) for t, item, *_ in found] == [(7, 5)]
    twice, _ = work(100, texts + texts)
    more_questions, _ = work(400, texts)
    assert twice == [2 * size for size in once]
    assert more_questions == once
    assert max(once) <= sum(len(t) for t in texts) + 13 * len(texts)  # one per n-gram at most
