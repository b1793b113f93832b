"""The canvas of the live curves: five plots on one pyqtgraph layout, their curve items, legends and colours.

Built once; :class:`~shiftstudio.gui.plots.CurvesView` feeds the items and
sets the ranges. Loss (wide) and perplexity sit on top, learning rate,
gradient norm and tokens/s below. Each plot has a vertical cursor line for the
hover read-out. The axes and titles are cached as pixmaps and the faint raw
curves are drawn in opaque blended colours, so a redraw costs the curves only.

The legends are part of the plots' titles, above the data: a legend inside a
plot covers the curves as soon as the plot gets short. With more than one
horizon the loss plot also holds a validation curve per extra head
(``val_loss_h2`` …, see :meth:`PlotCanvas.ensure_horizons`), shown on demand.
"""

from __future__ import annotations

from typing import Any

import pyqtgraph as pg
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication, QGraphicsItem, QWidget

from shiftstudio.gui.plot_controls import VAL_COLOR, X_MODES, horizon_color
from shiftstudio.gui.plot_items import CurveItem, GridAxis, XAxis, _over
from shiftstudio.gui.style import ACCENT

LEFT_AXIS_WIDTH = 52  # fixed: an axis that resizes to its labels re-lays out every plot
PLOT_ITEMS = {
    "loss": ("loss_raw", "loss_smooth", "val_loss"),
    "ppl": ("train_ppl", "val_ppl"),
    "lr": ("lr",),
    "grad_norm": ("grad_norm_raw", "grad_norm"),
    "tokens_per_s": ("tokens_per_s",),
}
TITLES = {"loss": "Loss", "ppl": "Perplexity", "lr": "Learning rate", "grad_norm": "Gradient norm", "tokens_per_s": "Tokens / s"}
LEGENDS = {  # plot -> (item, label) in its title's legend
    "loss": (("loss_raw", "train"), ("loss_smooth", "smoothed"), ("val_loss", "val")),
    "ppl": (("train_ppl", "train (smoothed)"), ("val_ppl", "val")),
}
LINE, DOT = "━", "●"


def horizon_item(k: int) -> str:
    """The name of the curve of head ``k``'s validation loss (``k`` ≥ 2; head 1's is ``val_loss``)."""
    return f"val_loss_h{k}"


