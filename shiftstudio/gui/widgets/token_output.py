"""A read-only text view that generated tokens stream into, each keeping its probability and top-5.

Every character carries the index of the token it came from (a char-format
property), so hovering shows that token's probability and the model's top
five guesses (the raw distribution, before temperature / top-k / top-p, and
labelled so). Two colourings, redone when the theme changes:
:data:`BY_PROBABILITY` shades each token by its probability;
:data:`BY_DRAFTS` gives the tokens that came from accepted drafts of
speculative decoding (heads 2..K drafted them, head 1 verified them) one
distinct background and leaves the others plain.
"""

from __future__ import annotations

from PySide6.QtCore import QEvent, QObject
from PySide6.QtGui import QColor, QTextCharFormat, QTextCursor
from PySide6.QtWidgets import QTextEdit, QToolTip, QWidget

TOKEN_PROPERTY = 0x100001  # QTextFormat.UserProperty + 1: index of the token under a character
RAW_LABEL = "model's top 5 (before temperature/top-k/top-p)"
BY_PROBABILITY, BY_DRAFTS = "probability", "drafts"  # the colourings
DRAFT_LEGEND = ("accepted draft: one of heads 2..K drafted this token and head 1 accepted it when it verified "
                "the drafts (speculative decoding: it came with another token's pass)")


def probability_colour(p: float, dark: bool) -> QColor:
    """Low probability warm, high cool; light enough to read text on in either theme."""
    p = min(max(p, 0.0), 1.0)
    hue = int(10 + 110 * p)  # red (unlikely) .. green (likely)
    return QColor.fromHsv(hue, 110 if dark else 70, 110 if dark else 255)


def draft_colour(dark: bool) -> QColor:
    """The background of a token that came from an accepted draft: blue, apart from the probability hues."""
    return QColor.fromHsv(215, 150, 150) if dark else QColor.fromHsv(215, 90, 255)


def text_colour(dark: bool) -> QColor:
    """The text colour on a coloured background: readable on it whatever the theme."""
    return QColor(235, 235, 235) if dark else QColor(20, 20, 20)


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
        self.drafted: list[bool] = []  # per token: it came from an accepted draft (speculative decoding)
        self.prompt = ""
        self.colour = False
        self.colouring = BY_PROBABILITY  # which colouring `colour` turns on
        self.viewport().setMouseTracking(True)
        self.viewport().installEventFilter(self)

    def clear_tokens(self, prompt: str) -> None:
        self.clear()
        self.tokens.clear()
        self.drafted.clear()
        self.prompt = prompt
        cursor = self.textCursor()
        fmt = QTextCharFormat()
        fmt.setFontWeight(700)
        cursor.insertText(prompt, fmt)

    def append_tokens(self, batch: list[tuple]) -> None:
        """Tokens as ``(text, prob, top)`` or ``(text, prob, top, drafted)``."""
        cursor = QTextCursor(self.document())
        cursor.movePosition(QTextCursor.MoveOperation.End)
        dark = self.palette().base().color().lightness() < 128
        for text, prob, top, *rest in batch:
            drafted = bool(rest[0]) if rest else False
            self.tokens.append((text, prob, top))
            self.drafted.append(drafted)
            if not text:
                continue
            fmt = QTextCharFormat()
            fmt.setProperty(TOKEN_PROPERTY, len(self.tokens) - 1)
            background = self.background(prob, drafted, dark)
            if background is not None:  # text colour set too: it stays readable on its background whatever the theme
                fmt.setBackground(background)
                fmt.setForeground(text_colour(dark))
            cursor.insertText(text, fmt)
        bar = self.verticalScrollBar()
        if bar.value() >= bar.maximum() - 40:  # follow the end unless the user scrolled up
            bar.setValue(bar.maximum())

    def background(self, prob: float, drafted: bool, dark: bool) -> QColor | None:
        """A token's background under the current colouring (None: none)."""
        if not self.colour:
            return None
        if self.colouring == BY_DRAFTS:
            return draft_colour(dark) if drafted else None
        return probability_colour(prob, dark)

    def recolour(self) -> None:
        """Write the output again with the current colour setting and theme (keeps the tokens)."""
        tokens = [(*t, d) for t, d in zip(self.tokens, self.drafted)]
        bar = self.verticalScrollBar().value()
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
        drafted = index < len(self.drafted) and self.drafted[index]
        draft = f"<br><small>{DRAFT_LEGEND}</small>" if drafted else ""
        return (f"<b>{_show(text)}</b> &nbsp; p = {100 * prob:.1f}% <small>(the model's probability)</small>{draft}<br>"
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
