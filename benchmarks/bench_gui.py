"""What the GUI costs: training inside the real window vs headless, GUI-thread gaps, and plots at scale.

    python benchmarks/bench_gui.py [--steps 300] [--quick] [--scale-only] [--points N]

1. **GUI tax**: the ``cpu-tiny`` preset on tiny shakespeare trained headless
   with the CLI's defaults (``Trainer.run()`` in the main thread of a fresh
   process, PyTorch's own thread count: every core) and then inside the real
   main window with the window's defaults (Qt offscreen, live curves, batch
   inspector and playground built and visible, the GUI thread in its event
   loop), alternating; median tokens/s of the logged steps after warm-up.
   The ratio window / CLI should be at least 0.9 (issue 20's bar). The
   training thread's OpenMP thread count and niceness are read mid-run.
2. **GUI responsiveness**: during the window run, a 10 ms ``QTimer`` in the
   GUI thread records the gaps between its ticks: p50 / p99 / max (target p99 <
   50 ms on 2 cores).
3. **Metrics at scale**: 200,000 logged steps fed to the Train pane's curves
   in chunks of 2,000 through ``MetricsStore.add_steps`` (as a long run's log
   arrives), the data accumulating, a redraw after each chunk (``refresh()``
   plus the paint it causes): the redraw time per frame (target < 16 ms) and
   the process RSS growth (target < 50 MB); then, with every point in, what
   reopening the run and the toolbar (smoothing, x axis, log y) cost.
   ``--scale-only`` runs only this part (no training), ``--points`` sets the size.

Results go to ``benchmarks/results/gui.json`` (``gui_scale.json`` with ``--scale-only``).
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
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def settings(steps: int) -> dict:
    # Evaluations, samples and checkpoints happen once at the end only: what is measured is the steady loop.
    return {"max_iters": steps, "lr_decay_iters": steps, "eval_interval": 100_000, "log_interval": 10,
            "device": "cpu", "compile": False}


def headless(steps: int, warmup: int) -> float:
    """The CLI's speed: the same run with the CLI's defaults (PyTorch's own thread count), ``Trainer.run()`` in
    the main thread of a fresh process, as ``shiftstudio train`` runs it. Not in this process: OpenMP keeps a
    pool of worker threads per thread that has run parallel work, and an idle pool in the GUI thread beside the
    training thread's makes libgomp stop spin-waiting (more managed threads than cores), which halves a small
    model's speed in the window (measured)."""
    code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); "
            f"import bench_gui; print(bench_gui.headless_here({steps}, {warmup}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def headless_here(steps: int, warmup: int) -> float:
    from shiftstudio.presets import load_preset
    from shiftstudio.core.runs.folder import prepare_and_create
    from shiftstudio.core.train.trainer import Trainer

    config = load_preset("cpu-tiny").updated(settings(steps))  # num_threads 0: the CLI's automatic threads
    folder = tempfile.mkdtemp(prefix="bench-headless-")
    try:
        run_dir = prepare_and_create(config, out_dir=Path(folder) / "run")
        rates = [r.tokens_per_s for r in Trainer(run_dir).run() if r.kind == "train" and r.step > warmup]
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return statistics.median(rates)


