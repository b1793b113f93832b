"""Export PNG: the Train pane's plots drawn again off screen, at a size of their own.

A grab of the plots on screen is as small as the pane happens to be (short
when a message bar takes its height); :func:`render_plots` builds a second
:class:`~shiftstudio.gui.plot_canvas.PlotCanvas` that is never shown, gives it
the view's options, ranges and curves (clipped and peak downsampled for its
own width) and draws it at the size asked for. The legends are in the plots'
titles, so they never cover the data, on screen or in the file.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QImage

from shiftstudio.gui.plot_canvas import PlotCanvas
from shiftstudio.gui.plot_items import PeakCache, peak_downsample

if TYPE_CHECKING:
    from shiftstudio.gui.plots import CurvesView


def render_plots(view: CurvesView, size: QSize) -> QImage:
    """``view``'s plots (ranges, x axis, log y, horizons, curves) drawn at ``size`` logical pixels."""
    canvas = PlotCanvas()
    canvas.setAttribute(Qt.WidgetAttribute.WA_DontShowOnScreen, True)
    try:
        canvas.set_x_mode(view.x_mode)
        canvas.set_horizons(view.store.horizons, view.show_horizons)
        canvas.apply_palette()
        canvas.resize(size)
        canvas.show()
        canvas.ci.layout.activate()
        sources = view.sources()
        for key, names in canvas.plot_items.items():
            plot = canvas.plots[key]
            plot.setLogMode(x=False, y=view.log_y and key in ("loss", "ppl"))
            (x0, x1), (y0, y1) = view.plots[key].getViewBox().viewRange()
            box = plot.getViewBox()
            box.setRange(xRange=(x0, x1), yRange=(y0, y1), padding=0)
            for name in names:
                if not canvas.is_shown(name):
                    continue
                x, y, data_key = sources[name]
                xs, ys, ds = peak_downsample(x, y, (x0, x1), box.width(), PeakCache(), data_key)
                if name == "train_ppl":  # (as on screen: exp of the smoothed loss's points)
                    with np.errstate(over="ignore", invalid="ignore"):
                        ys = np.exp(ys)
                canvas.items[name].set_points(xs, ys, peaks=ds > 1)
        return canvas.grab().toImage()
    finally:
        canvas.close()
        canvas.deleteLater()
