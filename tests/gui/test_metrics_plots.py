"""Curves: growing buffers, TensorBoard smoothing, setData on existing items, exports."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from shiftstudio.core.train.reports import EvalReport, StepReport
from shiftstudio.gui.metrics_store import Ema, MetricsStore
from shiftstudio.gui.plot_controls import VAL_COLOR
from shiftstudio.gui.plots import EXPORT_SIZE
from shiftstudio.gui.style import ACCENT


def steps(first: int, n: int) -> list[StepReport]:
    return [
        StepReport(step=s, loss=3.0 - 0.01 * s, lr=1e-3, grad_norm=1.0, tokens_per_s=1000.0, tokens=128 * s, time_s=0.1 * s, ms_per_iter=10.0)
        for s in range(first, first + n)
    ]


def evaluation(step: int, val: float) -> EvalReport:
    return EvalReport(step=step, tokens=128 * step, time_s=0.1 * step, train_loss=val - 0.1, val_loss=val,
                      val_ppl=math.exp(val), train_ppl=math.exp(val - 0.1), best_val_loss=val, is_best=True)


def test_store_grows_and_replays_a_resumed_tail() -> None:
    store = MetricsStore()
    store.add_steps(steps(1, 1500))
    assert len(store.steps) == 1500 and store.steps["step"][-1] == 1500
    store.add_steps(steps(1001, 10))  # resumed from a checkpoint at step 1000
    assert len(store.steps) == 1010
    assert list(store.steps["step"][-3:]) == [1008, 1009, 1010]


def test_ema_matches_tensorboard_and_is_incremental() -> None:
    values = np.array([1.0, 2.0, np.nan, 3.0, 4.0])
    w = 0.6

    def reference(vals):
        last, count, out = 0.0, 0, []
        for v in vals:
            if math.isfinite(v):
                last = last * w + (1 - w) * v
                count += 1
            out.append(last / (1 - w**count))
        return out

    ema = Ema()
    first = ema(values[:3], w).copy()
    full = ema(values, w)
    assert np.allclose(full, reference(values))
    assert np.allclose(first, reference(values[:3]))
    assert ema(values, 0.0) is values


def test_store_loads_history_and_writes_csv(tmp_path) -> None:
    records = [r.to_json() for r in steps(1, 5)] + [evaluation(4, 2.5).to_json(), {"kind": "sample", "step": 4}]
    store = MetricsStore()
    assert store.load_records(records) == 7
    assert len(store.steps) == 5 and len(store.evals) == 1
    out = tmp_path / "m.csv"
    store.to_csv(out)
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 6
    assert rows[0]["kind"] == "train" and rows[0]["step"] == "1"
    eval_row = next(r for r in rows if r["kind"] == "eval")
    assert float(eval_row["val_loss"]) == 2.5 and eval_row["loss"] == ""


def test_plot_items_are_fed_with_set_data(curves, qtbot, tmp_path) -> None:
    from PySide6.QtGui import QColor, QImage

    items_before = dict(curves.items)
    curves.store.add_steps(steps(1, 50))
    curves.store.add_eval(evaluation(25, 2.8))
    curves.store.add_eval(evaluation(50, 2.6))
    qtbot.waitUntil(lambda: curves.point_count("loss_smooth") == 50, timeout=2000)
    assert curves.items == items_before  # same items, new data
    assert curves.point_count("loss_raw") == 50
    assert curves.point_count("val_loss") == 2
    assert curves.point_count("val_ppl") == 2
    assert curves.point_count("lr") == 50
    # x axis as tokens seen
    curves.set_x_mode("tokens")
    x = curves.items["loss_raw"].xData
    assert x[-1] == 128 * 50
    curves.set_smoothing(0.0)
    y = curves.items["loss_smooth"].yData
    assert np.allclose(y, curves.store.steps["loss"])
    curves.set_log_y(True)
    assert curves.plots["loss"].getViewBox().state["logMode"][1]
    text = curves.show_readout_at(128 * 30)
    assert "step 30" in text and "val" in text
    png = tmp_path / "plots.png"
    assert curves.export_png(str(png))
    image = QImage(str(png)).convertToFormat(QImage.Format.Format_RGB32)
    ratio = curves.graphics.devicePixelRatioF()
    assert (image.width(), image.height()) == (round(EXPORT_SIZE.width() * ratio), round(EXPORT_SIZE.height() * ratio))
    rgb = np.frombuffer(image.constBits(), dtype=np.uint32).reshape(image.height(), image.bytesPerLine() // 4)[:, : image.width()]
    colours = set(np.unique(rgb & 0xFFFFFF).tolist())
    # not blank: the background, the smoothed training loss (accent) and the validation points are all in it
    for name in (curves.graphics.backgroundBrush().color().name(), ACCENT, VAL_COLOR):
        assert QColor(name).rgb() & 0xFFFFFF in colours, name


# -- at scale: incremental smoothing, peak downsampling, caches ------------------------------------


def noisy_steps(first: int, n: int, seed: int = 0, spike_at: int | None = None) -> list[StepReport]:
    rng = np.random.default_rng(seed + first)
    out = []
    for s in range(first, first + n):
        loss = 4.0 * math.exp(-s / 5000) + 1.0 + 0.1 * rng.standard_normal()
        if s == spike_at:
            loss = 50.0
        out.append(StepReport(step=s, loss=loss, lr=1e-3 * min(1.0, s / 500), grad_norm=0.5 + rng.random(),
                              tokens_per_s=1000.0 + 50 * rng.standard_normal(), tokens=128 * s, time_s=0.1 * s, ms_per_iter=10.0))
    return out


def ema_loop(values: np.ndarray, w: float) -> np.ndarray:
    last, count, out = 0.0, 0, []
    for v in values:
        if math.isfinite(v):
            last = last * w + (1 - w) * v
            count += 1
        out.append(last / (1 - w**count) if count else math.nan)
    return np.array(out)


@pytest.mark.parametrize("weight", [0.05, 0.6, 0.9, 0.99, 0.999])
def test_vectorised_ema_equals_the_loop_however_it_is_fed(weight) -> None:
    rng = np.random.default_rng(1)
    values = 3.0 + rng.standard_normal(12_000)
    values[rng.random(len(values)) < 0.02] = np.nan
    values[:3] = np.nan  # nothing to average yet: NaN
    values[500] = np.inf  # skipped like NaN
    expected = ema_loop(values, weight)

    whole = Ema()(values, weight)
    assert np.array_equal(np.isnan(whole), np.isnan(expected))
    assert np.allclose(whole, expected, rtol=1e-10, atol=1e-12, equal_nan=True)

    ema, n = Ema(), 0
    while n < len(values):  # chunks of 1 … 2,000 points, as a run's log arrives
        n = min(len(values), n + int(rng.integers(1, 2000)))
        part = ema(values[:n], weight)
    assert np.allclose(part, expected, rtol=1e-10, atol=1e-12, equal_nan=True)


def test_ema_starts_over_when_its_key_changes() -> None:
    a, b = np.linspace(1.0, 2.0, 100), np.linspace(5.0, 3.0, 120)
    ema = Ema()
    ema(a, 0.9, key=0)
    assert np.allclose(ema(b, 0.9, key=1), ema_loop(b, 0.9))  # longer, but not an extension of a
    assert np.allclose(ema(b[:50], 0.9, key=1), ema_loop(b[:50], 0.9))  # shorter
    assert np.allclose(ema(b, 0.5, key=1), ema_loop(b, 0.5))  # another weight


def test_series_epoch_moves_when_rows_are_rewritten() -> None:
    store = MetricsStore()
    store.add_steps(steps(1, 100))
    epoch = store.steps.epoch
    store.add_steps(steps(101, 50))
    assert store.steps.epoch == epoch  # appended: the first rows still hold
    store.add_steps(steps(120, 5))  # a resumed run replays from step 120
    assert store.steps.epoch > epoch and len(store.steps) == 124
    epoch = store.steps.epoch
    store.load_records([r.to_json() for r in steps(1, 10)])
    assert store.steps.epoch > epoch


def test_load_records_reads_columns_with_gaps_and_junk() -> None:
    records = [r.to_json() for r in steps(1, 6)]
    records[1]["loss"] = None
    records[2]["lr"] = "junk"
    del records[3]["grad_norm"]
    records.append({**steps(5, 1)[0].to_json(), "loss": 9.0})  # step 5 logged twice: the last one counts
    store = MetricsStore()
    assert store.load_records(records) == 7
    assert list(store.steps["step"]) == [1, 2, 3, 4, 5, 6]
    assert math.isnan(store.steps["loss"][1]) and math.isnan(store.steps["lr"][2]) and math.isnan(store.steps["grad_norm"][3])
    assert store.steps["loss"][4] == 9.0 and store.steps["tokens"][5] == 128 * 6


def test_peak_downsample_keeps_each_bucket_max_and_min() -> None:
    from shiftstudio.gui.plot_items import PeakCache, peak_downsample

    rng = np.random.default_rng(2)
    n = 100_003
    x = np.arange(1.0, n + 1)
    y = rng.standard_normal(n)
    y[31_337], y[77_777] = 40.0, -40.0  # spikes
    y[5000:5010] = np.nan
    xs, ys, ds = peak_downsample(x, y, (0.0, n + 1.0), 500, PeakCache(), key=0)
    assert ds == 256  # ~200 points a pixel: the nearest power of two
    assert len(xs) == len(ys) and len(xs) % 2 == 0 and len(xs) <= 4 * 500
    assert np.nanmax(ys) == 40.0 and np.nanmin(ys) == -40.0
    complete = n // ds
    for b in (0, 19, 122, complete - 1):  # bucket b: its middle x, then its max and min
        seg = y[b * ds : (b + 1) * ds]
        assert xs[2 * b] == xs[2 * b + 1] == x[b * ds + ds // 2]
        assert ys[2 * b] == np.nanmax(seg) and ys[2 * b + 1] == np.nanmin(seg)
    assert xs[-1] == x[-1] and ys[-1] == y[-1]  # the curve reaches the newest point
    assert ys[-4] == np.max(y[complete * ds :])  # the newest, incomplete bucket

    # clipped to a narrower view (plus a point or bucket either side), with finer buckets
    xs, ys, ds = peak_downsample(x, y, (40_000.0, 50_000.0), 500, PeakCache(), key=0)
    assert ds == 16
    assert 40_000 - ds <= xs[0] <= 40_000 and 50_000 <= xs[-1] <= 50_000 + ds
    # few points in view: every point, as they are
    xs, ys, ds = peak_downsample(x, y, (100.0, 600.0), 500, PeakCache(), key=0)
    assert ds == 1 and list(xs) == list(x[98:601]) and np.array_equal(ys, y[98:601])


def test_peak_cache_extended_in_chunks_equals_a_fresh_one() -> None:
    from shiftstudio.gui.plot_items import PeakCache

    rng = np.random.default_rng(3)
    y = rng.standard_normal(50_000)
    cache, n = PeakCache(), 0
    while n < len(y):
        n = min(len(y), n + int(rng.integers(1, 3000)))
        hi, lo = cache.buckets(y[:n], 64, key=0, upto=n // 64)
    fresh_hi, fresh_lo = PeakCache().buckets(y, 64, key=0, upto=len(y) // 64)
    assert np.array_equal(hi, fresh_hi) and np.array_equal(lo, fresh_lo)
    other = y[::-1].copy()  # same length, other values: a new key recomputes
    hi, lo = cache.buckets(other, 64, key=1, upto=len(y) // 64)
    assert np.array_equal(hi, other[: len(hi) * 64].reshape(-1, 64).max(axis=1))


def test_extent_grows_with_the_data() -> None:
    from shiftstudio.gui.plot_items import Extent

    extent = Extent()
    data = np.array([np.nan, 3.0, -2.0, 0.0, 5.0, np.inf, 0.5])
    for n in range(1, len(data) + 1):
        extent.update(data[:n], key=0)
    assert extent.bounds() == (-2.0, 5.0)
    assert extent.bounds(log=True) == (math.log10(0.5), math.log10(5.0))
    assert extent.update(data[:3], key=1).bounds() == (-2.0, 3.0)  # rewritten: from scratch


def test_curves_after_many_chunks(curves) -> None:
    """A long run fed in chunks: every point counted, few drawn, spikes and smoothing exact, resumes handled."""
    from shiftstudio.gui.plot_items import PeakCache, peak_downsample

    store = curves.store
    curves.set_x_extent(30_000, 30_000 * 128, 1e-3)
    for first in range(1, 30_000, 1000):
        store.add_steps(noisy_steps(first, 1000, spike_at=12_345))
        if first % 5000 == 1:
            store.add_eval(evaluation(first + 999, 2.0))
        curves.refresh()
    for name in ("loss_raw", "loss_smooth", "train_ppl", "lr", "grad_norm_raw", "grad_norm", "tokens_per_s"):
        assert curves.point_count(name) == 30_000
    assert curves.point_count("val_loss") == curves.point_count("val_ppl") == 6
    width = curves.plots["loss"].getViewBox().width()
    assert 0.5 * width <= curves.shown_count("loss_raw") // 2 <= 2 * width + 2  # about a bucket a pixel
    loss = store.steps["loss"]
    assert np.nanmax(curves.items["loss_raw"].yData) == 50.0 == np.nanmax(loss)  # the spike survives
    assert np.nanmin(curves.items["loss_raw"].yData) == np.nanmin(loss)

    def drawn_from_scratch(name: str, y: np.ndarray) -> np.ndarray:
        box = curves.plots["loss"].getViewBox()
        _, ys, _ = peak_downsample(store.steps["step"], y, tuple(box.viewRange()[0]), round(box.width()), PeakCache(), None,
                                   curves.bucket_size(name))
        return ys

    full = ema_loop(loss, curves.smoothing)  # the smoothing, computed in one go the slow way
    assert np.allclose(curves.items["loss_smooth"].yData, drawn_from_scratch("loss_smooth", full))

    store.add_steps(noisy_steps(20_001, 500, seed=9))  # resumed from a checkpoint at step 20,000
    curves.refresh()
    assert curves.point_count("loss_raw") == curves.point_count("loss_smooth") == 20_500
    full = ema_loop(store.steps["loss"], curves.smoothing)
    assert np.allclose(curves.items["loss_smooth"].yData, drawn_from_scratch("loss_smooth", full))
    store.add_steps(noisy_steps(20_401, 1000, seed=11))  # again, from 20,400: longer than before, other values
    curves.refresh()
    assert curves.point_count("loss_smooth") == 21_400
    full = ema_loop(store.steps["loss"], curves.smoothing)
    assert np.allclose(curves.items["loss_smooth"].yData, drawn_from_scratch("loss_smooth", full))
    assert np.nanmax(curves.items["loss_raw"].yData) == np.nanmax(store.steps["loss"])

    # zoomed in with the mouse: clipped to the view at once, every point drawn
    curves.plots["grad_norm"].getViewBox().setXRange(10_000, 10_300, padding=0)
    x = curves.items["loss_raw"].xData
    assert curves.bucket_size("loss_raw") == 1 and x[0] >= 9_999 and x[-1] <= 10_301
    assert list(curves.items["lr"].xData) == list(range(9_999, 10_302))


def test_a_redraw_without_new_data_sets_nothing(curves) -> None:
    curves.store.add_steps(noisy_steps(1, 5000))
    curves.refresh()
    changed: list[str] = []
    for name, item in curves.items.items():
        item.sigPlotChanged.connect(lambda *_, name=name: changed.append(name))
    curves.refresh()
    assert changed == []
    curves.store.add_steps(noisy_steps(5001, 10))
    curves.refresh()
    assert set(changed) == {"loss_raw", "loss_smooth", "train_ppl", "lr", "grad_norm_raw", "grad_norm", "tokens_per_s"}


def test_dense_curves_are_painted_across_the_plot(curves) -> None:
    """Peak-downsampled curves are drawn as pixel bars: the smoothed loss must cover every column it spans."""
    from PySide6.QtCore import QPointF
    from PySide6.QtGui import QColor, QImage

    from shiftstudio.gui.style import ACCENT

    curves.set_smoothing(0.99)
    curves.set_x_extent(40_000)
    curves.store.add_steps(noisy_steps(1, 40_000))
    curves.refresh()
    assert curves.bucket_size("loss_smooth") > 1
    image = curves.graphics.grab().toImage().convertToFormat(QImage.Format.Format_RGB32)
    rgb = np.frombuffer(image.constBits(), dtype=np.uint32).reshape(image.height(), image.bytesPerLine() // 4)[:, : image.width()]
    box = curves.plots["loss"].getViewBox()
    x = curves.items["loss_smooth"].xData
    first, last = (curves.graphics.mapFromScene(box.mapViewToScene(QPointF(float(v), 0.0))).x() for v in (x[0], x[-1]))
    top, bottom = (curves.graphics.mapFromScene(box.mapToScene(QPointF(0.0, v))).y() for v in (0.0, box.height()))
    in_plot = rgb[top:bottom, first + 2 : last - 2]
    accent = QColor(ACCENT)
    channels = [(in_plot >> shift) & 0xFF for shift in (16, 8, 0)]
    exact = np.ones(in_plot.shape, dtype=bool)  # (the grid lies under the curves: no line tints them)
    for channel, value in zip(channels, (accent.red(), accent.green(), accent.blue())):
        exact &= channel == value
    assert last - first > 0.8 * box.width() and exact.any(axis=0).all()  # drawn across, no column missing


def test_grid_lines_are_drawn_opaque_in_the_colour_they_would_blend_to(qtbot) -> None:
    from PySide6.QtCore import QPointF
    from PySide6.QtGui import QColor, QImage, QPainter, QPen

    from shiftstudio.gui.plot_items import GridAxis

    axis = GridAxis(orientation="left")
    axis.setGrid(30)
    axis.background = QColor(250, 240, 230)

    def pen(alpha: int) -> QPen:
        return QPen(QColor(0, 0, 0, alpha), 1)

    image = QImage(40, 40, QImage.Format.Format_RGB32)
    image.fill(axis.background)
    painter = QPainter(image)
    ticks = [(pen(100), QPointF(0, 10.5), QPointF(40, 10.5)), (pen(60), QPointF(0, 10.5), QPointF(40, 10.5)),  # two levels, one place
             (pen(60), QPointF(0, 30.5), QPointF(40, 30.5))]
    axis.drawPicture(painter, (QPen(axis.background), QPointF(0, 0), QPointF(0, 0)), ticks, [])
    painter.end()
    both = 1 - (1 - 100 / 255) * (1 - 60 / 255)
    for y, alpha in ((10, both), (30, 60 / 255)):
        color = QColor(image.pixel(20, y))
        assert color.alpha() == 255
        assert abs(color.red() - round(250 * (1 - alpha))) <= 1 and abs(color.blue() - round(230 * (1 - alpha))) <= 1
