"""The run library at scale: listing 1,000 runs, the Runs pane's memory, and how soon a followed run's new line
reaches the window.

    python benchmarks/bench_library.py            # 1,000 runs of 2,000 logged steps each
    python benchmarks/bench_library.py --quick    # 200 runs of 300 steps (about 20 s)

1. Builds N run folders from one real tiny run (its ``run.json``, ``tokenizer.json`` and checkpoint), each
   with a ``metrics.jsonl`` of S train records and S/10 evals, as a run of that length leaves.
2. Lists them in fresh processes (one per measurement, best of 3):
   - **baseline**: what a library without summaries must do — read every run's whole log
     (``run_summary``, as ``shiftstudio info`` does);
   - **cold**: ``list_runs`` with no ``summary.json`` anywhere (it builds and writes them: the first listing
     after an upgrade, or of runs copied from elsewhere);
   - **warm**: ``list_runs`` again (summaries current: only ``run.json``, ``summary.json``, two ``stat``s and
     the newest checkpoint's ``state.json`` per run). The issue's bar: under 1 s for 1,000 runs.
3. The Runs pane (offscreen) showing those N runs: RSS before and after, and the time to fill the table.
4. Follow latency: a run "trained" by this process (its lock held), followed by a window through the real
   controller; a train record is appended at random moments and timed until the window's metrics store has
   it (then the curves draw it at their next redraw tick, ``REDRAW_MS``).

Writes ``benchmarks/results/library.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LIST_CODE = """
import sys, time
t = time.perf_counter()
mode, folder = sys.argv[1], sys.argv[2]
if mode == "baseline":
    from pathlib import Path
    from shiftstudio.core.runs.folder import run_summary
    t = time.perf_counter()
    rows = [run_summary(p) for p in sorted(Path(folder).iterdir()) if (p / "run.json").exists()]
else:
    from shiftstudio.core.runs.library import list_runs
    t = time.perf_counter()
    rows = list_runs([folder])
