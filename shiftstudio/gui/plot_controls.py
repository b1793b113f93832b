"""The curves' controls: the toolbar above the plots and the read-out line under them.

:class:`PlotToolbar` holds the view options (smoothing, log y, what the x axis
counts) and the Fit / Export buttons, and says what changed through its
signals; :func:`readout_text` is the line that describes the point under the
mouse. Neither draws a curve (see :mod:`shiftstudio.gui.plots`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QCheckBox, QComboBox, QHBoxLayout, QLabel, QPushButton, QSlider, QWidget

from shiftstudio.format import human_count, human_duration, short_float

X_MODES = {"step": ("step", "Step"), "tokens": ("tokens", "Tokens seen"), "time": ("time_s", "Wall time")}
VAL_COLOR = "#e8710a"
# validation loss of heads 2, 3, … (head 1, the headline, is VAL_COLOR); cycled past the eighth
HORIZON_COLORS = ("#c2185b", "#7b1fa2", "#00897b", "#6d4c41", "#1e88e5", "#9e9d24", "#546e7a", "#d81b60")
HORIZONS_TIP = ("Show the validation loss of every horizon t+1 … t+K, not only t+1 (next-token prediction, "
                "the headline that runs of any shift are compared on)")


def horizon_color(k: int) -> str:
    """The colour of head ``k``'s validation curve (1-based; head 1 is the headline's)."""
    return VAL_COLOR if k <= 1 else HORIZON_COLORS[(k - 2) % len(HORIZON_COLORS)]


class ToolbarOptions:
    """The view options of a curves view that has a :class:`PlotToolbar` as ``self.toolbar`` (the window restores
    them, tests set them): setting one goes through the toolbar, which says so to the view like a click would."""

    toolbar: "PlotToolbar"

    def set_smoothing(self, weight: float) -> None:
        self.toolbar.set_smoothing(weight)

    def set_x_mode(self, mode: str) -> None:
        self.toolbar.set_x_mode(mode)

    def set_log_y(self, on: bool) -> None:
        self.toolbar.set_log_y(on)


class PlotToolbar(QWidget):
    """Smoothing slider, "Log y", the x axis combo, Fit, Export PNG and Export CSV."""

    smoothing_changed = Signal(float)  # 0 … 0.99
    log_y_toggled = Signal(bool)
    x_mode_changed = Signal(str)  # a key of X_MODES
    horizons_toggled = Signal(bool)
    fit_requested = Signal()
    export_png_requested = Signal()
    export_csv_requested = Signal()

    def __init__(self, smoothing: float, parent: QWidget | None = None):
        super().__init__(parent)
        bar = QHBoxLayout(self)
        bar.setContentsMargins(0, 0, 0, 0)
        smooth_label = QLabel("Smoothing", self)
        self.smoothing_slider = QSlider(Qt.Horizontal, self)
        self.smoothing_slider.setObjectName("plot_smoothing_slider")
        self.smoothing_slider.setRange(0, 99)
        self.smoothing_slider.setValue(int(smoothing * 100))
        self.smoothing_slider.setMaximumWidth(160)
        self.smoothing_slider.setToolTip("Exponential moving average of the training curves, as in TensorBoard (0 = raw, 0.99 = very smooth)")
        smooth_label.setToolTip(self.smoothing_slider.toolTip())
        self.smoothing_value = QLabel(f"{smoothing:.2f}", self)
        self.smoothing_value.setMinimumWidth(32)
        self.log_y_check = QCheckBox("Log y", self)
        self.log_y_check.setObjectName("plot_log_y_checkbox")
        self.log_y_check.setToolTip("Logarithmic y axis for loss and perplexity")
        self.horizons_check = QCheckBox("Every horizon", self)
        self.horizons_check.setObjectName("plot_horizons_checkbox")
        self.set_horizons(1)
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
        bar.addWidget(self.horizons_check)
        bar.addSpacing(12)
        bar.addWidget(x_label)
        bar.addWidget(self.x_combo)
        bar.addStretch(1)
        bar.addWidget(self.fit_button)
        bar.addWidget(self.export_png_button)
        bar.addWidget(self.export_csv_button)
        self.smoothing_slider.valueChanged.connect(self._on_smoothing_slider_value_changed)
        self.log_y_check.toggled.connect(self.log_y_toggled)
        self.horizons_check.toggled.connect(self.horizons_toggled)
        self.x_combo.currentIndexChanged.connect(self._on_x_combo_index_changed)
        self.fit_button.clicked.connect(self.fit_requested)
        self.export_png_button.clicked.connect(self.export_png_requested)
        self.export_csv_button.clicked.connect(self.export_csv_requested)

    def set_smoothing(self, weight: float) -> None:
        self.smoothing_slider.setValue(int(round(min(max(weight, 0.0), 0.99) * 100)))

    def set_x_mode(self, mode: str) -> None:
        index = self.x_combo.findData(mode)
        if index >= 0:
            self.x_combo.setCurrentIndex(index)

    def set_log_y(self, on: bool) -> None:
        self.log_y_check.setChecked(on)

    def set_horizons(self, k: int) -> None:
        """The run has ``k`` horizons: "Every horizon" is only offered when there is more than one."""
        self.horizons_check.setEnabled(k > 1)
        self.horizons_check.setToolTip(HORIZONS_TIP if k > 1 else HORIZONS_TIP + ". This run has one horizon (shift = 1).")

    def _on_smoothing_slider_value_changed(self, value: int) -> None:
        weight = value / 100
        self.smoothing_value.setText(f"{weight:.2f}")
        self.smoothing_changed.emit(weight)

    def _on_x_combo_index_changed(self, index: int) -> None:
        self.x_mode_changed.emit(self.x_combo.itemData(index) or "step")


def readout_text(steps: Any, evals: Any, i: int, smoothed_loss: float, x_column: str, horizons: int = 1) -> str:
    """The read-out line (rich text) for step row ``i`` of ``steps`` and the last evaluation at or before it.

    ``steps`` and ``evals`` are the metrics store's series; ``x_column`` is the column the x axis shows. With
    ``horizons`` > 1 the validation loss of each head follows the headline (head 1's).
    """
    parts = [
        f"<b>step {int(steps['step'][i]):,}</b>",
        f"{human_count(steps['tokens'][i])} tokens",
        human_duration(steps["time_s"][i]),
        f"loss{' (all heads)' if horizons > 1 else ''} <b>{short_float(steps['loss'][i])}</b> (smoothed {short_float(smoothed_loss)})",
        f"lr {short_float(steps['lr'][i])}",
        f"grad {short_float(steps['grad_norm'][i])}",
        f"{human_count(steps['tokens_per_s'][i])} tok/s",
    ]
    if len(evals):
        j = int(np.searchsorted(evals[x_column], steps[x_column][i], side="right")) - 1
        if j >= 0:
            head = " t+1" if horizons > 1 else ""
            parts.append(
                f"<span style='color:{VAL_COLOR}'>val{head} <b>{short_float(evals['val_loss'][j])}</b>"
                f" (ppl {short_float(evals['val_ppl'][j])}) @ {int(evals['step'][j]):,}</span>"
            )
            for k in range(2, horizons + 1):
                value = evals[f"val_loss_h{k}"][j]
                if np.isfinite(value):
                    parts.append(f"<span style='color:{horizon_color(k)}'>t+{k} {short_float(value)}</span>")
    return " · ".join(parts)
