"""Benchmark the data stages (clean -> dedup -> tokenize) at three corpus sizes,
with datatrove doing the same cleaning and deduplication as the peer.

    python scripts/bench_data.py [--sizes 25000,100000,400000] [--exact-share 0.05]
        [--near-share 0.05] [--zh-share 0.56] [--seed 0]
        [--datatrove-python /tmp/dtvenv/bin/python | --no-datatrove]

Generates a seeded corpus of raw alpaca records (~500 mixed Chinese/English
characters each, from scripts/bench_clean.py's generator: full-width forms,
invisible characters, PII, code fences, ~2% records clean must reject), of
which --exact-share are exact copies of an earlier line and --near-share are
near copies (two or three characters of the answer replaced: Jaccard about
0.9 on 5-character shingles). The smaller sizes are prefixes of the largest.
Everything runs on one core (children inherit the affinity), each stage in
its own process, as a job would:

  danlu      `danlu clean CORPUS`, `danlu dedup` of its records.jsonl (no
             benchmarks: no decontamination), `danlu tokenize` of dedup's
             records with a tiny byte-level BPE tokenizer (`danlu demo-model`,
             trained on the corpus's first records, untimed)
  datatrove  the same raw corpus through JsonlReader -> PIIFormatter ->
             LambdaFilter (danlu's min/max chars) -> GopherRepetitionFilter ->
             FineWebQualityFilter -> GopherQualityFilter -> JsonlWriter, the
             filters with datatrove's Mandarin word tokenizer (cmn_Hani: spaCy
             + jieba) and Chinese word lengths; then its
             4-step MinHash deduplication as examples/minhash_deduplication.py
             sets it up (14 buckets x 8 hashes, 64-bit, 5-word shingles) on
             the LocalPipelineExecutor, one worker, reading the records danlu's
             dedup reads (danlu's clean output), so both dedup the same records

Times are CPU seconds of the stage's process (user + sys, start-up and
imports included; wall seconds are reported too), peak RSS is that process's
(os.wait4; peak RSS from the child's VmHWM). Prints one JSON line last: records/s, MB/s and peak RSS per arm,
stage and size; `growth`, the time ratio of the largest size to the one
before it per stage (linear is the size ratio; the goal is at most 1.1 times
it, 4.4 for 400k/100k); and `danlu_over_datatrove`, the time ratios per stage.

The datatrove arm runs under --datatrove-python, an interpreter of its own:
datatrove's default MinHash hash passes str to xxhash, which xxhash 4 (pinned
here) refuses, so it cannot share the project's environment. Make one with

    python3 -m venv /tmp/dtvenv
    /tmp/dtvenv/bin/pip install datatrove==0.10.1 "xxhash<4" orjson regex tokenizers spacy jieba

(the arm imports only datatrove and the standard library); --no-datatrove
skips the arm.
"""

from __future__ import annotations

import os

# One core, as the throughput targets are per core; children inherit it.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS"):
    os.environ[_var] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

