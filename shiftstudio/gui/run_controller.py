"""Starts, pauses, resumes and stops training runs; owns the training thread.

The controller lives in the GUI thread. For each run it creates a
:class:`~shiftstudio.gui.workers.TrainingWorker` on a fresh ``QThread``,
connects the worker's signals to its own ``_on_worker_*`` methods (queued
delivery) and re-emits them, so panes connect once to the controller rather
than to short-lived workers. Its actions (Start F5, Pause/Resume F6, Stop
Shift+F5, Save checkpoint Ctrl+S) are shared by the menus and the Train pane.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

from PySide6.QtCore import QObject, Qt, QThread, Signal
from PySide6.QtGui import QAction, QKeySequence

from shiftstudio.config import RunConfig
from shiftstudio.core.errors import Cancelled
from shiftstudio.core.runs.layout import RunLayout, step_of
from shiftstudio.core.train.control import ViewRequest
from shiftstudio.gui.config_model import ConfigModel
from shiftstudio.gui.workers import CancelFn, ProgressFn, Task, TrainerLike, TrainingWorker, keep_gui_responsive

log = logging.getLogger(__name__)

IDLE, PREPARING, RUNNING, PAUSED, STOPPING, FINISHED, STOPPED, FAILED = (
    "idle", "preparing", "running", "paused", "stopping", "finished", "stopped", "failed",
)
SAMPLE_PROMPT = ""  # samples at each evaluation start from the end-of-text token (or id 0)
ACTIVE_STATES = (PREPARING, RUNNING, PAUSED, STOPPING)
STATE_TEXT = {
    IDLE: "Idle", PREPARING: "Preparing data", RUNNING: "Training", PAUSED: "Paused",
    STOPPING: "Stopping…", FINISHED: "Finished", STOPPED: "Stopped", FAILED: "Failed",
}


def _limit_cpu_threads(config: RunConfig) -> None:
    """In the training thread, before the engine sets up: 'automatic' threads leave a core to the window."""
    if config.train.num_threads == 0:
        import torch

        from shiftstudio.gui.session import default_cpu_threads

        wanted = default_cpu_threads()
        if torch.get_num_threads() > wanted:
            torch.set_num_threads(wanted)


def _new_run(config: RunConfig) -> Callable:
    def open_trainer(progress, cancel):
        _limit_cpu_threads(config)
        from shiftstudio.core.runs.folder import create_run
        from shiftstudio.core.data.store import prepare
        from shiftstudio.core.train.trainer import Trainer

        store = prepare(config.data, progress=progress, cancel=cancel)
        if cancel():
            raise Cancelled()
        run_dir = create_run(config, store)
        return Trainer(run_dir, store, sample_prompt=SAMPLE_PROMPT)

    return open_trainer


def _resume_run(run_dir: Path, max_iters: int) -> Callable:
    def open_trainer(progress, cancel):
        from shiftstudio.core.train.trainer import Trainer

        trainer = Trainer(run_dir, max_iters=max_iters, sample_prompt=SAMPLE_PROMPT)
        _limit_cpu_threads(trainer.config)
        return trainer

    return open_trainer


def _read_run(run_dir: Path) -> Callable:
    def work(progress, cancel) -> tuple[Path, RunConfig, list[dict[str, Any]]]:
        from shiftstudio.core.runs.metrics import read_metrics
        from shiftstudio.core.runs.folder import load_run_config

        config = load_run_config(run_dir)
        return run_dir, config, read_metrics(run_dir, ("train", "eval", "sample"))

    return work


def has_checkpoint(run_dir: Path | None) -> bool:
    folder = None if run_dir is None else RunLayout(run_dir).checkpoints_dir
    return folder is not None and folder.is_dir() and any(step_of(p.name) is not None for p in folder.iterdir())


class RunController(QObject):
    state_changed = Signal(str)
    availability_changed = Signal(bool, str)  # can start?, why / what Start will do
    progress_changed = Signal(int, int, float)  # step, max_iters, eta seconds (nan = unknown)
    prepare_progressed = Signal(str, object, object)
    run_started = Signal(object)  # StartedReport
    steps_logged = Signal(object)  # list[StepReport]
    evaluated = Signal(object)
    batch_viewed = Signal(object)
    sampled = Signal(object)
    checkpoint_saved = Signal(object)
    run_finished = Signal(object)  # FinishedReport
    run_failed = Signal(object)  # FailedReport
    run_cancelled = Signal()
    run_opened = Signal(object, object)  # run folder, its metrics records (list of dicts)
    open_failed = Signal(str, str, bool)
    thread_finished = Signal()

    def __init__(self, config: ConfigModel, parent: QObject | None = None):
        super().__init__(parent)
        self.config = config
        self._metrics = None
        self.state = IDLE
        self.run_dir: Path | None = None
        self.run_config: RunConfig | None = None  # the config the current run folder was made with
        self.step = 0
        self.max_iters = 0
        self._ms_per_iter = 0.0
        self._thread: QThread | None = None
        self._worker: TrainingWorker | None = None
        self._open_task: Task | None = None
        self._views = ViewRequest()
        self.start_action = self._action("Start training", "train_start_action", "F5", self.start)
        self.pause_action = self._action("Pause", "train_pause_action", "F6", self.toggle_pause)
        self.stop_action = self._action("Stop", "train_stop_action", "Shift+F5", self.stop)
        self.checkpoint_action = self._action("Save checkpoint now", "train_checkpoint_action", "Ctrl+S", self.save_checkpoint)
        self.pause_action.setToolTip("Pause training between two steps (F6); press again to resume")
        self.stop_action.setToolTip("Stop training and save a checkpoint (Shift+F5)")
        self.checkpoint_action.setToolTip("Save a checkpoint at the next step without stopping (Ctrl+S)")
        config.validity_changed.connect(self._on_config_validity_changed)
        config.values_changed.connect(self._on_config_values_changed)
        self._update_actions()

    def _action(self, text: str, name: str, shortcut: str, slot: Callable) -> QAction:
        action = QAction(text, self)
        action.setObjectName(name)
        action.setShortcut(QKeySequence(shortcut))
        action.triggered.connect(slot)
        return action

    @property
    def metrics(self):
        """The curves' data of the run on screen (numpy: created on first use, after the window shows)."""
        if self._metrics is None:
            from shiftstudio.gui.metrics_store import MetricsStore

            self._metrics = MetricsStore()
        return self._metrics

    # -- state ---------------------------------------------------------------
    @property
    def is_active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def paused(self) -> bool:
        """The run is paused: the trainer was told to wait between two steps (no step is logged until Resume)."""
        return self.state == PAUSED

    @property
    def thread_running(self) -> bool:
        """The training thread is alive: it ends a moment after the run's last report (or its failure)."""
        return self._thread is not None

    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self.state_changed.emit(state)
        self._update_actions()

    def plan(self) -> tuple[bool, str, str]:
        """(can start?, 'new' | 'resume' | '', a sentence for the tooltip)."""
        if self.is_active:
            return False, "", "A run is in progress."
        if not self.config.is_valid:
            return False, "", f"Fix the settings first: {self.config.error}"
        cfg = self.config.config
        if self.run_config is not None and self.run_dir is not None and has_checkpoint(self.run_dir):
            same = cfg.updated({"max_iters": self.run_config.train.max_iters}).to_dict() == self.run_config.to_dict()
            if same and self.step < cfg.train.max_iters:
                return True, "resume", f"Resume {self.run_dir.name} from step {self.step:,} to {cfg.train.max_iters:,} (F5)"
        return True, "new", "Start a new training run with these settings (F5)"

    def _update_actions(self) -> None:
        ok, mode, why = self.plan()
        self.start_action.setEnabled(ok)
        self.start_action.setText("Resume run" if mode == "resume" else "Start training")
        self.start_action.setToolTip(why)
        running = self.state in (RUNNING, PAUSED)
        self.pause_action.setEnabled(running)
        self.pause_action.setText("Resume" if self.state == PAUSED else "Pause")
        self.stop_action.setEnabled(self.state in (PREPARING, RUNNING, PAUSED))
        # while paused the engine sits in its pause wait and only looks at the request after resuming
        self.checkpoint_action.setEnabled(self.state == RUNNING)
        self.availability_changed.emit(ok, why)

    def _on_config_validity_changed(self, error: str) -> None:
        self._update_actions()

    def _on_config_values_changed(self, keys: set[str]) -> None:
        self._update_actions()

    # -- commands ------------------------------------------------------------
    def start(self) -> bool:
        """Start (or resume) the run the settings describe, as :meth:`plan` says; False when it cannot."""
        ok, mode, why = self.plan()
        if not ok:
            return False
        config = self.config.config
        if mode == "resume":
            assert self.run_dir is not None
            opener = _resume_run(self.run_dir, config.train.max_iters)
        else:
            opener = _new_run(config)
            self.run_config = config
        self.max_iters = config.train.max_iters
        return self.start_with(opener)

    def start_with(self, opener: Callable[[ProgressFn, CancelFn], TrainerLike]) -> bool:
        """Run the trainer that ``opener(progress, cancel)`` sets up, on a new training thread.

        :meth:`start` uses it with an opener that prepares the data and creates (or reopens) the run folder;
        tools and tests can hand in any opener, e.g. one returning a stand-in that follows
        :class:`~shiftstudio.gui.workers.TrainerLike`. The run goes through the same states and signals as
        any other. Returns False (and starts nothing) while a run is active.
        """
        if self.is_active:
            return False
        keep_gui_responsive()
        thread = QThread()
        thread.setObjectName("training")
        worker = TrainingWorker(opener)
        worker.set_views(self._views)
        worker.moveToThread(thread)
        worker.prepare_progressed.connect(self._on_worker_prepare_progressed)
        worker.run_started.connect(self._on_worker_run_started)
        worker.steps_logged.connect(self._on_worker_steps_logged)
        worker.evaluated.connect(self._on_worker_evaluated)
        worker.batch_viewed.connect(self._on_worker_batch_viewed)
        worker.sampled.connect(self._on_worker_sampled)
        worker.checkpoint_saved.connect(self._on_worker_checkpoint_saved)
        worker.run_finished.connect(self._on_worker_run_finished)
        worker.run_failed.connect(self._on_worker_run_failed)
        worker.cancelled.connect(self._on_worker_cancelled)
        worker.done.connect(thread.quit, Qt.DirectConnection)  # see workers.Task: wait() must not deadlock
        thread.started.connect(worker.run)
        thread.finished.connect(self._on_thread_finished)
        self._thread, self._worker = thread, worker
        self._ms_per_iter = 0.0
        self._set_state(PREPARING)
        thread.start()
        return True

    def pause(self) -> None:
        if self._worker is not None and self.state == RUNNING:
            self._worker.pause()
            self._set_state(PAUSED)

    def resume(self) -> None:
        if self._worker is not None and self.state == PAUSED:
            self._worker.resume()
            self._set_state(RUNNING)

    def toggle_pause(self) -> None:
        self.resume() if self.state == PAUSED else self.pause()

    def stop(self) -> None:
        """Cooperative: the engine saves a checkpoint and ends with a FinishedReport."""
        if self._worker is not None and self.state in (PREPARING, RUNNING, PAUSED):
            self._worker.stop()
            self._set_state(STOPPING)

    def save_checkpoint(self) -> None:
        if self._worker is not None and self.state == RUNNING:
            self._worker.request_checkpoint()

    def set_views(self, views: ViewRequest) -> None:
        """What the window shows of the live batch (the inspector's row; None: a different row at each log
        point); kept across runs."""
        self._views = views
        if self._worker is not None:
            self._worker.set_views(views)

    @property
    def snapshot_provider(self) -> Callable[[], Any] | None:
        """While a run is active: a callable (for another thread) returning ``(model, tokenizer, step)``, a copy
        of the live weights taken between two steps. None when nothing trains."""
        return self._worker.snapshot if self._worker is not None else None

    def wait(self, ms: int = 60_000) -> bool:
        """Block until the training thread has ended (only when the app quits)."""
        return True if self._thread is None else self._thread.wait(ms)

    def shutdown(self) -> bool:
        """Stop (the engine saves a checkpoint) and wait for the thread: only when the app quits."""
        self.stop()
        if self._open_task is not None:
            self._open_task.wait()
        return self._thread is None or self._thread.wait()

    # -- opening a run folder ------------------------------------------------
    def open_run(self, run_dir: str | Path) -> bool:
        if self.is_active:
            self.open_failed.emit("Stop the current run before opening another one.", "", True)
            return False
        task = Task(_read_run(Path(run_dir)), "Opening run")
        task.succeeded.connect(self._on_open_task_succeeded)
        task.failed.connect(self._on_open_task_failed)
        task.finished.connect(self._on_open_task_finished)
        self._open_task = task
        task.start()
        return True

    def _on_open_task_succeeded(self, result: tuple) -> None:
        run_dir, config, records = result
        self.run_dir, self.run_config = run_dir, config
        steps = [int(r.get("step", 0)) for r in records if r.get("kind") in ("train", "eval")]
        self.step = max(steps, default=0)
        self.max_iters = config.train.max_iters
        self.config.load(config)
        self.metrics.load_records(records)
        self._set_state(IDLE)
        self.run_opened.emit(run_dir, records)
        self.progress_changed.emit(self.step, self.max_iters, float("nan"))

    def _on_open_task_failed(self, message: str, detail: str, expected: bool) -> None:
        self.open_failed.emit(message, detail, expected)

    def _on_open_task_finished(self) -> None:
        self._open_task = None

    # -- worker signals (queued into the GUI thread) --------------------------
    def _on_worker_prepare_progressed(self, phase: str, done: object, total: object) -> None:
        self.prepare_progressed.emit(phase, done, total)

    def _on_worker_run_started(self, report: Any) -> None:
        self.run_dir = Path(report.run_dir)
        self.step = report.step
        self.max_iters = report.max_iters
        if not report.resumed:
            self.metrics.clear()
        if self.state == PREPARING:
            self._set_state(RUNNING)
        self.run_started.emit(report)
        self.progress_changed.emit(self.step, self.max_iters, float("nan"))

    def _on_worker_steps_logged(self, reports: list) -> None:
        last = reports[-1]
        self.step = last.step
        if last.ms_per_iter and last.ms_per_iter > 0:
            a = 0.3 if self._ms_per_iter else 1.0
            self._ms_per_iter = a * last.ms_per_iter + (1 - a) * self._ms_per_iter
        eta = (self.max_iters - self.step) * self._ms_per_iter / 1000 if self._ms_per_iter else float("nan")
        self.metrics.add_steps(reports)
        self.steps_logged.emit(reports)
        self.progress_changed.emit(self.step, self.max_iters, eta)

    def _on_worker_evaluated(self, report: Any) -> None:
        self.metrics.add_eval(report)
        self.evaluated.emit(report)

    def _on_worker_batch_viewed(self, report: Any) -> None:
        self.batch_viewed.emit(report)

    def _on_worker_sampled(self, report: Any) -> None:
        self.sampled.emit(report)

    def _on_worker_checkpoint_saved(self, report: Any) -> None:
        self.checkpoint_saved.emit(report)
        self._update_actions()

    def _on_worker_run_finished(self, report: Any) -> None:
        self.step = report.step
        self._set_state(FINISHED if report.reason == "completed" else STOPPED)
        self.run_finished.emit(report)
        self.progress_changed.emit(self.step, self.max_iters, 0.0 if report.reason == "completed" else float("nan"))

    def _on_worker_run_failed(self, report: Any) -> None:
        self._set_state(FAILED)
        self.run_failed.emit(report)

    def _on_worker_cancelled(self) -> None:
        self._set_state(IDLE)
        self.run_cancelled.emit()

    def _on_thread_finished(self) -> None:
        thread, worker = self._thread, self._worker
        self._thread = self._worker = None
        if self.state in ACTIVE_STATES:  # ended without a final report
            self._set_state(STOPPED)
        if thread is not None:
            thread.wait()  # 'finished' comes just before the thread ends: let it end
        del worker, thread
        self._update_actions()
        self.thread_finished.emit()
