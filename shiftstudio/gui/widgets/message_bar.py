"""An inline, non-modal message bar: info, warning or error, with optional details.

Errors never open a blocking dialog: a pane shows them here, the rest of the
window stays usable, and tests can read the text. Unexpected errors carry a
traceback that the user can expand with "Details".
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPlainTextEdit, QStyle, QToolButton, QVBoxLayout, QWidget

LEVELS = ("info", "warning", "error")
_ICONS = {
    "info": QStyle.SP_MessageBoxInformation,
    "warning": QStyle.SP_MessageBoxWarning,
    "error": QStyle.SP_MessageBoxCritical,
}


class MessageBar(QFrame):
    """Hidden until :meth:`show_message`; the close button hides it again."""

    dismissed = Signal()

    def __init__(self, parent: QWidget | None = None, name: str = "message_bar"):
        super().__init__(parent)
        self.setObjectName(name)
        self._level = "info"
        self._icon = QLabel(self)
        self._text = QLabel(self)
        self._text.setObjectName(f"{name}_text")
        self._text.setWordWrap(True)
        self._text.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self._details_button = QToolButton(self)
        self._details_button.setObjectName(f"{name}_details")
        self._details_button.setText("Details")
        self._details_button.setToolTip("Show or hide the technical details (traceback) of this error")
        self._details_button.setCheckable(True)
        self._close_button = QToolButton(self)
        self._close_button.setObjectName(f"{name}_close")
        self._close_button.setAutoRaise(True)
        self._close_button.setText("✕")
        self._close_button.setToolTip("Dismiss this message")
        self._details = QPlainTextEdit(self)
        self._details.setObjectName(f"{name}_detail_text")
        self._details.setReadOnly(True)
        self._details.setMaximumHeight(180)
        self._details.setLineWrapMode(QPlainTextEdit.NoWrap)
        self._details.hide()

        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self._icon, 0, Qt.AlignTop)
        row.addWidget(self._text, 1)
        row.addWidget(self._details_button, 0, Qt.AlignTop)
        row.addWidget(self._close_button, 0, Qt.AlignTop)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 6, 6, 6)
        layout.addLayout(row)
        layout.addWidget(self._details)

        self._details_button.toggled.connect(self._on_details_toggled)
        self._close_button.clicked.connect(self._on_close_clicked)
        self.hide()

    # -- API -----------------------------------------------------------------
    def show_message(self, text: str, level: str = "info", detail: str = "") -> None:
        level = level if level in LEVELS else "info"
        if level != self.property("level"):  # re-polishing under a style sheet is costly: only on a change
            self._level = level
            self.setProperty("level", level)
            size = self.style().pixelMetric(QStyle.PM_SmallIconSize)
            self._icon.setPixmap(self.style().standardIcon(_ICONS[level]).pixmap(size, size))
            self.style().unpolish(self)
            self.style().polish(self)
        self._text.setText(text)
        self._details.setPlainText(detail)
        self._details_button.setVisible(bool(detail))
        self._details_button.setChecked(False)
        self._details.hide()
        self.show()

    def clear(self) -> None:
        self._text.clear()
        self._details.clear()
        self.hide()

    def text(self) -> str:
        return "" if self.isHidden() else self._text.text()

    def level(self) -> str:
        return self._level

    def detail(self) -> str:
        return self._details.toPlainText()

    # -- slots ---------------------------------------------------------------
    def _on_details_toggled(self, checked: bool) -> None:
        self._details.setVisible(checked)

    def _on_close_clicked(self) -> None:
        self.hide()
        self.dismissed.emit()
