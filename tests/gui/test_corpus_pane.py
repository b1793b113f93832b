"""The corpus pane on a file that is not valid UTF-8: the window's own way to read it (no command-line flag)."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt

from shiftstudio.gui.panes import make_context
from shiftstudio.gui.panes.corpus import CorpusPane


def test_invalid_utf8_offers_replace_invalid_bytes(qtbot, tmp_path: Path) -> None:
    corpus = tmp_path / "latin1.txt"
    corpus.write_bytes(("Le café est noir.\n".encode("latin-1")) * 200)  # é as the single byte 0xE9
    ctx = make_context()
    pane = CorpusPane.from_context(ctx)
    qtbot.addWidget(pane)
    pane.show()
    with qtbot.waitSignal(ctx.session.corpus_failed, timeout=30_000):
        ctx.session.open_corpus([str(corpus)])
    message = pane.messages.text()
    assert "not valid UTF-8" in message and pane.messages.level() == "error"
    assert "--errors" not in message and "errors=replace" not in message  # the CLI's flag means nothing here
    assert "Replace invalid bytes" in message
    assert pane.replace_button.isVisible() and pane.replace_button.toolTip()

    with qtbot.waitSignal(ctx.session.corpus_opened, timeout=30_000):
        qtbot.mouseClick(pane.replace_button, Qt.MouseButton.LeftButton)
    info = ctx.session.corpus
    assert info.errors == "replace" and info.corpus.errors == "replace" and info.paths == [str(corpus)]
    assert info.preview.startswith("Le caf\ufffd est noir.")
    assert "\ufffd" in pane.preview.toPlainText()
    assert "replaced" in pane.messages.text() and pane.messages.level() == "info"  # it says so
    assert "invalid bytes replaced" in pane.source_label.text()
    assert not pane.replace_button.isVisible()
    # a run started now reads the corpus the same way: the choice is in the settings it is made from
    from shiftstudio.core.data.store import prepare

    data = ctx.config.config.data
    assert data.encoding_errors == "replace" and data.corpus == [str(corpus)]
    store = prepare(data)  # what the run controller does for a new run: no "not valid UTF-8" failure
    assert store.tokenizer.decode(store.train[:8].tolist()) == "Le caf\ufffd "

    # a good file afterwards: read strictly again, no note
    good = tmp_path / "good.txt"
    good.write_text("Le café est noir.\n" * 200, encoding="utf-8")
    with qtbot.waitSignal(ctx.session.corpus_opened, timeout=30_000):
        ctx.session.open_corpus([str(good)])
    assert ctx.session.corpus.errors == "strict" and "replaced" not in pane.source_label.text()
    assert ctx.config.config.data.encoding_errors == "strict"
    assert not pane.replace_button.isVisible() and ctx.session.invalid_utf8_sources is None
    ctx.session.shutdown()
