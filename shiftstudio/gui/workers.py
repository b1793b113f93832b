"""Long work off the GUI thread; its results come back as signals of plain data.

Two kinds of worker, each a ``QObject`` moved to its own ``QThread``:

* :class:`Task` runs one function (open a corpus, train a tokenizer, probe the
  device) with a throttled progress callback and a cancel flag, and ends with
  ``succeeded``, ``failed`` or ``cancelled``.
* :class:`TrainingWorker` drives the engine's report iterator. Step reports are
  batched so the GUI gets at most ~20 ``steps_logged`` emissions a second;
  every other report flushes the batch first, so order holds. Pause, resume,
  stop and "checkpoint now" are cooperative flags; nothing is ever terminated.

Signals are connected to bound methods of objects that live in the GUI thread,
which makes their delivery queued. The rate limits (throttled progress, step
batches) are in :mod:`shiftstudio.gui.throttling`.
"""

from __future__ import annotations

import gc
import logging
import sys
import threading
import traceback
from typing import Any, Callable, Iterator, Protocol

from PySide6.QtCore import QCoreApplication, QObject, Qt, QThread, QTimer, Signal, Slot

from shiftstudio.core.errors import Cancelled, RunError, ShiftStudioError, one_line
from shiftstudio.core.train.control import ViewRequest
from shiftstudio.gui.throttling import STEP_EMIT_INTERVAL_S, StepBatcher, ThrottledProgress

log = logging.getLogger(__name__)

ProgressFn = Callable[..., None]
CancelFn = Callable[[], bool]

GIL_SWITCH_INTERVAL_S = 0.0003


def keep_gui_responsive() -> None:
    """Before work starts in a thread: a short GIL switch interval, and no full garbage collections of the
    objects that already exist (both process-wide).

    The training thread runs Python between its torch calls and rarely lets
    go of the GIL on its own. Every pyqtgraph repaint calls into Python a
    hundred times or more (paint, boundingRect …), each time waiting for the
    GIL: at Python's default 5 ms interval one redraw took ~230 ms beside a
    busy thread on a 2-core machine, at 1 ms ~55 ms, at 0.3 ms ~24 ms (alone:
    ~7 ms). Threads that are not contending are not affected.

    With torch and pyqtgraph loaded there are 200k+ objects; a full
    collection scans them all (~150 ms, in whichever thread triggers it,
    holding the GIL). ``gc.freeze()`` moves them out of the collector's
    sight: they are modules, classes and widgets that live as long as the app.
    """
    if sys.getswitchinterval() > GIL_SWITCH_INTERVAL_S:
        sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    gc.freeze()
    GuiThreadCollector.install()


class GuiThreadCollector(QObject):
    """Python's cycle collector, run on the GUI thread only.

    A Qt object reachable only from a reference cycle (a closed window and its panes, their timers) is
    destroyed wherever the collection that finds it runs — and left alone, the collector runs in whichever
    thread happens to allocate at that moment: a training or sampling thread. Destroying widgets or timers
    there crashes the process. So once threads start, automatic collection is off and this object collects on
    a timer in the GUI thread, each generation when Python's own thresholds say it is due (reference counting
    still frees everything that is not in a cycle at once)."""

    INTERVAL_MS = 100
    _installed: "GuiThreadCollector | None" = None

    def __init__(self, app: QObject) -> None:
        super().__init__(app)
        gc.disable()
        self._timer = QTimer(self)
        self._timer.setInterval(self.INTERVAL_MS)
        self._timer.timeout.connect(self.collect_if_due)
        self._timer.start()

    @classmethod
    def install(cls) -> None:
        """Once per application, from the GUI thread (a no-op without a QApplication)."""
        app = QCoreApplication.instance()
        if app is None or cls._installed is not None or QThread.currentThread() is not app.thread():
            return
        cls._installed = cls(app)
        app.destroyed.connect(cls._on_app_destroyed)

    @classmethod
    def _on_app_destroyed(cls) -> None:
        cls._installed = None
        gc.enable()

    def collect_if_due(self) -> None:
        thresholds, counts = gc.get_threshold(), gc.get_count()
        for generation in (2, 1, 0):
            if counts[generation] > thresholds[generation]:
                gc.collect(generation)
                return


# -- errors ------------------------------------------------------------------


def is_cancelled(exc: BaseException) -> bool:
    """The user cancelled the work (the core's :class:`~shiftstudio.core.errors.Cancelled`)."""
    return isinstance(exc, Cancelled)


