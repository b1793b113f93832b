"""The Generate pane (playground) on a real tiny run: streaming, stop, compare, hover, history."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import QPoint, Qt

from shiftstudio.gui.panes import make_context
from shiftstudio.gui.panes.generate import GeneratePane, GenerationWorker, Source


@pytest.fixture
def pane(qtbot, tiny_run: Path):
    ctx = make_context()
    pane = GeneratePane(ctx.runs)
    qtbot.addWidget(pane)
    pane.resize(1000, 600)
    pane.show()
    pane.set_run(tiny_run)
    yield pane
    pane.shutdown()
    ctx.runs.shutdown()
    ctx.session.shutdown()


def generate(qtbot, pane: GeneratePane) -> str:
    assert pane.generate()
    qtbot.waitUntil(lambda: not pane.running, timeout=60_000)
    return pane.output_text()


def test_sources_list_the_runs_checkpoints(pane: GeneratePane) -> None:
    items = [pane.source.itemData(i) for i in range(pane.source.count())]
    assert items[0] == "latest" and "step-4" in items
    assert pane.generate_button.isEnabled() and not pane.stop_button.isEnabled()


def test_generation_streams_into_the_view_and_is_reproducible(qtbot, pane: GeneratePane) -> None:
    pane.prompt.setPlainText("ROMEO:")
    pane.max_tokens.setValue(40)
    pane.stop_eot.setChecked(False)
    first = generate(qtbot, pane)
    assert len(pane.output_a.tokens) == 40
    assert pane.output_a.toPlainText() == "ROMEO:" + first
    assert "40 tokens" in pane.status.text() and "max new tokens" in pane.status.text()
    assert generate(qtbot, pane) == first  # same seed, same settings, same text
    pane.seed.setValue(99)
    assert generate(qtbot, pane) != first


def test_stop_ends_the_stream_within_one_token(qtbot, tiny_run: Path) -> None:
    from shiftstudio.core.generate.filters import SamplingSettings

    worker = GenerationWorker([Source(tiny_run, "latest")], "ROMEO", SamplingSettings(max_new_tokens=100_000, seed=1, stop_at_eot=False))
    seen: list[int] = []
    at_stop: list[int] = []

    def on_tokens(_index: int, batch: list) -> None:  # runs in the worker's thread (direct connection)
        seen.append(len(batch))
        if sum(seen) >= 25 and not at_stop:
            at_stop.append(sum(seen))
            worker.stop()

    ends: list[tuple] = []
    worker.tokens.connect(on_tokens, Qt.ConnectionType.DirectConnection)
    worker.finished.connect(lambda *args: ends.append(args), Qt.ConnectionType.DirectConnection)
    worker.run()  # in this thread: the flag is what ends it
    assert ends and ends[0][1] == "stopped"
    assert ends[0][2] - at_stop[0] <= 1  # at most the token in flight when Stop came


def test_stop_button_ends_a_long_generation(qtbot, pane: GeneratePane) -> None:
    pane.max_tokens.setValue(100_000)
    pane.stop_eot.setChecked(False)
    assert pane.generate()
    assert pane.stop_button.isEnabled() and not pane.generate_button.isEnabled()
    qtbot.waitUntil(lambda: len(pane.output_a.tokens) > 10, timeout=60_000)
    qtbot.mouseClick(pane.stop_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not pane.running, timeout=10_000)
    assert "stopped" in pane.status.text()
    assert len(pane.output_a.tokens) < 100_000
    assert pane.generate_button.isEnabled()


def test_compare_runs_two_streams_side_by_side(qtbot, pane: GeneratePane) -> None:
    pane.compare.setChecked(True)
    assert pane.output_b_box.isVisibleTo(pane)
    pane.compare_source.setCurrentIndex(pane.compare_source.findData("step-4"))
    pane.source.setCurrentIndex(pane.source.findData("latest"))
    pane.max_tokens.setValue(20)
    pane.stop_eot.setChecked(False)
    generate(qtbot, pane)
    # the latest checkpoint *is* step 4: same weights, same seed -> the same text in both views
    assert pane.output_text(0) == pane.output_text(1) and len(pane.output_b.tokens) == 20
    assert "step 4" in pane.title_b.text()


def test_hover_shows_probability_and_top_five(qtbot, pane: GeneratePane) -> None:
    pane.prompt.setPlainText("ROMEO")
    pane.max_tokens.setValue(10)
    pane.stop_eot.setChecked(False)
    pane.colour.setChecked(True)
    generate(qtbot, pane)
    view = pane.output_a
    cursor = view.textCursor()
    cursor.setPosition(len("ROMEO"))  # the first generated character
    rect = view.cursorRect(cursor)
    index = view.token_at(QPoint(rect.right() + 2, rect.center().y()))  # just right of the cursor: that character
    assert index == 0
    text = view.describe(index)
    assert text.count("%") == 6  # its own probability plus five alternatives
    # the prompt is not a token
    cursor.setPosition(1)
    assert view.token_at(view.cursorRect(cursor).center()) is None
    # colouring is applied to generated text, and removed when toggled off
    fmt_cursor = view.textCursor()
    fmt_cursor.setPosition(len("ROMEO") + 1)
    assert fmt_cursor.charFormat().background().style() != Qt.BrushStyle.NoBrush
    pane.colour.setChecked(False)
    fmt_cursor = view.textCursor()
    fmt_cursor.setPosition(len("ROMEO") + 1)
    assert fmt_cursor.charFormat().background().style() == Qt.BrushStyle.NoBrush
    assert view.token_at(QPoint(rect.right() + 2, rect.center().y())) == 0  # still hoverable
    assert pane.output_text() == "".join(t[0] for t in view.tokens) and view.toPlainText() == "ROMEO" + pane.output_text()


def test_output_is_reshaded_for_a_new_theme(qtbot, pane: GeneratePane) -> None:
    from PySide6.QtGui import QColor, QPalette

    pane.prompt.setPlainText("ROMEO")
    pane.max_tokens.setValue(10)
    pane.colour.setChecked(True)
    generate(qtbot, pane)
    view = pane.output_a

    def first_token_colours():
        cursor = view.textCursor()
        cursor.setPosition(len("ROMEO") + 1)
        return cursor.charFormat().background().color(), cursor.charFormat().foreground().color()

    light_bg, light_fg = first_token_colours()
    dark = QPalette(view.palette())
    dark.setColor(QPalette.ColorRole.Base, QColor(30, 30, 30))
    dark.setColor(QPalette.ColorRole.Text, QColor(230, 230, 230))
    view.setPalette(dark)
    dark_bg, dark_fg = first_token_colours()
    assert dark_bg.lightness() < light_bg.lightness() and dark_fg.lightness() > light_fg.lightness()
    assert abs(dark_bg.lightness() - dark_fg.lightness()) > 100 and abs(light_bg.lightness() - light_fg.lightness()) > 100


def test_bad_settings_and_prompts_show_a_message(qtbot, pane: GeneratePane) -> None:
    pane.prompt.setPlainText("naïve ☃ snowman")  # characters the char tokenizer never saw
    generate(qtbot, pane)
    assert "never saw" in pane.status.text()
    assert pane.generate_button.isEnabled()  # still usable
    pane.ema.setChecked(True)
    pane.prompt.setPlainText("ROMEO")
    generate(qtbot, pane)
    assert "EMA" in pane.status.text()


def test_prompt_history_persists(qtbot, tiny_run: Path, pane: GeneratePane) -> None:
    pane.max_tokens.setValue(2)
    for prompt in ("First", "ROMEO", "First"):
        pane.prompt.setPlainText(prompt)
        generate(qtbot, pane)
    assert [pane.history.itemData(i) for i in range(pane.history.count())] == ["First", "ROMEO"]
    ctx = make_context()
    again = GeneratePane(ctx.runs)
    qtbot.addWidget(again)
    assert again.history.itemData(0) == "First"
    again.history.activated.emit(1)
    assert again.prompt.toPlainText() == "ROMEO"
    ctx.runs.shutdown()
    ctx.session.shutdown()


def test_every_control_has_a_name_and_tooltip(pane: GeneratePane) -> None:
    from PySide6.QtWidgets import QAbstractButton, QAbstractSpinBox, QComboBox, QLineEdit, QPlainTextEdit, QWidget

    kinds = (QAbstractButton, QAbstractSpinBox, QComboBox, QLineEdit, QPlainTextEdit)
    controls = [w for w in pane.findChildren(QWidget) if isinstance(w, kinds)]
    assert len(controls) >= 15
    for widget in controls:
        if isinstance(widget, QLineEdit) and isinstance(widget.parent(), (QAbstractSpinBox, QComboBox)):
            continue  # the editor inside a spin box or combo box
        assert widget.objectName(), widget
        assert widget.toolTip(), widget.objectName()
