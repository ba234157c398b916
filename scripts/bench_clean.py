"""Benchmark `danlu clean` against its implementation at a fixed git revision.

    python scripts/bench_clean.py [--records 20000] [--seed 0] [--baseline-rev 14840eb]

Generates a seeded corpus of alpaca records (~500 mixed Chinese/English
characters each, with full-width letters and digits, zero-width and control
characters, PII, code fences, rare code points, a few records that must be
rejected, and 5% exact duplicates) into a temporary jsonl. Then, on one core,
for the baseline (the `src/danlu` tree of --baseline-rev, extracted with `git
archive`) and for this working tree, each in its own Python process:

  pure  to_messages + clean_messages + dumps on records already parsed
        (the per-record logic, no file I/O), after a warm-up, best of --repeat;
  cli   `danlu clean CORPUS --out DIR`, start-up included.

Times are CPU seconds of the measured process, so that other load on a shared
machine does not count (the CLI's wall time is printed too). It asserts that
both implementations agree on what must not change: the pure pass's lines and
reasons with PII masking off (an untimed extra pass), the values of
non_text_share / cjk_share / detect_language on every text, and which records
the CLI kept and rejected (ids; source, reason and field). Masked text may
differ where the baseline predates a masking change (issue #16 catches
spellings it missed and leaves checksum-failing lookalikes alone): the line
reports, not asserts, whether the masked outputs are byte-identical, and the
masking counts by type of both. It prints one JSON line last: records/s,
MB/s, peak RSS and the speedups.
"""

from __future__ import annotations

import os

# One core, as the throughput target is per core; children inherit it.
if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

import argparse  # noqa: E402
import contextlib  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# The last commit before the clean path was vectorised (issue #17).
BASELINE_REV = "14840eb"
OUTPUTS = ("records.jsonl", "rejects.jsonl", "stats.json")

# ---------------------------------------------------------------- the corpus

_EN_TEXT = (
    "the fund bond yield equity market risk return rate interest price share dividend "
    "portfolio investor asset cash flow loan credit tax index inflation growth earnings "
    "capital debt ratio annual quarter report balance sheet margin trading volume option "
    "hedge liquidity valuation account deposit pension insurance premium mortgage broker"
)
_EN_WORDS = tuple(_EN_TEXT.split())
_ZH_PHRASES = (
    "市盈率", "基金净值", "资产配置", "风险承受能力", "年化收益率", "养老保险", "最大回撤",
    "管理费率", "股息", "债券", "通货膨胀", "现金流", "投资组合", "定投", "复利", "流动性",
    "信用评级", "市场波动", "财务报表", "净利润", "营业收入", "利率", "贷款", "存款",
)
_ZH_PUNCT = "，，，。；：、！？（）"
_FULLWIDTH_WORDS = ("ＥＰＳ", "ＧＤＰ", "ＣＰＩ", "ＲＯＥ", "ｅｔｆ", "１２３", "２０２４年", "５％")
# Characters normalize_text removes or rewrites, and rare code points that
# exercise every category table (Cn, Co, Cs-free, non-BMP, NFC changes).
_ODD_BITS = (
    "\u200b", "\u200c", "\u200d", "\ufeff", "\u2060", "\u202e", "\u00ad", "\x07", "\x00",
    "\x7f", "\x85", "\u3000", "\xa0", "\u2003", "  ", "\t", "\r\n", "\r", "\n\n\n\n", " \n ",
    "e\u0301", "A\u030a", "\uf900", "\u2126", "📈", "𠀀", "\ue000", "\U000f0000", "\u0378",
    "\ufffd", "\U000e0001", "\u061c", "\u2028", "\u1680", "\u0660\u0661",
)
_SPECIAL = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>")


