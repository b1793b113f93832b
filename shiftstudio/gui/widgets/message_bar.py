"""An inline, non-modal message bar: info, warning or error, with optional details.

Errors never open a blocking dialog: a pane shows them here, the rest of the
window stays usable, and tests can read the text. Unexpected errors carry a
traceback that the user can expand with "Details". A message may offer what to
do about it: buttons (:class:`MessageAction`) below the text; pressing one
closes the message and does it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QFrame, QHBoxLayout, QLabel, QPlainTextEdit, QPushButton, QStyle, QToolButton, QVBoxLayout, QWidget,
)

LEVELS = ("info", "warning", "error")
_ICONS = {
    "info": QStyle.SP_MessageBoxInformation,
    "warning": QStyle.SP_MessageBoxWarning,
    "error": QStyle.SP_MessageBoxCritical,
}


@dataclass(frozen=True)
class MessageAction:
    """A button a message offers: its text, what it does, its object name (for tests and style) and tooltip."""

    text: str
    callback: Callable[[], Any]
    name: str = ""
    tooltip: str = ""


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
        self._action_buttons: list[QPushButton] = []
        self._actions = QWidget(self)  # hidden without buttons: no height, no spacing
        self._actions_row = QHBoxLayout(self._actions)
        self._actions_row.setContentsMargins(0, 0, 0, 0)
        self._actions_row.addStretch(1)
        self._actions.hide()

        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self._icon, 0, Qt.AlignTop)
        row.addWidget(self._text, 1)
        row.addWidget(self._details_button, 0, Qt.AlignTop)
        row.addWidget(self._close_button, 0, Qt.AlignTop)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 6, 6, 6)
        layout.addLayout(row)
        layout.addWidget(self._actions)
        layout.addWidget(self._details)

        self._details_button.toggled.connect(self._on_details_toggled)
        self._close_button.clicked.connect(self._on_close_clicked)
        self.hide()

    # -- API -----------------------------------------------------------------
    def show_message(self, text: str, level: str = "info", detail: str = "",
                     actions: Sequence[MessageAction] = ()) -> None:
        """Show ``text``; ``detail`` behind "Details"; ``actions`` as buttons (replacing any shown before)."""
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
        self._set_actions(actions)
        self.show()

    def clear(self) -> None:
        self._text.clear()
        self._details.clear()
        self._set_actions(())
        self.hide()

    def actions_offered(self) -> list[QPushButton]:
        """The buttons of the message shown (none when it is hidden)."""
        return [] if self.isHidden() else list(self._action_buttons)

    def _set_actions(self, actions: Sequence[MessageAction]) -> None:
        for button in self._action_buttons:
            self._actions_row.removeWidget(button)
            button.hide()
            button.deleteLater()  # (later: it may be the button whose press is being answered)
        self._action_buttons = []
        for i, action in enumerate(actions):
            button = QPushButton(action.text, self._actions)
            button.setObjectName(action.name or f"{self.objectName()}_action_{i}")
            button.setToolTip(action.tooltip)
            button.clicked.connect(lambda _checked=False, callback=action.callback: self._on_action_clicked(callback))
            self._actions_row.insertWidget(i, button)
            self._action_buttons.append(button)
        self._actions.setVisible(bool(self._action_buttons))

    def text(self) -> str:
        return "" if self.isHidden() else self._text.text()

    def level(self) -> str:
        return self._level

    def detail(self) -> str:
        return self._details.toPlainText()

    # -- slots ---------------------------------------------------------------
    def _on_details_toggled(self, checked: bool) -> None:
        self._details.setVisible(checked)

    def _on_action_clicked(self, callback: Callable[[], Any]) -> None:
        self.hide()  # answered: the message goes (before the action, which may show another)
        callback()

    def _on_close_clicked(self) -> None:
        self.hide()
        self.dismissed.emit()
