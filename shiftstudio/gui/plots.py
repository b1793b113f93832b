"""Live training curves (pyqtgraph), fed from a :class:`MetricsStore` on a timer.

Plot items are built once; a 10 Hz timer redraws only when the store's
version moved, with ``setData`` on the existing items, peak downsampling and
clip-to-view, so a long run costs the GUI thread almost nothing. Loss and
perplexity sit on top, learning rate, gradient norm and tokens/s below; all
share one x axis (step, tokens seen or wall time).

The view ranges are "sticky": the x axis spans the whole run (0 … max_iters)
from the first step, and a y range only moves when the data leaves it (with
room to spare in the direction the curve is heading) or fills less than a
third of it. Re-laying out an axis is what costs (ticks, labels, grid): with
pyqtgraph's own auto-range every redraw re-lays out all ten axes, ~60 ms of
the GUI thread on a small CPU; with sticky ranges a redraw is a few ms.
Panning or zooming with the mouse stops the following; "Fit" resumes it.
"""


from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication, QGraphicsItem, QCheckBox, QComboBox, QHBoxLayout, QLabel, QPushButton, QSlider, QVBoxLayout, QWidget

from shiftstudio.gui.format import human_count, human_duration, short_float
from shiftstudio.gui.metrics_store import Ema, MetricsStore
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
PAD = 0.05  # margin around the data when a range is fitted
LEAD = 0.3  # extra room, as a share of the data span, on a side the data just crossed


def sticky_range(current: tuple[float, float] | None, lo: float, hi: float, floor: float | None = None) -> tuple[float, float] | None:
    """The y range to show for data spanning ``lo … hi``: ``current`` while it still fits well, else a new one.

    A range is kept while it holds the data and the data fills at least a
    third of it; otherwise it is refitted with a margin, and with extra room
    on a side the data has just crossed (a falling loss keeps falling).
    ``floor`` keeps the range from going below a bound (0 for rates).
    """
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return current
    span = hi - lo
    if span <= 0:
        span = abs(hi) * 0.1 or 1.0
    if current is not None:
        c_lo, c_hi = current
        if c_lo <= lo and hi <= c_hi and span >= (c_hi - c_lo) / 3:
            return current
        new_lo = lo - (LEAD if lo < c_lo else PAD) * span
        new_hi = hi + (LEAD if hi > c_hi else PAD) * span
    else:
        new_lo, new_hi = lo - PAD * span, hi + PAD * span
    if floor is not None and lo >= floor:
        new_lo = max(new_lo, floor)
    return new_lo, new_hi


def _finite_bounds(arrays: list[np.ndarray], log: bool) -> tuple[float, float]:
    lo, hi = np.inf, -np.inf
    for a in arrays:
        if a is None or not len(a):
            continue
        a = np.asarray(a, dtype=np.float64)
        if log:
            a = a[a > 0]
            if not len(a):
                continue
            a = np.log10(a)
        a = a[np.isfinite(a)]
        if len(a):
            lo, hi = min(lo, float(a.min())), max(hi, float(a.max()))
    return lo, hi

pg.setConfigOptions(antialias=True)


