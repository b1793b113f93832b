"""The corpus pane on a file that is not valid UTF-8: the window's own way to read it (no command-line flag)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtGui import QTextCursor

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


def test_records_show_as_records_with_the_scored_part_marked(qtbot, tmp_path: Path) -> None:
    import json

    rows = [{"prompt": f"Question {i}: " + "x" * (3 * i), "completion": f"Answer {i}."} for i in range(12)]
    rows.append({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]})
    path = tmp_path / "recs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    ctx = make_context()
    ctx.config.set_value("block_size", 32)
    ctx.config.set_value("shift", 1)
    pane = CorpusPane.from_context(ctx)
    qtbot.addWidget(pane)
    pane.show()
    with qtbot.waitSignal(ctx.session.corpus_opened, timeout=30_000):
        ctx.session.open_corpus([str(path)])
    assert pane.records_box.isVisible() and pane.record_preview.isVisible() and not pane.preview.isVisible()
    assert pane.stat_titles["documents"].text() == "Examples" and pane.stat_labels["documents"].text() == "13"
    assert pane.record_labels["examples"].text() == "13 (1 chat, 12 prompt/completion)"
    assert "examples" in pane.split_label.text()
    # the char tokenizer comes by itself; then the token figures
    qtbot.waitUntil(lambda: pane.record_labels["prompt"].text().startswith("min"), timeout=30_000)
    prompts = [len(r["prompt"]) for r in rows[:12]] + [len("<|user|>\nHi\n<|assistant|>\n")]
    assert pane.record_labels["prompt"].text() == f"min {min(prompts)} · median {np.median(prompts):g} · max {max(prompts)}"
    totals = [len(r["prompt"]) + len(r["completion"]) + 1 for r in rows[:12]]
    over = sum(t > 33 for t in totals)
    assert over > 0
    assert pane.record_labels["context"].text().startswith(f"⚠ block_size 32 + shift 1: {over} of 13 truncated")
    assert "longer than the context" in pane.record_labels["context"].toolTip()
    # a longer context: the figures follow the config
    ctx.config.set_value("block_size", 128)
    assert pane.record_labels["context"].text() == "block_size 128 + shift 1: 0 of 13 truncated, 0 without a scored token"

    # the preview: the first example, its completion and end token marked as scored, the prompt not
    preview = pane.record_preview
    assert preview.scored_text() == "Answer 0.<|endoftext|>"
    assert preview.view.toPlainText() == "Question 0: Answer 0.<|endoftext|>"
    doc = preview.view.document()
    cursor = QTextCursor(doc)
    cursor.setPosition(3)  # inside the prompt
    assert cursor.charFormat().background().style() == Qt.BrushStyle.NoBrush
    cursor.setPosition(len("Question 0: ") + 2)  # inside the completion
    assert cursor.charFormat().background().style() != Qt.BrushStyle.NoBrush
    preview.spin.setValue(13)  # the chat
    assert preview.scored_text() == "Hello<|endoftext|>"
    assert preview.view.toPlainText() == "<|user|>\nHi\n<|assistant|>\nHello<|endoftext|>"
    assert "tokens" in preview.caption.text() and preview.spin.objectName() == "corpus_record_index_spin"
    # the records figures and the preview's row fit the left dock's default width (470 px): nothing makes the pane
    # wider than that (which showed as a horizontal scroll bar under the whole pane)
    assert pane.minimumSizeHint().width() <= 470, pane.minimumSizeHint().width()

    # back to plain text: the records figures go away
    text = tmp_path / "plain.txt"
    text.write_text("Just some text.\n" * 100, encoding="utf-8")
    with qtbot.waitSignal(ctx.session.corpus_opened, timeout=30_000):
        ctx.session.open_corpus([str(text)])
    assert not pane.records_box.isVisible() and pane.preview.isVisible() and not pane.record_preview.isVisible()
    assert pane.stat_titles["documents"].text() == "Documents"
    ctx.session.shutdown()
    assert pane.shutdown()