def in_window(app, steps: int, warmup: int) -> tuple[float, list[float]]:
    from PySide6.QtCore import QElapsedTimer, QEventLoop, QTimer

    from shiftstudio.presets import load_preset
    from shiftstudio.gui.main_window import MainWindow
    from shiftstudio.gui.settings import Settings

    window = MainWindow(Settings())
    window.confirm_stop_on_close = lambda: True
    window.resize(1600, 1000)
    window.show()
    window.build()
    for key in ("inspector", "generate"):  # make the later panes visible too, if the window has them
        dock = getattr(window, "docks", {}).get(key)
        if dock is not None:
            dock.show()
            dock.raise_()
    runs = window.ctx.runs
    done = {"corpus": False, "finished": False}
    window.ctx.session.corpus_opened.connect(lambda *a: done.__setitem__("corpus", True))
    window.open_corpus([])  # the sample corpus
    while not done["corpus"]:
        app.processEvents()
        time.sleep(0.01)
    window.ctx.config.load_flat({**load_preset("cpu-tiny").to_flat(), **settings(steps)})
    rates: list[float] = []
    gaps: list[float] = []
    runs.steps_logged.connect(lambda batch: rates.extend(r.tokens_per_s for r in batch if r.step > warmup))
    runs.run_finished.connect(lambda *a: done.__setitem__("finished", True))
    threads: dict[str, object] = {}

    def training_threads(batch) -> None:  # once, mid-run: what the training thread and its workers run with
        if threads or runs.step <= warmup:
            return
        for task in Path("/proc/self/task").glob("*"):
            try:
                stat = (task / "stat").read_text()
            except OSError:
                continue
            if stat[stat.index("(") + 1:stat.rindex(")")] == "training":  # OpenMP workers inherit the name
                threads.setdefault("nice", []).append(int(stat.rsplit(")", 1)[1].split()[16]))
        threads["count"] = len(threads.get("nice", []))

    runs.steps_logged.connect(training_threads)
    runs.run_failed.connect(lambda report: (print("run failed:", report.message), done.__setitem__("finished", True)))
    clock = QElapsedTimer()
    ticker = QTimer()
    ticker.setInterval(10)
    last = [0]

    def tick() -> None:
        now = clock.elapsed()
        if runs.step > warmup:
            gaps.append(now - last[0])
        last[0] = now

    ticker.timeout.connect(tick)
    clock.start()
    ticker.start()
    # The GUI thread waits in a real event loop, as in the app (a polling loop here would wake it a thousand
    # times a second and take the GIL from the training thread each time).
    loop = QEventLoop()
    runs.run_finished.connect(loop.quit)
    runs.run_failed.connect(loop.quit)
    runs.start()
    if not done["finished"]:
        loop.exec()
    ticker.stop()
    if False:
        import glob
        for t in sorted(glob.glob("/proc/self/task/*")):
            st = open(t + "/stat").read()
            comm = st[st.index("(") + 1:st.rindex(")")]
            f = st.rsplit(")", 1)[1].split()
            print("task", t.rsplit("/", 1)[1], comm, "cpu_s", (int(f[11]) + int(f[12])) / 100, "nice", f[16])
    runs.wait(60_000)
    window.ctx.runs.shutdown()
    window.ctx.session.shutdown()
    window.close()
    window.deleteLater()
    app.processEvents()
    return statistics.median(rates), gaps, threads


