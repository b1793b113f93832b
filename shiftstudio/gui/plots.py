"""Live training curves (pyqtgraph), fed from a :class:`MetricsStore` on a timer.

Plot items are built once; a 10 Hz timer redraws only when the store's
version moved (or a view was resized), with ``setData`` on the existing items.
Loss and perplexity sit on top, learning rate, gradient norm and tokens/s
below; all share one x axis (step, tokens seen or wall time).

What an item gets is clipped to the view and peak-downsampled here, not by
pyqtgraph: a run's 200,000 points become about two per pixel column (the max
and the min of each bucket of ``ds`` points, ``ds`` a power of two picked from
the points per pixel), and the buckets' max/min are cached per curve and only
extended as points arrive, so a frame costs the new points plus the pixels,
not the run's length. The smoothing (a debiased EMA, see :class:`Ema`) and the
bounds the ranges are fitted to are extended the same way. A redraw that
changes nothing (no new point, same view) skips ``setData`` (and so the
repaint); panning or zooming clips and downsamples again at once.

Drawing is what costs then, and a noisy curve at scale is the worst case: its
max/min zigzag fills the plot. So a curve is drawn in device pixels (Qt
strokes fastest without a scaling transform), a downsampled one as one
pen-wide bar per bucket from its min to its max (integer rectangles: about the
pixels of the zigzag, filled instead of stroked), sparse wide lines as
segments, and the faint raw curves and the grid (see :class:`GridAxis`) with
opaque colours blended over the background once (a translucent pen makes Qt
blend every pixel it touches).

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
import warnings
from typing import Any, Callable

import numpy as np
import pyqtgraph as pg
from pyqtgraph.graphicsItems.PlotCurveItem import PlotCurveItem, arrayToLineSegments
from pyqtgraph.Qt.compat import wrapinstance
from PySide6.QtCore import QEvent, QRect, QRectF, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QPainter, QPalette, QPen
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


DS_KEEP = 0.75  # keep the bucket size while the ideal one is within this many powers of two of it


def _peaks(seg: np.ndarray, hi: np.ndarray, lo: np.ndarray) -> None:
    """Row-wise max and min of ``seg`` into ``hi`` and ``lo``, ignoring NaN (NaN for an all-NaN row)."""
    np.max(seg, axis=1, out=hi)
    np.min(seg, axis=1, out=lo)
    bad = np.isnan(hi) | np.isnan(lo)  # max/min propagate NaN: redo those rows without it
    if bad.any():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows
            hi[bad] = np.nanmax(seg[bad], axis=1)
            lo[bad] = np.nanmin(seg[bad], axis=1)


class PeakCache:
    """Max and min of a growing column over buckets of ``ds`` points (bucket ``b`` = points ``b*ds … b*ds+ds-1``).

    Kept for the last few bucket sizes and extended as the column grows, while
    ``key`` (what the column's first points are: its series' epoch, the
    smoothing) stays the same; otherwise computed again.
    """

    LEVELS = 3

    def __init__(self) -> None:
        self._levels: dict[int, list[Any]] = {}  # ds -> [key, buckets done, max, min]

    def buckets(self, y: np.ndarray, ds: int, key: Any, upto: int) -> tuple[np.ndarray, np.ndarray]:
        """Max and min of the first ``upto`` complete buckets (``upto * ds <= len(y)``)."""
        level = self._levels.pop(ds, None)
        if level is None or level[0] != key or level[1] * ds > len(y):
            level = [key, 0, np.empty(0), np.empty(0)]
        self._levels[ds] = level
        while len(self._levels) > self.LEVELS:
            del self._levels[next(iter(self._levels))]
        done = level[1]
        if upto > done:
            if upto > len(level[2]):
                size = max(upto, 2 * len(level[2]), 256)
                for i in (2, 3):
                    grown = np.empty(size)
                    grown[:done] = level[i][:done]
                    level[i] = grown
            _peaks(y[done * ds : upto * ds].reshape(upto - done, ds), level[2][done:upto], level[3][done:upto])
            level[1] = upto
        return level[2][:upto], level[3][:upto]


def bucket_size(n: int, x_first: float, x_last: float, view: tuple[float, float], width_px: float, current: int = 1) -> int:
    """Points per bucket for ``n`` points spanning ``x_first … x_last`` in a view ``width_px`` pixels wide:
    about one bucket per pixel column, a power of two (1 = draw every point), ``current`` kept while it is near."""
    view_span = view[1] - view[0]
    span = x_last - x_first
    if n < 4 or not (math.isfinite(span) and span > 0 and math.isfinite(view_span) and view_span > 0):
        return 1
    pixels = max(1.0, min(span, view_span) / view_span * max(width_px, 1.0))
    ideal = n / pixels
    if ideal < 2:
        return 1
    if current > 1 and abs(math.log2(ideal) - math.log2(current)) < DS_KEEP:
        return current
    return 1 << max(1, int(round(math.log2(ideal))))


def peak_downsample(x: np.ndarray, y: np.ndarray, view: tuple[float, float], width_px: float, cache: PeakCache, key: Any,
                    ds: int = 1) -> tuple[np.ndarray, np.ndarray, int]:
    """The points to draw of the curve ``(x, y)`` (``x`` ascending) in an x ``view`` ``width_px`` pixels wide.

    Clipped to the view (plus a point either side, so the line runs to the
    edges); when there are more than about two points per pixel, peak
    downsampled: each bucket of ``ds`` points becomes its max and min at the
    bucket's middle x (so no spike is lost), the newest incomplete bucket too,
    then the last point (twice, so the points stay in pairs). Returns
    ``(x, y, ds)``; pass ``ds`` back next time (it sticks while it fits, which
    keeps the cache warm).
    """
    n = len(y)
    i0 = max(0, int(np.searchsorted(x, view[0], side="left")) - 1)
    i1 = min(n, int(np.searchsorted(x, view[1], side="right")) + 1)
    if i1 - i0 < 4:
        return x[i0:i1], y[i0:i1], 1
    ds = bucket_size(i1 - i0, float(x[i0]), float(x[i1 - 1]), view, width_px, ds)
    if ds == 1:
        return x[i0:i1], y[i0:i1], 1
    b0, complete = i0 // ds, n // ds
    b1 = min(complete, (i1 - 1) // ds + 1)
    hi, lo = cache.buckets(y, ds, key, b1)
    hi, lo = hi[b0:b1], lo[b0:b1]
    tail = i1 > complete * ds  # the view reaches the newest points, past the last complete bucket
    k = 2 * len(hi)
    xs, ys = np.empty(k + (4 if tail else 0)), np.empty(k + (4 if tail else 0))
    mid = x[np.arange(b0, b1) * ds + ds // 2]
    xs[0:k:2] = mid
    xs[1:k:2] = mid
    ys[0:k:2] = hi
    ys[1:k:2] = lo
    if tail:
        start = complete * ds
        seg = y[start:n]
        xs[k : k + 2] = x[(start + n - 1) // 2]
        ys[k], ys[k + 1] = np.fmax.reduce(seg), np.fmin.reduce(seg)  # (NaN ignored)
        xs[k + 2 :], ys[k + 2 :] = x[n - 1], y[n - 1]
    return xs, ys, ds


class Extent:
    """Finite min and max of a growing column (and its smallest positive value, for a log axis), extended as it grows."""

    def __init__(self) -> None:
        self.key: Any = None
        self.n = 0
        self.lo, self.hi, self.positive = math.inf, -math.inf, math.inf

    def update(self, y: np.ndarray, key: Any, fn: Callable[[np.ndarray], np.ndarray] | None = None) -> "Extent":
        """Take in ``y`` (``fn`` applied to it, if given) beyond the points seen under the same ``key``."""
        if key != self.key or len(y) < self.n:
            self.key, self.n = key, 0
            self.lo, self.hi, self.positive = math.inf, -math.inf, math.inf
        if len(y) > self.n:
            new = y[self.n :]
            if fn is not None:
                with np.errstate(over="ignore", invalid="ignore"):
                    new = fn(new)
            new = new[np.isfinite(new)]
            if len(new):
                lo, hi = float(new.min()), float(new.max())
                self.lo, self.hi = min(self.lo, lo), max(self.hi, hi)
                if lo > 0:
                    self.positive = min(self.positive, lo)
                elif hi > 0:
                    self.positive = min(self.positive, float(new[new > 0].min()))
            self.n = len(y)
        return self

    def bounds(self, log: bool = False) -> tuple[float, float]:
        """``(lo, hi)`` of the finite values (log10 of the positive ones); ``(inf, -inf)`` if none."""
        if not log:
            return self.lo, self.hi
        if not (math.isfinite(self.positive) and self.hi > 0):
            return math.inf, -math.inf
        return math.log10(self.positive), math.log10(self.hi)


class _Trace:
    """What the view keeps per plot item: its peak cache, bucket size, bounds and what it was last given."""

    def __init__(self) -> None:
        self.cache = PeakCache()
        self.extent = Extent()
        self.ds = 1
        self.count = 0  # points of the curve (all of them, before clipping and downsampling)
        self.shown: Any = None  # what the item was last set from


pg.setConfigOptions(antialias=True)


def _over(color: QColor, alpha: int, background: QColor) -> QColor:
    """The opaque colour of ``color`` at ``alpha`` (0-255) drawn over ``background``."""
    a = alpha / 255
    return QColor(*(round(a * c + (1 - a) * b) for c, b in zip(color.getRgb()[:3], background.getRgb()[:3])))


class PeakCurve(PlotCurveItem):
    """A PlotCurveItem drawn in device pixels, and as min-max bars when it holds peak-downsampled points.

    Qt strokes lines fastest with no scaling in the painter: the points are
    mapped to pixels here (a few thousand, so cheap), then drawn with the
    transform reset; a wide pen as separate segments (one wide polyline that
    zigzags costs Qt far more than its length). With ``peaks`` set, the
    points come in pairs, a bucket's max and min at its x (see
    :func:`peak_downsample`), and each pair is drawn as one pen-wide bar from
    min to max, stretched to meet the previous bar (the line from one bucket
    to the next): about the pixels of the zigzag through them, but filled as
    rectangles, a fraction of the cost when the curve is noisy.
    """

    peaks = False

    @pg.debug.warnOnException  # (as PlotCurveItem's: an exception out of paint() can take the app down)
    def paint(self, p: QPainter, opt: Any, widget: Any) -> None:
        x, y = self.xData, self.yData
        t = p.transform()
        pen = self.opts["pen"]
        if (x is None or len(x) < 2 or t.m12() or t.m21() or t.m13() or t.m23() or self.opts["fillLevel"] is not None
                or self.opts["stepMode"] or pen is None or pen.style() == Qt.PenStyle.NoPen or self._exportOpts is not False):
            super().paint(p, opt, widget)  # (none of these in this view)
            return
        x = x * t.m11() + t.dx()
        y = y * t.m22() + t.dy()
        p.save()
        try:
            p.resetTransform()
            if self.peaks:
                self._paint_bars(p, x, y, pen)
            else:
                p.setRenderHint(QPainter.RenderHint.Antialiasing, bool(self.opts["antialias"]))
                p.setPen(pen)
                if pen.widthF() > 1 and pen.color().alpha() == 255:  # (translucent segments would show their overlaps)
                    p.drawLines(*arrayToLineSegments(x, y, connect="finite", finiteCheck=True).drawargs())
                else:
                    p.drawPath(pg.arrayToQPath(x, y, connect="finite"))
        finally:
            p.restore()

    @staticmethod
    def _paint_bars(p: QPainter, x: np.ndarray, y: np.ndarray, pen: Any) -> None:
        w = max(pen.widthF(), 1.0)
        n = len(x) // 2
        if not n:
            return
        xc, a, b = x[0 : 2 * n : 2], y[0 : 2 * n : 2], y[1 : 2 * n : 2]
        bars = np.empty((4, n))  # left, top, right, bottom of each bar (pixels, y down)
        left, top, right, bottom = bars
        np.subtract(xc, w / 2, out=left)
        np.add(xc, w / 2, out=right)
        np.fmin(a, b, out=top)
        np.fmax(a, b, out=bottom)
        if n > 1:
            previous_top, previous_bottom = top[:-1].copy(), bottom[:-1].copy()
            np.fmin(top[1:], previous_bottom, out=top[1:])  # up (or down) to the previous bar: the line between them
            np.fmax(bottom[1:], previous_top, out=bottom[1:])
            np.fmax(right[:-1], np.fmin(left[1:], right[:-1] + 1), out=right[:-1])  # no gap (of a pixel) to the next bar
        top -= w / 2
        bottom += w / 2
        device = p.device()
        size = max(device.width(), device.height(), 1) if device is not None else 10_000
        np.clip(bars, -2 * size, 3 * size, out=bars)  # off-screen parts: cut (Qt's coordinates are 32-bit ints)
        np.rint(bars, out=bars)
        if np.isnan(bars.sum()):  # gaps in the data
            bars = bars[:, ~np.isnan(bars).any(axis=0)]
        # Pixel-aligned, integer rectangles: Qt fills them fastest, and they come out crisp without
        # antialiasing. A QRect holds x1, y1, x2, y2 (inclusive): handed over as an array, not one by one.
        rects = np.empty((bars.shape[1], 4), dtype=np.int32)
        rects[:, 0], rects[:, 1] = bars[0], bars[1]
        rects[:, 2] = np.maximum(bars[2] - 1, bars[0])  # at least one pixel
        rects[:, 3] = np.maximum(bars[3] - 1, bars[1])
        p.setRenderHint(QPainter.RenderHint.Antialiasing, False)
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(pen.color())
        if len(rects):
            p.drawRects(wrapinstance(rects.ctypes.data, QRect), len(rects))

    def dataBounds(self, ax: int, frac: float = 1.0, orthoRange: Any = None) -> tuple[float | None, float | None]:
        """PlotCurveItem's, for the whole curve, without its per-call overheads (the view asks on every paint)."""
        if frac < 1.0 or orthoRange is not None or self.opts["fillLevel"] is not None or not self.opts["pen"].isCosmetic():
            return super().dataBounds(ax, frac, orthoRange)
        cache = self._boundsCache[ax]
        if cache is not None and cache[0] == (frac, orthoRange):
            return cache[1]
        d = self.xData if ax == 0 else self.yData
        if d is None or not len(d):
            return None, None
        lo, hi = float(np.fmin.reduce(d)), float(np.fmax.reduce(d))  # NaN ignored
        if not (math.isfinite(lo) and math.isfinite(hi)):  # all NaN, or infinities
            d = d[np.isfinite(d)]
            if not len(d):
                return None, None
            lo, hi = float(d.min()), float(d.max())
        self._boundsCache[ax] = [(frac, orthoRange), (lo, hi)]
        return lo, hi

    def boundingRect(self) -> QRectF:
        """The data's bounds and a few pixels: pixel sizes from the view box, not from ``pixelVectors()``."""
        if self._boundingRect is None:
            (x0, x1), (y0, y1) = self.dataBounds(0), self.dataBounds(1)
            if x0 is None or y0 is None:
                return QRectF()
            box = self.getViewBox()
            if box is None or box.width() <= 0 or box.height() <= 0:
                return super().boundingRect()
            (v0, v1), (u0, u1) = box.viewRange()
            pad = self.opts["pen"].widthF() + 2  # pixels: half a bar or line, rounding, the bars' widening
            px, py = pad * (v1 - v0) / box.width(), pad * (u1 - u0) / box.height()
            self._boundingRect = QRectF(x0 - px, y0 - py, x1 - x0 + 2 * px, y1 - y0 + 2 * py)
        return self._boundingRect


