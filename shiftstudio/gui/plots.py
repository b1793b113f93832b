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

The plots and their items (and the legends, in the titles) are built in
:mod:`shiftstudio.gui.plot_canvas`; the toolbar and the read-out line are in
:mod:`shiftstudio.gui.plot_controls`; Export PNG draws a copy off screen
(:mod:`shiftstudio.gui.plot_export`). The validation curve is head 1's (the
headline); "Every horizon" adds one per head of a ``shift > 1`` run.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, QObject, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QImage
from PySide6.QtWidgets import QLabel, QSizePolicy, QVBoxLayout, QWidget

from shiftstudio.gui.metrics_store import Ema, MetricsStore
from shiftstudio.gui.plot_canvas import PlotCanvas, horizon_item
from shiftstudio.gui.plot_controls import X_MODES, PlotToolbar, ToolbarOptions, readout_text
from shiftstudio.gui.plot_items import Extent, _Trace, peak_downsample, sticky_range

REDRAW_MS = 100
EXPORT_SIZE = QSize(1600, 1000)  # Export PNG draws the plots at this size, whatever their size on screen


class CurvesView(ToolbarOptions, QWidget):
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
        self.show_horizons = False  # a validation curve for every head, not only head 1's
        self._horizons = 1  # horizons of the run on screen, as the store last said
        self._x_seen = {"loss_raw": Extent(), "val_loss": Extent()}  # the x of the steps and of the evals
        self.toolbar = PlotToolbar(self.smoothing, self)
        self.readout = QLabel(" ", self)
        self.readout.setObjectName("plot_readout_label")
        self.readout.setToolTip("Values under the mouse pointer")
        self.readout.setTextFormat(Qt.RichText)
        # One line, whatever it says: its text never widens the pane nor changes its height (the panes around
        # the plots would shift as the mouse comes in).
        self.readout.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.readout.setFixedHeight(self.readout.fontMetrics().lineSpacing() + 6)
        self.graphics = PlotCanvas(self)
        self.graphics.installEventFilter(self)  # the mouse leaving the plots hides the read-out
        self.plots, self.items = self.graphics.plots, self.graphics.items
        self._traces = {name: _Trace() for names in self.graphics.plot_items.values() for name in names}
        self.graphics.set_x_mode(self.x_mode)
        for plot in self.plots.values():
            box = plot.getViewBox()
            box.sigRangeChangedManually.connect(self._on_view_range_changed_manually)
            box.sigXRangeChanged.connect(self._on_view_x_range_changed)
            box.sigResized.connect(self._on_view_resized)
        self.graphics.scene().sigMouseMoved.connect(self._on_scene_mouse_moved)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.toolbar)
        layout.addWidget(self.graphics, 1)
        layout.addWidget(self.readout)
        self._timer = QTimer(self)
        self._timer.setObjectName("plot_redraw_timer")
        self._timer.setInterval(REDRAW_MS)
        self._timer.timeout.connect(self._on_timer_timeout)
        self._timer.start()
        self.toolbar.smoothing_changed.connect(self._on_toolbar_smoothing_changed)
        self.toolbar.log_y_toggled.connect(self._on_toolbar_log_y_toggled)
        self.toolbar.x_mode_changed.connect(self._on_toolbar_x_mode_changed)
        self.toolbar.horizons_toggled.connect(self._on_toolbar_horizons_toggled)
        self.toolbar.fit_requested.connect(self._on_toolbar_fit_requested)
        self.toolbar.export_png_requested.connect(self.export_png_requested)
        self.toolbar.export_csv_requested.connect(self.export_csv_requested)
        self.apply_palette()

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
        if self.store.horizons != self._horizons:
            self._set_horizons(self.store.horizons)
            shrank = True
        sources = self.sources()
        if self.follow:
            self._fit_ranges(sources, force=shrank)
        self._push_data(sources)

    def _smoothed(self, name: str) -> np.ndarray:
        """The EMA of a step column at the current smoothing, extended incrementally."""
        steps = self.store.steps
        ema = self._ema_loss if name == "loss" else self._ema_grad
        return ema(steps[name], self.smoothing, steps.epoch)

    def sources(self) -> dict[str, tuple[np.ndarray, np.ndarray, Any]]:
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
            **{horizon_item(k): (ex, self.store.horizon_loss(k), val) for k in range(2, self.graphics.horizons + 1)},
        }

    def _push_data(self, sources: dict[str, tuple[np.ndarray, np.ndarray, Any]] | None = None) -> None:
        """setData on the items whose points or view changed, with their points clipped and peak downsampled."""
        sources = self.sources() if sources is None else sources
        for plot_key, names in self.graphics.plot_items.items():
            box = self.plots[plot_key].getViewBox()
            view = tuple(box.viewRange()[0])
            width = round(box.width())
            for name in names:
                if not self.graphics.is_shown(name):
                    continue  # (a horizon curve turned off)
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
        sources = self.sources()
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
        for key, names in self.graphics.plot_items.items():
            log = self.log_y and key in ("loss", "ppl")
            lo, hi = math.inf, -math.inf
            for name in names:  # bounds of all the data shown, extended as it grows
                if not self.graphics.is_shown(name):
                    continue
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
            for key in self.graphics.plot_items:
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

    def _on_toolbar_fit_requested(self) -> None:
        self.follow = True
        self.update_ranges(force=True)

    def point_count(self, item: str) -> int:
        """Points of an item's curve: all of them, not only those in view and after downsampling (see ``shown_count``)."""
        return self._traces[item].count

    def shown_count(self, item: str) -> int:
        """Points the item was given to draw (clipped to the view, peak downsampled)."""
        data = self.items[item].xData
        return 0 if data is None else len(data)

    def bucket_size(self, item: str) -> int:
        """Points per max/min bucket in what the item was last given to draw (1: every point, as it is)."""
        return self._traces[item].ds

    # -- view options (the toolbar's) ----------------------------------------
    def set_show_horizons(self, on: bool) -> None:
        self.toolbar.horizons_check.setChecked(on)

    def view_settings(self) -> dict[str, Any]:
        """The view options, for the window to remember between starts."""
        return {"smoothing": self.smoothing, "x_mode": self.x_mode, "log_y": self.log_y, "horizons": self.show_horizons}

    def apply_view_settings(self, saved: dict[str, Any]) -> None:
        """Options saved by :meth:`view_settings` (any missing one keeps its default)."""
        self.set_smoothing(float(saved.get("smoothing", self.smoothing)))
        self.set_x_mode(str(saved.get("x_mode", "step")))
        self.set_log_y(bool(saved.get("log_y", False)))
        self.set_show_horizons(bool(saved.get("horizons", False)))

    def _set_horizons(self, k: int) -> None:
        """The run on screen has ``k`` horizons: the toggle, the curves (made once) and the legend follow."""
        self._horizons = k
        self.toolbar.set_horizons(k)
        for name in self.graphics.ensure_horizons(k):
            self._traces[name] = _Trace()
        self.graphics.set_horizons(k, self.show_horizons)

    def _on_toolbar_horizons_toggled(self, on: bool) -> None:
        self.show_horizons = on
        self.graphics.set_horizons(self._horizons, on)
        for k in range(2, self.graphics.horizons + 1):
            self._traces[horizon_item(k)].shown = None  # drawn afresh when shown again
        if self.follow:
            self.update_ranges(force=True)  # (the loss plot's range covers the curves shown)
        else:
            self._push_data()

    def _on_toolbar_smoothing_changed(self, weight: float) -> None:
        self.smoothing = weight
        self.refresh()

    def _on_toolbar_log_y_toggled(self, on: bool) -> None:
        self.log_y = on
        for key in ("loss", "ppl"):
            self.plots[key].setLogMode(x=False, y=on)
            self._ranges.pop(key, None)
        self.update_ranges()

    def _on_toolbar_x_mode_changed(self, mode: str) -> None:
        self.x_mode = mode
        self.graphics.set_x_mode(mode)
        self.follow = True
        self._ranges.clear()
        self.refresh()

    # -- hover read-out ------------------------------------------------------
    def _on_scene_mouse_moved(self, pos) -> None:
        for plot in self.plots.values():
            if plot.sceneBoundingRect().contains(pos):
                self.show_readout_at(plot.getViewBox().mapSceneToView(pos).x())
                return
        self.hide_readout()

    def hide_readout(self) -> None:
        """The mouse left the plots: no cursor line, no values (the line keeps its height)."""
        self.graphics.hide_cursor()
        self.readout.setText(" ")

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt's name
        if obj is self.graphics and event.type() == QEvent.Type.Leave:
            self.hide_readout()
        return super().eventFilter(obj, event)

    def show_readout_at(self, x: float) -> str:
        steps, evals = self.store.steps, self.store.evals
        if not len(steps):
            return ""
        column = X_MODES[self.x_mode][0]
        xs = steps[column]
        i = int(np.clip(np.searchsorted(xs, x), 0, len(xs) - 1))
        if i > 0 and abs(xs[i - 1] - x) < abs(xs[i] - x):
            i -= 1
        self.graphics.show_cursor(xs[i])
        text = readout_text(steps, evals, i, self._smoothed("loss")[i], column, self.store.horizons)
        self.readout.setText(text)
        return text

    # -- export --------------------------------------------------------------
    def export_png(self, path: str, size: QSize = EXPORT_SIZE) -> bool:
        """Save the plots as they are on screen (ranges, options), drawn at ``size`` whatever their size here."""
        return self.export_image(size).save(path, "PNG")

    def export_image(self, size: QSize = EXPORT_SIZE) -> QImage:
        """The plots drawn off screen at ``size``: the same ranges, curves and options as on screen."""
        from shiftstudio.gui.plot_export import render_plots

        self.refresh()
        return render_plots(self, size)

    def export_csv(self, path: str) -> None:
        self.store.to_csv(path)

    # -- palette -------------------------------------------------------------
    def changeEvent(self, event: QEvent) -> None:  # noqa: N802 - Qt's name
        if event.type() == QEvent.PaletteChange:
            self.apply_palette()
        super().changeEvent(event)

    def apply_palette(self) -> None:
        self.graphics.apply_palette()
