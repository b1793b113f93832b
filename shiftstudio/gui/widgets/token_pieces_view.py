"""How a tokenizer cuts a text, drawn honestly: each token on its own tint with its id after it.

The pieces come from ``TextTokenizer.pieces``: a character the vocabulary
lacks is drawn as *unknown* (white on red, ``<unk>`` as its id), a byte-level
token that holds only part of a multi-byte character shows its bytes in hex
(grey, italic) rather than the whole character again, and special tokens are
marked as such. Hovering a token says what it is.
"""

from __future__ import annotations

import html
from typing import Any

from PySide6.QtCore import QEvent, QObject
from PySide6.QtGui import QFontDatabase
from PySide6.QtWidgets import QTextBrowser, QToolTip, QWidget

LIGHT_COLOURS = ("#cfe2ff", "#ffe0b3", "#d3f0d3", "#f6d0e8", "#e2d9f7", "#fff3b0")
DARK_COLOURS = ("#274a7a", "#6b4a1d", "#2c5a35", "#66304f", "#463a6e", "#5e5620")
UNKNOWN_COLOURS = ("#c0392b", "#ffffff")  # background, text: the same in both themes
BYTES_COLOURS = {False: ("#e4e4e4", "#555555"), True: ("#4a4a4a", "#d0d0d0")}
SPECIAL_COLOURS = {False: ("#ece0ff", "#5b2a86"), True: ("#4b2d6b", "#e6d5ff")}
ANCHOR = "piece-"


def _visible(text: str) -> str:
    return html.escape(text).replace(" ", "·").replace("\t", "→").replace("\n", "↵")


def render_pieces(pieces: list[Any], dark: bool = False) -> str:
    """HTML for ``TokenPiece``-like records (id, text, kind): each token on its tint, its id in small print after it.
    Every token is an anchor ``piece-<index>`` so that hovering it can name it."""
    colours = DARK_COLOURS if dark else LIGHT_COLOURS
    text_colour = "#f0f0f0" if dark else "#111111"
    out = []
    for i, piece in enumerate(pieces):
        kind = piece.kind
        if kind == "unknown":
            (background, colour), shown, tag = UNKNOWN_COLOURS, _visible(piece.text), "&lt;unk&gt;"
        elif kind == "bytes":
            (background, colour), shown, tag = BYTES_COLOURS[dark], f"<i>{html.escape(piece.text)}</i>", str(piece.id)
        elif kind == "special":
            (background, colour), shown, tag = SPECIAL_COLOURS[dark], html.escape(piece.text), str(piece.id)
        else:
            background, colour, shown, tag = colours[i % len(colours)], text_colour, _visible(piece.text), str(piece.id)
        out.append(
            f"<a href='{ANCHOR}{i}'><span style='background:{background}; color:{colour}'>{shown or '∅'}</span></a>"
            f"<sub style='color:gray'>{tag}</sub> "
        )
        if kind in ("text", "unknown") and piece.text.endswith("\n"):  # the text goes on on a new line
            out.append("<br>")
    return "<div style='line-height:160%'>" + "".join(out) + "</div>"


def describe_piece(piece: Any, source: str, unk_id: int | None = None) -> str:
    """The hover text of one piece of ``source`` (the text that was cut)."""
    whole = source[piece.start : piece.end]
    if piece.kind == "unknown":
        where = f" (id {unk_id})" if unk_id is not None else ""
        return f"{whole!r} is not in the vocabulary: the model reads it as the unknown token <unk>{where}"
    if piece.kind == "bytes":
        return (f"Token {piece.id}: the bytes {piece.text} — only part of the character {whole!r} "
                f"(U+{ord(whole[0]):04X}), which takes more than one token" if whole else f"Token {piece.id}: the bytes {piece.text}")
    if piece.kind == "special":
        return f"Token {piece.id}: the special token {piece.text}"
    return f"Token {piece.id}: {piece.text!r}"


class TokenPiecesView(QTextBrowser):
    """Read-only view of the pieces of a text; hovering a piece shows what it is."""

    def __init__(self, parent: QWidget | None = None, name: str = "tokenizer_tokens_view"):
        super().__init__(parent)
        self.setObjectName(name)
        self.setToolTip("Each token on its own tint, followed by its id; unknown characters in red, "
                        "parts of a multi-byte character as their bytes (hover a token for more)")
        self.setFont(QFontDatabase.systemFont(QFontDatabase.FixedFont))
        self.setOpenLinks(False)  # the anchors only name the pieces
        self.document().setDefaultStyleSheet("a { text-decoration: none; }")
        self.pieces: list[Any] = []
        self.source = ""
        self.unk_id: int | None = None
        self.viewport().installEventFilter(self)

    def show_pieces(self, pieces: list[Any], source: str, dark: bool, unk_id: int | None = None) -> None:
        self.pieces, self.source, self.unk_id = list(pieces), source, unk_id
        self.setHtml(render_pieces(self.pieces, dark))

    def clear_pieces(self) -> None:
        self.pieces, self.source = [], ""
        self.clear()

    def piece_at(self, pos) -> int | None:
        """Index of the piece under viewport point ``pos`` (None between pieces)."""
        anchor = self.anchorAt(pos)
        if anchor.startswith(ANCHOR) and anchor[len(ANCHOR):].isdigit():
            index = int(anchor[len(ANCHOR):])
            return index if index < len(self.pieces) else None
        return None

    def describe(self, index: int) -> str:
        return describe_piece(self.pieces[index], self.source, self.unk_id)

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt's name
        if obj is self.viewport() and event.type() == QEvent.Type.ToolTip:
            index = self.piece_at(event.pos())
            if index is None:
                QToolTip.showText(event.globalPos(), self.toolTip(), self.viewport())
            else:
                QToolTip.showText(event.globalPos(), self.describe(index), self.viewport())
            return True
        return super().eventFilter(obj, event)
