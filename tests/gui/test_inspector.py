"""The batch inspector pane on real batch views from a real (tiny) model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PySide6.QtCore import QPoint, Qt
from PySide6.QtGui import QColor

from shiftstudio.config import ModelConfig
from shiftstudio.core.train.evaluation import batch_view
from shiftstudio.core.model.gpt import GPT
from shiftstudio.core.data.tokenizer import char_tokenizer, train_bpe
from shiftstudio.core.data.batches import BatchSampler
from shiftstudio.gui.panes.inspector import InspectorPane, visible_token
from shiftstudio.gui.widgets.shift_view import loss_colour


def make_view(tokenizer, text: str, shift: int = 1, block: int = 24, step: int = 10, seed: int = 0):
    ids = np.array(tokenizer.encode(text), dtype=np.int64)
    torch.manual_seed(seed)
    model = GPT(ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=block, dropout=0.0, shift=shift), tokenizer.vocab_size)
    batch = BatchSampler(ids, batch_size=2, block_size=block, shift=shift, seed=seed).next()
    return batch_view(model, batch.x, batch.y, batch.mask, row=0, step=step)


@pytest.fixture
def pane(qtbot, shakespeare_text: str):
    pane = InspectorPane(None)
    qtbot.addWidget(pane)
    pane.resize(1100, 520)
    pane.show()
    pane.set_tokenizer(char_tokenizer(shakespeare_text))
    return pane


def pixel(widget, rect):
    return widget.grab().toImage().pixelColor(rect.center().toPoint())


def test_renders_cells_offsets_and_colours(qtbot, pane: InspectorPane, shakespeare_text: str) -> None:
    report = make_view(pane.tokenizer, shakespeare_text[:3000])
    report.loss[0, 3] = 0.01  # one target the model got right, one it got badly wrong
    report.loss[0, 4] = 7.5
    pane.show_report(report)
    qtbot.waitUntil(lambda: pane.batch is not None, timeout=3000)
    view = pane.view
    assert view.model.T == 24 and view.model.K == 1
    # each target sits one cell right of its input: under input t+1, which is the same token
    for t in range(23):
        assert view.cell_rect(1, t).x() == view.cell_rect(0, t + 1).x()
        assert report.target_ids[0, t] == report.input_ids[t + 1]
    good, bad = pixel(view, view.cell_rect(1, 3)), pixel(view, view.cell_rect(1, 4))
    assert good.green() > good.red() and bad.red() > bad.green()
    assert "step 10, row 0" in pane.summary.text() and "top-1 correct" in pane.summary.text()


def test_masked_targets_are_grey_and_marked_unscored(qtbot, pane: InspectorPane, shakespeare_text: str) -> None:
    report = make_view(pane.tokenizer, shakespeare_text[:3000])
    report.mask[0, :5] = 0
    pane.draw_report(report)
    colour = pixel(pane.view, pane.view.cell_rect(1, 2))
    assert abs(colour.red() - colour.green()) < 8 and abs(colour.green() - colour.blue()) < 8  # grey
    qtbot.mouseClick(pane.view, Qt.MouseButton.LeftButton, pos=pane.view.cell_rect(1, 2).center().toPoint())
    assert "not scored" in pane.details.toPlainText()
    assert f"/{24 - 5}" in pane.summary.text()  # only scored positions count


def test_click_shows_top_five_and_target_rank(qtbot, pane: InspectorPane, shakespeare_text: str) -> None:
    report = make_view(pane.tokenizer, shakespeare_text[:3000])
    pane.draw_report(report)
    view = pane.view
    qtbot.mouseClick(view, Qt.MouseButton.LeftButton, pos=view.cell_rect(0, 6).center().toPoint())
    assert view.selected_t == 6
    text = pane.details.toPlainText()
    assert text.count("%") == 6  # p(target) plus five guesses
    assert f"loss {report.loss[0, 6]:.3f}" in text
    p = math.exp(-float(report.loss[0, 6]))
    assert f"p = {100 * p:.1f}%" in text
    in_top = int(report.target_ids[0, 6]) in report.top_ids[0, 6].tolist()
    assert ("rank" in text) == in_top and ("not in the top 5" in text) == (not in_top)
    # hovering another column updates the panel too
    qtbot.mouseMove(view, view.cell_rect(1, 9).center().toPoint())
    qtbot.waitUntil(lambda: "t=9" in pane.details.toPlainText(), timeout=2000)


def test_shift_two_draws_two_strips_offset_by_one_and_two(qtbot, pane: InspectorPane, shakespeare_text: str) -> None:
    report = make_view(pane.tokenizer, shakespeare_text[:3000], shift=2)
    pane.draw_report(report)
    view = pane.view
    assert view.model.K == 2
    for t in range(20):
        assert view.cell_rect(1, t).x() == view.cell_rect(0, t + 1).x()
        assert view.cell_rect(2, t).x() == view.cell_rect(0, t + 2).x()
        assert view.cell_rect(2, t).y() > view.cell_rect(1, t).y() > view.cell_rect(0, t).y()
    assert view.height() >= view.strip_y(2) + 30
    assert view.hit(view.cell_rect(2, 5).center().x(), view.cell_rect(2, 5).center().y()) == (2, 5)
    qtbot.mouseClick(view, Qt.MouseButton.LeftButton, pos=view.cell_rect(2, 5).center().toPoint())
    assert "target t+1" in pane.details.toPlainText() and "target t+2" in pane.details.toPlainText()
    assert "k=2" in pane.summary.text()


def test_freeze_holds_the_batch(qtbot, pane: InspectorPane, shakespeare_text: str) -> None:
    first = make_view(pane.tokenizer, shakespeare_text[:3000], step=10)
    pane.show_report(first)
    qtbot.waitUntil(lambda: pane.batch is not None and pane.batch.step == 10, timeout=3000)
    qtbot.mouseClick(pane.freeze, Qt.MouseButton.LeftButton)
    assert pane.freeze.isChecked()
    pane.show_report(make_view(pane.tokenizer, shakespeare_text[:3000], step=20, seed=1))
    qtbot.wait(600)  # two redraw ticks
    assert pane.batch.step == 10
    qtbot.mouseClick(pane.freeze, Qt.MouseButton.LeftButton)
    pane.show_report(make_view(pane.tokenizer, shakespeare_text[:3000], step=30, seed=2))
    qtbot.waitUntil(lambda: pane.batch.step == 30, timeout=3000)
    assert pane.reports_seen == 3


def test_bpe_tokens_show_visible_spaces_and_long_context_scrolls(qtbot, pane: InspectorPane, shakespeare_text: str) -> None:
    bpe = train_bpe([shakespeare_text], vocab_size=400)
    pane.set_tokenizer(bpe)
    report = make_view(bpe, shakespeare_text * 3, block=1024)
    pane.draw_report(report)
    view = pane.view
    texts = [visible_token(bpe.token_text(int(i))) for i in report.input_ids]
    assert any(t.startswith("␣") for t in texts)  # the leading-space marker shown as a visible space
    assert not any("Ġ" in t for t in texts)
    assert view.width() > pane.scroll.viewport().width() * 5  # 1024 cells: scrolls horizontally
    bar = pane.scroll.horizontalScrollBar()
    bar.setValue(bar.maximum())
    viewport = pane.scroll.viewport()
    image = viewport.grab().toImage()  # painting only the visible columns works at the far end
    ratio = image.devicePixelRatio()
    assert (image.width(), image.height()) == (round(viewport.width() * ratio), round(viewport.height() * ratio))
    T = view.model.T
    for t in range(T - 6, T - 1):  # the last targets, each in its colour (by loss; grey when not scored)
        rect = view.cell_rect(1, t)
        assert view.visibleRegion().contains(rect.center().toPoint())
        corner = view.mapTo(viewport, QPoint(int(rect.left()) + 4, int(rect.top()) + 4))  # clear of the label
        got = image.pixelColor(round(corner.x() * ratio), round(corner.y() * ratio))
        want = loss_colour(float(report.loss[0, t]), view.scale) if report.mask[0, t] > 0 else QColor(190, 190, 190)
        difference = max(abs(got.red() - want.red()), abs(got.green() - want.green()), abs(got.blue() - want.blue()))
        assert difference <= 2, (t, got.name(), want.name())


def test_colour_by_probability_and_samples(qtbot, pane: InspectorPane, shakespeare_text: str) -> None:
    from shiftstudio.core.train.reports import SampleReport

    report = make_view(pane.tokenizer, shakespeare_text[:3000])
    report.loss[0, 3] = 0.01
    pane.draw_report(report)
    pane.colour_by.setCurrentIndex(pane.colour_by.findData("prob"))
    assert pane.view.colour_by == "prob" and pane.legend.colour_by == "prob"
    colour = pixel(pane.view, pane.view.cell_rect(1, 3))
    assert colour.green() > colour.red()  # p(target) ≈ 0.99: green
    pane.add_sample(SampleReport(step=250, prompt="ROMEO:", text=" What light"))
    assert pane.samples.count() == 1 and pane.samples.item(0).text() == "step 250: ROMEO: What light"


def test_a_short_dock_shows_every_strip_and_the_details_without_scrolling(qtbot, pane: InspectorPane, shakespeare_text: str) -> None:
    pane.resize(900, 250)  # a ~260 px dock at 1366x768
    qtbot.waitUntil(lambda: pane.height() == 250)
    assert pane.minimumSizeHint().height() <= 250
    report = make_view(pane.tokenizer, shakespeare_text[:3000], shift=2)
    pane.draw_report(report)
    view = pane.view
    qtbot.mouseClick(view, Qt.MouseButton.LeftButton, pos=view.cell_rect(1, 6).center().toPoint())
    assert pane.scroll.verticalScrollBar().maximum() == 0  # the input and both target strips fit
    for strip in (0, 1, 2):
        assert view.visibleRegion().contains(view.cell_rect(strip, 6).toRect()), strip
    details = pane.details
    assert "target t+1" in details.toPlainText() and "target t+2" in details.toPlainText()
    assert details.toPlainText().count("%") == 2 * 6
    assert details.verticalScrollBar().maximum() == 0  # the top 5 of each horizon, no scrolling
    assert details.isVisible() and details.height() >= details.document().size().height()


def test_more_horizons_than_fit_scroll_under_the_pinned_input_row(qtbot, pane: InspectorPane, shakespeare_text: str) -> None:
    pane.resize(900, 250)
    report = make_view(pane.tokenizer, shakespeare_text[:3000], shift=4)
    pane.draw_report(report)
    view, bar = pane.view, pane.scroll.verticalScrollBar()
    qtbot.waitUntil(lambda: bar.maximum() > 0)  # four target strips do not fit: they scroll
    bar.setValue(bar.maximum())
    viewport = pane.scroll.viewport()
    # the input row is still at the top of the view, over the targets scrolled under it
    top = view.mapTo(viewport, view.cell_rect(0, 3).center().toPoint())
    assert 0 < top.y() < view.header_height
    assert view.hit(view.cell_rect(0, 3).center().x(), view.cell_rect(0, 3).center().y()) == (0, 3)
    last = view.cell_rect(4, 3)
    assert view.visibleRegion().contains(last.toRect())  # and the last target strip came into view with the others
    assert view.hit(last.center().x(), last.center().y()) == (4, 3)
    image = viewport.grab().toImage()
    ratio = image.devicePixelRatio()
    cell = view.mapTo(viewport, QPoint(int(view.cell_rect(0, 3).left()) + 3, int(view.cell_rect(0, 3).top()) + 3))
    got = image.pixelColor(round(cell.x() * ratio), round(cell.y() * ratio))
    palette = view.palette()
    assert got in (palette.button().color(), palette.alternateBase().color())  # an input cell, not a target's colour
    qtbot.mouseClick(view, Qt.MouseButton.LeftButton, pos=last.center().toPoint())
    assert "target t+4" in pane.details.toPlainText() and pane.details.verticalScrollBar().maximum() == 0
