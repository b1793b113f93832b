"""One fine-tuning example, shown with its scored part marked.

The context the model reads but is not scored on (the prompt, system and user turns, role markers) is
greyed; what it is trained to write (the completion, the assistant turns and the end token after each) is
in normal text on a highlighted background. A spin box picks the example.
"""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtGui import QColor, QFontDatabase, QPalette, QTextCharFormat, QTextCursor
from PySide6.QtWidgets import QHBoxLayout, QLabel, QSpinBox, QTextEdit, QVBoxLayout, QWidget

from shiftstudio.gui.widgets import named

SCORED_ALPHA = 70  # of the palette's highlight colour, behind the scored text


class RecordPreview(QWidget):
    """A spin box for the example number, a caption and the marked text."""

    index_changed = Signal(int)  # 0-based example number

    def __init__(self, parent: QWidget | None = None, name: str = "corpus_record"):
        super().__init__(parent)
        self.spin = named(QSpinBox(self), f"{name}_index_spin", "Which example to show (1 is the first of the corpus)")
        self.spin.setRange(1, 1)
        self.spin.setPrefix("Example ")
        self.caption = named(QLabel("–", self), f"{name}_caption", "The example's length in tokens: context (not scored) and answer (scored)")
        self.caption.setProperty("role", "hint")
        self.view = named(
            QTextEdit(self), f"{name}_preview_text",
            "One example as the model reads it: greyed text is context it is not scored on; highlighted text "
            "(the completion or assistant turns, with the end token) is what it is trained to write",
        )
        self.view.setReadOnly(True)
        self.view.setFont(QFontDatabase.systemFont(QFontDatabase.FixedFont))
        self.view.setPlaceholderText("Open a file of prompt/completion or chat records to see an example here.")
        legend = QLabel(self)
        legend.setObjectName(f"{name}_legend")
        legend.setText(
            f"<span style='color:{self._prompt_color().name()}'>context (not scored)</span> · "
            f"<span style='background-color:{self._scored_background().name(QColor.HexArgb)}'>scored</span>"
        )
        legend.setToolTip("How the preview marks which tokens the loss counts")
        # the caption wraps in a narrow dock, rather than widening the pane past it (a horizontal scroll bar)
        self.caption.setWordWrap(True)
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.spin)
        row.addWidget(self.caption, 1)
        row.addWidget(legend)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(row)
        layout.addWidget(self.view, 1)
        self._segments: list[tuple[str, bool]] = []
        self.spin.valueChanged.connect(self._on_spin_value_changed)

    def _prompt_color(self) -> QColor:
        return self.palette().color(QPalette.Disabled, QPalette.Text)

    def _scored_background(self) -> QColor:
        color = QColor(self.palette().color(QPalette.Highlight))
        color.setAlpha(SCORED_ALPHA)
        return color

    # -- what it shows -------------------------------------------------------
    def set_count(self, n: int) -> None:
        """How many examples there are (the spin box's range); keeps the current number when it fits."""
        self.spin.blockSignals(True)
        self.spin.setRange(1, max(1, n))
        self.spin.setSuffix(f" of {n:,}" if n else "")
        self.spin.blockSignals(False)

    def index(self) -> int:
        return self.spin.value() - 1

    def show_segments(self, segments: list[tuple[str, bool]], caption: str = "") -> None:
        """Show one example as (text, scored) runs."""
        self._segments = list(segments)
        self.caption.setText(caption or "–")
        self.view.clear()
        cursor = QTextCursor(self.view.document())
        prompt, scored = QTextCharFormat(), QTextCharFormat()
        prompt.setForeground(self._prompt_color())
        scored.setForeground(self.palette().color(QPalette.Text))
        scored.setBackground(self._scored_background())
        for text, is_scored in self._segments:
            cursor.insertText(text, scored if is_scored else prompt)
        self.view.moveCursor(QTextCursor.Start)

    def clear(self) -> None:
        self._segments = []
        self.caption.setText("–")
        self.view.clear()

    def segments(self) -> list[tuple[str, bool]]:
        return list(self._segments)

    def scored_text(self) -> str:
        """The scored part of the example shown (what the marks cover)."""
        return "".join(t for t, s in self._segments if s)

    def _on_spin_value_changed(self, value: int) -> None:
        self.index_changed.emit(value - 1)
