"""Train pane: Start / Pause / Stop / Save checkpoint, progress with ETA, live curves, samples.

The curves and the samples share a splitter whose minimum heights are small,
so the window's bottom panes (inspector, playground) can be given room: the
curves shrink rather than hold the bottom docks down.
"""

from __future__ import annotations

import math
from typing import Any, Self

from PySide6.QtCore import Qt
from PySide6.QtGui import QFontDatabase
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QSizePolicy,
    QProgressBar,
    QSplitter,
    QStyle,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from shiftstudio.format import human_duration
from shiftstudio.gui.panes import Pane, PaneContext
from shiftstudio.gui.plots import CurvesView
from shiftstudio.gui.run_controller import FAILED, PAUSED, PREPARING, STATE_TEXT, RunController
from shiftstudio.gui.run_plan import StartPlan
from shiftstudio.gui.widgets.elided_label import SelectableElidedLabel
from shiftstudio.gui.widgets.message_bar import MessageAction, MessageBar

MAX_SAMPLE_CHARS = 20_000
CURVES_MIN_HEIGHT = 170  # the plots' canvas, at least: two rows of plots stay readable (with the banner showing)
SAMPLES_MIN_HEIGHT = 36  # about two lines


class TrainPane(Pane):
    """The run controller's actions as buttons, its progress, the curves of its metrics and its samples."""

    title = "Train"

    def __init__(self, runs: RunController, parent: QWidget | None = None, session: Any = None):
        super().__init__(parent)
        self.runs = runs
        self._last_note = ""  # the run's last NoteReport, said again when it ends
        icons = self.style()
        self._play_icon, self._pause_icon = icons.standardIcon(QStyle.SP_MediaPlay), icons.standardIcon(QStyle.SP_MediaPause)
        runs.start_action.setIcon(self._play_icon)
        runs.pause_action.setIcon(self._pause_icon)  # a play icon while paused (see _on_runs_state_changed)
        runs.stop_action.setIcon(icons.standardIcon(QStyle.SP_MediaStop))
        runs.checkpoint_action.setIcon(icons.standardIcon(QStyle.SP_DialogSaveButton))
        self.start_button = self._tool_button(runs.start_action, "train_start_button")
        self.pause_button = self._tool_button(runs.pause_action, "train_pause_button")
        self.stop_button = self._tool_button(runs.stop_action, "train_stop_button")
        self.checkpoint_button = self._tool_button(runs.checkpoint_action, "train_checkpoint_button")
        self.train_on_combo = QComboBox(self)
        self.train_on_combo.setObjectName("train_on_combo")
        self.train_on_combo.setSizeAdjustPolicy(QComboBox.AdjustToContents)
        self.train_on_combo.setSizePolicy(QSizePolicy.Fixed, QSizePolicy.Fixed)  # never squeezed by the labels
        self.train_on_combo.setToolTip(
            "Where Start trains the run. In this window: one process, the device of the 'device' setting. Several "
            "devices: Start launches torchrun with one process per device (DDP: each holds the whole model; FSDP: "
            "weights and optimizer state are sharded, for models that do not fit on one device); the window "
            "follows the run and may be closed while it trains. gradient_accumulation_steps must be a multiple "
            "of the number of processes.")
        self._set_train_on_choices(session.device if session is not None else None)
        self.train_on_combo.activated.connect(self._on_train_on_combo_activated)
        if session is not None:
            session.device_probed.connect(self._set_train_on_choices)
        self.reason_label = QLabel("", self)  # why Start is disabled: the whole sentence, wrapped, on its own row
        self.reason_label.setObjectName("train_reason_label")
        self.reason_label.setProperty("role", "hint")
        self.reason_label.setWordWrap(True)
        self.reason_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.reason_label.hide()
        self.checkpoint_label = QLabel("", self)
        self.checkpoint_label.setObjectName("train_checkpoint_label")
        self.checkpoint_label.setProperty("role", "hint")
        self.checkpoint_label.setToolTip("The last checkpoint saved in the run folder (checkpoints/step-N)")
        self.run_label = SelectableElidedLabel("", self)  # (cut in the middle when narrow: the date, then what differs)
        self.run_label.setObjectName("train_run_label")
        self.run_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        # Labels whose text changes during a run must not change the pane's minimum size: that would
        # resize the window and re-lay out (and repaint) every plot. Fixed widths do it: the checkpoint's fits
        # any step; the run's name (set as a run starts) is cut in the middle when the row is narrow.
        self.checkpoint_label.setFixedWidth(self.checkpoint_label.fontMetrics().horizontalAdvance(
            "Checkpoint: step 9,999,999 (best)") + 4)
        self.run_label.setMinimumWidth(40)
        self.progress_bar = QProgressBar(self)
        self.progress_bar.setObjectName("train_progress_bar")
        self.progress_bar.setToolTip("Steps done of max_iters, and the estimated time left")
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.progress_bar.setFormat("No run yet")
        self.messages = MessageBar(self, "train_message_bar")
        self.curves = CurvesView(runs.metrics, self)
        self.sample_text = QPlainTextEdit(self)
        self.sample_text.setObjectName("train_sample_text")
        self.sample_text.setToolTip("Text the model wrote at each evaluation")
        self.sample_text.setReadOnly(True)
        self.sample_text.setPlaceholderText("Samples from the model appear here at each evaluation.")
        self.sample_text.setFont(QFontDatabase.systemFont(QFontDatabase.FixedFont))
        self.sample_text.setMaximumBlockCount(2000)
        self.sample_text.setMinimumHeight(SAMPLES_MIN_HEIGHT)
        self.curves.graphics.setMinimumHeight(CURVES_MIN_HEIGHT)  # (the canvas asks for more by itself)

        controls = QHBoxLayout()
        for b in (self.start_button, self.pause_button, self.stop_button, self.checkpoint_button):
            controls.addWidget(b)
        controls.addWidget(self.train_on_combo)
        controls.addStretch(1)
        controls.addWidget(self.run_label)
        progress = QHBoxLayout()  # the checkpoint beside the steps (the buttons' row has no room for it and the name)
        progress.addWidget(self.progress_bar, 1)
        progress.addSpacing(8)
        progress.addWidget(self.checkpoint_label)
        self.splitter = QSplitter(Qt.Vertical, self)
        self.splitter.setObjectName("train_splitter")
        self.splitter.addWidget(self.curves)
        self.splitter.addWidget(self.sample_text)
        self.splitter.setStretchFactor(0, 5)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setSizes([600, 80])
        layout = QVBoxLayout(self)
        layout.addLayout(controls)
        layout.addWidget(self.reason_label)
        layout.addLayout(progress)
        layout.addWidget(self.messages)
        layout.addWidget(self.splitter, 1)

        runs.plan_changed.connect(self._on_runs_plan_changed)
        runs.start_queued.connect(self._on_runs_start_queued)
        runs.state_changed.connect(self._on_runs_state_changed)
        runs.progress_changed.connect(self._on_runs_progress_changed)
        runs.prepare_progressed.connect(self._on_runs_prepare_progressed)
        runs.run_started.connect(self._on_runs_run_started)
        runs.sampled.connect(self._on_runs_sampled)
        runs.checkpoint_saved.connect(self._on_runs_checkpoint_saved)
        runs.noted.connect(self._on_runs_noted)
        runs.run_finished.connect(self._on_runs_run_finished)
        runs.run_failed.connect(self._on_runs_run_failed)
        runs.run_cancelled.connect(self._on_runs_run_cancelled)
        runs.run_opened.connect(self._on_runs_run_opened)
        runs.open_failed.connect(self._on_runs_open_failed)
        self.curves.export_png_requested.connect(self._on_curves_export_png_requested)
        self.curves.export_csv_requested.connect(self._on_curves_export_csv_requested)
        self._on_runs_plan_changed(runs.plan())
        self._on_runs_state_changed(runs.state)
        if runs.queued_start:  # Start was pressed before this pane existed
            self._on_runs_start_queued(runs.queued_start)

    @classmethod
    def from_context(cls, ctx: PaneContext) -> Self:
        return cls(ctx.runs, session=ctx.session)

    def _tool_button(self, action: Any, name: str) -> QToolButton:
        button = QToolButton(self)
        button.setDefaultAction(action)
        button.setObjectName(name)
        button.setToolButtonStyle(Qt.ToolButtonTextBesideIcon)
        return button

    def _set_train_on_choices(self, device: Any) -> None:
        """In this window, and — on a machine with several GPUs — all of them with DDP or FSDP; a machine
        without GPUs offers two CPU processes (gloo), to try the path (no faster than one process there)."""
        combo = self.train_on_combo
        current = combo.currentData()
        combo.clear()
        gpus = getattr(device, "gpus", 0) if device is not None else 0
        choices = [("In this window", (1, ""), "One process: the run trains in this window's training thread.")]
        ddp, fsdp = ("torchrun with one process per {0}, DDP: each holds the whole model and optimizer",
                     "torchrun with one process per {0}, FSDP: weights, gradients and optimizer state sharded per "
                     "block, for a model that does not fit on one device")
        if gpus >= 2:
            choices += [(f"All {gpus} GPUs · DDP", (gpus, "ddp"), ddp.format("GPU") + "."),
                        (f"All {gpus} GPUs · FSDP", (gpus, "fsdp"), fsdp.format("GPU") + ".")]
        elif device is not None and getattr(device, "kind", "") == "cpu":
            cpu = " (gloo). To try the path: no faster than one process on a CPU."
            choices += [("2 CPU processes · DDP", (2, "ddp"), ddp.format("CPU process") + cpu),
                        ("2 CPU processes · FSDP", (2, "fsdp"), fsdp.format("CPU process") + cpu)]
        for text, data, tip in choices:
            combo.addItem(text, data)
            combo.setItemData(combo.count() - 1, tip, Qt.ToolTipRole)
        index = max(0, combo.findData(current)) if current is not None else 0
        combo.setCurrentIndex(index)
        self._on_train_on_combo_activated(index)

    def _on_train_on_combo_activated(self, index: int) -> None:
        processes, parallel = self.train_on_combo.itemData(index) or (1, "")
        self.runs.processes = processes
        if parallel and self.runs.config.config.train.parallel != parallel:
            self.runs.config.load_flat({"parallel": parallel})  # the run records how it was sharded

    def choose_train_on(self, text_start: str) -> None:
        """Pick the first choice whose text starts with ``text_start`` (as a click would)."""
        for i in range(self.train_on_combo.count()):
            if self.train_on_combo.itemText(i).startswith(text_start):
                self.train_on_combo.setCurrentIndex(i)
                self._on_train_on_combo_activated(i)
                return
        raise ValueError(f"no choice {text_start!r} in {[self.train_on_combo.itemText(i) for i in range(self.train_on_combo.count())]}")

    def _show_run_name(self, name: str) -> None:
        self.run_label.setText(f"Run: {name}" if name else "")

    # -- controller signals --------------------------------------------------
    def _on_runs_plan_changed(self, plan: StartPlan) -> None:
        reason = "" if plan.ok or self.runs.is_active else plan.why  # while a run goes, the buttons say it
        self.reason_label.setText(reason)
        self.reason_label.setVisible(bool(reason))
        self.start_button.setToolTip(plan.why)

    def _on_runs_start_queued(self, waiting_for: str) -> None:
        if waiting_for:
            self.progress_bar.setRange(0, 0)
            self.progress_bar.setFormat(waiting_for)
        elif not self.runs.is_active:  # no longer waiting (a run starts next, or it was not to be): as before
            if self.runs.max_iters:
                self._on_runs_progress_changed(self.runs.step, self.runs.max_iters, float("nan"))
            else:
                self.progress_bar.setRange(0, 1)
                self.progress_bar.setFormat("No run yet")

    def _on_runs_state_changed(self, state: str) -> None:
        paused = state == PAUSED
        self.runs.pause_action.setIcon(self._play_icon if paused else self._pause_icon)
        self.train_on_combo.setEnabled(not self.runs.is_active)  # where a run trains is chosen before Start
        if paused:  # no ETA while paused
            self._on_runs_progress_changed(self.runs.step, self.runs.max_iters, float("nan"))
        if state == PREPARING:
            self.messages.clear()
            self._last_note = ""  # (a note of this run's is said again when it ends)
            self.progress_bar.setRange(0, 0)
            self.progress_bar.setFormat("Preparing data…")

    def _on_runs_prepare_progressed(self, phase: str, done: int, total: int) -> None:
        if total:
            self.progress_bar.setRange(0, 1000)
            self.progress_bar.setValue(int(1000 * min(done, total) / total))
        self.progress_bar.setFormat(f"Preparing data: {phase} %p%")

    def _on_runs_progress_changed(self, step: int, max_iters: int, eta: float) -> None:
        self.progress_bar.setRange(0, max(1, max_iters))
        self.progress_bar.setValue(min(step, max_iters))
        state = STATE_TEXT.get(self.runs.state, "")
        eta_text = f" · ETA {human_duration(eta)}" if not math.isnan(eta) and eta > 0 else ""
        self.progress_bar.setFormat(f"{state} · step {step:,} / {max_iters:,}{eta_text}")

    def _on_runs_run_started(self, report: Any) -> None:
        name = report.run_dir.rsplit("/", 1)[-1]
        self._show_run_name(name + (" · followed: it trains in another process" if self.runs.following else ""))
        trains = f" ({report.n_trainable:,} train)" if report.n_trainable is not None else ""
        origin = f"\nfine-tuned from {report.source}" if report.source else ""
        follow = (f"\ntrained by {self.runs.following}; the window follows its log, and Pause and Stop are sent to it"
                  if self.runs.following else "")
        self.run_label.setToolTip(
            f"{report.run_dir}\n{report.device} · {report.n_params:,} parameters{trains} · {report.tokens_per_step:,} tokens per step{origin}{follow}"
        )
        config = self.runs.run_config
        peak = config.train.learning_rate if config is not None else None
        self.curves.set_x_extent(report.max_iters, report.max_iters * report.tokens_per_step, peak)
        # No message here: a message bar appearing now would re-lay out the plots as training starts.
        # The status bar and the run label say where it runs.
        if not report.resumed:
            self.sample_text.clear()
            self.checkpoint_label.clear()

    def _on_runs_sampled(self, report: Any) -> None:
        self.sample_text.appendPlainText(f"── step {report.step:,} ──\n{report.prompt}{report.text[:MAX_SAMPLE_CHARS]}\n")

    def _on_runs_checkpoint_saved(self, report: Any) -> None:
        # a label, not the message bar: a message bar that changes height re-lays out the plots mid-run
        best = " (best)" if report.is_best else ""
        self.checkpoint_label.setText(f"Checkpoint: step {report.step:,}{best}")

    def _on_runs_noted(self, report: Any) -> None:
        # The message bar, though it re-lays out the plots: this is rare, and the run changed how it trains.
        self._last_note = report.message[:1].upper() + report.message[1:]
        self.messages.show_message(f"{self._last_note}. The run goes on.", "warning")

    def _on_runs_run_finished(self, report: Any) -> None:
        text = {"completed": "Training finished", "stopped": "Training stopped", "early_stop": "Stopped early (no better validation loss)"}.get(report.reason, "Training ended")
        best = f"; best val loss {report.best_val_loss:.4f}" if report.best_val_loss is not None else ""
        noted = f" Along the way: {self._last_note}." if self._last_note else ""
        self.messages.show_message(f"{text} at step {report.step:,}{best}. The run is saved in {report.run_dir}.{noted}",
                                   "info")
        self._on_runs_progress_changed(report.step, self.runs.max_iters, float("nan"))

    def _on_runs_run_failed(self, report: Any) -> None:
        pieces = getattr(report, "suggested_micro_splits", 0)
        config = self.runs.run_config
        if getattr(report, "out_of_memory", False) and pieces and config is not None and not self.runs.following:
            self._offer_pieces(report, pieces, config.train.batch_size)
        else:
            self.messages.show_message(f"Training stopped: {report.message}", "error", "" if report.expected else report.detail)
        self.progress_bar.setRange(0, max(1, self.runs.max_iters))
        self.progress_bar.setFormat(f"{STATE_TEXT[FAILED]} at step {report.step:,}")

    def _offer_pieces(self, report: Any, pieces: int, batch_size: int) -> None:
        """A step ran out of memory and the run kept its last completed step: offer to go on from there with
        each micro-batch in ``pieces`` pieces (once, or from now on with on_out_of_memory = split)."""
        rows = -(-batch_size // pieces)
        before = batch_size // max(1, report.micro_splits)
        kept = (f"Step {report.step:,} is saved: the run can go on from there." if report.step > 0
                else "Nothing was trained yet: the run can start again from step 0.")
        text = (f"Training stopped: out of memory in step {report.step + 1:,} (micro-batches of {before:,} rows). {kept} "
                f"Going on with half the micro-batch cuts each micro-batch into {pieces} pieces of {rows:,} rows and "
                "adds up their gradients: the batch per step and the results stay the same, it is only slower. "
                "“Always do this” also sets on_out_of_memory = split, so that the run does it by itself next time.")
        go_on = MessageAction(
            "Go on with half the micro-batch", lambda: self.runs.go_on_in_pieces(pieces), "train_oom_go_on_button",
            f"Resume this run from step {report.step:,} with each micro-batch in {pieces} pieces: the same batches "
            "and results, slower")
        always = MessageAction(
            "Always do this", lambda: self.runs.go_on_in_pieces(pieces, always=True), "train_oom_always_button",
            "Go on with half the micro-batch, and set on_out_of_memory = split (in the settings and for this run): "
            "when memory runs out again, the micro-batch is halved by itself")
        self.messages.show_message(text, "warning", actions=(go_on, always))

    def _on_runs_run_cancelled(self) -> None:
        self.messages.show_message("Cancelled before training began.", "info")
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.progress_bar.setFormat("No run yet")

    def _on_runs_run_opened(self, run_dir: Any, records: list) -> None:
        self._last_note = ""
        config = self.runs.run_config
        if config is not None:
            per_step = config.train.tokens_per_step_factor * config.model.block_size
            self.curves.set_x_extent(self.runs.max_iters, self.runs.max_iters * per_step, config.train.learning_rate)
        self._show_run_name(run_dir.name)
        self.run_label.setToolTip(str(run_dir))
        self.sample_text.clear()
        for rec in records:
            if rec.get("kind") == "sample":
                self.sample_text.appendPlainText(f"── step {rec.get('step', 0):,} ──\n{rec.get('prompt', '')}{rec.get('text', '')}\n")
        run = self.runs.open_run_info
        if run is None or run.checkpoint_step is None:
            text = f"Opened run {run_dir.name}: it has no checkpoint, so it cannot be resumed."
        else:
            text = f"Opened run {run_dir.name}: checkpoint at {run.where()}."
            if run.resumable:
                text += " Resume run (F5) continues it from there."
        self.messages.show_message(text, "info")

    def _on_runs_open_failed(self, message: str, detail: str, expected: bool) -> None:
        self.messages.show_message(f"Could not open the run: {message}", "error", detail)

    # -- export --------------------------------------------------------------
    def _on_curves_export_png_requested(self) -> None:
        self.ask_export_png()

    def _on_curves_export_csv_requested(self) -> None:
        self.ask_export_csv()

    def ask_export_png(self) -> None:
        """Ask for a file name and save the plots there as a PNG image (the File menu and the plots' button)."""
        path, _ = QFileDialog.getSaveFileName(self, "Export plots", "curves.png", "PNG image (*.png)")
        if path:
            ok = self.curves.export_png(path)
            self.messages.show_message(f"Saved {path}." if ok else f"Could not write {path}.", "info" if ok else "error")

    def ask_export_csv(self) -> None:
        """Ask for a file name and save every logged metric there as a CSV table."""
        path, _ = QFileDialog.getSaveFileName(self, "Export metrics", "metrics.csv", "CSV table (*.csv)")
        if path:
            try:
                self.curves.export_csv(path)
            except OSError as exc:
                self.messages.show_message(f"Could not write {path}: {exc}", "error")
            else:
                self.messages.show_message(f"Saved {path}.", "info")


if __name__ == "__main__":
    from shiftstudio.gui.panes import preview

    raise SystemExit(preview(TrainPane))
