"""Runs side by side: their curves overlaid, a table of what differs and where each got to, their samples.

``CompareView().set_runs(paths)`` reads the runs' ``run.json`` and
``metrics.jsonl`` in a :class:`~shiftstudio.gui.workers.Task`: five runs of
50,000 steps took ~4 s on a 2-core machine (``benchmarks/bench_compare.py``),
most of it parsing JSON, far too long for the GUI thread. Then it shows:

* two plots, the smoothed training loss and head 1's validation loss, one
  colour per run from the Okabe–Ito palette (told apart with any colour
  vision), with the Train pane's toolbar (smoothing, log y, x as steps,
  tokens or wall time, Fit) and a legend of the runs' names above them;
* a table, one column per run: the settings that differ, then the best and
  last validation loss, steps done of those planned, tokens and wall time
  (:meth:`~shiftstudio.core.runs.compare.Comparison.rows`, as the CLI prints);
* each run's sample at a chosen step, side by side (the slider runs over the
  steps where any run sampled; each run shows its last sample at or before).

The curves are drawn as the Train pane's are (see :mod:`shiftstudio.gui.plots`):
items built once per run, fed with points clipped to the view and peak
downsampled from cached max/min buckets, ranges set only when they must move.
A folder that is not a readable run is left out with a message; the rest
are shown. ``python -m shiftstudio.gui.compare_view RUN RUN...`` opens the view alone.
"""

from __future__ import annotations

import bisect
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, Qt, Signal
from PySide6.QtGui import QColor, QIcon, QPalette, QPixmap
from PySide6.QtWidgets import (
    QApplication, QHBoxLayout, QLabel, QPlainTextEdit, QSizePolicy, QSlider, QSplitter, QTableWidget, QTableWidgetItem,
    QVBoxLayout, QWidget,
)

from shiftstudio.config import field_index, help_text
from shiftstudio.core.errors import Cancelled, ShiftStudioError, one_line
from shiftstudio.gui.metrics_store import Ema, MetricsStore
from shiftstudio.gui.plot_canvas import LINE, new_plot, style_axes
from shiftstudio.gui.plot_controls import X_MODES, PlotToolbar, ToolbarOptions
from shiftstudio.gui.plot_items import CurveItem, _Trace, peak_downsample, sticky_range
from shiftstudio.gui.widgets import named
from shiftstudio.gui.widgets.message_bar import MessageBar
from shiftstudio.gui.workers import Task

if TYPE_CHECKING:
    from shiftstudio.core.runs.compare import Comparison, RunFigures, SampleRecord

# Okabe & Ito's colour-blind-safe palette, black left out (unseen on a dark theme), yellow last (faint on white);
# past seven runs the colours repeat.
OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442")
PLOTS = {"train": "Training loss (smoothed)", "val": "Validation loss (head 1)"}
READ_KINDS = ("train", "eval", "sample", "finished")
SYMBOL_SPACING_PX = 12  # evaluations get a dot while they are at least this far apart on average (dots cost)


def run_color(index: int) -> str:
    """The colour of the ``index``-th run (0-based)."""
    return OKABE_ITO[index % len(OKABE_ITO)]


def _swatch(color: str) -> QIcon:
    """A small square of ``color``: the run's colour beside its name in the table (readable on any theme)."""
    pixmap = QPixmap(12, 12)
    pixmap.fill(QColor(color))
    return QIcon(pixmap)


@dataclass
class LoadedRun:
    """One run read back: its figures, its curves' data and its samples (by step)."""

    path: Path
    figures: RunFigures
    store: MetricsStore
    samples: list[SampleRecord]
    ema: Ema = field(default_factory=Ema)


@dataclass
class LoadedRuns:
    runs: list[LoadedRun]
    problems: list[str]  # one line per folder that could not be read


