"""``shiftstudio --self-test``: the whole app, end to end, in a minute, then a report.

It opens the real main window (offscreen unless ``--on-screen``), reads the
sample corpus (or ``--corpus``), trains a tiny model for a few steps through
the window's own run controller, samples a line from the run's checkpoint in
the Generate pane, closes the window, prints a short report and exits 0. Any
failure exits 1 with one line on stderr saying why; a watchdog thread ends the
process after ``timeout_s`` even if the GUI thread is stuck. Everything is
written under a temporary ``SHIFTSTUDIO_HOME`` that is removed afterwards, so
the user's runs and settings are never touched.

Made for checking an install or a stand-alone bundle (``packaging/build_app.py``
runs it on the built app): the report's ``window`` and ``total`` lines are the
start-up and end-to-end times.
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QtMsgType, QTimer, qInstallMessageHandler

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 300.0
FAIL_PREFIX = "shiftstudio: self-test failed: "
PROMPT = "ROMEO:"
GENERATED_TOKENS = 60
POLL_MS = 50

# A model that trains a few dozen steps in seconds on one CPU core; device and dtype as the app would choose.
SETTINGS: dict[str, Any] = {
    "n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 32, "batch_size": 8, "shift": 1,
    "max_iters": 30, "warmup_iters": 5, "lr_decay_iters": 30, "eval_interval": 15, "eval_iters": 2,
    "log_interval": 5, "tokenizer": "char", "device": "auto", "dtype": "auto", "compile": False,
}


def one_line(text: object, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def run_self_test(corpus: list[str] | None = None, timeout_s: float = DEFAULT_TIMEOUT_S, on_screen: bool = False) -> int:
    """Run the self-test in this process; returns the exit code (0 passed, 1 failed)."""
    started = time.perf_counter()
    home = tempfile.mkdtemp(prefix="shiftstudio-self-test-")
    os.environ["SHIFTSTUDIO_HOME"] = home  # before anything reads a path: settings, runs, caches all go here
    if not on_screen:
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    watchdog = threading.Timer(timeout_s, _timed_out, args=(timeout_s, home))
    watchdog.daemon = True
    watchdog.start()
    try:
        return _run(corpus or [], started)
    except Exception as exc:  # noqa: BLE001 - any failure is one line and exit 1
        log.debug("self-test failed", exc_info=True)
        return _fail_line(f"{type(exc).__name__}: {exc}")
    finally:
        watchdog.cancel()
        shutil.rmtree(home, ignore_errors=True)


def _fail_line(reason: str) -> int:
    sys.stdout.flush()
    print(FAIL_PREFIX + one_line(reason), file=sys.stderr, flush=True)
    return 1


def _timed_out(timeout_s: float, home: str) -> None:
    """The watchdog: the GUI thread may be stuck, so nothing here waits for it."""
    _fail_line(f"timed out after {timeout_s:g} s (raise it with --timeout SECONDS)")
    shutil.rmtree(home, ignore_errors=True)
    os._exit(1)


def _run(corpus: list[str], started: float) -> int:
    from shiftstudio.gui.app import application, create_window, seconds_since_process_start

    def on_qt_message(kind: QtMsgType, _context: Any, message: str) -> None:
        # Qt's chatter (the offscreen platform's "propagateSizeHints" and the like) would spoil the one-line
        # failure; it goes to the log, critical messages at error level.
        level = logging.ERROR if kind in (QtMsgType.QtCriticalMsg, QtMsgType.QtFatalMsg) else logging.DEBUG
        logging.getLogger("qt").log(level, "%s", message)

    qInstallMessageHandler(on_qt_message)
    app = application()
    process_start = seconds_since_process_start()
    # process start -> this function: Python, imports; not measurable off Linux, then from here on
    offset = (process_start - (time.perf_counter() - started)) if process_start is not None else 0.0
    window = create_window(corpus=corpus)
    test = SelfTest(app, window, started, offset)
    test.shown_s = time.perf_counter() - started + offset
    old_hook = sys.excepthook
    sys.excepthook = test.on_exception
    try:
        app.exec()
    finally:
        sys.excepthook = old_hook
        test.shutdown()
    if test.failure:
        return _fail_line(test.failure)
    report = test.report()
    try:
        print(report, flush=True)
    except UnicodeEncodeError:  # a console that cannot show the generated text (or the report's dots)
        print(report.encode("ascii", "backslashreplace").decode("ascii"), flush=True)
    return 0


def _versions() -> str:
    import PySide6
    import pyqtgraph
    import torch
    from PySide6.QtCore import qVersion

    from shiftstudio import __version__

    return (f"ShiftStudio {__version__} · Python {platform.python_version()} · torch {torch.__version__} · "
            f"PySide6 {PySide6.__version__} (Qt {qVersion()}) · pyqtgraph {pyqtgraph.__version__}")


class SelfTest(QObject):
    """Walks the window through corpus -> training -> generation; each step is started by the last one's
    signal. Slots are bound methods of this object (it lives in the GUI thread)."""

    def __init__(self, app, window, started: float, offset: float):
        super().__init__(window)
        self.app, self.window, self.started, self.offset = app, window, started, offset
        self.failure = ""
        self.shown_s = 0.0
        self.ready_s = 0.0
        self.corpus_text = ""
        self.device = ""
        self.n_params = 0
        self.losses: list[float] = []
        self.val_loss: float | None = None
        self.steps = 0
        self.train_started = 0.0
        self.train_s = 0.0
        self.generated = ""
        self.generate_s = 0.0
        self._generate_started = 0.0
        self.generate_status = ""
        self._finished_report: Any = None
        self._corpus_read = False
        self._device_probed = False
        self._training = False
        self._done = False
        window.confirm_stop_on_close = self._on_window_confirm_stop  # (never a modal box in a self-test)
        window.ask_stop_launched_run = self._on_window_ask_stop_launched_run
        session, runs = window.ctx.session, window.ctx.runs
        session.corpus_opened.connect(self._on_session_corpus_opened)
        session.corpus_failed.connect(self._on_session_corpus_failed)
        session.device_probed.connect(self._on_session_device_probed)
        runs.run_started.connect(self._on_runs_run_started)
        runs.steps_logged.connect(self._on_runs_steps_logged)
        runs.evaluated.connect(self._on_runs_evaluated)
        runs.run_finished.connect(self._on_runs_run_finished)
        runs.run_failed.connect(self._on_runs_run_failed)
        runs.thread_finished.connect(self._on_runs_thread_finished)
        self._poll = QTimer(self)
        self._poll.setInterval(POLL_MS)
        self._poll.timeout.connect(self._on_poll_timeout)

    def _on_window_confirm_stop(self) -> bool:
        return True

    def _on_window_ask_stop_launched_run(self) -> str:
        return "stop"

    # -- ending ------------------------------------------------------------------
    def fail(self, reason: str) -> None:
        if self._done:
            return
        self._done = True
        self.failure = one_line(reason) or "unknown error"
        self._poll.stop()
        self.app.exit(1)

    def on_exception(self, kind, value, tb) -> None:
        """sys.excepthook while the test runs: an exception escaping any slot fails the test."""
        log.debug("unexpected error:\n%s", "".join(traceback.format_exception(kind, value, tb)))
        self.fail(f"unexpected error: {kind.__name__}: {value} (SHIFTSTUDIO_LOG=debug shows the traceback)")

    def shutdown(self) -> None:
        """After the event loop: whatever still runs (a run, a sampler, the data tasks) ends and is waited for."""
        window = self.window
        for pane in window.panes.values():
            pane.shutdown()
        window.ctx.runs.shutdown()
        if window.ctx.library is not None:
            window.ctx.library.wait()
        window.ctx.session.shutdown()

    def elapsed(self) -> float:
        return time.perf_counter() - self.started + self.offset

    # -- corpus and device -----------------------------------------------------------
    def _on_session_corpus_opened(self, info) -> None:
        corpus = info.corpus
        what = "sample (tinyshakespeare.txt)" if info.is_sample else ", ".join(Path(p).name for p in info.paths)
        self.corpus_text = f"{what} · {corpus.n_chars:,} characters"
        self._corpus_read = True
        QTimer.singleShot(0, self, self._start_when_ready)  # after the window's own handlers of the signal

    def _on_session_corpus_failed(self, message: str, _detail: str, _expected: bool) -> None:
        self.fail(f"the corpus could not be read: {message}")

    def _on_session_device_probed(self, summary) -> None:
        self.device = summary.text
        self._device_probed = True
        # after the window's own handler, which may load the GPU preset: the self-test's settings go on top
        QTimer.singleShot(0, self, self._start_when_ready)

    # -- training ------------------------------------------------------------------
    def _start_when_ready(self) -> None:
        if self._training or self._done or not (self._corpus_read and self._device_probed):
            return
        window = self.window
        if not window.panes:
            return self.fail("the window's panes were not built")
        self.ready_s = self.elapsed()
        config, runs = window.ctx.config, window.ctx.runs
        config.load_flat(SETTINGS)
        if not config.is_valid:
            return self.fail(f"the settings are not valid: {config.error}")
        plan = runs.plan()
        if not plan.ok:
            return self.fail(f"training cannot start: {plan.why}")
        self._training = True
        self.train_started = time.perf_counter()
        if not runs.start(new=True):
            return self.fail("training did not start")
        return None

    def _on_runs_run_started(self, report) -> None:
        self.device = report.device or self.device
        self.n_params = report.n_params

    def _on_runs_steps_logged(self, reports: list) -> None:
        self.losses.extend(r.loss for r in reports)
        self.steps = reports[-1].step

    def _on_runs_evaluated(self, report) -> None:
        self.val_loss = report.val_loss

    def _on_runs_run_failed(self, report) -> None:
        self.fail(f"training failed at step {report.step}: {report.message}")

    def _on_runs_run_finished(self, report) -> None:
        self.train_s = time.perf_counter() - self.train_started
        self.steps = report.step
        if report.reason != "completed":
            return self.fail(f"training ended early ({report.reason}) at step {report.step}")
        self._finished_report = report
        return None

    def _on_runs_thread_finished(self) -> None:
        if self._done or self._finished_report is None:
            if not self._done:
                self.fail("the training thread ended without finishing the run")
            return
        self._generate()

    # -- generation ----------------------------------------------------------------
    def _generate(self) -> None:
        pane = self.window.panes.get("generate")
        if pane is None:
            return self.fail("the window has no Generate pane")
        pane.prompt.setPlainText(PROMPT)
        pane.max_tokens.setValue(GENERATED_TOKENS)
        pane.seed.setValue(1234)
        pane.stop_eot.setChecked(False)
        self._generate_started = time.perf_counter()
        if not pane.generate():
            return self.fail(f"generation did not start: {pane.status.text()}")
        self._poll.start()
        return None

    def _on_poll_timeout(self) -> None:
        pane = self.window.panes["generate"]
        if pane.running:
            return None
        self._poll.stop()
        self.generate_s = time.perf_counter() - self._generate_started
        self.generate_status = pane.status.text()
        if pane.status.property("error"):
            return self.fail(f"generation failed: {pane.status.text()}")
        self.generated = pane.output_text()
        if not self.generated:
            return self.fail(f"generation gave no text: {pane.status.text()}")
        self._done = True
        if not self.window.close():
            self.failure = "the window refused to close"
            self.app.exit(1)
            return None
        self.app.exit(0)
        return None

    # -- the report ----------------------------------------------------------------
    def report(self) -> str:
        text = (PROMPT + self.generated).replace("\r", "")
        line = text.replace("\n", "\\n")
        if len(line) > 100:
            line = line[:99] + "…"
        loss = f"loss {self.losses[0]:.3f} -> {self.losses[-1]:.3f}" if self.losses else "no loss logged"
        val = f" · val loss {self.val_loss:.3f}" if self.val_loss is not None else ""
        rows = [
            ("version", _versions()),
            ("platform", f"{platform.platform()} · Qt platform {self.app.platformName()}"),
            ("device", self.device),
            ("corpus", self.corpus_text),
            ("window", f"shown {self.shown_s:.2f} s after the process started · ready {self.ready_s:.2f} s"),
            ("training", f"{self.steps} steps in {self.train_s:.1f} s · {self.n_params:,} parameters · {loss}{val}"),
            ("generated", line),
            ("generation", f"{self.generate_status} ({self.generate_s:.1f} s with loading the checkpoint)"),
            ("total", f"{self.elapsed():.1f} s after the process started"),
        ]
        return "ShiftStudio self-test passed\n" + "\n".join(f"  {key + ':':<12}{value}" for key, value in rows)