class Corpus:
    """Seeded generator of raw alpaca lines (JSON text, one record each)."""

    def __init__(self, seed: int, zh_share: float | None = None):
        # zh_share: the Chinese share of the prose (bench_data's flag); None
        # keeps this script's own mix (0.45 of all pieces Chinese, 0.35 English).
        self.zh_share = zh_share
        self.rng = random.Random(seed)
        self.hanzi = [chr(c) for c in self.rng.sample(range(0x4E00, 0x9FA6), 2500)]

    def zh(self) -> str:
        r = self.rng
        parts = []
        for _ in range(r.randint(2, 5)):
            parts.append("".join(r.choices(self.hanzi, k=r.randint(3, 12))))
            parts.append(r.choice(_ZH_PHRASES))
            parts.append(r.choice(_ZH_PUNCT))
        return "".join(parts) + "。"

    def en(self) -> str:
        words = self.rng.choices(_EN_WORDS, k=self.rng.randint(6, 16))
        return " ".join(words).capitalize() + ". "

    def pii(self) -> str:
        from stdnum import luhn
        from stdnum.cn import ric

        r = self.rng
        kind = r.randrange(12)
        digits = "".join(r.choices("0123456789", k=18))
        if kind == 0:
            return f"电话1{r.choice('3456789')}{digits[:9]}"
        if kind == 1:
            return f" +86 1{r.choice('3456789')}{digits[:1]}-{digits[1:5]}-{digits[5:9]} "
        if kind == 2:
            return f"邮箱 {r.choice(_EN_WORDS)}.{digits[:3]}@example-{digits[3]}.com.cn，"
        if kind == 3:
            birth = f"19{digits[1:3]}0{r.randint(1, 9)}1{r.randint(0, 9)}"
            body = f"11010{digits[0]}{birth}{digits[3:6]}"
            return f"身份证号{body}{ric.calc_check_digit(body + '0')}，"  # takes 18 characters
        if kind == 4:
            body = "6217" + digits[:11]
            card = body + luhn.calc_check_digit(body)
            return " card " + " ".join(card[i:i + 4] for i in range(0, 16, 4)) + " "
        if kind == 5:
            body = "6222" + digits[:14]
            return f"卡号{body}{luhn.calc_check_digit(body)}。"
        if kind == 6:
            return f" from 10.{digits[0]}.{digits[1:3]}.{int(digits[3:6])}. "
        if kind == 7:
            return f" host fe80::{digits[:4]}:{digits[4:8]}:1 and 2001:db8::{digits[8:10]} "
        if kind == 8:
            return f" version 1.2.{digits[0]}.4.5 and order SO{digits[:11]}X "
        if kind == 9:
            return f" 卡号{digits[:16]} "  # Luhn fails about nine times in ten
        if kind == 10:
            return f" IP 999.{digits[0]}.1.1 ts 12:30:45 "
        return f"手机：1{r.choice('3456789')}{digits[:9]}"

    def code(self) -> str:
        fence = "```python\ndef f(x):\n    return  x  *  2\n\n\n\n    # done   \n"
        return "\n" + fence + ("```\n" if self.rng.random() < 0.8 else "")

    def text(self, target: int) -> str:
        r = self.rng
        out: list[str] = []
        size = 0
        while size < target:
            pick = r.random()
            if pick < 0.8 and self.zh_share is not None:
                piece = self.zh() if r.random() < self.zh_share else self.en()
            elif pick < 0.45:
                piece = self.zh()
            elif pick < 0.8:
                piece = self.en()
            elif pick < 0.88:
                piece = r.choice(_FULLWIDTH_WORDS)
            elif pick < 0.93:
                piece = r.choice(_ODD_BITS)
            elif pick < 0.98:
                piece = self.pii()
            else:
                piece = self.code()
            out.append(piece)
            size += len(piece)
        return "".join(out)

    def record(self) -> str:
        r = self.rng
        rec: dict = {"instruction": self.text(r.randint(20, 60)),
                     "input": self.text(r.randint(0, 80)) if r.random() < 0.3 else "",
                     "output": self.text(r.randint(330, 430))}
        if r.random() < 0.2:
            rec["system"] = "你是一名金融助理。You are a finance assistant."
        if r.random() < 0.1:
            rec["history"] = [[self.text(30), self.text(80)]]
        bad = r.random()
        if bad < 0.01:  # non_text: a base64 attachment
            rec["output"] = "附件：" + "QUJDREVGR0hJSktMTU5PUA" * 40
        elif bad < 0.015:
            rec["output"] = " \u200b\u3000 "  # empty_field once normalised
        elif bad < 0.02:
            rec["output"] += r.choice(_SPECIAL)
        elif bad < 0.022:
            rec["output"] = 42  # wrong_type
        elif bad < 0.024:
            return json.dumps(rec, ensure_ascii=False)[:-3]  # unparseable line
        return json.dumps(rec, ensure_ascii=r.random() < 0.1)


def write_corpus(path: Path, records: int, seed: int) -> None:
    """`records` lines; 5% are exact copies of an earlier line."""
    corpus = Corpus(seed)
    lines: list[str] = []
    for _ in range(records):
        if lines and corpus.rng.random() < 0.05:
            lines.append(corpus.rng.choice(lines))
        else:
            lines.append(corpus.record())
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