import argparse  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SIZES = (25_000, 100_000, 400_000)
GROWTH_SLACK = 1.1  # time may grow 10% faster than the corpus: 4.4 for 400k/100k
# The tokenizer's model: only its tokenizer is used (conftest.py's tiny shape).
TINY_MODEL = {"vocab_size": 2048, "hidden_size": 128, "intermediate_size": 256,
              "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1}
TOKENIZER_SAMPLE = 3000  # records whose text trains the tokenizer
# datatrove's word tokenizer for Chinese: FineWeb-2's code for it (plain "zh"
# maps to a whitespace tokenizer in datatrove 0.10's table).
DT_LANGUAGE = "cmn_Hani"


# ---------------------------------------------------------------- the corpus


def corpus_class():
    """bench_clean's generator (the language mix is its zh_share)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_clean import Corpus

    return Corpus


def near_copy(line: str, rng: random.Random) -> str | None:
    """The record with two or three characters of its answer replaced; None for
    a line that is no record with a text answer (unparseable, wrong type)."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    answer = record.get("output")
    if not isinstance(answer, str) or len(answer) < 100:
        return None
    chars = list(answer)
    for pos in rng.sample(range(10, len(chars) - 10), rng.randint(2, 3)):
        chars[pos] = chr(rng.randrange(0x4E00, 0x9FA6))
    record["output"] = "".join(chars)
    return json.dumps(record, ensure_ascii=False)


def write_corpus(path: Path, records: int, args) -> list[int]:
    """`records` lines with the asked shares of exact and near copies of earlier
    lines; returns the byte offset after each line (for the prefixes)."""
    corpus = corpus_class()(args.seed, args.zh_share)
    rng = random.Random(args.seed + 1)
    lines: list[str] = []
    ends, offset = [], 0
    with open(path, "wb") as fh:
        for _ in range(records):
            pick = rng.random()
            line = None
            if lines and pick < args.exact_share:
                line = rng.choice(lines)
            elif lines and pick < args.exact_share + args.near_share:
                line = near_copy(rng.choice(lines), rng)
            line = line or corpus.record()
            lines.append(line)
            offset += fh.write((line + "\n").encode("utf-8"))
            ends.append(offset)
    return ends


def write_prefix(source: Path, dest: Path, size: int) -> None:
    with open(source, "rb") as src, open(dest, "wb") as out:
        out.write(src.read(size))


# ---------------------------------------------------------------- measuring


def child_env() -> dict:
    env = dict(os.environ, DANLU_TRACKING_DISABLED="1", HF_HUB_OFFLINE="1",
               HF_DATASETS_OFFLINE="1", PYTHONPATH=str(ROOT / "src"))
    env.pop("DANLU_AUDIT_LOG", None)  # a benchmark is no pipeline job
    return env


def measured(cmd: list[str], log: Path, cwd: Path) -> dict:
    """Run `cmd` to the end: its CPU and wall seconds (its own rusage from
    wait4) and peak RSS. Not wait4's ru_maxrss: Linux carries the forking
    parent's high-water mark into it, and this process holds the corpus. The
    child's own VmHWM (its address space's high-water mark, reset by exec) is
    read from /proc while it runs instead."""
    t0 = time.perf_counter()
    peak_kb = 0
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=child_env(), stdout=out, stderr=subprocess.STDOUT)
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            peak_kb = max(peak_kb, _vm_hwm_kb(proc.pid))
            time.sleep(0.05)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status):
        tail = log.read_text(errors="replace")[-3000:]
        raise SystemExit(f"{' '.join(cmd[:4])} ... failed; the end of {log}:\n{tail}")
    return {"cpu_seconds": usage.ru_utime + usage.ru_stime, "wall_seconds": wall,
            "peak_rss_mb": round(peak_kb / 1024, 1)}


def _vm_hwm_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:  # it has just exited
        pass
    return 0


def danlu_cmd(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from danlu.cli import main; sys.exit(main())", *args]


def count_lines(path: Path) -> int:
    with open(path, "rb") as fh:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))


def rates(run: dict, records: int, nbytes: int) -> dict:
    cpu = run["cpu_seconds"]
    return {"records": records, "mb": round(nbytes / 1e6, 2),
            "cpu_seconds": round(cpu, 2), "wall_seconds": round(run["wall_seconds"], 2),
            "records_per_s": round(records / cpu), "mb_per_s": round(nbytes / 1e6 / cpu, 2),
            "peak_rss_mb": round(run["peak_rss_mb"], 1)}


# ---------------------------------------------------------------- the danlu arm


def build_tokenizer_model(corpus: Path, work: Path) -> Path:
    """A tiny model whose BPE tokenizer is trained on the corpus's first records."""
    texts = []
    with open(corpus, encoding="utf-8") as fh:
        for _, line in zip(range(TOKENIZER_SAMPLE), fh, strict=False):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            texts.extend(v for v in record.values() if isinstance(v, str))
    sample = work / "tokenizer_corpus.txt"
    sample.write_text("\n".join(texts), encoding="utf-8")
    model = work / "model"
    measured(danlu_cmd("demo-model", "--corpus", str(sample), "--out", str(model),
                       "--manifest", str(work / "model.manifest.json"),
                       "--params", json.dumps({"model": TINY_MODEL})),
             work / "model.log", work)
    return model