def read_runs(paths: Sequence[Path]) -> Callable[..., LoadedRuns]:
    """The task that reads ``paths`` (in a worker thread): every readable run, and a line for each other one."""

    def work(progress: Callable[..., None], cancel: Callable[[], bool]) -> LoadedRuns:
        from shiftstudio.core.runs.compare import run_figures, samples_of
        from shiftstudio.core.runs.metrics import read_metrics

        runs, problems = [], []
        for i, path in enumerate(paths):
            if cancel():
                raise Cancelled()
            progress(i, len(paths))
            try:
                records = read_metrics(path, READ_KINDS)
                figures = run_figures(path, records)
            except (ShiftStudioError, OSError) as exc:
                problems.append(one_line(exc))
                continue
            store = MetricsStore()
            store.load_records(records)
            runs.append(LoadedRun(path, figures, store, samples_of(records)))
        return LoadedRuns(runs, problems)

    return work


HEADER_CHARS = 16  # a run's column header: the colour and the start of its name (the legend shows it whole)


class CompareView(ToolbarOptions, QWidget):
    """Several runs at once: curves, a table of differences and figures, samples at a step.

    :meth:`set_runs` reads the runs off the GUI thread; ``runs_loaded`` is
    emitted once they are on screen (or the message says why not).
    """

    runs_loaded = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("compare_view")
        self.x_mode = "step"
        self.smoothing = 0.9  # heavier than the Train pane's: several noisy curves overlaid read as one band
        self.log_y = False
        self.follow = True  # ranges fit the data (until the user pans or zooms)
        self._paths: list[Path] = []
        self._loaded: list[LoadedRun] = []
        self._comparison: Comparison | None = None
        self._task: Task | None = None
        self._dropped: list[Task] = []  # tasks of earlier sets, cancelled, maybe still finishing a run
        self._traces: dict[str, list[_Trace]] = {key: [] for key in PLOTS}
        self._ranges: dict[str, tuple[float, float] | None] = {}
        self._setting_range = False
        self._syncing_x = False
        self._sample_steps: list[int] = []  # where any run sampled

        self.messages = MessageBar(self, "compare_message_bar")
        self.toolbar = PlotToolbar(self.smoothing, self)
        for control in (self.toolbar.horizons_check, self.toolbar.export_png_button, self.toolbar.export_csv_button):
            control.hide()  # (one horizon is compared: head 1's; exports are the Train pane's)
        self.legend = named(QLabel(" ", self), "compare_legend_label", "The runs and their colours")
        self.legend.setTextFormat(Qt.TextFormat.RichText)
        self.legend.setWordWrap(True)
        self.graphics = pg.GraphicsLayoutWidget(self)
        self.graphics.setObjectName("compare_plot_canvas")
        self.graphics.setMinimumSize(360, 200)
        self.plots = {key: new_plot(self.graphics, 0, col) for col, key in enumerate(PLOTS)}
        self.items: dict[str, list[CurveItem]] = {key: [] for key in PLOTS}
        for plot in self.plots.values():
            box = plot.getViewBox()
            box.sigRangeChangedManually.connect(self._on_view_range_changed_manually)
            box.sigXRangeChanged.connect(self._on_view_x_range_changed)
            box.sigResized.connect(self._on_view_resized)
            plot.setLabel("bottom", X_MODES[self.x_mode][1])
        self.table = named(QTableWidget(self), "compare_table", "The settings in which the runs differ, then where each got to")
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.step_slider = named(QSlider(Qt.Orientation.Horizontal, self), "compare_step_slider",
                                 "The step whose samples are shown: each run's last sample at or before it")
        self.step_slider.setEnabled(False)
        self.step_label = named(QLabel("No samples", self), "compare_step_label", "The step whose samples are shown")
        self.sample_titles: list[QLabel] = []
        self.sample_texts: list[QPlainTextEdit] = []
        self._samples_row = QHBoxLayout()

        samples = QWidget()
        step_row = QHBoxLayout()
        step_row.addWidget(QLabel("Samples at", samples))
        step_row.addWidget(self.step_slider, 1)
        step_row.addWidget(self.step_label)
        column = QVBoxLayout(samples)
        column.setContentsMargins(0, 0, 0, 0)
        column.addLayout(step_row)
        column.addLayout(self._samples_row, 1)
        # the curves, and beside them the differences and figures (a column a run); the samples under both
        self.table.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Expanding)  # the splitter decides
        self.table.setMinimumWidth(200)
        top = QSplitter(Qt.Orientation.Horizontal)
        top.addWidget(self.graphics)
        top.addWidget(self.table)
        top.setStretchFactor(0, 2)
        top.setStretchFactor(1, 1)
        self._top, self._sized = top, False
        split = QSplitter(Qt.Orientation.Vertical, self)
        split.addWidget(top)
        split.addWidget(samples)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.messages)
        layout.addWidget(self.toolbar)
        layout.addWidget(self.legend)
        layout.addWidget(split, 1)

        self.toolbar.smoothing_changed.connect(self._on_toolbar_smoothing_changed)
        self.toolbar.log_y_toggled.connect(self._on_toolbar_log_y_toggled)
        self.toolbar.x_mode_changed.connect(self._on_toolbar_x_mode_changed)
        self.toolbar.fit_requested.connect(self._on_toolbar_fit_requested)
        self.step_slider.valueChanged.connect(self._on_step_slider_value_changed)
        self.apply_palette()

    # -- runs ----------------------------------------------------------------
    @property
    def runs(self) -> list[Path]:
        """The run folders asked for (by :meth:`set_runs`), shown or still being read."""
        return list(self._paths)

    @property
    def comparison(self) -> Comparison | None:
        """What the table shows: the runs read (folders that could not be read are left out)."""
        return self._comparison

    def set_runs(self, run_dirs: Sequence[str | Path]) -> None:
        """Show ``run_dirs`` (read in a worker thread; a set still being read is dropped)."""
        self._paths = list(dict.fromkeys(Path(p) for p in run_dirs))
        if self._task is not None:
            self._task.progressed.disconnect(self._on_task_progressed)
            self._task.succeeded.disconnect(self._on_task_succeeded)
            self._task.failed.disconnect(self._on_task_failed)
            self._task.cancel()
            self._dropped = [t for t in self._dropped if t.is_running()] + [self._task]
            self._task = None
        if not self._paths:
            self._show(LoadedRuns([], []))
            return
        self.legend.setText(f"Reading {len(self._paths)} run{'s' if len(self._paths) != 1 else ''}…")
        self._task = Task(read_runs(self._paths), "Reading runs")
        self._task.progressed.connect(self._on_task_progressed)
        self._task.succeeded.connect(self._on_task_succeeded)
        self._task.failed.connect(self._on_task_failed)
        self._task.start()

    def shutdown(self) -> bool:
        """Stop reading runs and wait for the threads (the window calls this as it closes); True when none is left."""
        tasks = [*self._dropped, *([self._task] if self._task else [])]
        return all([task.wait(10_000) for task in tasks])  # (a list: every one is waited for)

    def _on_task_progressed(self, phase: str, done: object, total: object) -> None:
        self.legend.setText(f"Reading run {int(done) + 1} of {total}…")

    def _on_task_succeeded(self, loaded: LoadedRuns) -> None:
        self._task = None
        self._show(loaded)

    def _on_task_failed(self, message: str, detail: str, expected: bool) -> None:
        self._task = None
        self._show(LoadedRuns([], []))
        self.messages.show_message(f"Could not read the runs: {message}", "error", detail)

    def _show(self, loaded: LoadedRuns) -> None:
        self._make_items(len(loaded.runs))
        self._loaded, self._traces = loaded.runs, {key: [_Trace() for _ in loaded.runs] for key in PLOTS}
        self._comparison = None
        if loaded.runs:
            from shiftstudio.core.runs.compare import Comparison  # (the worker imported it: torch is loaded)

            self._comparison = Comparison.of([r.figures for r in loaded.runs])
        if loaded.problems:
            shown = len(self._paths) - len(loaded.problems)
            level = "warning" if shown else "error"
            self.messages.show_message(f"Could not read {len(loaded.problems)} of {len(self._paths)} runs: "
                                       + "; ".join(loaded.problems), level)
        else:
            self.messages.clear()
        self._update_legend()
        self._update_table()
        self._update_samples()
        self.follow = True
        self._ranges.clear()
        self._fit_ranges()
        self._push_data()
        self.runs_loaded.emit()

    # -- curves --------------------------------------------------------------
    def _make_items(self, n: int) -> None:
        """A training and a validation curve for each of ``n`` runs, in its colour (made once, then reused)."""
        for key, plot in self.plots.items():
            items = self.items[key]
            while len(items) < n:
                color = run_color(len(items))
                opts: dict[str, Any] = {"symbol": "o", "symbolSize": 5, "symbolBrush": color, "symbolPen": None} if key == "val" else {}
                items.append(CurveItem(pen=pg.mkPen(color, width=2), **opts))
                plot.addItem(items[-1])
            for i, item in enumerate(items):
                item.setVisible(i < n)
                if i >= n:
                    item.set_points(np.empty(0), np.empty(0), peaks=False)

    def sources(self, key: str) -> list[tuple[np.ndarray, np.ndarray, Any]]:
        """Per run, the (x, y, cache key) of plot ``key``'s curve: the whole curve, before clipping."""
        column = X_MODES[self.x_mode][0]
        out = []
        for run in self._loaded:
            steps, evals = run.store.steps, run.store.evals
            if key == "train":
                out.append((steps[column], run.ema(steps["loss"], self.smoothing), ("smooth", self.smoothing)))
            else:
                out.append((evals[column], evals["val_loss"], "val"))
        return out

    def curve(self, index: int, key: str) -> CurveItem:
        """Run ``index``'s curve in plot ``key`` ('train' or 'val')."""
        return self.items[key][index]

    def _push_data(self) -> None:
        """setData on the curves whose data or view changed, clipped to the view and peak downsampled."""
        for key, plot in self.plots.items():
            box = plot.getViewBox()
            view = tuple(box.viewRange()[0])
            width = round(box.width())
            for i, (x, y, data_key) in enumerate(self.sources(key)):
                trace = self._traces[key][i]
                signature = (data_key, self.x_mode, view, width)
                if trace.shown == signature:
                    continue  # nothing new: no setData, no repaint
                trace.shown = signature
                xs, ys, trace.ds = peak_downsample(x, y, view, width, trace.cache, data_key, trace.ds)
                item = self.items[key][i]
                if key == "val":  # a dot per evaluation while they are sparse (a run evaluated once is a dot)
                    symbol = "o" if len(xs) * SYMBOL_SPACING_PX <= width else None
                    if item.opts["symbol"] != symbol:
                        item.setSymbol(symbol)
                item.set_points(xs, ys, peaks=trace.ds > 1)

    def _fit_ranges(self) -> None:
        """x from 0 to the longest run, each y to its curves; a range moves only when the data no longer fits it."""
        x_hi = 0.0
        ranges: dict[str, tuple[float, float] | None] = {}
        for key in PLOTS:
            lo, hi = math.inf, -math.inf
            for i, (x, y, data_key) in enumerate(self.sources(key)):
                finite = x[np.isfinite(x)] if len(x) else x
                x_hi = max(x_hi, float(finite.max()) if len(finite) else 0.0)
                item_lo, item_hi = self._traces[key][i].extent.update(y, data_key).bounds(self.log_y)
                lo, hi = min(lo, item_lo), max(hi, item_hi)
            ranges[key] = sticky_range(self._ranges.get(key), lo, hi)
        target = x_hi or 1.0
        ranges["x"] = (0.0, target)
        self._setting_range = True
        try:
            if ranges["x"] != self._ranges.get("x"):
                self.plots["train"].getViewBox().setXRange(-0.01 * target, 1.01 * target, padding=0)
            for key, plot in self.plots.items():
                if ranges[key] is not None and ranges[key] != self._ranges.get(key):
                    plot.getViewBox().setYRange(*ranges[key], padding=0)
        finally:
            self._setting_range = False
        self._ranges = ranges

    def _on_view_range_changed_manually(self, *args: Any) -> None:
        if not self._setting_range:
            self.follow = False

    def _on_view_x_range_changed(self, box: pg.ViewBox, x_range: tuple[float, float]) -> None:
        """One x axis for both plots; panned or zoomed: clip and downsample for the new view at once."""
        if self._syncing_x:
            return
        self._syncing_x = True
        try:
            for plot in self.plots.values():
                if plot.getViewBox() is not box:
                    plot.getViewBox().setXRange(*x_range, padding=0)
        finally:
            self._syncing_x = False
        if not self._setting_range:
            self._push_data()

    def _on_view_resized(self, *args: Any) -> None:
        self._push_data()  # (another width: maybe another bucket size)

    def _refit(self) -> None:
        if self.follow:
            self._fit_ranges()
        self._push_data()

    # -- view options (the toolbar's) ----------------------------------------
    def _on_toolbar_smoothing_changed(self, weight: float) -> None:
        self.smoothing = weight
        self._refit()

    def _on_toolbar_log_y_toggled(self, on: bool) -> None:
        self.log_y = on
        for key, plot in self.plots.items():
            plot.setLogMode(x=False, y=on)
            self._ranges.pop(key, None)
        self._refit()

    def _on_toolbar_x_mode_changed(self, mode: str) -> None:
        self.x_mode = mode
        for plot in self.plots.values():
            plot.getAxis("bottom").set_mode(mode)
            plot.setLabel("bottom", X_MODES[mode][1])
        self.follow = True
        self._ranges.clear()
        self._refit()

    def _on_toolbar_fit_requested(self) -> None:
        self.follow = True
        self._ranges.clear()
        self._refit()

    def showEvent(self, event) -> None:  # noqa: N802 - Qt's name
        super().showEvent(event)
        if not self._sized:  # the first time it has a width: two thirds to the curves, a third to the table
            self._sized = True
            width = max(self._top.width(), 600)
            self._top.setSizes([width * 2 // 3, width - width * 2 // 3])

    # -- legend and table ----------------------------------------------------
    def legend_entries(self) -> list[tuple[str, str]]:
        """(label, colour) of each run shown."""
        labels = self._comparison.labels if self._comparison else []
        return [(label, run_color(i)) for i, label in enumerate(labels)]

    def _update_legend(self) -> None:
        runs = "&nbsp;&nbsp;".join(f"<span style='color:{colour}'>{LINE}</span>&nbsp;{label}"
                                   for label, colour in self.legend_entries())
        self.legend.setText(runs or "No runs to compare")

    def _update_table(self) -> None:
        rows = self._comparison.rows() if self._comparison else []
        labels = self._comparison.labels if self._comparison else []
        self.table.clear()
        self.table.setRowCount(len(rows))
        self.table.setColumnCount(len(labels))
        for col, label in enumerate(labels):
            short = label if len(label) <= HEADER_CHARS else label[: HEADER_CHARS - 1] + "…"  # the legend has it whole
            header = QTableWidgetItem(_swatch(run_color(col)), short)
            header.setToolTip(f"{label}\n{self._loaded[col].path}")
            self.table.setHorizontalHeaderItem(col, header)
        for row, (name, cells) in enumerate(rows):
            header = QTableWidgetItem(name)
            if name in field_index():
                header.setToolTip(help_text(name))
            self.table.setVerticalHeaderItem(row, header)
            for col, text in enumerate(cells):
                self.table.setItem(row, col, QTableWidgetItem(text))
        self.table.resizeColumnsToContents()

    # -- samples -------------------------------------------------------------
    @property
    def sample_step(self) -> int | None:
        """The step whose samples are shown (None: no run has any)."""
        return self._sample_steps[self.step_slider.value()] if self._sample_steps else None

    def set_step(self, step: int) -> None:
        """Show each run's sample at or before ``step`` (the slider goes to the last sampled step at or before
        it, or the first one)."""
        if self._sample_steps:
            self.step_slider.setValue(max(0, bisect.bisect_right(self._sample_steps, step) - 1))

    def _update_samples(self) -> None:
        n = len(self._loaded)
        while len(self.sample_texts) < n:
            box = QWidget()
            column = QVBoxLayout(box)
            column.setContentsMargins(0, 0, 0, 0)
            title = QLabel(box)
            text = named(QPlainTextEdit(box), f"compare_sample_text_{len(self.sample_texts)}", "The run's sample at this step")
            text.setReadOnly(True)
            column.addWidget(title)
            column.addWidget(text, 1)
            self._samples_row.addWidget(box, 1)
            self.sample_titles.append(title)
            self.sample_texts.append(text)
        for i, text in enumerate(self.sample_texts):
            text.parentWidget().setVisible(i < n)
        self._sample_steps = sorted({s.step for run in self._loaded for s in run.samples})
        self.step_slider.blockSignals(True)
        self.step_slider.setRange(0, max(0, len(self._sample_steps) - 1))
        self.step_slider.setValue(self.step_slider.maximum())  # the newest samples
        self.step_slider.blockSignals(False)
        self.step_slider.setEnabled(len(self._sample_steps) > 1)
        self._show_samples()

    def _on_step_slider_value_changed(self, _value: int) -> None:
        self._show_samples()

    def _show_samples(self) -> None:
        step = self.sample_step
        self.step_label.setText("No samples" if step is None else f"step {step:,}")
        if not self._loaded:
            return
        from shiftstudio.core.runs.compare import sample_at

        labels = self._comparison.labels if self._comparison else []
        for i, (run, label) in enumerate(zip(self._loaded, labels)):
            sample = None if step is None else sample_at(run.samples, step)
            where = f" · step {sample.step:,}" if sample is not None else ""
            self.sample_titles[i].setText(f"<span style='color:{run_color(i)}'>{LINE}</span> {label}{where}")
            if sample is not None:
                self.sample_texts[i].setPlainText(sample.prompt + sample.text)
            elif run.samples:
                self.sample_texts[i].setPlainText(f"(no sample at or before step {step:,})")
            else:
                self.sample_texts[i].setPlainText("(this run logged no samples)")

    # -- palette -------------------------------------------------------------
    def changeEvent(self, event: QEvent) -> None:  # noqa: N802 - Qt's name
        if event.type() == QEvent.Type.PaletteChange:
            self.apply_palette()
        super().changeEvent(event)

    def apply_palette(self) -> None:
        palette = QApplication.palette()
        background, foreground = palette.color(QPalette.ColorRole.Base), palette.color(QPalette.ColorRole.Text)
        self.graphics.setBackground(background)
        for key, plot in self.plots.items():
            style_axes(plot, background, foreground)
            plot.setTitle(f"<b>{PLOTS[key]}</b>", color=foreground.name(), size="10pt")


def _preview(args: list[str]) -> int:
    """The view alone, on the runs named (default: the three newest in the runs folder)."""
    from shiftstudio import paths
    from shiftstudio.core.runs.layout import is_run_dir
    from shiftstudio.gui import style

    app = QApplication.instance() or QApplication(sys.argv[:1])
    style.apply_theme(app)
    runs = [Path(a) for a in args]
    if not runs:
        found = [p for p in paths.runs_dir().iterdir() if is_run_dir(p)]
        runs = sorted(found, key=lambda p: p.stat().st_mtime)[-3:]
    view = CompareView()
    view.setWindowTitle("ShiftStudio – compare runs")
    view.resize(1200, 800)
    view.show()
    view.set_runs(runs)
    code = app.exec()
    view.shutdown()
    return code


if __name__ == "__main__":
    raise SystemExit(_preview(sys.argv[1:]))