# ---------------------------------------------------------------- the worker


def _clean_modules():
    """danlu's clean, records and text modules in whichever layout the tree
    under test has: `danlu.data.*`, or the flat `danlu.*` of older revisions
    (the baseline)."""
    import importlib

    try:
        return tuple(importlib.import_module(f"danlu.data.{m}") for m in ("clean", "records", "text"))
    except ModuleNotFoundError:
        return tuple(importlib.import_module(f"danlu.{m}") for m in ("clean", "records", "text"))


def _worker_pure(corpus: Path, repeat: int) -> dict:
    """Runs inside a process whose PYTHONPATH selects the implementation."""
    from collections import Counter

    import danlu
    from danlu.config import CleanConfig, from_mapping, load_config

    clean, records, text_stats = _clean_modules()
    clean_messages, FieldMap, RecordError = clean.clean_messages, records.FieldMap, records.RecordError
    to_messages = records.to_messages
    cjk_share, detect_language = text_stats.cjk_share, text_stats.detect_language
    non_text_share = text_stats.non_text_share

    cfg = from_mapping(CleanConfig, load_config(None)["clean"])
    unmasked = from_mapping(CleanConfig, {**load_config(None)["clean"], "mask_pii": False})
    raws = []
    for line in corpus.read_text(encoding="utf-8").splitlines():
        try:
            raws.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    fields = FieldMap()
    # Warm up untimed: the character tables are built once per process (~0.1 s),
    # which the cli pass counts.
    for raw in raws[:100]:
        with contextlib.suppress(RecordError):
            clean_messages(to_messages(raw, "alpaca", fields), cfg, Counter())
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        digest, pii = _pure_pass(raws, cfg)
        best = min(best, time.process_time() - t0)
    digest.update(json.dumps(sorted(pii.items())).encode())
    # Untimed: the same with masking off, which must not change at all.
    digest_unmasked, _ = _pure_pass(raws, unmasked)
    # The text statistics on every raw and cleaned text, untimed: the clean
    # config of the CLI never asks for a language, so check it here.
    probe = hashlib.sha256()
    for raw in raws:
        for value in raw.values() if isinstance(raw, dict) else ():
            if isinstance(value, str):
                for text in (value, value.strip()):
                    stats = (non_text_share(text), cjk_share(text), detect_language(text))
                    probe.update(repr(stats).encode("utf-8", "surrogatepass"))
    return {"package": danlu.__file__, "records": len(raws), "seconds": best,
            "digest": digest.hexdigest(), "digest_unmasked": digest_unmasked.hexdigest(),
            "probe": probe.hexdigest(),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _pure_pass(raws: list, cfg) -> tuple:
    """to_messages + clean_messages + dumps on every record: (digest, PII counts)."""
    from collections import Counter

    clean, records, _ = _clean_modules()
    clean_messages, FieldMap, RecordError = clean.clean_messages, records.FieldMap, records.RecordError
    dumps, to_messages = records.dumps, records.to_messages

    digest, pii, fields = hashlib.sha256(), Counter(), FieldMap()
    for raw in raws:
        try:
            messages = clean_messages(to_messages(raw, "alpaca", fields), cfg, pii)
        except RecordError as err:
            digest.update(f"{err.reason}|{err.field}|{err.detail}\n".encode())
            continue
        digest.update(dumps({"messages": messages}).encode("utf-8"))
    return digest, pii


# ---------------------------------------------------------------- the driver


def _env(src: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(src), DANLU_TRACKING_DISABLED="1")
    env.pop("DANLU_AUDIT_LOG", None)  # a benchmark is no pipeline job
    return env


def run_pure(src: Path, corpus: Path, repeat: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", str(corpus), "--repeat", str(repeat)]
    proc = subprocess.run(cmd, env=_env(src), capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"the pure pass failed under {src}:\n{proc.stderr}")
    result = json.loads(proc.stdout.splitlines()[-1])
    if not Path(result["package"]).is_relative_to(src):
        raise SystemExit(f"worker imported {result['package']}, not the tree under {src}")
    return result


def run_cli(src: Path, corpus: Path, out: Path) -> dict:
    """`danlu clean` in a child process: its CPU and wall time, its peak RSS."""
    cmd = [sys.executable, "-c", "import sys; from danlu.cli import main; sys.exit(main())",
           "clean", str(corpus), "--out", str(out)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=_env(src), cwd=out.parent,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"danlu clean failed:\n{proc.stderr.read().decode()}")
    digests = {n: hashlib.sha256((out / n).read_bytes()).hexdigest() for n in OUTPUTS}
    return {"seconds": usage.ru_utime + usage.ru_stime, "wall_seconds": seconds,
            "digests": digests, "kept_and_rejected": _decisions(out),
            "pii_masked_by_type": json.loads((out / "stats.json").read_text())[
                "pii_masked_by_type"],
            "peak_rss_mb": usage.ru_maxrss / 1024}


def _decisions(out: Path) -> str:
    """A digest of which records were kept (ids) and rejected (source, reason,
    field): what masking must not change."""
    digest = hashlib.sha256()
    for name, keys in (("records.jsonl", ("id",)),
                       ("rejects.jsonl", ("source", "reason", "field"))):
        with open(out / name, encoding="utf-8") as fh:
            for line in fh:
                record = json.loads(line)
                digest.update(json.dumps([record[k] for k in keys]).encode() + b"\n")
    return digest.hexdigest()


def extract_baseline(rev: str, dest: Path) -> Path:
    # The schema too: config.py finds it beside the package in a source tree.
    paths = ["src/danlu", "workflow/schemas"]
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, *paths],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest / "src"


def measure(name: str, src: Path, corpus: Path, tmp: Path, repeat: int) -> dict:
    print(f"{name}: pure pass ...", file=sys.stderr, flush=True)
    pure = run_pure(src, corpus, repeat)
    print(f"{name}: danlu clean ...", file=sys.stderr, flush=True)
    cli = run_cli(src, corpus, tmp / name / "out")
    return {"pure": pure, "cli": cli}


def summary(run: dict, n: int, mb: float) -> dict:
    pure, cli = run["pure"], run["cli"]
    return {
        "pure_records_per_s": round(pure["records"] / pure["seconds"]),
        "cli_records_per_s": round(n / cli["seconds"]),
        "cli_mb_per_s": round(mb / cli["seconds"], 2),
        "cli_cpu_seconds": round(cli["seconds"], 2),
        "cli_wall_seconds": round(cli["wall_seconds"], 2),
        "peak_rss_mb": round(max(pure["peak_rss_mb"], cli["peak_rss_mb"]), 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=1, help="pure pass: best of this many")
    parser.add_argument("--baseline-rev", default=BASELINE_REV)
    parser.add_argument("--keep", help="write the corpus and outputs here instead of a temp dir")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker_pure(Path(args.worker), args.repeat)))
        return 0

    with tempfile.TemporaryDirectory(prefix="bench_clean-") as scratch:
        tmp = Path(args.keep or scratch).resolve()
        for sub in ("baseline", "new"):
            (tmp / sub).mkdir(parents=True, exist_ok=True)
        corpus = tmp / "corpus.jsonl"
        write_corpus(corpus, args.records, args.seed)
        mb = corpus.stat().st_size / 1e6
        base_src = extract_baseline(args.baseline_rev, tmp / "baseline")
        base = measure("baseline", base_src, corpus, tmp, args.repeat)
        new = measure("new", ROOT / "src", corpus, tmp, args.repeat)

    n = args.records
    same = {
        "pure_outputs_unmasked": base["pure"]["digest_unmasked"] == new["pure"]["digest_unmasked"],
        "text_stats": base["pure"]["probe"] == new["pure"]["probe"],
        "kept_and_rejected": base["cli"]["kept_and_rejected"] == new["cli"]["kept_and_rejected"],
    }
    masked_same = {
        "pure_outputs": base["pure"]["digest"] == new["pure"]["digest"],
        **{n_: base["cli"]["digests"][n_] == new["cli"]["digests"][n_] for n_ in OUTPUTS},
    }
    result = {
        "records": n, "corpus_mb": round(mb, 2), "seed": args.seed,
        "baseline_rev": args.baseline_rev,
        "baseline": summary(base, n, mb), "new": summary(new, n, mb),
        "speedup_pure": round(base["pure"]["seconds"] / new["pure"]["seconds"], 2),
        "speedup_cli": round(base["cli"]["seconds"] / new["cli"]["seconds"], 2),
        "identical": same,
        "masked_identical": masked_same,
        "pii_masked_by_type": {"baseline": base["cli"]["pii_masked_by_type"],
                               "new": new["cli"]["pii_masked_by_type"]},
    }
    print(json.dumps(result))
    assert all(same.values()), f"outputs differ from the baseline: {same}"
    return 0


if __name__ == "__main__":
    sys.exit(main())
