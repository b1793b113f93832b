"""What comparing runs costs: five runs of 50,000 steps overlaid vs one run's curves, redraw by redraw.

    python benchmarks/bench_compare.py [--runs 5] [--steps 50000] [--quick]

Builds synthetic run folders (``run.json`` + ``metrics.jsonl``: a train
record every step, an eval and a sample every 500 steps) in a temporary
folder, opens :class:`~shiftstudio.gui.compare_view.CompareView` on all of
them offscreen and the Train pane's :class:`~shiftstudio.gui.plots.CurvesView`
on the first one (the single-run baseline, measured in the same process),
both 1400 x 800, and times the same interactions on each: panning a zoomed
view, zooming, smoothing changes and x-axis switches. A frame is the
action plus the paint it causes (``processEvents``), as in ``bench_gui.py``.
Target: p99 under one 60 Hz frame (16.7 ms) for the overlay, as for one run.
Also reported: how long ``set_runs`` takes to read the runs (in its worker
thread) until they are on screen.

Results go to ``benchmarks/results/compare.json``.
"""

from __future__ import annotations

import argparse
import atexit
import json
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

FRAME_MS = 1000 / 60
EVAL_EVERY = 500
TOKENS_PER_STEP = 768


def make_run(folder: Path, index: int, steps: int) -> Path:
    """A run folder whose metrics look like a real run's: a noisy falling loss, evals and samples."""
    import numpy as np

    from shiftstudio.config import RunConfig

    config = RunConfig().updated({"learning_rate": 1e-3 * (index + 1), "n_layer": 4 + index % 2, "max_iters": steps,
                                  "lr_decay_iters": steps})
    folder.mkdir(parents=True)
    record = {"schema_version": 1, "name": folder.name, "created": "", "config": config.to_dict(),
              "data": {"vocab_size": 65, "train_tokens": 1_000_000, "val_tokens": 100_000}}
    (folder / "run.json").write_text(json.dumps(record), encoding="utf-8")
    rng = np.random.default_rng(index)
    s = np.arange(1, steps + 1)
    loss = 3.0 * np.exp(-s / (8_000 + 2_000 * index)) + 1.2 + 0.04 * index + 0.08 * rng.standard_normal(steps)
    grad = 0.5 + 0.1 * rng.standard_normal(steps) ** 2
    lines = []
    for i in range(steps):
        step = i + 1
        lines.append(json.dumps({"kind": "train", "step": step, "loss": float(loss[i]), "lr": 1e-3, "grad_norm": float(grad[i]),
                                 "tokens_per_s": 15_000.0, "tokens": step * TOKENS_PER_STEP, "time_s": step * 0.05,
                                 "ms_per_iter": 50.0}, separators=(",", ":")))
        if step % EVAL_EVERY == 0:
            val = float(loss[max(0, i - 50) : i + 1].mean()) + 0.1
            lines.append(json.dumps({"kind": "eval", "step": step, "tokens": step * TOKENS_PER_STEP, "time_s": step * 0.05 + 0.5,
                                     "train_loss": val - 0.1, "val_loss": val, "val_ppl": math.exp(val),
                                     "train_ppl": math.exp(val - 0.1), "val_loss_per_horizon": [val]}))
            lines.append(json.dumps({"kind": "sample", "step": step, "prompt": "", "text": f"run {index} at step {step}"}))
    lines.append(json.dumps({"kind": "finished", "step": steps, "reason": "completed", "time_s": steps * 0.05 + 1.0,
                             "tokens": steps * TOKENS_PER_STEP}))
    (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def interactions(app: Any, view: Any, box: Any, span: float, rounds: int) -> dict[str, list[float]]:
    """The same interactions on either view (through ``box``, its first plot's view box, and its toolbar's
    setters); each frame is the action plus the paint it causes. "repaint" is a paint with nothing changed."""

    def frame(act: Callable[[], None]) -> float:
        start = time.perf_counter()
        act()
        app.processEvents()
        return (time.perf_counter() - start) * 1000

    frames: dict[str, list[float]] = {"pan": [], "zoom": [], "smoothing": [], "x_axis": [], "repaint": []}
    for _ in range(rounds):
        width = 0.2 * span
        for k in range(30):  # pan a view of a fifth of the run across it
            left = k / 30 * (span - width)
            frames["pan"].append(frame(lambda a=left: box.setXRange(a, a + width, padding=0)))
        for k in range(20):  # zoom out from a thousandth of the run to all of it
            half = span * 10 ** (-3 + 3 * k / 19) / 2
            frames["zoom"].append(frame(lambda h=half: box.setXRange(span / 2 - h, span / 2 + h, padding=0)))
        frames["zoom"].append(frame(view._on_toolbar_fit_requested))
        for weight in (0.0, 0.3, 0.6, 0.8, 0.9, 0.95, 0.99, 0.6):
            frames["smoothing"].append(frame(lambda w=weight: view.set_smoothing(w)))
        for mode in ("tokens", "time", "step"):
            frames["x_axis"].append(frame(lambda m=mode: view.set_x_mode(m)))
        for _ in range(10):
            frames["repaint"].append(frame(view.graphics.viewport().update))
    return frames


def single_run(app: Any, run_dir: Path, rounds: int) -> tuple[dict[str, list[float]], tuple[int, int]]:
    from shiftstudio.core.runs.metrics import read_metrics
    from shiftstudio.gui.metrics_store import MetricsStore
    from shiftstudio.gui.plots import CurvesView

    store = MetricsStore()
    view = CurvesView(store)
    view.resize(1400, 800)
    view.show()
    store.load_records(read_metrics(run_dir, ("train", "eval")))
    view.refresh()
    app.processEvents()
    span = float(store.steps["step"][-1])
    try:
        return interactions(app, view, view.plots["loss"].getViewBox(), span, rounds), view.graphics.size().toTuple()
    finally:
        view.close()


def compared(app: Any, runs: list[Path], rounds: int) -> tuple[dict[str, list[float]], tuple[int, int], float]:
    from shiftstudio.gui.compare_view import CompareView

    view = CompareView()
    view.resize(1400, 800)
    view.show()
    app.processEvents()
    loaded: list[float] = []
    view.runs_loaded.connect(lambda: loaded.append(time.perf_counter()))
    start = time.perf_counter()
    view.set_runs(runs)
    while not loaded:
        app.processEvents()
        time.sleep(0.001)
    read_s = loaded[0] - start
    assert not view.messages.text(), view.messages.text()
    app.processEvents()
    span = max(float(r.store.steps["step"][-1]) for r in view._loaded)
    try:
        frames = interactions(app, view, view.plots["train"].getViewBox(), span, rounds)
        canvas = view.graphics.size().toTuple()
    finally:
        view.shutdown()
        view.close()
    return frames, canvas, read_s


def summary(frames: dict[str, list[float]]) -> dict[str, float]:
    every = [f for values in frames.values() for f in values]
    out = {"frames": len(every), "p50_ms": statistics.median(every), "p99_ms": _pct(every, 99), "max_ms": max(every)}
    for kind, values in frames.items():
        out[f"{kind}_p50_ms"], out[f"{kind}_p99_ms"] = statistics.median(values), _pct(values, 99)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--steps", type=int, default=50_000)
    ap.add_argument("--rounds", type=int, default=3, help="times each interaction sequence is repeated")
    ap.add_argument("--quick", action="store_true", help="one round")
    args = ap.parse_args()
    rounds = 1 if args.quick else args.rounds
    home = tempfile.mkdtemp(prefix="bench-compare-")
    atexit.register(shutil.rmtree, home, True)
    os.environ["SHIFTSTUDIO_HOME"] = home

    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(sys.argv[:1])
    start = time.perf_counter()
    runs = [make_run(Path(home) / f"run-{i}", i, args.steps) for i in range(args.runs)]
    print(f"{args.runs} synthetic runs x {args.steps:,} steps written in {time.perf_counter() - start:.1f} s")
    import torch  # noqa: F401 - loaded up front (the window has it by the time runs are compared)

    base_frames, base_canvas = single_run(app, runs[0], rounds)
    base = summary(base_frames)
    frames, canvas, read_s = compared(app, runs, rounds)
    ours = summary(frames)
    print(f"plot canvas: one run (5 plots) {base_canvas[0]}x{base_canvas[1]}, compare (2 plots) {canvas[0]}x{canvas[1]} px")
    print(f"\n{'redraw (action + paint), ms':<34}{'1 run p50/p99':>16}{f'{args.runs} runs p50/p99':>18}{'p99 ratio':>11}")
    for kind in ("pan", "zoom", "smoothing", "x_axis", "repaint"):
        print(f"{kind:<34}{base[f'{kind}_p50_ms']:>8.1f}/{base[f'{kind}_p99_ms']:<7.1f}"
              f"{ours[f'{kind}_p50_ms']:>10.1f}/{ours[f'{kind}_p99_ms']:<7.1f}"
              f"{ours[f'{kind}_p99_ms'] / base[f'{kind}_p99_ms']:>9.2f}")
    ok = ours["p99_ms"] < FRAME_MS
    print(f"{'all frames':<34}{base['p50_ms']:>8.1f}/{base['p99_ms']:<7.1f}{ours['p50_ms']:>10.1f}/{ours['p99_ms']:<7.1f}"
          f"{ours['p99_ms'] / base['p99_ms']:>9.2f}   p99 < {FRAME_MS:.1f} ms: {'yes' if ok else 'NO'}")
    print(f"reading {args.runs} runs until shown (worker thread): {read_s:.2f} s")
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.json").write_text(json.dumps({
        "benchmark": "compare", "machine": platform.platform(), "runs": args.runs, "steps": args.steps, "rounds": rounds,
        "single_run": base, "compare": ours, "read_s": read_s, "target_p99_ms": FRAME_MS,
        "canvas_single_run": base_canvas, "canvas_compare": canvas,
    }, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
