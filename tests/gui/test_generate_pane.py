"""The Generate pane (playground) on a real tiny run: streaming, stop, compare, hover, history."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import QPoint, Qt

from shiftstudio.gui.panes import make_context
from shiftstudio.gui.panes.generate import NO_CHECKPOINT, GeneratePane, GenerationWorker, Source


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
    assert "model's top 5 (before temperature/top-k/top-p)" in text  # which distribution it is
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
    assert pane.status.property("error") is True
    pane.top_p.setValue(0.5)
    pane.prompt.setPlainText("ROMEO")
    generate(qtbot, pane)
    assert pane.status.property("error") is False and "tokens in" in pane.status.text()


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


# -- status, EMA, remembered settings, saving, a short dock ------------------------------------------------


def test_no_checkpoint_message_goes_once_a_run_is_opened(qtbot, tiny_run: Path) -> None:
    ctx = make_context()
    pane = GeneratePane(ctx.runs)
    qtbot.addWidget(pane)
    assert pane.status.text() == NO_CHECKPOINT and not pane.generate_button.isEnabled()
    with qtbot.waitSignal(ctx.runs.run_opened, timeout=30_000):
        ctx.runs.open_run(tiny_run)
    assert pane.source.count() > 0 and pane.generate_button.isEnabled()
    assert "No checkpoint" not in pane.status.text()
    ctx.runs.shutdown()
    ctx.session.shutdown()


@pytest.fixture(scope="module")
def ema_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny run trained with EMA weights (checkpoints at steps 2 and 4); step 2's EMA file is then removed,
    as in a run that turned EMA on when it was resumed."""
    from shiftstudio.config import RunConfig
    from shiftstudio.core.runs.folder import prepare_and_create
    from shiftstudio.core.runs.layout import EMA_FILE, RunLayout
    from shiftstudio.core.train.trainer import Trainer
    from tests.conftest import SHARED_DATA, TINY_RUN_SETTINGS

    base = tmp_path_factory.mktemp("ema-run")
    corpus = base / "corpus.txt"
    corpus.write_text((SHARED_DATA / "tinyshakespeare.txt").read_text(encoding="utf-8")[:20_000], encoding="utf-8")
    config = RunConfig().updated({"corpus": [str(corpus)], **TINY_RUN_SETTINGS, "ema_decay": 0.9})
    run_dir = prepare_and_create(config, out_dir=base / "run")
    assert type(list(Trainer(run_dir).run())[-1]).__name__ == "FinishedReport"
    (RunLayout(run_dir).checkpoint_dir(2) / EMA_FILE).unlink()
    return run_dir


def test_ema_is_offered_only_for_checkpoints_that_have_ema_weights(qtbot, pane: GeneratePane, ema_run: Path) -> None:
    # the tiny run trained without EMA: the box is off, and says why
    assert not pane.ema.isEnabled() and not pane.ema.isChecked()
    assert "no EMA weights" in pane.ema.toolTip()
    pane.set_run(ema_run)
    pane.source.setCurrentIndex(pane.source.findData("latest"))
    assert pane.ema.isEnabled(), pane.ema.toolTip()
    pane.ema.setChecked(True)
    pane.source.setCurrentIndex(pane.source.findData("step-2"))  # this checkpoint has no EMA copy
    assert not pane.ema.isEnabled() and not pane.ema.isChecked() and "step 2" in pane.ema.toolTip()
    pane.source.setCurrentIndex(pane.source.findData("step-4"))
    pane.ema.setChecked(True)
    pane.compare.setChecked(True)
    pane.compare_source.setCurrentIndex(pane.compare_source.findData("step-2"))  # compared with one without EMA
    assert not pane.ema.isEnabled()
    pane.compare.setChecked(False)
    assert pane.ema.isEnabled()
    pane.ema.setChecked(True)
    pane.max_tokens.setValue(5)
    generate(qtbot, pane)
    assert pane.status.property("error") is False and len(pane.output_a.tokens) >= 1
    assert "(EMA)" in pane.title_a.text()


def test_sampling_settings_come_back_at_the_next_start(qtbot, tmp_path: Path) -> None:
    from shiftstudio.gui.settings import Settings

    settings = Settings(tmp_path / "gui.json")
    ctx = make_context(settings)
    pane = GeneratePane.from_context(ctx)
    qtbot.addWidget(pane)
    pane.temperature.setValue(1.25)
    pane.top_k.setValue(40)
    pane.top_p.setValue(0.9)
    pane.repetition.setValue(1.2)
    pane.max_tokens.setValue(77)
    pane.seed.setValue(-1)
    pane.stop_text.setText("\\n\\n")
    pane.stop_eot.setChecked(False)
    pane.colour.setChecked(True)
    settings.save()  # as the window does when it closes

    again = GeneratePane.from_context(make_context(Settings(tmp_path / "gui.json")))
    qtbot.addWidget(again)
    assert (again.temperature.value(), again.top_k.value(), again.top_p.value(), again.repetition.value()) == (1.25, 40, 0.9, 1.2)
    assert (again.max_tokens.value(), again.seed.value(), again.stop_text.text()) == (77, -1, "\\n\\n")
    assert not again.stop_eot.isChecked() and again.colour.isChecked()
    assert again.settings().stop == ("\n\n",) and again.settings().seed is None
    ctx.runs.shutdown()
    ctx.session.shutdown()


def test_save_writes_the_output_and_both_outputs_when_comparing(qtbot, pane: GeneratePane, tmp_path: Path, monkeypatch) -> None:
    from PySide6.QtWidgets import QFileDialog

    target = tmp_path / "out.txt"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *args, **kwargs: (str(target), ""))
    pane.prompt.setPlainText("ROMEO:")
    pane.max_tokens.setValue(12)
    pane.stop_eot.setChecked(False)
    generate(qtbot, pane)
    qtbot.mouseClick(pane.save_button, Qt.MouseButton.LeftButton)
    assert target.read_text(encoding="utf-8") == "ROMEO:" + pane.output_text()
    assert str(target) in pane.status.text()

    pane.compare.setChecked(True)
    pane.compare_source.setCurrentIndex(pane.compare_source.findData("step-2"))
    generate(qtbot, pane)
    qtbot.mouseClick(pane.save_button, Qt.MouseButton.LeftButton)
    saved = target.read_text(encoding="utf-8")
    first, second = saved.index(pane.title_a.text()), saved.index(pane.title_b.text())
    assert "step 2" in pane.title_b.text() and first < second
    assert "ROMEO:" + pane.output_text(0) in saved[first:second] and "ROMEO:" + pane.output_text(1) in saved[second:]


def test_fits_a_short_dock_with_the_output_getting_the_height(qtbot, pane: GeneratePane) -> None:
    pane.resize(880, 250)
    qtbot.waitUntil(lambda: pane.height() == 250)
    assert pane.minimumSizeHint().height() <= 250 and pane.minimumSizeHint().width() <= 880
    assert pane.output_a.height() >= 0.45 * pane.height()  # the output has most of it
    bar = pane.side_scroll.verticalScrollBar()
    assert bar.maximum() == 0  # every sampling control in view, none scrolled away
    for widget in (pane.temperature, pane.seed, pane.stop_eot, pane.colour, pane.compare_source):
        assert widget.visibleRegion().boundingRect().height() == widget.height(), widget.objectName()