def describe_error(exc: BaseException) -> tuple[str, str, bool]:
    """(one readable line, traceback detail, expected?) for an exception from the core.

    Expected errors — the core's :class:`~shiftstudio.core.errors.ShiftStudioError` family (bad input,
    corrupt files, impossible settings) and running out of memory — get no traceback. An operating-system
    error (disk full, permission denied) reads as itself but keeps its traceback in the details, since it
    may come from a file the user never chose; anything else is a bug and says so.
    """
    text = one_line(exc)
    if isinstance(exc, ShiftStudioError):
        return text, "", True
    if isinstance(exc, MemoryError):
        return "Out of memory: try a smaller batch_size, block_size or model.", "", True
    if isinstance(exc, RuntimeError) and "out of memory" in text.lower():
        return f"Out of memory: {text}", "", True
    detail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    if isinstance(exc, OSError):
        return text, detail, False
    return f"Unexpected error: {type(exc).__name__}: {text}", detail, False


# -- one-shot tasks ----------------------------------------------------------


class _TaskWorker(QObject):
    progressed = Signal(str, object, object)
    succeeded = Signal(object)
    failed = Signal(str, str, bool)
    cancelled = Signal()
    done = Signal()

    def __init__(self, fn: Callable[[ProgressFn, CancelFn], Any], phase: str):
        super().__init__()
        self._fn = fn
        self._phase = phase
        self._cancel = threading.Event()

    def cancel(self) -> None:
        self._cancel.set()

    @Slot()
    def run(self) -> None:
        progress = ThrottledProgress(self.progressed.emit, self._phase)
        try:
            result = self._fn(progress, self._cancel.is_set)
        except BaseException as exc:  # noqa: BLE001 - everything becomes a signal
            if is_cancelled(exc) or self._cancel.is_set():
                self.cancelled.emit()
            else:
                message, detail, expected = describe_error(exc)
                if not expected:
                    log.error("task failed\n%s", detail)
                self.failed.emit(message, detail, expected)
        else:
            if self._cancel.is_set():
                self.cancelled.emit()
            else:
                self.succeeded.emit(result)
        finally:
            self.done.emit()


class Task(QObject):
    """Runs ``fn(progress, cancel)`` on a new QThread; lives in the GUI thread.

    ``progressed(phase, done, total)``, then exactly one of ``succeeded(result)``,
    ``failed(message, detail, expected)`` or ``cancelled()``, then ``finished()``.
    """

    progressed = Signal(str, object, object)
    succeeded = Signal(object)
    failed = Signal(str, str, bool)
    cancelled = Signal()
    finished = Signal()

    _live: set["Task"] = set()  # running tasks stay alive even when their owner lets go

    def __init__(self, fn: Callable[[ProgressFn, CancelFn], Any], phase: str = "", parent: QObject | None = None):
        super().__init__(parent)
        self._thread = QThread()
        self._thread.setObjectName(f"task:{phase or 'work'}")
        self._worker = _TaskWorker(fn, phase)
        self._worker.moveToThread(self._thread)
        self._thread.started.connect(self._worker.run)
        self._worker.progressed.connect(self._on_worker_progressed)
        self._worker.succeeded.connect(self._on_worker_succeeded)
        self._worker.failed.connect(self._on_worker_failed)
        self._worker.cancelled.connect(self._on_worker_cancelled)
        # Direct: quit() from the worker thread itself. A queued quit would wait for the GUI
        # thread's event loop, which never runs while the GUI thread blocks in wait().
        self._worker.done.connect(self._thread.quit, Qt.DirectConnection)
        self._thread.finished.connect(self._on_thread_finished)
        self._running = False

    def start(self) -> "Task":
        keep_gui_responsive()
        self._running = True
        Task._live.add(self)
        self._thread.start()
        return self

    def cancel(self) -> None:
        self._worker.cancel()

    def is_running(self) -> bool:
        return self._running

    def wait(self, ms: int | None = None) -> bool:
        """Cancel, then block until the thread ends (only at shutdown; ``None`` = no limit)."""
        self.cancel()
        if not self._running:
            return True
        return self._thread.wait() if ms is None else self._thread.wait(ms)

    def _on_worker_progressed(self, phase: str, done: object, total: object) -> None:
        self.progressed.emit(phase, done, total)

    def _on_worker_succeeded(self, result: object) -> None:
        self.succeeded.emit(result)

    def _on_worker_failed(self, message: str, detail: str, expected: bool) -> None:
        self.failed.emit(message, detail, expected)

    def _on_worker_cancelled(self) -> None:
        self.cancelled.emit()

    def _on_thread_finished(self) -> None:
        self._thread.wait()  # 'finished' comes just before the thread ends: let it end
        self._running = False
        self.finished.emit()
        Task._live.discard(self)


# -- training ----------------------------------------------------------------


class TrainerLike(Protocol):
    """What :class:`TrainingWorker` needs of a trainer (the engine's ``Trainer``, or a stand-in in tests):
    ``run()`` yields its reports; the controls may be called from any thread."""

    def run(self) -> Iterator[Any]: ...
    def pause(self) -> None: ...
    def resume(self) -> None: ...
    def stop(self) -> None: ...
    def request_checkpoint(self) -> None: ...
    def set_views(self, views: ViewRequest) -> None: ...
    def snapshot(self, timeout: float = 60.0) -> Any: ...