class XAxis(pg.AxisItem):
    """Bottom axis that writes tokens as 1.2M and wall time as m:ss."""

    mode = "step"

    def tickStrings(self, values, scale, spacing):  # noqa: N802 - pyqtgraph's name
        if self.mode == "time":
            return [human_duration(v) for v in values]
        if self.mode == "tokens":
            return [human_count(v) for v in values]
        return [f"{v:,.0f}" if float(v).is_integer() else f"{v:g}" for v in values]


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
        self._shown_evals: tuple[int, str] = (-1, "")
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
        plot = self.graphics.addPlot(row=row, col=col, colspan=colspan, title=title, axisItems={"bottom": axis})
        plot.showGrid(x=True, y=True, alpha=0.12)
        # Axes (with their grid lines) and titles change only when a range does: drawn once into a pixmap,
        # a redraw of the curves blits them instead of calling back into Python to repaint them.
        for name in ("left", "bottom"):
            plot.getAxis(name).setCacheMode(QGraphicsItem.DeviceCoordinateCache)
        plot.titleLabel.setCacheMode(QGraphicsItem.DeviceCoordinateCache)
        plot.getAxis("left").setWidth(LEFT_AXIS_WIDTH)
        plot.getAxis("left").setStyle(autoExpandTextSpace=False)
        axis.setStyle(autoExpandTextSpace=False)
        plot.setDownsampling(auto=True, mode="peak")
        plot.setClipToView(True)
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
        accent = QColor(ACCENT)
        faint = QColor(accent)
        faint.setAlpha(70)
        self.items = {
            "loss_raw": self.plots["loss"].plot(name="train", pen=pg.mkPen(faint, width=1)),
            "loss_smooth": self.plots["loss"].plot(name="train (smoothed)", pen=pg.mkPen(accent, width=2)),
            "val_loss": self.plots["loss"].plot(name="val", pen=pg.mkPen(VAL_COLOR, width=2), symbol="o", symbolSize=5, symbolBrush=VAL_COLOR, symbolPen=None),
            "train_ppl": self.plots["ppl"].plot(name="train (smoothed)", pen=pg.mkPen(accent, width=2)),
            "val_ppl": self.plots["ppl"].plot(name="val", pen=pg.mkPen(VAL_COLOR, width=2), symbol="o", symbolSize=5, symbolBrush=VAL_COLOR, symbolPen=None),
            "lr": self.plots["lr"].plot(pen=pg.mkPen("#2ca02c", width=2)),
            "grad_norm_raw": self.plots["grad_norm"].plot(pen=pg.mkPen((148, 103, 189, 80), width=1)),
            "grad_norm": self.plots["grad_norm"].plot(pen=pg.mkPen("#9467bd", width=2)),
            "tokens_per_s": self.plots["tokens_per_s"].plot(pen=pg.mkPen("#8c564b", width=2)),
        }
        self.graphics.scene().sigMouseMoved.connect(self._on_scene_mouse_moved)

    def _label_x_axes(self) -> None:
        for key in ("lr", "grad_norm", "tokens_per_s"):
            self.plots[key].setLabel("bottom", X_MODES[self.x_mode][1])

    # -- drawing -------------------------------------------------------------
    def _on_timer_timeout(self) -> None:
        if self.store.version != self._drawn_version:
            self.refresh()

    def refresh(self) -> None:
        """Push the store's data into the plot items (setData, no rebuild), then keep the ranges sticky."""
        shrank = len(self.store.steps) < self._shown_points  # a new run (or a resumed one replaying its tail)
        self._push_data()
        if self.follow:
            self.update_ranges(force=shrank)

    def _push_data(self) -> None:
        self._drawn_version = self.store.version
        self._shown_points = len(self.store.steps)
        steps, evals = self.store.steps, self.store.evals
        column = X_MODES[self.x_mode][0]
        x = steps[column]
        loss = steps["loss"]
        smooth = self._ema_loss(loss, self.smoothing)
        self.items["loss_raw"].setData(x, loss)
        self.items["loss_smooth"].setData(x, smooth)
        with np.errstate(over="ignore", invalid="ignore"):
            self.items["train_ppl"].setData(x, np.exp(smooth))
        self.items["lr"].setData(x, steps["lr"])
        grad = steps["grad_norm"]
        self.items["grad_norm_raw"].setData(x, grad)
        self.items["grad_norm"].setData(x, self._ema_grad(grad, self.smoothing))
        self.items["tokens_per_s"].setData(x, steps["tokens_per_s"])
        key = (self.store.eval_version, self.x_mode)
        if key != self._shown_evals:  # evals come every eval_interval steps: usually nothing new
            self._shown_evals = key
            ex = evals[column]
            self.items["val_loss"].setData(ex, evals["val_loss"])
            self.items["val_ppl"].setData(ex, evals["val_ppl"])

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
        if force:
            self._ranges.clear()
        xs = self.items["loss_raw"].xData
        x_hi = float(np.nanmax(xs)) if xs is not None and len(xs) else 0.0
        ex = self.items["val_loss"].xData
        if ex is not None and len(ex):
            x_hi = max(x_hi, float(np.nanmax(ex)))
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
            lo, hi = _finite_bounds([self.items[n].yData for n in names], log)
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

    def _on_fit_button_clicked(self) -> None:
        self.follow = True
        self.update_ranges(force=True)

    def point_count(self, item: str) -> int:
        """Points an item holds (all of them, not only those in view)."""
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
        self._push_data()
        self.update_ranges(force=True)

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
        smooth = self._ema_loss(steps["loss"], self.smoothing)
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
        accent = QColor(ACCENT)
        accent.setAlpha(faint)
        self.items["loss_raw"].setPen(pg.mkPen(accent, width=1))
        self.items["grad_norm_raw"].setPen(pg.mkPen((148, 103, 189, faint + 10), width=1))
        self.graphics.setBackground(background)
        for key, plot in self.plots.items():
            for name in ("left", "bottom"):
                axis = plot.getAxis(name)
                axis.setPen(pg.mkPen(foreground))
                axis.setTextPen(pg.mkPen(foreground))
            plot.setTitle(plot.titleLabel.text, color=foreground.name(), size="10pt")
        for legend in self.legends.values():
            legend.setLabelTextColor(foreground)
            legend.setBrush(pg.mkBrush(background.red(), background.green(), background.blue(), 200))