print(len(rows), time.perf_counter() - t)
"""


def make_tiny_run(work: Path) -> Path:
    """One real run folder (4 steps on a tiny model): the template of every listed run."""
    from shiftstudio.config import RunConfig
    from shiftstudio.core.runs.folder import prepare_and_create
    from shiftstudio.core.train.trainer import Trainer

    corpus = work / "corpus.txt"
    corpus.write_text((ROOT / "resources" / "tinyshakespeare.txt").read_text(encoding="utf-8")[:20_000], encoding="utf-8")
    config = RunConfig().updated({
        "corpus": [str(corpus)], "n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 16, "batch_size": 2,
        "max_iters": 4, "eval_interval": 2, "eval_iters": 1, "log_interval": 2, "warmup_iters": 0,
        "lr_decay_iters": 4, "device": "cpu", "compile": False,
    })
    run = prepare_and_create(config, out_dir=work / "template")
    list(Trainer(run).run())
    return run


def build_runs(template: Path, folder: Path, n: int, steps: int) -> None:
    record = json.loads((template / "run.json").read_text())
    rng = random.Random(0)
    for i in range(n):
        run = folder / f"run-{i:04d}"
        shutil.copytree(template, run, ignore=shutil.ignore_patterns("metrics.jsonl", "summary.json"))
        record["name"] = run.name
        record["created"] = f"2026-11-{1 + i % 28:02d}T{i % 24:02d}:00:00+00:00"
        (run / "run.json").write_text(json.dumps(record, indent=2))
        lines = [json.dumps({"kind": "started", "step": 0, "max_iters": steps, "device": "CPU (2 threads, float32)",
                             "run_dir": str(run), "n_params": 5000, "dtype": "float32", "tokens_per_step": 32,
                             "time_s": 0.0, "tokens": 0})]
        loss = 4.0 + rng.random()
        for step in range(1, steps + 1):
            loss *= 0.9995
            lines.append(json.dumps({"kind": "train", "step": step, "loss": loss, "lr": 1e-3, "grad_norm": 1.0,
                                     "tokens_per_s": 9000.0, "tokens": 32 * step, "time_s": step * 0.05,
                                     "ms_per_iter": 50.0, "max_iters": steps}, separators=(",", ":")))
            if step % 10 == 0:
                lines.append(json.dumps({"kind": "eval", "step": step, "tokens": 32 * step, "time_s": step * 0.05,
                                         "train_loss": loss, "val_loss": loss + 0.1, "val_ppl": 50.0, "train_ppl": 40.0,
                                         "best_val_loss": loss + 0.1, "is_best": True}, separators=(",", ":")))
        lines.append(json.dumps({"kind": "finished", "step": steps, "reason": "completed", "best_val_loss": loss + 0.1,
                                 "run_dir": str(run), "time_s": steps * 0.05, "tokens": 32 * steps}))
        (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")


def list_in_fresh_process(mode: str, folder: Path, env: dict) -> tuple[int, float]:
    out = subprocess.run([sys.executable, "-c", LIST_CODE, mode, str(folder)], capture_output=True, text=True, env=env,
                         cwd=ROOT, check=True).stdout.split()
    return int(out[0]), float(out[1])


def pane_memory_and_follow(folder: Path, env_home: Path, template: Path, samples: int) -> dict:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_gui import rss_mb
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([])
    from shiftstudio.gui.main_window import MainWindow
    from shiftstudio.gui.settings import Settings

    import torch  # noqa: F401 - loaded before the measurements (the window's device probe loads it anyway)

    def pump(seconds: float, until=lambda: False) -> None:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end and not until():
            app.processEvents()
            time.sleep(0.001)

    window = MainWindow(Settings(env_home / "gui.json"))
    window.show()
    window.build()
    pump(0.5)
    library = window.ctx.library
    library.add_folder(folder)
    pump(60, lambda: not library.refreshing and len(library.entries) > 0)
    pane = window.panes["runs"]
    before = rss_mb()
    start = time.perf_counter()
    window.raise_pane("runs")
    pump(60, lambda: pane.model.rowCount() >= len(library.entries) > 0)
    fill_s = time.perf_counter() - start
    pump(0.5)
    after = rss_mb()
    rows = pane.model.rowCount()

    # follow latency: this process "trains" a copy of the template (holds its lock) and appends lines
    from shiftstudio.core.runs.lock import RunLock

    run = env_home / "followed"
    shutil.copytree(template, run)
    log = run / "metrics.jsonl"
    lock = RunLock.acquire(run, "the benchmark")
    runs = window.ctx.runs
    window.open_run(run)
    pump(30, lambda: bool(runs.following) and runs.state == "running")
    latencies = []
    rng = random.Random(1)
    step = 1000
    for _ in range(samples):
        pump(rng.uniform(0.05, 0.4))
        step += 1
        with open(log, "a") as f:
            written = time.perf_counter()
            f.write(json.dumps({"kind": "train", "step": step, "loss": 1.0, "lr": 1e-3, "grad_norm": 1.0,
                                "tokens_per_s": 1.0, "tokens": step, "time_s": float(step), "ms_per_iter": 1.0}) + "\n")
        pump(5, lambda: len(runs.metrics.steps) and runs.metrics.steps["step"][-1] >= step)
        latencies.append(time.perf_counter() - written)
    runs.stop_following()
    pump(2, lambda: not runs.thread_running)
    lock.release()
    from shiftstudio.gui.plots import REDRAW_MS  # noqa: PLC0415

    window.close()
    latencies.sort()
    return {"rows": rows, "rss_before_mb": before, "rss_after_mb": after, "fill_s": fill_s,
            "follow_latency_ms_p50": 1000 * latencies[len(latencies) // 2],
            "follow_latency_ms_max": 1000 * latencies[-1], "follow_samples": len(latencies), "redraw_ms": REDRAW_MS}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--runs", type=int, default=0)
    ap.add_argument("--steps", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "library.json"))
    args = ap.parse_args()
    n = args.runs or (200 if args.quick else 1000)
    steps = args.steps or (300 if args.quick else 2000)
    work = Path(tempfile.mkdtemp(prefix="bench-library-"))
    home = work / "home"
    os.environ["SHIFTSTUDIO_HOME"] = str(home)
    env = {**os.environ}
    try:
        template = make_tiny_run(work)
        folder = work / "runs"
        folder.mkdir()
        t = time.perf_counter()
        build_runs(template, folder, n, steps)
        log_mb = sum(p.stat().st_size for p in folder.glob("*/metrics.jsonl")) / 1e6
        print(f"built {n} runs of {steps} logged steps ({log_mb:.0f} MB of logs) in {time.perf_counter() - t:.0f} s")
        baseline = min(list_in_fresh_process("baseline", folder, env)[1] for _ in range(2))
        cold = []
        for _ in range(3):
            for summary in folder.glob("*/summary.json"):
                summary.unlink()
            cold.append(list_in_fresh_process("list", folder, env)[1])
        warm = [list_in_fresh_process("list", folder, env)[1] for _ in range(3)]
        listed = list_in_fresh_process("list", folder, env)[0]
        print(f"\nlisting {listed} runs (fresh process each, best of runs):")
        print(f"  baseline (read every whole log)   {baseline:7.3f} s")
        print(f"  cold (no summaries: build them)   {min(cold):7.3f} s   {baseline / min(cold):5.1f}x")
        print(f"  warm (summaries current)          {min(warm):7.3f} s   {baseline / min(warm):5.1f}x   (bar: < 1 s for 1,000)")
        gui = pane_memory_and_follow(folder, home, template, 10 if args.quick else 30)
        print(f"\nRuns pane with {gui['rows']} runs: RSS {gui['rss_before_mb']:.0f} -> {gui['rss_after_mb']:.0f} MB "
              f"(+{gui['rss_after_mb'] - gui['rss_before_mb']:.1f} MB), table filled in {gui['fill_s']:.2f} s")
        print(f"follow: a line written -> in the window's metrics: p50 {gui['follow_latency_ms_p50']:.0f} ms, "
              f"max {gui['follow_latency_ms_max']:.0f} ms over {gui['follow_samples']} lines "
              f"(+ up to {gui['redraw_ms']} ms to the curves' next redraw)")
        result = {"benchmark": "library", "runs": n, "steps": steps, "log_mb": log_mb, "baseline_s": baseline,
                  "cold_s": min(cold), "warm_s": min(warm), "warm_all_s": warm, "cold_all_s": cold, **gui}
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2))
        print(f"wrote {args.out}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
