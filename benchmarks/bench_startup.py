"""Start-up: seconds from process start to the main window on screen, and to Start (F5) being usable, against
a bare PySide6 window.

    python benchmarks/bench_startup.py [--runs 5] [--quick]

Each measurement is a fresh interpreter (``python -c``) that builds a window
and reports the time since its process started (from ``/proc``), whether
torch was imported by then, and its RSS once the app has settled (panes built,
sample corpus opened, the device probed) — the memory at idle. A second kind of app process
presses F5 at the window's first paint (as a user who presses it at once) and
reports when the press was answered (Start usable: the run began preparing,
or the press was taken and the window said what it waits for) and when the
run actually began preparing its data. The baseline is a bare
``QMainWindow`` in the same kind of process. Uses Qt's offscreen platform
unless ``QT_QPA_PLATFORM`` is set (e.g. ``xcb`` under Xvfb). Medians are kept.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = r"""
import os, sys, time, json
def since_start():
    with open('/proc/self/stat') as fh:
        ticks = int(fh.read().rsplit(')', 1)[1].split()[19])
    with open('/proc/uptime') as fh:
        up = float(fh.read().split()[0])
    return up - ticks / os.sysconf('SC_CLK_TCK')
def rss_mb():
    with open('/proc/self/status') as fh:
        for line in fh:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024
KIND = sys.argv[1]
from PySide6.QtCore import QEvent, QObject, Qt, QTimer
if KIND == 'bare':
    from PySide6.QtWidgets import QApplication, QMainWindow
    app = QApplication(sys.argv[:1])
    w = QMainWindow(); w.resize(1280, 800); w.show()
else:
    from shiftstudio.gui.app import application, create_window
    app = application()
    seen = {}
    if KIND == 'app-f5':  # press F5 at the first paint, before the panes are built (they are built next)
        from PySide6.QtTest import QTest
        def press():
            seen['pressed_s'] = since_start()
            QTest.keyClick(w, Qt.Key_F5)
        class FirstPaint(QObject):
            def eventFilter(self, obj, ev):
                if ev.type() == QEvent.Paint and obj.objectName() == 'main_window' and 'painted_s' not in seen:
                    seen['painted_s'] = since_start()
                    QTimer.singleShot(0, press)  # before the window's own "painted" turn, which builds the panes
                return False
        spy = FirstPaint(); app.installEventFilter(spy)
    w = create_window()
    if KIND == 'app-f5':
        runs = w.ctx.runs
        def answered(*args):
            seen.setdefault('answered_s', since_start())
        def state(name):
            if name == 'preparing':
                answered()
                seen['preparing_s'] = since_start()
                app.exit(0)  # (not quit(): that would ask the window to close, and it asks first during a run)
        runs.start_queued.connect(answered)
        runs.state_changed.connect(state)
    if KIND == 'app':  # settled: panes built, corpus opened, the device probed (torch loaded)
        w.ctx.session.device_probed.connect(lambda summary: QTimer.singleShot(500, lambda: app.exit(0)))
shown = since_start()  # show() has been called; the panes are built on the next event-loop turn
torch_before = 'torch' in sys.modules
QTimer.singleShot({'app': 30000, 'app-f5': 30000}.get(KIND, 200), lambda: app.exit(0))  # (at the latest)
app.exec()
if KIND == 'app-f5':
    print(json.dumps({'shown_s': shown, 'painted_s': seen.get('painted_s'), 'pressed_s': seen.get('pressed_s'),
                      'usable_s': seen.get('answered_s'), 'preparing_s': seen.get('preparing_s')}))
else:
    print(json.dumps({'shown_s': shown, 'torch_before_show': torch_before, 'idle_rss_mb': rss_mb()}))
if KIND != 'bare':
    w.ctx.runs.shutdown(); w.ctx.session.shutdown()
"""


def measure(kind: str, home: str) -> dict:
    env = dict(os.environ, SHIFTSTUDIO_HOME=home)
    env.setdefault("QT_QPA_PLATFORM", "offscreen")
    out = subprocess.run([sys.executable, "-c", PROBE, kind], capture_output=True, text=True, env=env, timeout=120, cwd=ROOT)
    if out.returncode != 0:
        raise SystemExit(f"{kind} probe failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="3 runs")
    args = ap.parse_args()
    runs = 3 if args.quick else args.runs
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as home:
        measure("app", home)  # warm the OS file cache and the corpus scan cache, like a second start
        bare, app, f5 = [], [], []
        for _ in range(runs):
            bare.append(measure("bare", home))
            app.append(measure("app", home))
            with tempfile.TemporaryDirectory(prefix="bench-startup-f5-") as fresh:  # no last run to reopen
                f5.append(measure("app-f5", fresh))
    if not all(r["usable_s"] and r["preparing_s"] for r in f5):
        raise SystemExit(f"a press of F5 at the first paint was not answered: {f5}")
    base_s = statistics.median(r["shown_s"] for r in bare)
    app_s = statistics.median(r["shown_s"] for r in app)
    usable_s = statistics.median(r["usable_s"] for r in f5)
    preparing_s = statistics.median(r["preparing_s"] for r in f5)
    row = {
        "bare_window_s": base_s, "app_window_s": app_s, "ratio": app_s / base_s,
        "start_usable_s": usable_s, "start_usable_ratio": usable_s / base_s, "f5_preparing_s": preparing_s,
        "torch_before_show": any(r["torch_before_show"] for r in app),
        "bare_idle_rss_mb": statistics.median(r["idle_rss_mb"] for r in bare),
        "app_idle_rss_mb": statistics.median(r["idle_rss_mb"] for r in app),
        "platform": os.environ.get("QT_QPA_PLATFORM", "offscreen"),
    }
    print(f"median of {runs} fresh processes ({row['platform']})\n")
    print(f"{'figure':<44}{'bare window':>12}{'ShiftStudio':>13}{'ratio':>8}  bar")
    print(f"{'process start -> window shown':<44}{base_s:>11.2f}s{app_s:>12.2f}s{row['ratio']:>8.2f}  app < 1.5 s")
    print(f"{'process start -> Start usable (F5 answered)':<44}{base_s:>11.2f}s{usable_s:>12.2f}s"
          f"{row['start_usable_ratio']:>8.2f}  app < 1.5 s")
    print(f"{'  (F5 at first paint -> run preparing)':<44}{'':>12}{preparing_s:>12.2f}s")
    print(f"{'RSS at idle':<44}{row['bare_idle_rss_mb']:>10.0f}MB{row['app_idle_rss_mb']:>11.0f}MB")
    print(f"torch imported before the window showed: {row['torch_before_show']}")
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "startup.json").write_text(json.dumps({"benchmark": "startup", "machine": platform.platform(), "runs": runs,
                                                  "results": row, "bare": bare, "app": app, "app_f5": f5}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