class TrainingWorker(QObject):
    """Runs ``open_trainer(progress, cancel)`` and then the trainer's report iterator.

    ``open_trainer`` does the set-up work (prepare the token store, create the
    run folder) and returns the engine's trainer; cancelling it raises the
    core's ``Cancelled``.
    """

    prepare_progressed = Signal(str, object, object)
    run_started = Signal(object)  # StartedReport
    steps_logged = Signal(object)  # list[StepReport], oldest first
    evaluated = Signal(object)  # EvalReport
    batch_viewed = Signal(object)  # BatchViewReport
    sampled = Signal(object)  # SampleReport
    checkpoint_saved = Signal(object)  # CheckpointReport
    noted = Signal(object)  # NoteReport
    run_finished = Signal(object)  # FinishedReport
    run_failed = Signal(object)  # FailedReport
    cancelled = Signal()  # stopped before the first step (during set-up)
    done = Signal()  # always last

    def __init__(self, open_trainer: Callable[[ProgressFn, CancelFn], TrainerLike], step_interval: float = STEP_EMIT_INTERVAL_S):
        super().__init__()
        self._open_trainer = open_trainer
        self._lock = threading.Lock()
        self._trainer: TrainerLike | None = None
        self._views = ViewRequest()
        self._stop = threading.Event()
        self._batcher = StepBatcher(self.steps_logged.emit, step_interval)

    # -- controls (called from the GUI thread; they only set flags) ----------
    def pause(self) -> None:
        with self._lock:
            if self._trainer is not None:
                self._trainer.pause()

    def resume(self) -> None:
        with self._lock:
            if self._trainer is not None:
                self._trainer.resume()

    def stop(self) -> None:
        with self._lock:
            self._stop.set()
            if self._trainer is not None:
                self._trainer.resume()
                self._trainer.stop()

    def request_checkpoint(self) -> None:
        with self._lock:
            if self._trainer is not None:
                self._trainer.request_checkpoint()

    def detach(self) -> None:
        """Stop following a run that another process trains (it goes on training there)."""
        with self._lock:
            self._stop.set()
            detach = getattr(self._trainer, "detach", None)
            if detach is not None:
                detach()

    def set_views(self, views: ViewRequest) -> None:
        with self._lock:
            self._views = views
            if self._trainer is not None:
                self._trainer.set_views(views)

    def snapshot(self, timeout: float = 60.0) -> Any:
        """From a thread other than this worker's: ``(model, tokenizer, step)`` copied at the next step boundary."""
        with self._lock:
            trainer = self._trainer
        if trainer is None:
            raise RunError("training has not started yet: try again in a moment, or pick a checkpoint")
        return trainer.snapshot(timeout)  # blocks the caller's thread, never this lock

    # -- the loop (worker thread) --------------------------------------------
    def _signal_for(self, report: Any) -> Any:
        """The signal that carries ``report`` to the GUI thread, chosen by the report's type."""
        from shiftstudio.core.train import reports as r  # numpy only; imported off the GUI thread

        signals = {
            r.StartedReport: self.run_started, r.EvalReport: self.evaluated, r.BatchViewReport: self.batch_viewed,
            r.SampleReport: self.sampled, r.CheckpointReport: self.checkpoint_saved,
            r.FinishedReport: self.run_finished, r.FailedReport: self.run_failed, r.NoteReport: self.noted,
        }
        signal = signals.get(type(report))
        if signal is None:
            raise TypeError(f"the trainer yielded a report of unknown type {type(report).__name__}")
        return signal

    @Slot()
    def run(self) -> None:
        from shiftstudio.core.train.reports import FailedReport, StepReport

        last_step = 0
        try:
            progress = ThrottledProgress(self.prepare_progressed.emit, "Preparing")
            trainer = self._open_trainer(progress, self._stop.is_set)
            with self._lock:
                self._trainer = trainer
                trainer.set_views(self._views)
                if self._stop.is_set():
                    trainer.stop()
            for report in trainer.run():
                last_step = report.step
                if isinstance(report, StepReport):
                    self._batcher.add(report)
                else:
                    signal = self._signal_for(report)
                    self._batcher.run_locked(lambda s=signal, r=report: s.emit(r))
        except BaseException as exc:  # noqa: BLE001 - everything becomes a signal
            if is_cancelled(exc) or (self._trainer is None and self._stop.is_set()):
                self._batcher.run_locked(self.cancelled.emit)
            else:
                message, detail, expected = describe_error(exc)
                if not expected:
                    log.error("training failed\n%s", detail)
                failed = FailedReport(step=last_step, message=message, detail=detail, expected=expected)
                self._batcher.run_locked(lambda: self.run_failed.emit(failed))
        finally:
            self._batcher.flush()
            with self._lock:
                self._trainer = None
            self.done.emit()