class PlotCanvas(pg.GraphicsLayoutWidget):
    """``plots`` (plot key -> PlotItem), ``items`` (curve name -> CurveItem) and ``plot_items`` (plot key -> the
    names of its curves: ``PLOT_ITEMS`` and the horizon curves made so far)."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("plot_canvas")
        self.setMinimumSize(360, 220)
        self.ci.setSpacing(4)
        self._x_axes: list[XAxis] = []
        self._cursor_lines: list[pg.InfiniteLine] = []
        self.horizons = 1  # horizon curves made: heads 2 … horizons
        self.show_horizons = False
        self._shown_horizons = 1  # heads whose validation curve is drawn (1: the headline's only)
        self.several_heads = False  # the run has more than one head: the legend says which loss is which
        self.plot_items: dict[str, list[str]] = {key: list(names) for key, names in PLOT_ITEMS.items()}
        self.plots: dict[str, pg.PlotItem] = {}
        self.plots["loss"] = self._new_plot(0, 0, colspan=2)
        self.plots["ppl"] = self._new_plot(0, 2)
        self.plots["lr"] = self._new_plot(1, 0)
        self.plots["grad_norm"] = self._new_plot(1, 1)
        self.plots["tokens_per_s"] = self._new_plot(1, 2)
        self.ci.layout.setRowStretchFactor(0, 3)
        self.ci.layout.setRowStretchFactor(1, 2)
        for col in range(3):
            self.ci.layout.setColumnStretchFactor(col, 1)
        accent = QColor(ACCENT)
        faint = QColor(accent)
        faint.setAlpha(70)

        def curve(plot: str, **opts: Any) -> CurveItem:
            item = CurveItem(**opts)
            self.plots[plot].addItem(item)
            return item

        self.items: dict[str, CurveItem] = {
            "loss_raw": curve("loss", pen=pg.mkPen(faint, width=1)),
            "loss_smooth": curve("loss", pen=pg.mkPen(accent, width=2)),
            "val_loss": curve("loss", pen=pg.mkPen(VAL_COLOR, width=2), symbol="o", symbolSize=5, symbolBrush=VAL_COLOR, symbolPen=None),
            "train_ppl": curve("ppl", pen=pg.mkPen(accent, width=2)),
            "val_ppl": curve("ppl", pen=pg.mkPen(VAL_COLOR, width=2), symbol="o", symbolSize=5, symbolBrush=VAL_COLOR, symbolPen=None),
            "lr": curve("lr", pen=pg.mkPen("#2ca02c", width=2)),
            "grad_norm_raw": curve("grad_norm", pen=pg.mkPen((148, 103, 189, 80), width=1)),
            "grad_norm": curve("grad_norm", pen=pg.mkPen("#9467bd", width=2)),
            "tokens_per_s": curve("tokens_per_s", pen=pg.mkPen("#8c564b", width=2)),
        }

    def _new_plot(self, row: int, col: int, colspan: int = 1) -> pg.PlotItem:
        plot = new_plot(self, row, col, colspan)
        self._x_axes.append(plot.getAxis("bottom"))
        line = pg.InfiniteLine(angle=90, movable=False, pen=pg.mkPen((128, 128, 128, 120), width=1))
        line.setVisible(False)
        plot.addItem(line, ignoreBounds=True)
        self._cursor_lines.append(line)
        return plot

    # -- horizons ------------------------------------------------------------
    def ensure_horizons(self, k: int) -> list[str]:
        """Curves for the validation loss of heads 2 … ``k`` on the loss plot (made once); the new names."""
        new = []
        for h in range(self.horizons + 1, k + 1):
            colour = horizon_color(h)
            item = CurveItem(pen=pg.mkPen(colour, width=1.5), symbol="o", symbolSize=4, symbolBrush=colour, symbolPen=None)
            item.setVisible(self.show_horizons)
            self.plots["loss"].addItem(item)
            self.items[horizon_item(h)] = item
            self.plot_items["loss"].append(horizon_item(h))
            new.append(horizon_item(h))
        self.horizons = max(self.horizons, k)
        return new

    def set_horizons(self, k: int, show: bool) -> None:
        """The run has ``k`` horizons; ``show``: draw a validation curve for each, not only head 1's."""
        self.ensure_horizons(k)
        self.several_heads = k > 1
        self.show_horizons = show
        for h in range(2, self.horizons + 1):
            self.items[horizon_item(h)].setVisible(show and h <= k)
        self._shown_horizons = k if show else 1
        self.update_titles()

    def is_shown(self, name: str) -> bool:
        return self.items[name].isVisible()

    # -- titles and legends --------------------------------------------------
    def legend_entries(self, key: str) -> list[tuple[str, str, str]]:
        """(mark, colour, label) of each curve in plot ``key``'s legend."""
        entries = []
        for name, label in LEGENDS.get(key, ()):
            item = self.items[name]
            colour = pg.mkPen(item.opts["pen"]).color().name()
            if self.several_heads and key == "loss":
                label = {"loss_raw": "train (all heads)", "val_loss": "val t+1"}.get(name, label)
            elif self.several_heads and name == "val_ppl":
                label = "val t+1"
            entries.append((DOT if item.opts["symbol"] else LINE, colour, label))
        if key == "loss" and self.show_horizons:
            for h in range(2, self._shown_horizons + 1):
                entries.append((DOT, horizon_color(h), f"t+{h}"))
        return entries

    def title_html(self, key: str) -> str:
        legend = "".join(f"&nbsp;&nbsp;<span style='color:{colour}'>{mark}</span>&nbsp;{label}"
                         for mark, colour, label in self.legend_entries(key))
        return f"<b>{TITLES[key]}</b><span style='font-size:8pt'>{legend}</span>"

    def update_titles(self) -> None:
        foreground = QApplication.palette().color(QPalette.Text)
        for key, plot in self.plots.items():
            plot.setTitle(self.title_html(key), color=foreground.name(), size="10pt")

    # -- cursor and x axis ---------------------------------------------------
    def set_x_mode(self, mode: str) -> None:
        """What the x axes count (a key of ``X_MODES``): their tick labels and titles."""
        for axis in self._x_axes:
            axis.set_mode(mode)
        for key in ("lr", "grad_norm", "tokens_per_s"):
            self.plots[key].setLabel("bottom", X_MODES[mode][1])

    def show_cursor(self, x: float) -> None:
        for line in self._cursor_lines:
            line.setPos(x)
            line.setVisible(True)

    def hide_cursor(self) -> None:
        for line in self._cursor_lines:
            line.setVisible(False)

    def apply_palette(self) -> None:
        """Background, axes, titles (with the legends) and the faint raw curves in the application palette's colours."""
        palette = QApplication.palette()
        background = palette.color(QPalette.Base)
        foreground = palette.color(QPalette.Text)
        faint = 130 if background.lightness() < 128 else 70  # raw curves behind the smoothed ones
        # Faint = the colour blended over the background once, here, and drawn opaque: the look of a
        # translucent pen without its cost (Qt blends every pixel of a translucent line; a dense raw
        # curve that zigzags through its whole plot took ~40 ms to draw that way, ~3 ms opaque).
        self.items["loss_raw"].setPen(pg.mkPen(_over(QColor(ACCENT), faint, background), width=1))
        self.items["grad_norm_raw"].setPen(pg.mkPen(_over(QColor(148, 103, 189), faint + 10, background), width=1))
        self.setBackground(background)
        for plot in self.plots.values():
            style_axes(plot, background, foreground)
        self.update_titles()


def new_plot(layout: pg.GraphicsLayoutWidget, row: int, col: int, colspan: int = 1) -> pg.PlotItem:
    """A plot at ``row, col`` of ``layout`` set up for cheap redraws: an :class:`XAxis` below and a
    :class:`GridAxis` on the left (grid under the curves), axes and title cached as pixmaps, a fixed-width
    left axis, no auto-range, no menu, x-only mouse. Its items are given points already clipped and
    downsampled."""
    axis = XAxis(orientation="bottom")
    plot = layout.addPlot(row=row, col=col, colspan=colspan, axisItems={"bottom": axis, "left": GridAxis(orientation="left")})
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
    plot.getViewBox().setMouseEnabled(x=True, y=False)
    return plot


def style_axes(plot: pg.PlotItem, background: QColor, foreground: QColor) -> None:
    """A plot's axes and grid in the palette's colours (the grid drawn opaque over ``background``)."""
    for name in ("left", "bottom"):
        axis = plot.getAxis(name)
        axis.background = QColor(background)
        axis.setPen(pg.mkPen(foreground))  # (and draws itself again)
        axis.setTextPen(pg.mkPen(foreground))