def run_danlu(corpus: Path, records: int, model: Path, work: Path) -> dict:
    clean, dedup, tok = work / "clean", work / "dedup", work / "tokenize"
    out = {}
    run = measured(danlu_cmd("clean", str(corpus), "--out", str(clean)), work / "clean.log", work)
    out["clean"] = rates(run, records, corpus.stat().st_size)
    source = clean / "records.jsonl"
    run = measured(danlu_cmd("dedup", str(source), "--out", str(dedup)), work / "dedup.log", work)
    out["dedup"] = rates(run, count_lines(source), source.stat().st_size)
    source = dedup / "records.jsonl"
    tok.mkdir()
    run = measured(danlu_cmd("tokenize", "--train", str(source), "--out", str(tok),
                             "--manifest", str(tok / "manifest.json"), "--model", str(model)),
                   work / "tokenize.log", work)
    out["tokenize"] = rates(run, count_lines(source), source.stat().st_size)
    stats = json.loads((dedup / "stats.json").read_text(encoding="utf-8"))
    out["clean"]["kept"] = count_lines(clean / "records.jsonl")
    out["dedup"]["removed"] = stats["removed_by_reason"]
    return out


# ---------------------------------------------------------------- the datatrove arm
# Runs in its own interpreter (--datatrove-python), which needs datatrove and
# the standard library only: no danlu imports below.


def _alpaca_text(self, data: dict, path: str, id_in_file) -> dict:
    """JsonlReader adapter: a raw alpaca record as one document."""
    parts = [data.get(k) for k in ("system", "instruction", "input", "output")]
    text = "\n".join(p for p in parts if isinstance(p, str) and p)
    return {"text": text, "id": f"{Path(path).stem}-{id_in_file}", "metadata": {}}


def _messages_text(self, data: dict, path: str, id_in_file) -> dict:
    """JsonlReader adapter: a danlu record's user and assistant turns, as danlu compares them."""
    turns = [m["content"] for m in data["messages"] if m["role"] != "system"]
    return {"text": "\n".join(turns), "id": data["id"], "metadata": {}}


def dt_clean(source: Path, out: Path, min_chars: int, max_chars: int) -> dict:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.filters import (
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
        LambdaFilter,
    )
    from datatrove.pipeline.formatters import PIIFormatter
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    pipeline = [
        JsonlReader(str(source.parent), glob_pattern=source.name, adapter=_alpaca_text),
        PIIFormatter(),
        LambdaFilter(lambda doc: min_chars <= len(doc.text) <= max_chars),
        GopherRepetitionFilter(language=DT_LANGUAGE),
        FineWebQualityFilter(language=DT_LANGUAGE),
        # Chinese words are 1-4 characters; the synthetic text (random ideographs
        # between finance terms) has no natural stop words: without these two
        # changes nearly every record is dropped and the pass does less work.
        GopherQualityFilter(language=DT_LANGUAGE, min_avg_word_length=1, min_stop_words=None),
        JsonlWriter(str(out / "output"), compression=None),
    ]
    t0 = time.perf_counter()
    LocalPipelineExecutor(pipeline, tasks=1, workers=1, logging_dir=str(out / "logs")).run()
    kept = sum(count_lines(p) for p in (out / "output").glob("*.jsonl"))
    return {"seconds": time.perf_counter() - t0, "kept": kept}


