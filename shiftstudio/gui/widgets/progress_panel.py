"""A progress bar with a phase label and a Cancel button, for long worker tasks."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton, QWidget

from shiftstudio.format import human_bytes


class ProgressPanel(QWidget):
    """Hidden while idle. ``cancel_requested`` fires when the user presses Cancel."""

    cancel_requested = Signal()

    def __init__(self, parent: QWidget | None = None, name: str = "progress"):
        super().__init__(parent)
        self.setObjectName(f"{name}_panel")
        self.label = QLabel(self)
        self.label.setObjectName(f"{name}_label")
        self.bar = QProgressBar(self)
        self.bar.setObjectName(f"{name}_bar")
        self.bar.setTextVisible(True)
        self.bar.setMinimumWidth(120)
        self.cancel_button = QPushButton("Cancel", self)
        self.cancel_button.setObjectName(f"{name}_cancel_button")
        self.cancel_button.setToolTip("Stop this task; nothing already on disk is lost")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.label)
        layout.addWidget(self.bar, 1)
        layout.addWidget(self.cancel_button)
        self.cancel_button.clicked.connect(self._on_cancel_clicked)
        self.hide()

    def start(self, text: str) -> None:
        self.label.setText(text)
        self.bar.setRange(0, 0)  # busy until the first progress report
        self.cancel_button.setEnabled(True)
        self.show()

    def set_progress(self, phase: str, done: int, total: int) -> None:
        if phase:
            self.label.setText(phase)
        if total and total > 0:
            self.bar.setRange(0, 1000)
            self.bar.setValue(int(1000 * min(done, total) / total))
            self.bar.setFormat(f"%p%  ({human_bytes(done)} of {human_bytes(total)})")
        else:
            self.bar.setRange(0, 0)

    def finish(self) -> None:
        self.hide()

    def _on_cancel_clicked(self) -> None:
        self.cancel_button.setEnabled(False)
        self.label.setText("Cancelling…")
        self.cancel_requested.emit()
