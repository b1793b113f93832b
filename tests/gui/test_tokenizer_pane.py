"""The tokenizer pane's "Try it" box on real tokenizers: unknown characters, byte pieces, a line of the user's corpus."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import QPoint

from shiftstudio.gui.panes import make_context
from shiftstudio.gui.panes.tokenizer import TokenizerPane

CORPUS = "\n\n   \nLa cafetière du café déborde.\nUn été à Montréal, 日本 une fois.\n" + "Le café est noir et chaud.\n" * 40


@pytest.fixture
def pane(qtbot, tmp_path: Path):
    corpus = tmp_path / "cafe.txt"
    corpus.write_text(CORPUS, encoding="utf-8")
    ctx = make_context()
    pane = TokenizerPane.from_context(ctx)
    qtbot.addWidget(pane)
    pane.resize(700, 800)
    pane.show()
    with qtbot.waitSignal(ctx.session.tokenizer_changed, timeout=30_000, check_params_cb=lambda info: info is not None):
        ctx.session.open_corpus([str(corpus)])  # a char tokenizer is built by itself
    yield pane
    ctx.session.shutdown()


def shown(pane: TokenizerPane, qtbot, text: str) -> None:
    pane.try_edit.setPlainText(text)
    qtbot.waitUntil(lambda: pane.tokens_view.source == text, timeout=3000)


def tooltip_at(pane: TokenizerPane, index: int) -> str:
    """The hover text of piece ``index``, found by its place in the view (as the mouse would)."""
    view = pane.tokens_view
    for y in range(2, view.viewport().height(), 3):
        for x in range(2, view.viewport().width(), 3):
            if view.piece_at(QPoint(x, y)) == index:
                return view.describe(index)
    raise AssertionError(f"piece {index} is not in view")


def test_try_it_starts_with_a_line_of_the_users_corpus(pane: TokenizerPane, qtbot) -> None:
    assert pane.try_edit.toPlainText() == "La cafetière du café déborde."  # the first line with something on it
    qtbot.waitUntil(lambda: pane.tokens_view.source == "La cafetière du café déborde.", timeout=3000)
    assert "Shakespeare" not in pane.try_edit.toPlainText() and "To be" not in pane.try_edit.toPlainText()


def test_unknown_characters_are_shown_as_unknown_and_counted(pane: TokenizerPane, qtbot) -> None:
    tok = pane.session.tokenizer.tokenizer
    shown(pane, qtbot, "café ☃ noir ♞")  # a snowman and a knight: not in the corpus
    pieces = pane.tokens_view.pieces
    unknown = [i for i, p in enumerate(pieces) if p.kind == "unknown"]
    assert [pieces[i].text for i in unknown] == ["☃", "♞"] and all(pieces[i].id == tok.unk_id for i in unknown)
    assert "2 unknown" in pane.count_label.text()
    html = pane.tokens_view.toHtml()
    assert "#c0392b" in html and "&lt;unk&gt;" in html  # drawn in the unknown style, <unk> as its id
    assert "not in the vocabulary" in tooltip_at(pane, unknown[0]) and "☃" in tooltip_at(pane, unknown[0])
    shown(pane, qtbot, "café noir")
    assert "unknown" not in pane.count_label.text() and "#c0392b" not in pane.tokens_view.toHtml()


def test_bpe_byte_pieces_are_drawn_as_bytes_not_as_the_whole_character(pane: TokenizerPane, qtbot) -> None:
    session = pane.session
    session.config.load_flat({"tokenizer": "bpe", "vocab_size": 270})
    with qtbot.waitSignal(session.tokenizer_changed, timeout=30_000, check_params_cb=lambda info: info is not None):
        pane.train_button.click()
    shown(pane, qtbot, "日本")  # rare: each character stays three byte-level tokens
    pieces = pane.tokens_view.pieces
    assert [p.kind for p in pieces] == ["bytes"] * 6
    assert pieces[0].text == pieces[3].text == "E6"  # 日 = E6 97 A5, 本 = E6 9C AC
    drawn = pane.tokens_view.toPlainText()
    assert "日" not in drawn and "本" not in drawn  # not "日 日 日"
    assert [text for _, text in pane.token_pieces()] == ["E6", "97", "A5", "E6", "9C", "AC"]
    assert "part of the character '日'" in tooltip_at(pane, 1)
    assert "unknown" not in pane.count_label.text()  # byte-level BPE has no unknowns
