"""The whole benchmark suite in one command: every figure beside its in-run baseline, and the ratio.

    python benchmarks/run.py            # the full suite (about 15 minutes on 2 cores)
    python benchmarks/run.py --quick    # under 2 minutes: what CI runs
    python benchmarks/run.py --only train,generate

Each benchmark runs in its own fresh process (so none pays for another's
imports or memory), prints its own details, and writes its JSON under
``benchmarks/results/``. This runner then prints one table of all figures
and writes ``benchmarks/results/summary.json``.

Timings on a shared machine are noisy, so nothing here fails on an absolute
time. The quick mode fails (exit 1) only on **regression guards**, each
measured twice before it counts (a timing guard that fails once is re-run):
ratios off by a wide margin (the GUI costing more than 20 % of training speed,
the GUI thread stalling (p99 >= 100 ms) or a cancel taking 2 s while a corpus
is opened and stored, the KV cache no faster than re-running the prefix,
training at under 70 % of the reference trainer's speed, the token store at
under half a bare encode loop's speed) or facts that do not depend on timing
(greedy output differing with and without the cache, torch imported before the
window shows, a cancelled store build not cancelled or leaving files behind,
our GPT and transformers' giving different losses on the same weights, a LoRA
checkpoint not smaller than a full one).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
FACT_GUARDS = {"greedy output differs", "torch was imported before the window showed",
               "ours and transformers give different losses on the same weights",
               "the LoRA checkpoint is not smaller than the full one"}  # not timings: never re-run
FACT_PREFIXES = ("a cancel did not cancel or left files behind",)


@dataclass
class Row:
    figure: str
    baseline: str
    ours: str
    ratio: float | None
    bar: str
    guard: str = ""  # non-empty: this row is a regression guard, and this says why it failed
    failed: bool = False


def _num(x: float, unit: str = "") -> str:
    if x is None:
        return "–"
    if abs(x) >= 1000:
        return f"{x:,.0f}{unit}"
    return f"{x:.3g}{unit}"


def tokenize_rows(data: dict) -> list[Row]:
    rows = []
    for r in data["results"]:
        speed = r["bar"].endswith("(speed)")
        failed = speed and r["name"].startswith("bpe") and r["ratio"] < 0.5
        rows.append(Row(r["name"], _num(r["baseline"], " " + r["unit"]), _num(r["ours"], " " + r["unit"]), r["ratio"],
                        r["bar"], "token store under half the speed of a bare encode loop" if failed else "", failed))
    return rows


def train_rows(data: dict) -> list[Row]:
    ref, ours = data["reference"], data["ours"]
    ratio = data["speedup"]
    failed = ratio < 0.7
    rows = [Row("training, baby GPT on CPU (tokens/s, median)", _num(ref["tokens_per_s"]), _num(ours["tokens_per_s"]),
                ratio, ">= 1 (speed)", "training under 70 % of the reference trainer's speed" if failed else "", failed)]
    if "ours_without_batch_views" in data:
        bare = data["ours_without_batch_views"]
        rows.append(Row("training with batch views vs without", _num(bare["tokens_per_s"]), _num(ours["tokens_per_s"]),
                        bare["ms_per_iter"] / ours["ms_per_iter"], "≈ 1 (no cost)"))
    return rows


def generate_rows(data: dict) -> list[Row]:
    rows = []
    for r in data["results"]:
        cache = "no cache" in r["name"]
        failed = (cache and r["ratio"] < 1.5) or not r["identical_greedy"]
        why = "greedy output differs" if not r["identical_greedy"] else "KV cache no faster than no cache"
        bar = (">= 5 (speed)" if cache else ">= 1 (speed)") + ", same greedy"
        rows.append(Row(f"{r['name']} (tok/s; 1st token {r['first_token_ms']:.0f} ms)", _num(r["baseline_tokens_per_s"]),
                        _num(r["tokens_per_s"]), r["ratio"], bar, why if failed else "", failed))
    return rows


def speculative_rows(data: dict) -> list[Row]:
    """Reported, not guarded: the speed-up depends on how well heads 2..K learned, and greedy text may part at
    an exact near-tie (float noise between T = K and T = 1 passes)."""
    rows = []
    for r in data["results"]:
        rows.append(Row(f"speculative: {r['name']} (tok/s; {r['mean_accepted_per_pass']:.2f} drafts accepted/pass, "
                        f"same greedy {r['identical_greedy']})", _num(r["plain_tokens_per_s"]),
                        _num(r["speculative_tokens_per_s"]), r["ratio"], "> 1 (speed), reported"))
    return rows


def startup_rows(data: dict) -> list[Row]:
    r = data["results"]
    failed = bool(r["torch_before_show"])
    return [
        Row("start-up: window shown (s), bare PySide6 -> app", _num(r["bare_window_s"], " s"), _num(r["app_window_s"], " s"),
            r["bare_window_s"] / r["app_window_s"], "app < 1.5 s; torch after show",
            "torch was imported before the window showed" if failed else "", failed),
        *([Row("start-up: Start (F5) usable (s), bare window shown -> app", _num(r["bare_window_s"], " s"),
               _num(r["start_usable_s"], " s"), r["bare_window_s"] / r["start_usable_s"], "app < 1.5 s"),
           Row("start-up: F5 at first paint -> run preparing (s)", "", _num(r["f5_preparing_s"], " s"), None, "reported")]
          if "start_usable_s" in r else []),
        Row("idle memory (RSS), bare PySide6 -> app", _num(r["bare_idle_rss_mb"], " MB"), _num(r["app_idle_rss_mb"], " MB"),
            None, "reported"),
    ]


def gui_rows(data: dict) -> list[Row]:
    r = data["results"]
    failed = r["ratio"] < 0.8
    rows = [Row("GUI tax: tokens/s CLI defaults -> in the window", _num(r["headless_tokens_per_s"]),
                _num(r["window_tokens_per_s"]), r["ratio"], ">= 0.9",
                "the GUI costs more than 20 % of training speed" if failed else "", failed)]
    if r.get("gap_ms_p99") is not None:
        rows.append(Row("GUI thread: 10 ms timer gaps p50 / p99 / max", "10 ms",
                        f"{r['gap_ms_p50']:.0f} / {r['gap_ms_p99']:.0f} / {r['gap_ms_max']:.0f} ms", None, "p99 < 50 ms"))
    if "points" not in r:  # --training-only
        return rows
    rows.append(Row(f"curves with {r['points']:,} steps: redraw median / p99", "",
                    f"{r['frame_ms_median']:.1f} / {r['frame_ms_p99']:.1f} ms", None, "< 16 ms"))
    rows.append(Row(f"curves with {r['points']:,} steps: RSS growth", "", f"{r['rss_growth_mb']:.1f} MB", None, "< 50 MB"))
    return rows


def finetune_rows(data: dict) -> list[Row]:
    speed, memory = data["speed"], data["memory"]
    hf, ours, lora = speed["transformers"], speed["ours"], speed["ours LoRA r=8"]
    full_m, lora_m = memory["full"], memory["lora"]
    shape = "GPT-2 124M shape" if data["shape"] == "gpt2-124m" else f"{data['shape']} GPT-2 shape"
    same, smaller = bool(data["same_loss"]), bool(data["lora_checkpoint_smaller"])
    return [
        Row(f"fine-tuning step, {shape}: transformers -> ours (tokens/s)", _num(hf["tokens_per_s"]),
            _num(ours["tokens_per_s"]), data["ratio_ours_vs_transformers"], ">= 1 (speed), same loss",
            "" if same else "ours and transformers give different losses on the same weights", not same),
        Row(f"fine-tuning step, {shape}: full -> LoRA r=8 (tokens/s)", _num(ours["tokens_per_s"]),
            _num(lora["tokens_per_s"]), data["ratio_lora_vs_full"], "reported"),
        Row("fine-tuning peak RSS: full -> LoRA r=8", _num(full_m["peak_rss_mb"], " MB"), _num(lora_m["peak_rss_mb"], " MB"),
            lora_m["peak_rss_mb"] / full_m["peak_rss_mb"], "reported (< 1 at 124M)"),
        Row("fine-tuning checkpoint: full -> LoRA r=8", _num(full_m["checkpoint_bytes"] / 1e6, " MB"),
            _num(lora_m["checkpoint_bytes"] / 1e6, " MB"), lora_m["checkpoint_bytes"] / full_m["checkpoint_bytes"],
            "< 1 (size)", "" if smaller else "the LoRA checkpoint is not smaller than the full one", not smaller),
    ]


def library_rows(data: dict) -> list[Row]:
    n = data["runs"]
    return [
        Row(f"run library: list {n:,} runs, every log read -> no summaries yet (s)", _num(data["baseline_s"], " s"),
            _num(data["cold_s"], " s"), data["baseline_s"] / data["cold_s"], "reported"),
        Row(f"run library: list {n:,} runs, every log read -> summaries current (s)", _num(data["baseline_s"], " s"),
            _num(data["warm_s"], " s"), data["baseline_s"] / data["warm_s"], "< 1 s for 1,000"),
        Row(f"Runs pane with {data['rows']:,} runs: RSS growth", "", f"{data['rss_after_mb'] - data['rss_before_mb']:.1f} MB",
            None, "reported"),
        Row("follow: a line written -> in the window (p50 / max)", "",
            f"{data['follow_latency_ms_p50']:.0f} / {data['follow_latency_ms_max']:.0f} ms", None, "< 1 s"),
    ]


def gui_load_rows(data: dict) -> list[Row]:
    r = data["results"]
    g, cancels = r["gaps"], r["cancels"]
    worst = r["worst_cancel_s"]
    stalled = g["gap_ms_p99"] >= 100 or (worst is not None and worst >= 2)  # twice the bars: a regression
    unclean = not (r["all_cancelled"] and r["clean_after_cancel"])
    rows = [Row(f"window under load ({r['size_mb']:,.0f} MB corpus): GUI gaps p50 / p99 / max", "10 ms",
                f"{g['gap_ms_p50']:.0f} / {g['gap_ms_p99']:.0f} / {g['gap_ms_max']:.0f} ms", None, "p99 < 50 ms",
                "the GUI thread stalls while a corpus is opened or its store built" if stalled else "", stalled),
            Row("window under load: Cancel/Stop -> cancelled (scan, tokenizer, ids), worst", "",
                f"{worst * 1000:.0f} ms" if worst is not None else "–", None, "< 1 s, nothing left",
                "a cancel did not cancel or left files behind: " + ", ".join(
                    f"{k}: {c['answer']}" for k, c in cancels.items()) if unclean else "", unclean)]
    if r.get("ratio"):
        rows.append(Row("window under load: store build, headless prepare() -> window (MB/s)",
                        _num(r["headless_mb_per_s"]), _num(r["build_mb_per_s"]), r["ratio"], "reported"))
    return rows


@dataclass
class Bench:
    name: str
    script: str
    result: str
    rows: object
    quick_args: tuple[str, ...] = ("--quick",)
    full_args: tuple[str, ...] = ()


BENCHES = [
    Bench("tokenize", "bench_tokenize.py", "tokenize.json", tokenize_rows),
    Bench("train", "bench_train.py", "train.json", train_rows, ("--steps", "100", "--window", "20", "--warmup", "20", "--views"),
          ("--views",)),
    Bench("generate", "bench_generate.py", "generate.json", generate_rows),
    Bench("speculative", "bench_speculative.py", "speculative.json", speculative_rows),
    Bench("startup", "bench_startup.py", "startup.json", startup_rows),
    Bench("gui", "bench_gui.py", "gui.json", gui_rows),
    Bench("gui_load", "bench_gui_load.py", "gui_load.json", gui_load_rows),
    Bench("finetune", "bench_finetune.py", "finetune.json", finetune_rows),
    Bench("library", "bench_library.py", "library.json", library_rows),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="the short suite (under 2 minutes): what CI runs")
    ap.add_argument("--only", default="", help="comma-separated: " + ", ".join(b.name for b in BENCHES))
    args = ap.parse_args()
    wanted = {w.strip() for w in args.only.split(",") if w.strip()}
    unknown = wanted - {b.name for b in BENCHES}
    if unknown:
        ap.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "QT_QPA_PLATFORM": os.environ.get("QT_QPA_PLATFORM", "offscreen"), "PYTHONUNBUFFERED": "1"}
    rows: list[Row] = []
    problems: list[str] = []
    times: dict[str, float] = {}
    start = time.perf_counter()
    def run_one(bench: Bench) -> tuple[int, list[Row]]:
        result = RESULTS / bench.result
        result.unlink(missing_ok=True)
        extra = ["--out", str(result)] if bench.name == "train" else []
        cmd = [sys.executable, str(ROOT / "benchmarks" / bench.script), *(bench.quick_args if args.quick else bench.full_args), *extra]
        print(f"\n=== {bench.name}: {' '.join(cmd[1:])}", flush=True)
        t = time.perf_counter()
        code = subprocess.call(cmd, cwd=ROOT, env=env)
        times[bench.name] = times.get(bench.name, 0.0) + time.perf_counter() - t
        if code == 0 and not result.is_file():
            code = -1
        return code, bench.rows(json.loads(result.read_text())) if result.is_file() else []

    for bench in BENCHES:
        if wanted and bench.name not in wanted:
            continue
        code, got = run_one(bench)
        failed = [r for r in got if r.failed]
        if (code != 0 or failed) and not any(r.guard in FACT_GUARDS or r.guard.startswith(FACT_PREFIXES) for r in failed):
            # one noisy window on a shared machine is not a regression: measure again, judge the second time
            print(f"\n=== {bench.name}: a guard failed (status {code}); measuring once more", flush=True)
            code, got = run_one(bench)
        rows += got
        if code != 0:
            problems.append(f"{bench.name}: the benchmark exited with status {code}" if code > 0 else f"{bench.name}: wrote no {bench.result}")
    total = time.perf_counter() - start

    print(f"\n=== summary ({'quick' if args.quick else 'full'} suite, {total:.0f} s; "
          + ", ".join(f"{k} {v:.0f} s" for k, v in times.items()) + ")\n")
    w = max([len(r.figure) for r in rows] + [10])
    print(f"{'figure':<{w}}  {'baseline':>14}  {'ours':>18}  {'ratio':>7}  bar")
    for r in rows:
        ratio = "" if r.ratio is None else f"{r.ratio:.2f}"
        flag = "   << REGRESSION" if r.failed else ""
        print(f"{r.figure:<{w}}  {r.baseline:>14}  {r.ours:>18}  {ratio:>7}  {r.bar}{flag}")
    problems += [f"{r.figure}: {r.guard}" for r in rows if r.failed]
    (RESULTS / "summary.json").write_text(json.dumps({
        "when": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": platform.platform(), "cpus": os.cpu_count(),
        "quick": args.quick, "seconds": total, "rows": [vars(r) for r in rows], "problems": problems,
    }, indent=2))
    if problems:
        print("\nbenchmark regressions:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    print("\nno regressions (ratios are reported, not judged, except the wide-margin guards)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
