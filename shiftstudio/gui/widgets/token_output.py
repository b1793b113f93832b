"""A read-only text view that generated tokens stream into, each keeping its probability and top-5.

Every character carries the index of the token it came from (a char-format
property), so hovering shows that token's probability and the model's top
five guesses (the raw distribution, before temperature / top-k / top-p, and
labelled so); "colour by probability" shades each token and is redone when
the theme changes.
"""

from __future__ import annotations

from PySide6.QtCore import QEvent, QObject
from PySide6.QtGui import QColor, QTextCharFormat, QTextCursor
from PySide6.QtWidgets import QTextEdit, QToolTip, QWidget

TOKEN_PROPERTY = 0x100001  # QTextFormat.UserProperty + 1: index of the token under a character
RAW_LABEL = "model's top 5 (before temperature/top-k/top-p)"


def probability_colour(p: float, dark: bool) -> QColor:
    """Low probability warm, high cool; light enough to read text on in either theme."""
    p = min(max(p, 0.0), 1.0)
    hue = int(10 + 110 * p)  # red (unlikely) .. green (likely)
    return QColor.fromHsv(hue, 110 if dark else 70, 110 if dark else 255)


class OutputView(QTextEdit):
    """Read-only text that tokens are appended to; knows which token each character belongs to."""

    def __init__(self, name: str, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName(name)
        self.setReadOnly(True)
        self.setAcceptRichText(False)
        self.setToolTip("Generated text; hover a token to see the model's probability for it and its top-5 guesses "
                        "(before temperature, top-k and top-p)")
        self.setLineWrapMode(QTextEdit.LineWrapMode.WidgetWidth)
        self.tokens: list[tuple[str, float, list]] = []
        self.prompt = ""
        self.colour = False
        self.viewport().setMouseTracking(True)
        self.viewport().installEventFilter(self)

    def clear_tokens(self, prompt: str) -> None:
        self.clear()
        self.tokens.clear()
        self.prompt = prompt
        cursor = self.textCursor()
        fmt = QTextCharFormat()
        fmt.setFontWeight(700)
        cursor.insertText(prompt, fmt)

    def append_tokens(self, batch: list[tuple[str, float, list]]) -> None:
        cursor = QTextCursor(self.document())
        cursor.movePosition(QTextCursor.MoveOperation.End)
        dark = self.palette().base().color().lightness() < 128
        for text, prob, top in batch:
            self.tokens.append((text, prob, top))
            if not text:
                continue
            fmt = QTextCharFormat()
            fmt.setProperty(TOKEN_PROPERTY, len(self.tokens) - 1)
            if self.colour:  # text colour set too: it stays readable on its background whatever the theme
                fmt.setBackground(probability_colour(prob, dark))
                fmt.setForeground(QColor(235, 235, 235) if dark else QColor(20, 20, 20))
            cursor.insertText(text, fmt)
        bar = self.verticalScrollBar()
        if bar.value() >= bar.maximum() - 40:  # follow the end unless the user scrolled up
            bar.setValue(bar.maximum())

    def recolour(self) -> None:
        """Write the output again with the current colour setting and theme (keeps the tokens)."""
        tokens, bar = list(self.tokens), self.verticalScrollBar().value()
        self.clear_tokens(self.prompt)
        self.append_tokens(tokens)
        self.verticalScrollBar().setValue(bar)

    def changeEvent(self, event: QEvent) -> None:  # noqa: N802 - Qt naming
        super().changeEvent(event)
        if event.type() == QEvent.Type.PaletteChange and self.colour and self.tokens:
            self.recolour()  # the theme changed: shades for the new background

    def token_at(self, pos) -> int | None:
        """Index of the generated token under viewport point ``pos`` (None over the prompt or empty space)."""
        cursor = self.cursorForPosition(pos)
        p = cursor.position()
        if p > 0 and (pos.x() < self.cursorRect(cursor).left() or cursor.atBlockEnd()):
            p -= 1  # the point is on the character before the nearest boundary
        probe = QTextCursor(self.document())
        probe.setPosition(p)
        if probe.atEnd():
            return None
        probe.setPosition(p + 1)  # a cursor's charFormat is that of the character before it
        index = probe.charFormat().property(TOKEN_PROPERTY)
        return int(index) if index is not None else None

    def describe(self, index: int) -> str:
        """The hover text of token ``index``: its probability and the top 5, both the model's raw distribution
        (temperature 1, no top-k / top-p / repetition penalty), which is what the sampler started from."""
        text, prob, top = self.tokens[index]
        rows = "".join(
            f"<tr><td>{_show(t)}</td><td align='right'>{100 * p:.1f}%</td></tr>" for _, t, p in top
        )
        return (f"<b>{_show(text)}</b> &nbsp; p = {100 * prob:.1f}% <small>(the model's probability)</small><br>"
                f"<small>{RAW_LABEL}:</small><table>{rows}</table>")

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:
        if obj is self.viewport() and event.type() == QEvent.Type.ToolTip:
            index = self.token_at(event.pos())
            if index is not None and index < len(self.tokens):
                QToolTip.showText(event.globalPos(), self.describe(index), self.viewport())
            else:
                QToolTip.hideText()
            return True
        return super().eventFilter(obj, event)


def _show(text: str) -> str:
    """A token's text made visible in a tooltip (spaces, newlines, tabs)."""
    import html

    visible = text.replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥")
    return html.escape(visible) if visible else "∅"
