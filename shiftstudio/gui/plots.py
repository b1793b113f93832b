"""Live training curves (pyqtgraph), fed from a :class:`MetricsStore` on a timer.

Plot items are built once; a 10 Hz timer redraws only when the store's
version moved (or a view was resized), with ``setData`` on the existing items.
Loss and perplexity sit on top, learning rate, gradient norm and tokens/s
below; all share one x axis (step, tokens seen or wall time).

What an item gets is clipped to the view and peak-downsampled here, not by
pyqtgraph (:func:`~shiftstudio.gui.plot_items.peak_downsample`): a run's
200,000 points become about two per pixel column, from max/min buckets cached
per curve and extended as points arrive, so a frame costs the new points plus
the pixels, not the run's length. The smoothing (a debiased EMA, see :class:`Ema`) and the
bounds the ranges are fitted to are extended the same way. A redraw that
changes nothing (no new point, same view) skips ``setData`` (and so the
repaint); panning or zooming clips and downsamples again at once.

Drawing is what costs then; how the items draw (device pixels, one bar per
bucket, opaque blended colours) is in :mod:`shiftstudio.gui.plot_items`.

The view ranges are "sticky": the x axis spans the whole run (0 … max_iters)
from the first step, and a y range only moves when the data leaves it (with
room to spare in the direction the curve is heading) or fills less than a
third of it. Re-laying out an axis is what costs (ticks, labels, grid): with
pyqtgraph's own auto-range every redraw re-lays out all ten axes, ~60 ms of
the GUI thread on a small CPU; with sticky ranges a redraw is a few ms.
Panning or zooming with the mouse stops the following; "Fit" resumes it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication, QGraphicsItem, QCheckBox, QComboBox, QHBoxLayout, QLabel, QPushButton, QSlider, QVBoxLayout, QWidget

from shiftstudio.format import human_count, human_duration, short_float
from shiftstudio.gui.metrics_store import Ema, MetricsStore
from shiftstudio.gui.plot_items import CurveItem, Extent, GridAxis, XAxis, _over, _Trace, peak_downsample, sticky_range
from shiftstudio.gui.style import ACCENT

X_MODES = {"step": ("step", "Step"), "tokens": ("tokens", "Tokens seen"), "time": ("time_s", "Wall time")}
VAL_COLOR = "#e8710a"
REDRAW_MS = 100
LEFT_AXIS_WIDTH = 52  # fixed: an axis that resizes to its labels re-lays out every plot
PLOT_ITEMS = {
    "loss": ("loss_raw", "loss_smooth", "val_loss"),
    "ppl": ("train_ppl", "val_ppl"),
    "lr": ("lr",),
    "grad_norm": ("grad_norm_raw", "grad_norm"),
    "tokens_per_s": ("tokens_per_s",),
}


class CurvesView(QWidget):
    """The Train pane's plots with their toolbar (smoothing, log y, x axis, export)."""

    export_png_requested = Signal()
    export_csv_requested = Signal()

    def __init__(self, store: MetricsStore, parent: QWidget | None = None):
        super().__init__(parent)
        self.store = store
        self.x_mode = "step"
        self.smoothing = 0.6
        self.log_y = False
        self._drawn_version = -1
        self._ema_loss = Ema()
        self._ema_grad = Ema()
        self.follow = True  # ranges follow the data (until the user pans or zooms)
        self._x_extent: dict[str, float] = {}  # x mode -> where the run will end (max_iters, its tokens)
        self._y_hints: dict[str, tuple[float, float]] = {}  # plot -> a y range known in advance
        self._ranges: dict[str, tuple[float, float] | None] = {}
        self._setting_range = False
        self._syncing_x = False
        self._shown_points = 0
        self._view_dirty = False  # a view was resized: the downsampling may need another bucket size
        self._traces = {name: _Trace() for names in PLOT_ITEMS.values() for name in names}
        self._x_seen = {"loss_raw": Extent(), "val_loss": Extent()}  # the x of the steps and of the evals
        self._build_toolbar()
        self._build_plots()
        self._label_x_axes()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(self._toolbar)
        layout.addWidget(self.graphics, 1)
        layout.addWidget(self.readout)
        self._timer = QTimer(self)
        self._timer.setObjectName("plot_redraw_timer")
        self._timer.setInterval(REDRAW_MS)
        self._timer.timeout.connect(self._on_timer_timeout)
        self._timer.start()
        self.apply_palette()

    # -- building ------------------------------------------------------------
    def _build_toolbar(self) -> None:
        bar = QHBoxLayout()
        bar.setContentsMargins(0, 0, 0, 0)
        smooth_label = QLabel("Smoothing", self)
        self.smoothing_slider = QSlider(Qt.Horizontal, self)
        self.smoothing_slider.setObjectName("plot_smoothing_slider")
        self.smoothing_slider.setRange(0, 99)
        self.smoothing_slider.setValue(int(self.smoothing * 100))
        self.smoothing_slider.setMaximumWidth(160)
        self.smoothing_slider.setToolTip("Exponential moving average of the training curves, as in TensorBoard (0 = raw, 0.99 = very smooth)")
        smooth_label.setToolTip(self.smoothing_slider.toolTip())
        self.smoothing_value = QLabel(f"{self.smoothing:.2f}", self)
        self.smoothing_value.setMinimumWidth(32)
        self.log_y_check = QCheckBox("Log y", self)
        self.log_y_check.setObjectName("plot_log_y_checkbox")
        self.log_y_check.setToolTip("Logarithmic y axis for loss and perplexity")
        self.x_combo = QComboBox(self)
        self.x_combo.setObjectName("plot_x_axis_combo")
        self.x_combo.setToolTip("What the x axis counts: optimizer steps, tokens seen or wall time")
        for key, (_, title) in X_MODES.items():
            self.x_combo.addItem(title, key)
        self.export_png_button = QPushButton("Export PNG…", self)
        self.export_png_button.setObjectName("plot_export_png_button")
        self.export_png_button.setToolTip("Save the plots as a PNG image")
        self.export_csv_button = QPushButton("Export CSV…", self)
        self.export_csv_button.setObjectName("plot_export_csv_button")
        self.export_csv_button.setToolTip("Save every logged metric as a CSV table")
        self.fit_button = QPushButton("Fit", self)
        self.fit_button.setObjectName("plot_fit_button")
        self.fit_button.setToolTip("Fit the plots to the data and follow new points again (after panning or zooming)")
        x_label = QLabel("x axis", self)
        for w in (smooth_label, self.smoothing_slider, self.smoothing_value):
            bar.addWidget(w)
        bar.addSpacing(12)
        bar.addWidget(self.log_y_check)
        bar.addSpacing(12)
        bar.addWidget(x_label)
        bar.addWidget(self.x_combo)
        bar.addStretch(1)
        bar.addWidget(self.fit_button)
        bar.addWidget(self.export_png_button)
        bar.addWidget(self.export_csv_button)
        self._toolbar = bar
        self.readout = QLabel(" ", self)
        self.readout.setObjectName("plot_readout_label")
        self.readout.setToolTip("Values under the mouse pointer")
        self.readout.setTextFormat(Qt.RichText)
        self.smoothing_slider.valueChanged.connect(self._on_smoothing_slider_value_changed)
        self.log_y_check.toggled.connect(self._on_log_y_toggled)
        self.x_combo.currentIndexChanged.connect(self._on_x_combo_index_changed)
        self.export_png_button.clicked.connect(self.export_png_requested)
        self.export_csv_button.clicked.connect(self.export_csv_requested)
        self.fit_button.clicked.connect(self._on_fit_button_clicked)

    def _new_plot(self, row: int, col: int, title: str, colspan: int = 1) -> pg.PlotItem:
        axis = XAxis(orientation="bottom")
        self._x_axes.append(axis)
        plot = self.graphics.addPlot(row=row, col=col, colspan=colspan, title=title,
                                     axisItems={"bottom": axis, "left": GridAxis(orientation="left")})
        plot.showGrid(x=True, y=True, alpha=0.12)
        for name in ("left", "bottom"):
            plot.getAxis(name).setZValue(-150)  # under the view box (z -100): the grid under the curves
        # Axes (with their grid lines) and titles change only when a range does: drawn once into a pixmap,
        # a redraw of the curves blits them instead of calling back into Python to repaint them.
        for name in ("left", "bottom"):
            plot.getAxis(name).setCacheMode(QGraphicsItem.DeviceCoordinateCache)
        plot.titleLabel.setCacheMode(QGraphicsItem.DeviceCoordinateCache)
        plot.getAxis("left").setWidth(LEFT_AXIS_WIDTH)
        plot.getAxis("left").setStyle(autoExpandTextSpace=False)
        axis.setStyle(autoExpandTextSpace=False)
        # No pyqtgraph downsampling or clipping: the items get points already clipped to the view and
        # peak downsampled (see peak_downsample), from caches that a new point only extends.
        plot.setMenuEnabled(False)
        plot.hideButtons()
        plot.disableAutoRange()
        box = plot.getViewBox()
        box.setMouseEnabled(x=True, y=False)
        box.sigRangeChangedManually.connect(self._on_view_range_changed_manually)
        line = pg.InfiniteLine(angle=90, movable=False, pen=pg.mkPen((128, 128, 128, 120), width=1))
        line.setVisible(False)
        plot.addItem(line, ignoreBounds=True)
        self._cursor_lines.append(line)
        box.sigXRangeChanged.connect(self._on_view_x_range_changed)
        box.sigResized.connect(self._on_view_resized)
        return plot

    def _build_plots(self) -> None:
        self.graphics = pg.GraphicsLayoutWidget(self)
        self.graphics.setObjectName("plot_canvas")
        self.graphics.setMinimumSize(360, 220)
        self.graphics.ci.setSpacing(4)
        self._x_axes: list[XAxis] = []
        self._cursor_lines: list[pg.InfiniteLine] = []
        self.plots: dict[str, pg.PlotItem] = {}
        self.plots["loss"] = self._new_plot(0, 0, "Loss", colspan=2)
        self.plots["ppl"] = self._new_plot(0, 2, "Perplexity")
        self.plots["lr"] = self._new_plot(1, 0, "Learning rate")
        self.plots["grad_norm"] = self._new_plot(1, 1, "Gradient norm")
        self.plots["tokens_per_s"] = self._new_plot(1, 2, "Tokens / s")
        self.graphics.ci.layout.setRowStretchFactor(0, 3)
        self.graphics.ci.layout.setRowStretchFactor(1, 2)
        for col in range(3):
            self.graphics.ci.layout.setColumnStretchFactor(col, 1)
        self.legends = {k: self.plots[k].addLegend(offset=(-8, 8), labelTextSize="8pt") for k in ("loss", "ppl")}
        for legend in self.legends.values():
            legend.setCacheMode(QGraphicsItem.DeviceCoordinateCache)
        # entries side by side in one line at the top right, where falling loss curves leave room
        self.legends["loss"].setColumnCount(3)
        self.legends["ppl"].setColumnCount(2)
        accent = QColor(ACCENT)
        faint = QColor(accent)
        faint.setAlpha(70)

        def curve(plot: str, **opts: Any) -> CurveItem:
            item = CurveItem(**opts)
            self.plots[plot].addItem(item)  # (with a name, into the plot's legend)
            return item

        self.items: dict[str, CurveItem] = {
            "loss_raw": curve("loss", name="train", pen=pg.mkPen(faint, width=1)),
            "loss_smooth": curve("loss", name="train (smoothed)", pen=pg.mkPen(accent, width=2)),
            "val_loss": curve("loss", name="val", pen=pg.mkPen(VAL_COLOR, width=2), symbol="o", symbolSize=5, symbolBrush=VAL_COLOR, symbolPen=None),
            "train_ppl": curve("ppl", name="train (smoothed)", pen=pg.mkPen(accent, width=2)),
            "val_ppl": curve("ppl", name="val", pen=pg.mkPen(VAL_COLOR, width=2), symbol="o", symbolSize=5, symbolBrush=VAL_COLOR, symbolPen=None),
            "lr": curve("lr", pen=pg.mkPen("#2ca02c", width=2)),
            "grad_norm_raw": curve("grad_norm", pen=pg.mkPen((148, 103, 189, 80), width=1)),
            "grad_norm": curve("grad_norm", pen=pg.mkPen("#9467bd", width=2)),
            "tokens_per_s": curve("tokens_per_s", pen=pg.mkPen("#8c564b", width=2)),
        }
        self.graphics.scene().sigMouseMoved.connect(self._on_scene_mouse_moved)

    def _label_x_axes(self) -> None:
        for key in ("lr", "grad_norm", "tokens_per_s"):
            self.plots[key].setLabel("bottom", X_MODES[self.x_mode][1])

    # -- drawing -------------------------------------------------------------
    def _on_timer_timeout(self) -> None:
        if self.store.version != self._drawn_version or self._view_dirty:
            self.refresh()

    def refresh(self) -> None:
        """Keep the ranges sticky, then push the store's data into the plot items (setData, no rebuild)."""
        shrank = len(self.store.steps) < self._shown_points  # a new run (or a resumed one replaying its tail)
        self._drawn_version = self.store.version
        self._shown_points = len(self.store.steps)
        self._view_dirty = False
        sources = self._sources()
        if self.follow:
            self._fit_ranges(sources, force=shrank)
        self._push_data(sources)

    def _smoothed(self, name: str) -> np.ndarray:
        """The EMA of a step column at the current smoothing, extended incrementally."""
        steps = self.store.steps
        ema = self._ema_loss if name == "loss" else self._ema_grad
        return ema(steps[name], self.smoothing, steps.epoch)

    def _sources(self) -> dict[str, tuple[np.ndarray, np.ndarray, Any]]:
        """Item -> (x, y, key): the whole curve, and what its first points depend on (for the caches)."""
        steps, evals = self.store.steps, self.store.evals
        column = X_MODES[self.x_mode][0]
        x, ex = steps[column], evals[column]
        raw, smooth, val = ("steps", steps.epoch), ("smooth", steps.epoch, self.smoothing), ("evals", evals.epoch)
        loss_smooth = self._smoothed("loss")
        return {
            "loss_raw": (x, steps["loss"], raw),
            "loss_smooth": (x, loss_smooth, smooth),
            "val_loss": (ex, evals["val_loss"], val),
            "train_ppl": (x, loss_smooth, smooth),  # drawn as exp() of the smoothed loss's points
            "val_ppl": (ex, evals["val_ppl"], val),
            "lr": (x, steps["lr"], raw),
            "grad_norm_raw": (x, steps["grad_norm"], raw),
            "grad_norm": (x, self._smoothed("grad_norm"), smooth),
            "tokens_per_s": (x, steps["tokens_per_s"], raw),
        }

    def _push_data(self, sources: dict[str, tuple[np.ndarray, np.ndarray, Any]] | None = None) -> None:
        """setData on the items whose points or view changed, with their points clipped and peak downsampled."""
        sources = self._sources() if sources is None else sources
        for plot_key, names in PLOT_ITEMS.items():
            box = self.plots[plot_key].getViewBox()
            view = tuple(box.viewRange()[0])
            width = round(box.width())
            for name in names:
                x, y, key = sources[name]
                trace = self._traces[name]
                signature = (len(y), key, self.x_mode, view, width)
                if trace.shown == signature:
                    continue  # nothing new: no setData, no repaint
                trace.shown, trace.count = signature, len(y)
                xs, ys, trace.ds = peak_downsample(x, y, view, width, trace.cache, key, trace.ds)
                if name == "train_ppl":  # exp is monotonic: the peaks of the loss are those of the perplexity
                    with np.errstate(over="ignore", invalid="ignore"):
                        ys = np.exp(ys)
                self.items[name].set_points(xs, ys, peaks=trace.ds > 1)

    # -- ranges --------------------------------------------------------------
    def set_x_extent(self, steps: float | None = None, tokens: float | None = None, peak_lr: float | None = None) -> None:
        """Where the run ends, so the x axis spans it from the first step, and the learning rate's peak,
        so its plot need not grow through the warmup (``None`` = unknown)."""
        self._x_extent = {k: float(v) for k, v in (("step", steps), ("tokens", tokens)) if v}
        self._y_hints = {"lr": (0.0, 1.05 * float(peak_lr))} if peak_lr else {}
        if self.follow:
            self.update_ranges(force=True)

    def update_ranges(self, force: bool = False) -> None:
        """Fit x to the run and each y to its data, moving a range only when it no longer fits."""
        sources = self._sources()
        self._fit_ranges(sources, force)
        self._push_data(sources)  # (for the new x range)

    def _fit_ranges(self, sources: dict[str, tuple[np.ndarray, np.ndarray, Any]], force: bool = False) -> None:
        if force:
            self._ranges.clear()
        x_hi = 0.0
        for name in ("loss_raw", "val_loss"):  # the steps' x, the evals' x
            x, _, key = sources[name]
            hi = self._x_seen[name].update(x, (key, self.x_mode)).hi
            x_hi = max(x_hi, hi if math.isfinite(hi) else 0.0)
        extent = self._x_extent.get(self.x_mode, 0.0)
        if extent >= x_hi and extent > 0:
            target = extent
        else:
            old = self._ranges.get("x")
            target = old[1] if old is not None and x_hi <= old[1] else x_hi * (1.0 if extent else 1.25)
        target = target or 1.0
        ranges: dict[str, tuple[float, float] | None] = {"x": (0.0, target)}
        for key, names in PLOT_ITEMS.items():
            log = self.log_y and key in ("loss", "ppl")
            lo, hi = math.inf, -math.inf
            for name in names:  # bounds of all the data, extended as it grows
                _, y, data_key = sources[name]
                seen = self._traces[name].extent.update(y, data_key, np.exp if name == "train_ppl" else None)
                item_lo, item_hi = seen.bounds(log)
                lo, hi = min(lo, item_lo), max(hi, item_hi)
            floor = None if log or key in ("loss", "ppl") else 0.0
            hint = self._y_hints.get(key)
            if hint is not None and hint[0] <= lo and hi <= hint[1]:
                ranges[key] = hint
            else:
                ranges[key] = sticky_range(self._ranges.get(key), lo, hi, floor)
        self._setting_range = True
        try:
            if ranges["x"] != self._ranges.get("x"):
                margin = 0.01 * target
                self.plots["loss"].getViewBox().setXRange(-margin, target + margin, padding=0)
            for key in PLOT_ITEMS:
                if ranges[key] is not None and ranges[key] != self._ranges.get(key):
                    self.plots[key].getViewBox().setYRange(*ranges[key], padding=0)
        finally:
            self._setting_range = False
        self._ranges = ranges

    def _on_view_range_changed_manually(self, *args) -> None:
        if not self._setting_range:
            self.follow = False

    def _on_view_x_range_changed(self, box: pg.ViewBox, x_range: tuple[float, float]) -> None:
        """One x axis for all plots. (pyqtgraph's setXLink aligns views by their position on screen,
        which is right for plots stacked in a column, wrong for plots side by side.)"""
        if self._syncing_x:
            return
        self._syncing_x = True
        try:
            for plot in self.plots.values():
                other = plot.getViewBox()
                if other is not box:
                    other.setXRange(*x_range, padding=0)
        finally:
            self._syncing_x = False
        if not self._setting_range:
            self._push_data()  # panned or zoomed: clip and downsample for the new view now, not on the next tick

    def _on_view_resized(self, *args) -> None:
        self._view_dirty = True

    def _on_fit_button_clicked(self) -> None:
        self.follow = True
        self.update_ranges(force=True)

    def point_count(self, item: str) -> int:
        """Points of an item's curve: all of them, not only those in view and after downsampling (see ``shown_count``)."""
        return self._traces[item].count

    def shown_count(self, item: str) -> int:
        """Points the item was given to draw (clipped to the view, peak downsampled)."""
        data = self.items[item].xData
        return 0 if data is None else len(data)

    # -- toolbar -------------------------------------------------------------
    def set_smoothing(self, weight: float) -> None:
        self.smoothing_slider.setValue(int(round(min(max(weight, 0.0), 0.99) * 100)))

    def set_x_mode(self, mode: str) -> None:
        index = self.x_combo.findData(mode)
        if index >= 0:
            self.x_combo.setCurrentIndex(index)

    def set_log_y(self, on: bool) -> None:
        self.log_y_check.setChecked(on)

    def _on_smoothing_slider_value_changed(self, value: int) -> None:
        self.smoothing = value / 100
        self.smoothing_value.setText(f"{self.smoothing:.2f}")
        self.refresh()

    def _on_log_y_toggled(self, on: bool) -> None:
        self.log_y = on
        for key in ("loss", "ppl"):
            self.plots[key].setLogMode(x=False, y=on)
            self._ranges.pop(key, None)
        self.update_ranges()

    def _on_x_combo_index_changed(self, index: int) -> None:
        self.x_mode = self.x_combo.itemData(index) or "step"
        for axis in self._x_axes:
            axis.mode = self.x_mode
            axis.picture = None
            axis.update()
        self._label_x_axes()
        self.follow = True
        self._ranges.clear()
        self.refresh()

    # -- hover read-out ------------------------------------------------------
    def _on_scene_mouse_moved(self, pos) -> None:
        for plot in self.plots.values():
            if plot.sceneBoundingRect().contains(pos):
                self.show_readout_at(plot.getViewBox().mapSceneToView(pos).x())
                return
        for line in self._cursor_lines:
            line.setVisible(False)

    def show_readout_at(self, x: float) -> str:
        steps, evals = self.store.steps, self.store.evals
        if not len(steps):
            return ""
        column = X_MODES[self.x_mode][0]
        xs = steps[column]
        i = int(np.clip(np.searchsorted(xs, x), 0, len(xs) - 1))
        if i > 0 and abs(xs[i - 1] - x) < abs(xs[i] - x):
            i -= 1
        for line in self._cursor_lines:
            line.setPos(xs[i])
            line.setVisible(True)
        smooth = self._smoothed("loss")
        parts = [
            f"<b>step {int(steps['step'][i]):,}</b>",
            f"{human_count(steps['tokens'][i])} tokens",
            human_duration(steps["time_s"][i]),
            f"loss <b>{short_float(steps['loss'][i])}</b> (smoothed {short_float(smooth[i])})",
            f"lr {short_float(steps['lr'][i])}",
            f"grad {short_float(steps['grad_norm'][i])}",
            f"{human_count(steps['tokens_per_s'][i])} tok/s",
        ]
        if len(evals):
            ex = evals[column]
            j = int(np.searchsorted(ex, xs[i], side="right")) - 1
            if j >= 0:
                parts.append(
                    f"<span style='color:{VAL_COLOR}'>val <b>{short_float(evals['val_loss'][j])}</b>"
                    f" (ppl {short_float(evals['val_ppl'][j])}) @ {int(evals['step'][j]):,}</span>"
                )
        text = " · ".join(parts)
        self.readout.setText(text)
        return text

    # -- export --------------------------------------------------------------
    def export_png(self, path: str) -> bool:
        self.refresh()
        return self.graphics.grab().save(path, "PNG")

    def export_csv(self, path: str) -> None:
        self.store.to_csv(path)

    # -- palette -------------------------------------------------------------
    def changeEvent(self, event: QEvent) -> None:  # noqa: N802 - Qt's name
        if event.type() == QEvent.PaletteChange:
            self.apply_palette()
        super().changeEvent(event)

    def apply_palette(self) -> None:
        palette = QApplication.palette()
        background = palette.color(QPalette.Base)
        foreground = palette.color(QPalette.Text)
        faint = 130 if background.lightness() < 128 else 70  # raw curves behind the smoothed ones
        # Faint = the colour blended over the background once, here, and drawn opaque: the look of a
        # translucent pen without its cost (Qt blends every pixel of a translucent line; a dense raw
        # curve that zigzags through its whole plot took ~40 ms to draw that way, ~3 ms opaque).
        self.items["loss_raw"].setPen(pg.mkPen(_over(QColor(ACCENT), faint, background), width=1))
        self.items["grad_norm_raw"].setPen(pg.mkPen(_over(QColor(148, 103, 189), faint + 10, background), width=1))
        self.graphics.setBackground(background)
        for key, plot in self.plots.items():
            for name in ("left", "bottom"):
                axis = plot.getAxis(name)
                axis.background = QColor(background)
                axis.setPen(pg.mkPen(foreground))  # (and draws itself again)
                axis.setTextPen(pg.mkPen(foreground))
            plot.setTitle(plot.titleLabel.text, color=foreground.name(), size="10pt")
        for legend in self.legends.values():
            legend.setLabelTextColor(foreground)
            legend.setBrush(pg.mkBrush(background.red(), background.green(), background.blue(), 200))
