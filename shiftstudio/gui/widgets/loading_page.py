"""What the middle of the window shows in the moment before the panes are built: a Start button that works.

Qt only (the panes import pyqtgraph; this must not). The button carries the
run controller's Start action, so F5 or a click is taken from the first
paint; the controller holds the press until the window is ready and this page
says what it waits for.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QLabel, QToolButton, QVBoxLayout, QWidget

LOADING_TEXT = "Loading…"


class LoadingPage(QWidget):
    def __init__(self, start_action: QAction, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("loading_page")
        self.label = QLabel(LOADING_TEXT, self)
        self.label.setObjectName("loading_label")
        self.label.setAlignment(Qt.AlignCenter)
        self.start_button = QToolButton(self)
        self.start_button.setObjectName("loading_start_button")
        self.start_button.setDefaultAction(start_action)
        self.start_button.setToolButtonStyle(Qt.ToolButtonTextOnly)
        self.hint = QLabel("Press Start (F5) any time: training begins as soon as the window is ready.", self)
        self.hint.setObjectName("loading_hint_label")
        self.hint.setProperty("role", "hint")
        self.hint.setAlignment(Qt.AlignCenter)
        self.hint.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addStretch(1)
        layout.addWidget(self.label)
        layout.addWidget(self.start_button, 0, Qt.AlignHCenter)
        layout.addWidget(self.hint)
        layout.addStretch(1)

    def show_waiting(self, text: str) -> None:
        """A press of Start is queued: say what it waits for."""
        if text:
            self.hint.setText(text)
