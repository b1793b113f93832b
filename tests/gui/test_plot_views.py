"""The curves as the user sees them: head 1 as the headline with a curve per horizon on demand, a hover read-out
that leaves with the mouse and never moves the layout, legends clear of the data, and an export at its own size."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
from PySide6.QtCore import QEvent, QPoint, QPointF
from PySide6.QtGui import QColor, QImage
from PySide6.QtWidgets import QApplication

from shiftstudio.core.train.reports import EvalReport, StepReport
from shiftstudio.gui.metrics_store import MetricsStore
from shiftstudio.gui.plot_controls import VAL_COLOR, horizon_color
from shiftstudio.gui.plots import EXPORT_SIZE
from shiftstudio.gui.style import ACCENT


def steps(first: int, n: int) -> list[StepReport]:
    return [StepReport(step=s, loss=3.0 - 0.001 * s, lr=1e-3, grad_norm=1.0, tokens_per_s=1000.0, tokens=128 * s,
                       time_s=0.1 * s, ms_per_iter=10.0) for s in range(first, first + n)]


def evaluation(step: int, heads: list[float]) -> EvalReport:
    """An eval as the core reports it now: head 1 is the headline, the other heads in the per-horizon lists."""
    return EvalReport(step=step, tokens=128 * step, time_s=0.1 * step, train_loss=heads[0] - 0.1, val_loss=heads[0],
                      val_ppl=math.exp(heads[0]), train_ppl=math.exp(heads[0] - 0.1), best_val_loss=heads[0], is_best=True,
                      val_loss_per_horizon=heads, train_loss_per_horizon=[h - 0.1 for h in heads],
                      val_loss_all_heads=sum(heads) / len(heads), train_loss_all_heads=sum(heads) / len(heads) - 0.1)


def rgb_of(image: QImage) -> np.ndarray:
    image = image.convertToFormat(QImage.Format.Format_RGB32)
    return np.frombuffer(image.constBits(), dtype=np.uint32).reshape(image.height(), image.bytesPerLine() // 4)[:, : image.width()] & 0xFFFFFF


def test_head_one_is_the_headline_with_a_curve_per_horizon_on_demand(curves, qtbot, tmp_path) -> None:
    store = curves.store
    store.add_steps(steps(1, 100))
    for s, heads in ((50, [2.30, 2.70]), (100, [2.20, 2.61])):
        store.add_eval(evaluation(s, heads))
    curves.refresh()
    assert store.horizons == 2 and list(store.evals["val_loss"]) == [2.30, 2.20]  # head 1, not the mean (2.405)
    toggle = curves.toolbar.horizons_check
    assert toggle.isEnabled() and not toggle.isChecked()
    assert not curves.items["val_loss_h2"].isVisible()
    toggle.click()
    assert curves.items["val_loss_h2"].isVisible() and list(curves.items["val_loss_h2"].yData) == [2.70, 2.61]
    lo, hi = curves.plots["loss"].getViewBox().viewRange()[1]
    assert lo <= 2.20 and 2.70 <= hi  # the loss plot's range holds every curve shown
    assert "t+2" in curves.plots["loss"].titleLabel.text
    text = curves.show_readout_at(100)
    assert "val t+1 <b>2.2</b>" in text and "t+2 2.61" in text
    toggle.click()
    assert not curves.items["val_loss_h2"].isVisible() and "t+2" not in curves.plots["loss"].titleLabel.text
    assert curves.view_settings()["horizons"] is False

    out = tmp_path / "m.csv"
    curves.export_csv(str(out))
    rows = [r for r in csv.DictReader(out.open()) if r["kind"] == "eval"]
    assert [float(r["val_loss"]) for r in rows] == [2.30, 2.20]
    assert [float(r["val_loss_h2"]) for r in rows] == [2.70, 2.61] and float(rows[1]["train_loss_h2"]) == pytest.approx(2.51)


def test_old_records_logged_the_mean_as_val_loss_and_head_one_is_shown() -> None:
    old = {"kind": "eval", "step": 10, "tokens": 1280, "time_s": 1.0, "train_loss": 2.3, "val_loss": 2.45,
           "val_ppl": math.exp(2.45), "train_ppl": math.exp(2.3), "val_loss_per_horizon": [2.20, 2.70],
           "train_loss_per_horizon": [2.10, 2.50]}
    plain = {"kind": "eval", "step": 10, "tokens": 1280, "time_s": 1.0, "train_loss": 2.3, "val_loss": 2.22,
             "val_ppl": math.exp(2.22), "train_ppl": math.exp(2.3)}  # a shift = 1 run of the same age
    shift2, shift1 = MetricsStore(), MetricsStore()
    shift2.load_records([old])
    shift1.load_records([plain])
    assert shift2.evals["val_loss"][0] == 2.20 and shift2.evals["val_ppl"][0] == pytest.approx(math.exp(2.20))
    assert shift2.evals["train_loss"][0] == 2.10 and shift2.horizons == 2
    assert shift1.evals["val_loss"][0] == 2.22 and shift1.horizons == 1
    assert shift2.evals["val_loss"][0] < shift1.evals["val_loss"][0]  # the shift = 2 run is the better one


def test_single_horizon_runs_offer_no_horizon_toggle(curves) -> None:
    curves.store.add_steps(steps(1, 20))
    curves.store.add_eval(evaluation(20, [2.5]))
    curves.refresh()
    assert not curves.toolbar.horizons_check.isEnabled() and "one horizon" in curves.toolbar.horizons_check.toolTip()
    assert "t+" not in curves.show_readout_at(20)


def test_hover_readout_goes_when_the_mouse_leaves_and_never_moves_the_layout(curves, qtbot) -> None:
    curves.store.add_steps(steps(1, 400))
    for s in range(50, 401, 50):
        curves.store.add_eval(evaluation(s, [2.5 - s / 1000, 2.9 - s / 1000, 3.1 - s / 1000]))
    curves.refresh()
    qtbot.wait(50)
    before = (curves.minimumSizeHint(), curves.sizeHint(), curves.graphics.geometry(), curves.readout.geometry())
    box = curves.plots["loss"].getViewBox()
    centre = curves.graphics.mapFromScene(box.mapViewToScene(QPointF(200.0, 2.4)))
    qtbot.mouseMove(curves.graphics.viewport(), centre)
    qtbot.waitUntil(lambda: "step 200" in curves.readout.text(), timeout=2000)
    assert any(line.isVisible() for line in curves.graphics._cursor_lines)
    QApplication.processEvents()
    after = (curves.minimumSizeHint(), curves.sizeHint(), curves.graphics.geometry(), curves.readout.geometry())
    assert after == before  # a long read-out is cut, not widening (or heightening) the pane
    qtbot.mouseMove(curves.toolbar, QPoint(5, 5))  # out of the plots
    QApplication.sendEvent(curves.graphics, QEvent(QEvent.Type.Leave))  # (what the window system sends then)
    assert curves.readout.text().strip() == ""
    assert not any(line.isVisible() for line in curves.graphics._cursor_lines)


def test_legends_stay_clear_of_short_plots_and_export_draws_at_its_own_size(curves, qtbot, tmp_path) -> None:
    curves.resize(900, 330)  # a message bar took the pane's height
    qtbot.waitUntil(lambda: curves.height() == 330)
    store = curves.store
    store.add_steps(steps(1, 400))
    for s in range(50, 401, 50):  # val loss rising to the top right corner, where a legend used to sit
        store.add_eval(evaluation(s, [2.0 + s / 200, 2.5 + s / 200]))
    curves.set_show_horizons(True)
    curves.refresh()
    qtbot.wait(50)
    for key in ("loss", "ppl"):
        plot = curves.plots[key]
        assert plot.legend is None  # nothing drawn inside the view box
        assert "val" in plot.titleLabel.text
        assert not plot.titleLabel.sceneBoundingRect().intersects(plot.getViewBox().sceneBoundingRect())
    # the last validation point, in the top right corner of the loss plot, is drawn and not covered
    box = curves.plots["loss"].getViewBox()
    image = curves.graphics.grab().toImage()
    ratio = image.devicePixelRatio()
    point = curves.graphics.mapFromScene(box.mapViewToScene(QPointF(400.0, 4.0)))
    rgb = rgb_of(image)
    x, y = round(point.x() * ratio), round(point.y() * ratio)
    near = rgb[max(0, y - 3) : y + 4, max(0, x - 3) : x + 4]
    assert (QColor(VAL_COLOR).rgb() & 0xFFFFFF) in set(near.ravel().tolist())

    png = tmp_path / "plots.png"
    assert curves.export_png(str(png))
    exported = QImage(str(png))
    assert (exported.width(), exported.height()) == (round(EXPORT_SIZE.width() * ratio), round(EXPORT_SIZE.height() * ratio))
    colours = set(np.unique(rgb_of(exported)).tolist())
    for name in (ACCENT, VAL_COLOR, horizon_color(2)):
        assert QColor(name).rgb() & 0xFFFFFF in colours, name
    assert curves.graphics.height() < 330  # the view on screen is as it was