def dt_dedup(source: Path, out: Path) -> dict:
    """The four steps of examples/minhash_deduplication.py, one worker each."""
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import MinhashDedupSignature
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
    )
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter
    from datatrove.utils.hashing import HashConfig

    config = MinhashConfig(hash_config=HashConfig(precision=64), num_buckets=14,
                           hashes_per_bucket=8)

    def reader():
        return JsonlReader(str(source.parent), glob_pattern=source.name, adapter=_messages_text)

    steps = {
        "signatures": ([reader(), MinhashDedupSignature(str(out / "signatures"), config=config,
                                                        language=DT_LANGUAGE)], 1),
        "buckets": ([MinhashDedupBuckets(str(out / "signatures"), str(out / "buckets"),
                                         config=config)], config.num_buckets),
        "clusters": ([MinhashDedupCluster(str(out / "buckets"), str(out / "remove_ids"),
                                          config=config)], 1),
        "filter": ([reader(), MinhashDedupFilter(str(out / "remove_ids"),
                                                 exclusion_writer=JsonlWriter(
                                                     str(out / "removed"), compression=None)),
                    JsonlWriter(str(out / "deduplicated"), compression=None)], 1),
    }
    seconds = {}
    for name, (pipeline, tasks) in steps.items():
        t0 = time.perf_counter()
        LocalPipelineExecutor(pipeline, tasks=tasks, workers=1,
                              logging_dir=str(out / "logs" / name)).run()
        seconds[name] = round(time.perf_counter() - t0, 3)
    removed = sum(count_lines(p) for p in (out / "removed").glob("*.jsonl"))
    return {"seconds": sum(seconds.values()), "step_wall_seconds": seconds, "removed": removed}


def datatrove_worker(args) -> None:
    source, out = Path(args.input), Path(args.out)
    if args.datatrove_worker == "clean":
        result = dt_clean(source, out, args.min_chars, args.max_chars)
    else:
        result = dt_dedup(source, out)
    (out / "result.json").write_text(json.dumps(result), encoding="utf-8")


def run_datatrove(python: str, corpus: Path, records: int, clean_records: Path,
                  work: Path) -> dict:
    from danlu.config import load_config

    limits = load_config(None)["clean"]
    out = {}
    for stage, source, n in (("clean", corpus, records),
                             ("dedup", clean_records, count_lines(clean_records))):
        dest = work / stage
        dest.mkdir(parents=True)
        cmd = [python, __file__, "--datatrove-worker", stage, "--input", str(source),
               "--out", str(dest), "--min-chars", str(limits["min_chars"]),
               "--max-chars", str(limits["max_chars"])]
        run = measured(cmd, work / f"{stage}.log", work)
        out[stage] = {**rates(run, n, source.stat().st_size),
                      **{k: v for k, v in json.loads((dest / "result.json").read_text()).items()
                         if k != "seconds"}}
    return out


def datatrove_missing(python: str) -> str | None:
    """Why `python` cannot run the datatrove arm, or None."""
    probe = ("import orjson, jieba, spacy, xxhash; import datatrove.pipeline.dedup, "
             "datatrove.pipeline.filters; xxhash.xxh64_intdigest('str')")
    proc = subprocess.run([python, "-c", probe], capture_output=True, text=True)
    if proc.returncode:
        why = proc.stderr.strip().splitlines()[-1]
        return f"not run: {python}: {why} (see --help for the venv it needs)"
    return None


# ---------------------------------------------------------------- the report


def growth(arm: dict, sizes: list[int]) -> dict:
    """Time at the largest size over time at the one before, per stage."""
    big, before = str(sizes[-1]), str(sizes[-2])
    return {stage: round(runs[big]["cpu_seconds"] / runs[before]["cpu_seconds"], 2)
            for stage, runs in arm.items() if big in runs and before in runs}


def ratios(danlu: dict, peer: dict) -> dict:
    return {stage: {size: round(run["cpu_seconds"] / peer[stage][size]["cpu_seconds"], 3)
                    for size, run in runs.items() if size in peer[stage]}
            for stage, runs in danlu.items() if stage in peer}


def by_stage(per_size: dict) -> dict:
    """{size: {stage: run}} -> {stage: {size: run}}."""
    out: dict = {}
    for size, stages in per_size.items():
        for stage, run in stages.items():
            out.setdefault(stage, {})[size] = run
    return out


