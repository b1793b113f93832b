"""File → Export model…: write a run's checkpoint to the Hugging Face layout, on a worker thread.

The dialog reads the run folder when it opens (its config and checkpoints: small files) and says up front
why the run cannot be exported — no run open, no checkpoint yet, an architecture no layout carries — with
every control disabled. The export itself (read the checkpoint, write the folder) runs as a
:class:`~shiftstudio.gui.workers.Task`; a busy bar shows meanwhile, and the result or the error is shown in
the dialog.

Imported when the menu action is first used (it imports the core's torch-side modules).
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from shiftstudio.core.errors import ShiftStudioError
from shiftstudio.core.model.hf_export import LAYOUT_NAMES, check_destination, export_problem, hf_layout
from shiftstudio.core.runs.checkpoint import CheckpointInfo, list_checkpoints
from shiftstudio.core.runs.folder import load_run_config
from shiftstudio.core.runs.layout import EMA_FILE, checkpoint_name
from shiftstudio.gui.widgets import named
from shiftstudio.gui.workers import Task

FORMATS = [("hf", "Hugging Face (transformers)")]
NO_RUN = "No run is open: open a run folder (File → Open run…) or train one first."


def default_out_dir(run_dir: Path) -> Path:
    """A new folder beside the run: RUN-hf (RUN-hf-2 … when taken by something else)."""
    candidate, n = run_dir.parent / f"{run_dir.name}-hf", 1
    while True:
        try:
            check_destination(candidate)
            return candidate
        except ShiftStudioError:
            n += 1
            candidate = run_dir.parent / f"{run_dir.name}-hf-{n}"


class ExportDialog(QDialog):
    """Export the run in ``run_dir`` (None: no run open; the dialog says so)."""

    exported = Signal(object)  # ExportResult
    export_failed = Signal(str)  # one line

    def __init__(self, run_dir: str | Path | None, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("export_dialog")
        self.setWindowTitle("Export model")
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.checkpoints: list[CheckpointInfo] = []
        self.task: Task | None = None
        self.result = None
        self.status_text: str | None = None  # what the last export did (written, or why it failed)
        self.layout_name = ""
        self.problem: str | None = None  # why the run cannot be exported (every control disabled)

        self.run_label = named(QLabel(self), "export_run_label", "The run whose model is exported")
        self.run_label.setWordWrap(True)
        self.format_combo = named(QComboBox(self), "export_format_combo", "The layout to write (Hugging Face only, for now)")
        for key, text in FORMATS:
            self.format_combo.addItem(text, key)
        self.checkpoint_combo = named(QComboBox(self), "export_checkpoint_combo", "Which checkpoint's weights to export")
        self.ema_check = named(QCheckBox("Use the EMA weights", self), "export_ema_check",
                               "Export the exponential moving average of the weights (when the checkpoint has one)")
        self.out_edit = named(QLineEdit(self), "export_out_edit",
                              "The folder to write: new, empty, or a previous export (which is replaced)")
        self.browse_button = named(QPushButton("Browse…", self), "export_browse_button", "Choose the output folder")
        self.reason_label = named(QLabel(self), "export_reason_label", "Why the model cannot be exported, or what was written")
        self.reason_label.setWordWrap(True)
        self.progress = named(QProgressBar(self), "export_progress", "Writing the export")
        self.progress.setRange(0, 0)  # busy: the export reports no steps
        self.progress.hide()
        self.export_button = named(QPushButton("Export", self), "export_button", "Write the export folder")
        self.export_button.setDefault(True)
        self.close_button = named(QPushButton("Close", self), "export_close_button", "Close this dialog")

        out_row = QHBoxLayout()
        out_row.addWidget(self.out_edit, 1)
        out_row.addWidget(self.browse_button)
        form = QFormLayout()
        form.addRow("Run:", self.run_label)
        form.addRow("Format:", self.format_combo)
        form.addRow("Checkpoint:", self.checkpoint_combo)
        form.addRow("", self.ema_check)
        form.addRow("Output folder:", out_row)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.export_button)
        buttons.addWidget(self.close_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.reason_label)
        layout.addWidget(self.progress)
        layout.addLayout(buttons)
        self.resize(520, self.sizeHint().height())

        self.checkpoint_combo.currentIndexChanged.connect(self._on_checkpoint_combo_current_index_changed)
        self.out_edit.textChanged.connect(self._on_out_edit_text_changed)
        self.browse_button.clicked.connect(self._on_browse_button_clicked)
        self.export_button.clicked.connect(self._on_export_button_clicked)
        self.close_button.clicked.connect(self.reject)
        self.problem = self._read_run()
        self._update()

    # -- state ---------------------------------------------------------------
    def _read_run(self) -> str | None:
        """Fill the controls from the run folder; the reason it cannot be exported, if any."""
        if self.run_dir is None:
            self.run_label.setText("(none)")
            return NO_RUN
        self.run_label.setText(str(self.run_dir))
        try:
            config = load_run_config(self.run_dir)
        except ShiftStudioError as exc:
            return str(exc)
        problem = export_problem(config.model)
        if problem:
            return problem
        self.layout_name = LAYOUT_NAMES[hf_layout(config.model)]
        self.checkpoints = list_checkpoints(self.run_dir)
        if not self.checkpoints:
            return "This run has no checkpoints yet: train it until it saves one (or press Checkpoint now)."
        latest = self.checkpoints[-1]
        self.checkpoint_combo.addItem(f"latest ({checkpoint_name(latest.step)})", "latest")
        best = [c for c in self.checkpoints if c.is_best]
        if best:
            self.checkpoint_combo.addItem(f"best ({checkpoint_name(best[-1].step)})", "best")
        for info in reversed(self.checkpoints):
            self.checkpoint_combo.addItem(checkpoint_name(info.step), checkpoint_name(info.step))
        self.out_edit.setText(str(default_out_dir(self.run_dir)))
        return None

    def selected_checkpoint(self) -> CheckpointInfo | None:
        key = self.checkpoint_combo.currentData()
        if not self.checkpoints or key is None:
            return None
        if key == "latest":
            return self.checkpoints[-1]
        if key == "best":
            return [c for c in self.checkpoints if c.is_best][-1]
        return next(c for c in self.checkpoints if checkpoint_name(c.step) == key)

    def _has_ema(self) -> bool:
        info = self.selected_checkpoint()
        return info is not None and (info.path / EMA_FILE).is_file()

    def _update(self) -> None:
        busy = self.task is not None
        usable = self.problem is None and not busy
        for w in (self.format_combo, self.checkpoint_combo, self.out_edit, self.browse_button):
            w.setEnabled(usable)
        has_ema = self._has_ema()
        self.ema_check.setEnabled(usable and has_ema)
        if not has_ema:
            self.ema_check.setChecked(False)
        self.ema_check.setToolTip(
            "Export the exponential moving average of the weights" if has_ema
            else "This checkpoint has no EMA weights (the run trained with ema_decay = 0)"
        )
        out_ok = bool(self.out_edit.text().strip())
        self.export_button.setEnabled(usable and out_ok)
        self.progress.setVisible(busy)
        if self.problem is not None:
            self.reason_label.setText(self.problem)
            self.export_button.setToolTip(self.problem)
        elif busy:
            pass  # "Exporting to …", set when it started
        elif self.status_text is not None:
            self.reason_label.setText(self.status_text)
        else:
            self.reason_label.setText(
                f"Writes the {self.layout_name} layout: config.json, model.safetensors, the tokenizer files."
                if out_ok else "Choose an output folder."
            )
            self.export_button.setToolTip("Write the export folder")

    # -- slots ---------------------------------------------------------------
    def _on_checkpoint_combo_current_index_changed(self, _index: int) -> None:
        self.status_text = None
        self._update()

    def _on_out_edit_text_changed(self, _text: str) -> None:
        self.status_text = None
        self._update()

    def _on_browse_button_clicked(self) -> None:
        start = self.out_edit.text().strip() or (str(self.run_dir.parent) if self.run_dir else "")
        folder = QFileDialog.getExistingDirectory(self, "Export to folder", str(Path(start).parent) if start else "")
        if folder:
            self.out_edit.setText(folder)

    def _on_export_button_clicked(self) -> None:
        self.start_export()

    def start_export(self) -> None:
        """Write the export on a worker thread (``exported`` or ``export_failed`` when it ends)."""
        if self.problem is not None or self.task is not None:
            return
        run_dir, checkpoint = self.run_dir, self.checkpoint_combo.currentData()
        ema, out_dir = self.ema_check.isChecked(), Path(self.out_edit.text().strip()).expanduser()

        def work(progress, cancel):
            from shiftstudio.core.model.hf_export import export_hf
            from shiftstudio.core.runs.loading import load_model

            check_destination(out_dir)  # before any weights are read
            model, tokenizer, meta = load_model(run_dir, checkpoint, ema=ema, device="cpu")
            note = {"run": str(run_dir), "step": meta["step"], "ema": meta["ema"], "is_best": meta["is_best"],
                    "val_loss": meta["val_loss"]}
            return export_hf(model, tokenizer, out_dir, source_note=note)

        self.result = self.status_text = None
        self.reason_label.setText(f"Exporting to {out_dir}…")
        self.task = Task(work, "Exporting", self)
        self.task.succeeded.connect(self._on_task_succeeded)
        self.task.failed.connect(self._on_task_failed)
        self.task.finished.connect(self._on_task_finished)
        self.task.start()
        self._update()

    def _on_task_succeeded(self, result) -> None:
        self.result = result
        self.status_text = "\n".join(result.describe())
        self.reason_label.setText(self.status_text)
        self.exported.emit(result)

    def _on_task_failed(self, message: str, detail: str, expected: bool) -> None:
        self.status_text = f"Export failed: {message}"
        self.reason_label.setText(self.status_text)
        self.export_failed.emit(message)

    def _on_task_finished(self) -> None:
        self.task = None
        self._update()

    def reject(self) -> None:
        if self.task is not None:  # the folder is being written: it finishes (or fails) on its own first
            return
        super().reject()