def metrics_at_scale(app, total: int = 200_000, chunk: int = 2_000, eval_every: int = 10_000) -> dict:
    """Feed ``total`` steps to a Train pane's curves in chunks, as a long run's log arrives, timing each frame.

    A frame is what the GUI thread pays for new data: the timer's ``refresh()`` (setData on the items,
    smoothing, ranges) plus the repaint. The store is fed the way the run controller feeds it
    (``add_steps`` / ``add_eval`` with report objects), and the x extent is set from the run's length as
    the Train pane does. With all points in, a few interaction frames are timed too: reopening the run
    (its whole history at once), a smoothing change, the x axis as tokens, log y.
    """
    import numpy as np
    from PySide6.QtCore import QEvent, QObject

    from shiftstudio.core.train.reports import EvalReport, StepReport
    from shiftstudio.gui.metrics_store import MetricsStore
    from shiftstudio.gui.plots import CurvesView

    store = MetricsStore()
    view = CurvesView(store)
    view.resize(1400, 800)
    view.show()
    view.set_x_extent(total, total * 768, 1e-3)
    app.processEvents()
    paints = [0]

    class PaintCounter(QObject):
        def eventFilter(self, obj, event):  # noqa: N802 - Qt's name
            if event.type() == QEvent.Paint:
                paints[0] += 1
            return False

    counter = PaintCounter()
    view.graphics.viewport().installEventFilter(counter)

    def frame() -> float:
        # what the redraw timer does, then the paint it causes (processEvents delivers it: one per frame)
        start = time.perf_counter()
        view.refresh()
        app.processEvents()
        return (time.perf_counter() - start) * 1000

    rng = np.random.default_rng(0)
    frames: list[float] = []
    paints[0] = 0
    before = rss_mb()
    step = 0
    while step < total:
        steps = np.arange(step + 1, step + chunk + 1)
        loss = 4.0 * np.exp(-steps / 40_000) + 1.0 + 0.05 * rng.standard_normal(chunk)
        grad = 0.5 + 0.1 * rng.standard_normal(chunk) ** 2
        lr = 1e-3 * np.minimum(1.0, steps / 2_000)
        reports = [
            StepReport(step=int(s), loss=float(v), lr=float(r), grad_norm=float(g), tokens_per_s=15_000.0 + 100 * (s % 7),
                       tokens=int(s) * 768, time_s=float(s) * 0.05, ms_per_iter=50.0)
            for s, v, r, g in zip(steps, loss, lr, grad)
        ]
        store.add_steps(reports)
        if (step + chunk) % eval_every == 0:
            s = int(steps[-1])
            val = float(loss[-1]) + 0.1
            store.add_eval(EvalReport(step=s, tokens=s * 768, time_s=s * 0.05, train_loss=float(loss[-1]), val_loss=val,
                                      val_ppl=math.exp(val), train_ppl=math.exp(float(loss[-1])), best_val_loss=val, is_best=True))
        del reports
        step += chunk
        frames.append(frame())
    after = rss_mb()
    painted = paints[0]
    # interactions with every point in: reopening the run (its history at once), then the toolbar
    steps_, evals_ = store.steps, store.evals
    records = [{"kind": "train", **{c: float(steps_[c][i]) for c in steps_.columns}} for i in range(len(steps_))]
    records += [{"kind": "eval", **{c: float(evals_[c][i]) for c in evals_.columns}} for i in range(len(evals_))]
    actions: dict[str, float] = {}
    start = time.perf_counter()
    store.load_records(records)
    actions["reopen_ms"] = (time.perf_counter() - start) * 1000 + frame()
    del records
    for name, act in (("smoothing_ms", lambda: view.set_smoothing(0.9)), ("x_tokens_ms", lambda: view.set_x_mode("tokens")),
                      ("log_y_ms", lambda: view.set_log_y(True)), ("x_step_ms", lambda: view.set_x_mode("step"))):
        start = time.perf_counter()
        act()
        actions[name] = (time.perf_counter() - start) * 1000 + frame()
    idle = [frame() for _ in range(20)]  # nothing new: the timer would not even call refresh()
    view.close()
    return {"points": total, "frames": len(frames), "frames_painted": painted,
            "frame_ms_median": statistics.median(frames), "frame_ms_p99": _pct(frames, 99),
            "frame_ms_max": max(frames), "frame_ms_last": frames[-1], "frame_ms_idle": statistics.median(idle),
            "rss_growth_mb": after - before, **actions}


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def print_scale(scale: dict) -> None:
    points = scale["points"]
    print(f"{f'curves with {points:,} steps: redraw median/p99':<44}{'':>12}"
          f"{scale['frame_ms_median']:>5.1f}/{scale['frame_ms_p99']:.1f} ms   < 16 ms")
    print(f"{'curves: RSS growth':<44}{'':>12}{scale['rss_growth_mb']:>9.1f} MB   < 50 MB")
    print(f"{'curves: frames painted':<44}{'':>12}{scale['frames_painted']:>5}/{scale['frames']}")
    print(f"{'curves: frame max / last / idle redraw':<44}{'':>12}"
          f"{scale['frame_ms_max']:>5.1f}/{scale['frame_ms_last']:.1f}/{scale['frame_ms_idle']:.1f} ms")
    print(f"{'curves: reopen run / smoothing / x tokens':<44}{'':>12}"
          f"{scale['reopen_ms']:>5.0f}/{scale['smoothing_ms']:.0f}/{scale['x_tokens_ms']:.0f} ms")
    print(f"{'curves: log y / x step':<44}{'':>12}{scale['log_y_ms']:>5.0f}/{scale['x_step_ms']:.0f} ms")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="120 steps, one round, 50k points")
    ap.add_argument("--scale-only", action="store_true", help="only the metrics-at-scale part (no training)")
    ap.add_argument("--training-only", action="store_true", help="only the GUI tax and gaps (no metrics at scale)")
    ap.add_argument("--points", type=int, default=None, help="steps fed to the curves (default 200,000; 50,000 with --quick)")
    args = ap.parse_args()
    steps, rounds, points = (120, 1, 50_000) if args.quick else (args.steps, args.rounds, 200_000)
    points = args.points or points
    warmup = min(50, steps // 3)
    home = tempfile.mkdtemp(prefix="bench-gui-home-")  # runs, caches and settings of this benchmark only
    atexit.register(shutil.rmtree, home, True)
    os.environ["SHIFTSTUDIO_HOME"] = home

    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(sys.argv[:1])
    out = ROOT / "benchmarks" / "results"
    if args.scale_only:
        scale = metrics_at_scale(app, total=points)
        print_scale(scale)
        out.mkdir(parents=True, exist_ok=True)
        (out / "gui_scale.json").write_text(json.dumps({"benchmark": "gui_scale", "machine": platform.platform(),
                                                        "results": scale}, indent=2))
        return 0
    import torch  # imported up front (no parallel work here: the GUI thread must not hold an OpenMP pool)

    base, gui, gaps = [], [], []
    threads: dict = {}
    for _ in range(rounds):
        base.append(headless(steps, warmup))
        rate, g, threads = in_window(app, steps, warmup)
        gui.append(rate)
        gaps += g
    tax = statistics.median(gui) / statistics.median(base)
    cli_threads = torch.get_num_threads()  # a fresh process's default, as the headless child had
    scale = {} if args.training_only else metrics_at_scale(app, total=points)
    result = {
        "headless_tokens_per_s": statistics.median(base), "window_tokens_per_s": statistics.median(gui), "ratio": tax,
        "headless_rounds": base, "window_rounds": gui,
        "gap_ms_p50": statistics.median(gaps) if gaps else None, "gap_ms_p99": _pct(gaps, 99) if gaps else None,
        "gap_ms_max": max(gaps) if gaps else None, "timer_ticks": len(gaps), "cli_threads": cli_threads,
        "window_threads": threads.get("count"), "window_nice": threads.get("nice"), **scale,
    }
    print(f"cpu-tiny, {steps} steps, {rounds} round(s); CLI: {cli_threads} torch thread(s); window: "
          f"{threads.get('count')} training thread(s), niceness {threads.get('nice')}\n")
    print(f"{'figure':<44}{'baseline':>12}{'ours':>12}{'ratio':>8}  bar")
    print(f"{'GUI tax: tokens/s CLI defaults -> the window':<44}{result['headless_tokens_per_s']:>12.0f}"
          f"{result['window_tokens_per_s']:>12.0f}{tax:>8.3f}  >= 0.9")
    print(f"{'  each round: CLI / window tokens/s':<44}  " + "  ".join(f"{b:.0f}/{g:.0f}" for b, g in zip(base, gui)))
    if gaps:
        print(f"{'GUI thread 10 ms timer gaps p50/p99/max':<44}{'':>12}"
              f"{result['gap_ms_p50']:>4.0f}/{result['gap_ms_p99']:.0f}/{result['gap_ms_max']:.0f} ms   p99 < 50 ms")
    if scale:
        print_scale(scale)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gui.json").write_text(json.dumps({"benchmark": "gui", "machine": platform.platform(), "steps": steps,
                                              "rounds": rounds, "results": result}, indent=2))
    if args.quick and tax < 0.8:
        print("regression: the GUI costs more than 20% of training speed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