def report(args, sizes: list[int], corpus_mb: dict, danlu: dict, peer: dict | None,
           peer_note: str | None) -> dict:
    size_ratio = sizes[-1] / sizes[-2] if len(sizes) > 1 else None
    result = {
        "sizes": sizes, "cores": 1, "seed": args.seed, "exact_share": args.exact_share,
        "near_share": args.near_share, "zh_share": args.zh_share, "corpus_mb": corpus_mb,
        "time": "cpu seconds of each stage's process", "danlu": danlu,
    }
    if size_ratio:
        goal = round(GROWTH_SLACK * size_ratio, 2)
        result["growth"] = {"danlu": growth(danlu, sizes), "size_ratio": size_ratio, "goal": goal}
        result["growth"]["danlu_linear"] = {s: g <= goal for s, g in result["growth"]["danlu"].items()}
    if peer is not None:
        result["datatrove"] = peer
        result["danlu_over_datatrove"] = ratios(danlu, peer)
        peer_sizes = sorted({int(k) for runs in peer.values() for k in runs})
        if len(peer_sizes) > 1:
            result["growth"]["datatrove"] = growth(peer, peer_sizes)
    else:
        result["datatrove"] = peer_note
    return result


# ---------------------------------------------------------------- the driver


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)),
                        help="records per corpus, comma-separated, ascending")
    parser.add_argument("--exact-share", type=float, default=0.05)
    parser.add_argument("--near-share", type=float, default=0.05)
    parser.add_argument("--zh-share", type=float, default=0.56,
                        help="share of the prose pieces that are Chinese (bench_clean's mix)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--datatrove-python", default=sys.executable,
                        help="interpreter with datatrove, its imports and xxhash<4 (see above)")
    parser.add_argument("--no-datatrove", action="store_true", help="skip the peer arm")
    parser.add_argument("--datatrove-max", type=int,
                        help="run the peer arm only at sizes up to this many records (it runs "
                             "~200 records/s here: 400k would take over an hour per stage)")
    parser.add_argument("--keep", help="work here (corpora, outputs, logs) instead of a temp dir")
    for hidden in ("--datatrove-worker", "--input", "--out"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    parser.add_argument("--min-chars", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--max-chars", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.size_list = sorted(int(s) for s in args.sizes.split(",") if s)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.datatrove_worker:
        datatrove_worker(args)
        return 0
    sizes = args.size_list
    peer_note = "skipped (--no-datatrove)" if args.no_datatrove else \
        datatrove_missing(args.datatrove_python)
    with tempfile.TemporaryDirectory(prefix="bench_data-") as scratch:
        work = Path(args.keep or scratch).resolve()
        work.mkdir(parents=True, exist_ok=True)
        full = work / "corpus-full.jsonl"
        log(f"corpus: {sizes[-1]:,} records ...")
        ends = write_corpus(full, sizes[-1], args)
        log("tokenizer ...")
        model = build_tokenizer_model(full, work)
        danlu, peer, corpus_mb = {}, {}, {}
        for size in sizes:
            corpus = work / f"corpus-{size}.jsonl"
            write_prefix(full, corpus, ends[size - 1])
            corpus_mb[str(size)] = round(corpus.stat().st_size / 1e6, 2)
            log(f"{size:,} records: danlu ...")
            danlu[str(size)] = run_danlu(corpus, size, model, make(work / f"danlu-{size}"))
            if peer_note is None and size <= (args.datatrove_max or size):
                log(f"{size:,} records: datatrove ...")
                clean_records = work / f"danlu-{size}" / "clean" / "records.jsonl"
                peer[str(size)] = run_datatrove(args.datatrove_python, corpus, size,
                                                clean_records, make(work / f"datatrove-{size}"))
    result = report(args, sizes, corpus_mb, by_stage(danlu),
                    by_stage(peer) if peer_note is None else None, peer_note)
    print(json.dumps(result, ensure_ascii=False))
    return 0


def make(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def log(message: str) -> None:
    print(f"bench_data: {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