class CurveItem(pg.PlotDataItem):
    """A PlotDataItem whose line is a :class:`PeakCurve`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        plain, self.curve = self.curve, PeakCurve()
        plain.setParentItem(None)
        self.curve.setParentItem(self)
        self.curve.stackBefore(self.scatter)  # symbols over the line, as before
        self.curve.sigClicked.connect(self.sigClicked)
        # pyqtgraph's guard against data millions of view heights away: never the case with ranges fitted to
        # all the data (and the y axis not zoomable), and it costs a pass over the points on each setData
        self.setDynamicRangeLimit(None)
        self.updateItems(styleUpdate=True)

    def set_points(self, x: np.ndarray, y: np.ndarray, peaks: bool) -> None:
        """``setData``; ``peaks``: the points are (max, min) pairs of buckets, to draw as bars."""
        self.curve.peaks = peaks
        self.setData(x, y)


class GridAxis(pg.AxisItem):
    """An axis whose grid lines are drawn opaque, in their colour blended over the plot's background.

    pyqtgraph draws the grid as translucent lines (each tick level fainter),
    and Qt blends every pixel of a translucent line: ~4 ms to draw one axis's
    grid across a large plot, each time its range moves, against ~1 ms opaque.
    Lines of several levels at one place (a major tick is a minor one too) are
    drawn once, in the colour they made together. Drawn opaque, the grid has to
    lie under the curves: the axes stack behind the plot's view box (they
    were above it), which is also where a grid belongs.
    """

    background: QColor | None = None  # the plot's background (set by the view); None: pyqtgraph's own drawing

    def drawPicture(self, p, axisSpec, tickSpecs, textSpecs):  # noqa: N802 - pyqtgraph's name
        if self.background is None or self.grid is False:
            super().drawPicture(p, axisSpec, tickSpecs, textSpecs)
            return
        lines: dict[tuple[float, float, float, float], list[Any]] = {}  # where -> [pen, alpha, p1, p2]
        for pen, p1, p2 in tickSpecs:
            key = (round(p1.x(), 2), round(p1.y(), 2), round(p2.x(), 2), round(p2.y(), 2))
            alpha = pen.color().alphaF()
            if key in lines:  # alpha over alpha
                lines[key][1] = 1 - (1 - lines[key][1]) * (1 - alpha)
            else:
                lines[key] = [pen, alpha, p1, p2]
        opaque = []
        for pen, alpha, p1, p2 in lines.values():
            pen = QPen(pen)
            pen.setColor(_over(pen.color(), round(255 * alpha), self.background))
            opaque.append((pen, p1, p2))
        super().drawPicture(p, axisSpec, opaque, textSpecs)


class XAxis(GridAxis):
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
