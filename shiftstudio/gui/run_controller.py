"""Starts, pauses, resumes and stops training runs; owns the training thread.

The controller lives in the GUI thread. For each run it creates a
:class:`~shiftstudio.gui.workers.TrainingWorker` on a fresh ``QThread``,
connects the worker's signals to its own ``_on_worker_*`` methods (queued
delivery) and re-emits them, so panes connect once to the controller rather
than to short-lived workers. Its actions (Start F5, Start new run Ctrl+F5,
Pause/Resume F6, Stop Shift+F5, Save checkpoint Ctrl+S; see
:mod:`~shiftstudio.gui.run_actions`) are shared by the menus and the Train
pane; what Start does now is :meth:`RunController.plan` (see
:mod:`~shiftstudio.gui.run_plan`). While the window is still loading, Start
is *held*: a press is queued, said so, and carried out when the window
releases it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

from PySide6.QtCore import QObject, Qt, QThread, Signal

from shiftstudio.config import RunConfig
from shiftstudio.core.train.control import ViewRequest
from shiftstudio.gui.config_model import ConfigModel
from shiftstudio.gui.run_actions import RunActions
from shiftstudio.gui.run_openers import (
    OpenedRun, create_only, follow_run, latest_checkpoint_step, new_run, read_run, resume_run,
)
from shiftstudio.gui.run_plan import RESUME, OpenRun, StartPlan, start_plan
from shiftstudio.gui.workers import CancelFn, ProgressFn, Task, TrainerLike, TrainingWorker, keep_gui_responsive

log = logging.getLogger(__name__)

IDLE, PREPARING, RUNNING, PAUSED, STOPPING, FINISHED, STOPPED, FAILED = (
    "idle", "preparing", "running", "paused", "stopping", "finished", "stopped", "failed",
)
ACTIVE_STATES = (PREPARING, RUNNING, PAUSED, STOPPING)
STATE_TEXT = {
    IDLE: "Idle", PREPARING: "Preparing data", RUNNING: "Training", PAUSED: "Paused",
    STOPPING: "Stopping…", FINISHED: "Finished", STOPPED: "Stopped", FAILED: "Failed",
}


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
    noted = Signal(object)  # NoteReport: something the run did by itself (e.g. halved its micro-batch)
    run_finished = Signal(object)  # FinishedReport
    run_failed = Signal(object)  # FailedReport
    run_cancelled = Signal()
    run_opened = Signal(object, object)  # run folder, its metrics records (list of dicts)
    open_failed = Signal(str, str, bool)
    thread_finished = Signal()
    plan_changed = Signal(object)  # StartPlan: what Start (F5) does now
    start_queued = Signal(str)  # Start was pressed while held: what it waits for ('' = no longer waiting)

    def __init__(self, config: ConfigModel, parent: QObject | None = None):
        super().__init__(parent)
        self.config = config
        self._metrics = None
        self.state = IDLE
        self.run_dir: Path | None = None
        self.run_config: RunConfig | None = None  # the config the current run folder trains with (its plan too)
        self.step = 0
        self.max_iters = 0
        self.checkpoint_step: int | None = None  # the run folder's newest checkpoint: where a resume starts
        self._new_config: RunConfig | None = None  # a new run's, until it has started
        self._ms_per_iter = 0.0
        self._thread: QThread | None = None
        self._worker: TrainingWorker | None = None
        self._open_task: Task | None = None
        # a start asked for while the last run's thread was ending: (opener, max_iters, new config), started then
        self._after_thread: tuple[Callable[[ProgressFn, CancelFn], TrainerLike], int, Any] | None = None
        self._views = ViewRequest()
        self.following = ""  # a run another process trains, followed through its log: who trains it ('' = none)
        self.processes = 1  # 1: runs train in this window's thread; more: Start launches torchrun with that many
        self.launched: Path | None = None  # the run this window launched with torchrun (it may outlive the window)
        self._launcher = None
        # asked before a new run leaves a resumable one behind (the window asks with a dialog; tests answer)
        self.confirm_new_run: Callable[[str], bool] = lambda question: True
        self.actions = RunActions(self)
        self.start_action, self.new_run_action = self.actions.start, self.actions.new_run
        self.pause_action, self.stop_action, self.checkpoint_action = self.actions.pause, self.actions.stop, self.actions.checkpoint
        self.actions.pressed.connect(self._on_actions_pressed)
        self.actions.start_queued.connect(self.start_queued)
        self.pause_action.triggered.connect(self._on_pause_action_triggered)
        self.stop_action.triggered.connect(self._on_stop_action_triggered)
        self.checkpoint_action.triggered.connect(self._on_checkpoint_action_triggered)
        config.validity_changed.connect(self._on_config_validity_changed)
        config.values_changed.connect(self._on_config_values_changed)
        config.links_changed.connect(self._on_config_links_changed)
        self._update_actions()

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

    @property
    def open_run_info(self) -> OpenRun | None:
        """The run folder on screen (opened, or the last run trained), if any."""
        if self.run_dir is None or self.run_config is None:
            return None
        return OpenRun(self.run_dir, self.run_config, self.checkpoint_step)

    def plan(self) -> StartPlan:
        """What Start (F5) does now: resume the open run, start a new one, or nothing (and why)."""
        config = self.config
        return start_plan(self.is_active, config.error, config.config, config.linked_keys(), self.open_run_info)

    def _update_actions(self) -> None:
        plan = self.plan()
        self.actions.update(plan, self.state)
        self.availability_changed.emit(plan.ok, plan.why)
        self.plan_changed.emit(plan)

    def _on_config_validity_changed(self, error: str) -> None:
        self._update_actions()

    def _on_config_values_changed(self, keys: set[str]) -> None:
        self._update_actions()

    def _on_config_links_changed(self) -> None:  # (a resume may keep linked fields at the run's values)
        self._update_actions()

    # -- presses of the actions ------------------------------------------------
    def hold_starts(self, reason: str) -> None:
        """Until :meth:`release_starts`, a press of Start is queued (``start_queued`` says ``reason``)."""
        self.actions.hold(reason)

    def release_starts(self) -> None:
        """Stop holding; a queued press is carried out now."""
        queued = self.actions.release()
        if queued is not None:
            self.request_start(new=queued)

    @property
    def queued_start(self) -> str:
        """While a press of Start waits: what it waits for ('' otherwise)."""
        return self.actions.queued

    def _on_actions_pressed(self, new: bool) -> None:
        self.request_start(new=new)

    def _on_pause_action_triggered(self) -> None:
        self.toggle_pause()

    def _on_stop_action_triggered(self) -> None:
        self.stop()

    def _on_checkpoint_action_triggered(self) -> None:
        self.save_checkpoint()

    # -- commands ------------------------------------------------------------
    def request_start(self, new: bool = False) -> bool:
        """What a press of Start does (``new``: of Start new run): as :meth:`start`, but a new run that would
        leave a resumable run behind is confirmed first (``confirm_new_run``)."""
        plan = self.plan()
        if not plan.ok:
            return False
        if plan.mode == RESUME and new:
            run = self.open_run_info
            question = f"Start a new run? The open run ({run.where()}) can be resumed instead (Resume run, F5)." if run else ""
        else:
            question = plan.question
        if question and not self.confirm_new_run(question):
            return False
        return self.start(new=new)

    def start(self, new: bool = False) -> bool:
        """Start (or resume) the run the settings describe, as :meth:`plan` says (``new``: a new run even when
        the open one could be resumed); False when it cannot. Asks nothing: see :meth:`request_start`."""
        plan = self.plan()
        if not plan.ok:
            return False
        config = self.config.config
        resume = plan.mode == RESUME and not new
        policy = plan.applied.get("on_out_of_memory") if resume else None
        if self.processes > 1:
            started = self._launch(resume, config, policy)
        else:
            if resume:
                assert self.run_dir is not None
                if plan.kept:  # the run trains with its own linked settings: the form shows them
                    self.config.load_flat(plan.kept)
                opener = resume_run(self.run_dir, config.train.max_iters, on_out_of_memory=policy)
            else:
                opener = new_run(config, self.config.preset)
                self._new_config = config  # the open run stays open until the new one has its folder
            self.max_iters = config.train.max_iters
            started = self.start_with(opener)
        if started and policy is not None and self.run_config is not None:
            # the trainer records the new policy in run.json: the open run's config says it too, so that the form
            # and the run agree again
            self.run_config = self.run_config.updated({"on_out_of_memory": policy})
        return started

    def start_with(self, opener: Callable[[ProgressFn, CancelFn], TrainerLike]) -> bool:
        """Run the trainer that ``opener(progress, cancel)`` sets up (any :class:`~shiftstudio.gui.workers.TrainerLike`:
        tools and tests may hand in a stand-in) on a new training thread, through the same states and signals as
        :meth:`start`'s runs. Returns False (and starts nothing) while a run is active.

        The last run's final report (finished, failed) comes just before its thread ends: a start in between
        (F5 pressed at once, or the out-of-memory offer) waits for that thread and starts when it has ended."""
        if self.is_active or self._after_thread is not None:
            return False
        if self._thread is not None:
            self._after_thread = (opener, self.max_iters, self._new_config)
            return True
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
        worker.noted.connect(self.noted)
        worker.run_finished.connect(self._on_worker_run_finished)
        worker.run_failed.connect(self._on_worker_run_failed)
        worker.cancelled.connect(self._on_worker_cancelled)
        worker.done.connect(thread.quit, Qt.DirectConnection)  # see workers.Task: wait() must not deadlock
        thread.started.connect(worker.run)
        thread.finished.connect(self._on_thread_finished)
        self._thread, self._worker = thread, worker
        self._ms_per_iter = 0.0
        self._set_state(PREPARING)
        # Below the window's priority where Qt can set it (Windows, macOS); on Linux the thread renices itself
        # (run_openers.lower_thread_priority), which its OpenMP workers inherit.
        thread.start(QThread.Priority.LowPriority)
        return True

    def go_on_in_pieces(self, micro_splits: int, always: bool = False) -> bool:
        """After the run on screen stopped out of memory in a step (its last completed step saved): resume it, in
        the same folder and from that step, with each micro-batch cut into ``micro_splits`` pieces (the
        ``FailedReport``'s ``suggested_micro_splits``) — the batch per step and the results stay the same, it is
        slower. ``always``: also ``on_out_of_memory = split``, in the form and recorded with the run, so that the
        next time the run does this by itself. The failed run's thread holds the run until it ends: the resume
        starts then. False (nothing done) while a run is active or when there is no run to go on with."""
        if self.is_active or self._after_thread is not None or self.run_dir is None or self.run_config is None:
            return False
        policy = None
        if always:
            policy = "split"
            self.config.load_flat({"on_out_of_memory": policy})
            self.run_config = self.run_config.updated({"on_out_of_memory": policy})  # (the trainer records it)
        self.max_iters = self.run_config.train.max_iters
        return self.start_with(resume_run(self.run_dir, self.max_iters, micro_splits, policy))

    # -- several processes: torchrun ----------------------------------------------
    def _launch(self, resume: bool, config: RunConfig, on_out_of_memory: str | None = None) -> bool:
        """Start the run on ``processes`` processes under torchrun (a detached child), then follow it."""
        if self.is_active:
            return False
        from shiftstudio.core.errors import ConfigError
        from shiftstudio.core.train.ranks import check_config

        try:  # what the job would refuse, said before anything is made
            check_config(config, self.processes)
        except ConfigError as exc:
            self.open_failed.emit(str(exc), "", True)
            return False
        self.max_iters = config.train.max_iters
        self._set_state(PREPARING)
        if resume:
            assert self.run_dir is not None
            self._start_torchrun(self.run_dir, on_out_of_memory)
            return True
        task = Task(create_only(config, self.config.preset), "Creating the run")
        task.progressed.connect(self._on_worker_prepare_progressed)
        task.succeeded.connect(self._start_torchrun)
        task.failed.connect(self._on_launch_task_failed)
        task.cancelled.connect(self._on_worker_cancelled)
        self._open_task = task
        task.finished.connect(self._on_open_task_finished)
        task.start()
        return True

    def _start_torchrun(self, run_dir: Path, on_out_of_memory: str | None = None) -> None:
        from shiftstudio.gui.launcher import TorchrunLauncher

        self._launcher = TorchrunLauncher(Path(run_dir), self.processes, self.max_iters, self, on_out_of_memory)
        self._launcher.started.connect(self._on_launcher_started)
        self._launcher.failed.connect(self._on_launcher_failed)
        self._launcher.start()

    def _on_launcher_started(self, run_dir: Path) -> None:
        self.launched = run_dir
        self._set_state(IDLE)
        self.open_run(run_dir, load_config=False)  # its lock is held: the window follows it

    def _on_launcher_failed(self, message: str, tail: str) -> None:
        from shiftstudio.core.train.reports import FailedReport

        self._set_state(FAILED)
        self.run_failed.emit(FailedReport(step=0, message=message, detail=tail, expected=True))

    def _on_launch_task_failed(self, message: str, detail: str, expected: bool) -> None:
        from shiftstudio.core.train.reports import FailedReport

        self._set_state(FAILED)
        self.run_failed.emit(FailedReport(step=0, message=message, detail=detail, expected=expected))

    def pause(self) -> None:
        if self._worker is not None and self.state == RUNNING:
            self._worker.pause()
            self._set_state(PAUSED)
            self.progress_changed.emit(self.step, self.max_iters, float("nan"))  # no ETA while paused

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
        """Ask for a checkpoint at the next step boundary (served while paused too)."""
        if self._worker is not None and self.state in (RUNNING, PAUSED):
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
        """Stop (the engine saves a checkpoint) and wait for the thread: only when the app quits. A run another
        process trains is left training: the window only stops following it."""
        if self.following and self._worker is not None:
            self._worker.detach()
        else:
            self.stop()
        if self._open_task is not None:
            self._open_task.wait()
        return self._thread is None or self._thread.wait()

    # -- opening a run folder ------------------------------------------------
    @property
    def opening(self) -> bool:
        """A run folder is being read."""
        return self._open_task is not None

    def open_run(self, run_dir: str | Path, load_config: bool = True) -> bool:
        """Read a run folder in a worker: its curves, where it stands, and (``load_config``) its settings into the
        form. Without ``load_config`` the form keeps its settings (the window reopening the last run at start
        with the settings it was left with)."""
        if self.is_active:
            self.open_failed.emit("Stop the current run before opening another one.", "", True)
            return False
        task = Task(read_run(Path(run_dir)), "Opening run")
        task.setProperty("load_config", load_config)
        task.succeeded.connect(self._on_open_task_succeeded)
        task.failed.connect(self._on_open_task_failed)
        task.finished.connect(self._on_open_task_finished)
        self._open_task = task
        task.start()
        return True

    def _on_open_task_succeeded(self, opened: OpenedRun) -> None:
        self.run_dir, self.run_config = opened.run_dir, opened.config
        self.checkpoint_step = opened.checkpoint_step
        logged = [int(r.get("step", 0)) for r in opened.records if r.get("kind") in ("train", "eval")]
        # where the run stands is its newest checkpoint (a resume starts there), not the last logged step
        self.step = opened.checkpoint_step if opened.checkpoint_step is not None else max(logged, default=0)
        self.max_iters = opened.config.train.max_iters  # the recorded plan (a resume's new max_iters included)
        if self.sender().property("load_config"):
            self.config.load(opened.config)
        self.metrics.load_records(opened.records)
        self._set_state(IDLE)
        self.run_opened.emit(opened.run_dir, opened.records)
        self.progress_changed.emit(self.step, self.max_iters, float("nan"))
        if opened.held_by:  # another process trains it: follow its log; Pause/Stop go through its control file
            self.follow(opened)

    def follow(self, opened: OpenedRun) -> bool:
        """Show ``opened`` (a run another process trains) live through the same signals as a run trained here."""
        step = max([int(r.get("step", 0)) for r in opened.records if r.get("kind") in ("train", "eval")], default=0)
        if not self.start_with(follow_run(opened, step, opened.config.train.max_iters)):
            return False
        self.following = opened.held_by
        return True

    def stop_following(self) -> None:
        """Let go of a followed run (it trains on in its own process); the window keeps what it has shown."""
        if self.following and self._worker is not None:
            self._worker.detach()

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
            self.run_config, self.checkpoint_step = self._new_config or self.run_config, None
            self.metrics.clear()
        elif self.run_config is not None and self.run_config.train.max_iters != report.max_iters:
            self.run_config = self.run_config.updated({"max_iters": report.max_iters})  # (the engine records it too)
        self._new_config = None
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
        known = self._ms_per_iter and self.state == RUNNING  # reports still on their way after a pause: no ETA
        eta = (self.max_iters - self.step) * self._ms_per_iter / 1000 if known else float("nan")
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
        self.checkpoint_step = max(report.step, self.checkpoint_step or 0)
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
        followed, self.following = self.following, ""
        self.launched = None
        if self.state in ACTIVE_STATES:  # ended without a final report (or the window let go of a followed run)
            self._set_state(IDLE if followed else STOPPED)
        if thread is not None:
            thread.wait()  # 'finished' comes just before the thread ends: let it end
        del worker, thread
        self._new_config = None  # (a new run that failed or was cancelled before it started)
        self.checkpoint_step = latest_checkpoint_step(self.run_dir)  # (kept checkpoints may have been pruned)
        self._update_actions()
        self.thread_finished.emit()
        queued, self._after_thread = self._after_thread, None
        if queued is not None:  # a start while this thread was ending (see start_with)
            opener, self.max_iters, self._new_config = queued
            self.start_with(opener)
