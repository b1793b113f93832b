"""Start the desktop app: a light window on screen first, the heavy parts right after.

``launch()`` imports only PySide6 and the Qt-only models before the window
shows (about a third of a second); then a zero-delay timer builds the panes
(pyqtgraph) and starts the data work, and the device probe imports torch in a
worker thread. Start (F5) answers from the first paint: a press before the
panes, the corpus and the last run are in is held and carried out then.
``SHIFTSTUDIO_LOG=INFO`` logs how long the window took to show.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

from shiftstudio.gui import style
from shiftstudio.gui.main_window import MainWindow
from shiftstudio.gui.settings import Settings

log = logging.getLogger(__name__)

FIRST_PAINT_TIMEOUT_MS = 1500


def seconds_since_process_start() -> float | None:
    """Wall time since this process started (Linux), for the startup log line."""
    try:
        with open("/proc/self/stat") as fh:
            start_ticks = int(fh.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as fh:
            uptime = float(fh.read().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def application() -> QApplication:
    app = QApplication.instance()
    if app is None:
        app = QApplication(sys.argv[:1])
        app.setApplicationName("ShiftStudio")
        app.setOrganizationName("ShiftStudio")
        app.setApplicationDisplayName("ShiftStudio")
        app.setDesktopFileName("io.github.shiftstudio.ShiftStudio")
    return app


def create_window(run_dir: str | None = None, corpus: list[str] | None = None, settings: Settings | None = None) -> MainWindow:
    """Show the window now; build the panes and open things once it has been painted.

    Waiting for the first paint (not just the next event-loop turn) matters:
    the window system's expose event comes after timers that are already due,
    so a zero-delay timer would build the panes (pyqtgraph, ~0.5 s) and start
    the device probe (torch) before anything is on screen.
    """
    app = application()
    settings = settings or Settings()
    style.apply_theme(app, settings.get("theme", "system"))
    app.setWindowIcon(style.app_icon())
    window = MainWindow(settings)
    window.fit_to_screen()  # the first start on a small screen (a laptop's 1366x768)
    window.show()
    elapsed = seconds_since_process_start()
    if elapsed is not None:
        log.info("window shown %.0f ms after the process started", elapsed * 1000)

    def finish() -> None:
        if window.panes:
            return
        elapsed = seconds_since_process_start()
        if elapsed is not None:
            log.info("window painted %.0f ms after the process started", elapsed * 1000)
        t0 = time.perf_counter()
        window.build()
        window.start(run_dir=run_dir, corpus=corpus)
        log.info("panes built in %.0f ms", (time.perf_counter() - t0) * 1000)

    window.painted.connect(finish)
    QTimer.singleShot(FIRST_PAINT_TIMEOUT_MS, window, finish)  # a window never painted (minimised) still loads
    return window


def launch(run_dir: str | None = None, corpus: list[str] | None = None) -> int:
    """``shiftstudio [RUN_DIR] [--corpus FILE ...]``: run the app until its window closes."""
    if run_dir is not None and not Path(run_dir).is_dir():
        print(f"shiftstudio: error: run folder not found: {run_dir}", file=sys.stderr)
        return 2
    app = application()
    window = create_window(run_dir=run_dir, corpus=list(corpus or []))
    code = app.exec()
    window.ctx.runs.shutdown()
    window.ctx.session.shutdown()
    return code
