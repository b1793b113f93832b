"""The canvas of the live curves: five plots on one pyqtgraph layout, their curve items, legends and colours.

Built once; :class:`~shiftstudio.gui.plots.CurvesView` feeds the items and
sets the ranges. Loss (wide) and perplexity sit on top, learning rate,
gradient norm and tokens/s below. Each plot has a vertical cursor line for the
hover read-out. The axes and titles are cached as pixmaps and the faint raw
curves are drawn in opaque blended colours, so a redraw costs the curves only.
"""

from __future__ import annotations

from typing import Any

import pyqtgraph as pg
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication, QGraphicsItem, QWidget

from shiftstudio.gui.plot_controls import VAL_COLOR, X_MODES
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


class PlotCanvas(pg.GraphicsLayoutWidget):
    """``plots`` (plot key -> PlotItem, see ``PLOT_ITEMS``), ``items`` (curve name -> CurveItem), ``legends``."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("plot_canvas")
        self.setMinimumSize(360, 220)
        self.ci.setSpacing(4)
        self._x_axes: list[XAxis] = []
        self._cursor_lines: list[pg.InfiniteLine] = []
        self.plots: dict[str, pg.PlotItem] = {}
        self.plots["loss"] = self._new_plot(0, 0, "Loss", colspan=2)
        self.plots["ppl"] = self._new_plot(0, 2, "Perplexity")
        self.plots["lr"] = self._new_plot(1, 0, "Learning rate")
        self.plots["grad_norm"] = self._new_plot(1, 1, "Gradient norm")
        self.plots["tokens_per_s"] = self._new_plot(1, 2, "Tokens / s")
        self.ci.layout.setRowStretchFactor(0, 3)
        self.ci.layout.setRowStretchFactor(1, 2)
        for col in range(3):
            self.ci.layout.setColumnStretchFactor(col, 1)
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

    def _new_plot(self, row: int, col: int, title: str, colspan: int = 1) -> pg.PlotItem:
        axis = XAxis(orientation="bottom")
        self._x_axes.append(axis)
        plot = self.addPlot(row=row, col=col, colspan=colspan, title=title,
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
        plot.getViewBox().setMouseEnabled(x=True, y=False)
        line = pg.InfiniteLine(angle=90, movable=False, pen=pg.mkPen((128, 128, 128, 120), width=1))
        line.setVisible(False)
        plot.addItem(line, ignoreBounds=True)
        self._cursor_lines.append(line)
        return plot

    def set_x_mode(self, mode: str) -> None:
        """What the x axes count (a key of ``X_MODES``): their tick labels and titles."""
        for axis in self._x_axes:
            axis.mode = mode
            axis.picture = None
            axis.update()
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
        """Background, axes, titles, legends and the faint raw curves in the application palette's colours."""
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
