"""The pieces the live curves are made of: sticky ranges, clip-and-peak downsampling, and the plot items.

* :func:`sticky_range` moves a view range only when the data leaves it (or
  fills too little of it), so axes are not re-laid out on every redraw.
* :func:`peak_downsample` clips a curve to the view and keeps the max and the
  min of each bucket of ``ds`` points (a power of two per pixel column);
  :class:`PeakCache` keeps the buckets' max/min and only extends them as points
  arrive. :class:`Extent` tracks the data's bounds the same way.
* :class:`PeakCurve` draws in device pixels: a downsampled curve as one
  pen-wide bar per bucket, sparse wide lines as segments, faint curves in
  opaque colours blended over the background. :class:`GridAxis` draws its grid
  the same way. :class:`CurveItem` ties a curve to its legend entry.

:mod:`shiftstudio.gui.plot_canvas` arranges them into the Train pane's plots.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable

import numpy as np
import pyqtgraph as pg
from pyqtgraph.graphicsItems.PlotCurveItem import PlotCurveItem, arrayToLineSegments
from pyqtgraph.Qt.compat import wrapinstance
from PySide6.QtCore import QRect, QRectF, Qt
from PySide6.QtGui import QColor, QPainter, QPen

from shiftstudio.format import human_count, human_duration

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

    def set_mode(self, mode: str) -> None:
        """Count in ``mode`` (step, tokens or time) from now on: the labels are drawn again."""
        self.mode = mode
        self.picture = None
        self.update()

    def tickStrings(self, values, scale, spacing):  # noqa: N802 - pyqtgraph's name
        if self.mode == "time":
            return [human_duration(v) for v in values]
        if self.mode == "tokens":
            return [human_count(v) for v in values]
        return [f"{v:,.0f}" if float(v).is_integer() else f"{v:g}" for v in values]
