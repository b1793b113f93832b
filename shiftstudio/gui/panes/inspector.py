"""The batch inspector: a row of the current batch, inputs above the targets they are scored against.

The engine sends a :class:`~shiftstudio.core.train.reports.BatchViewReport` every log
interval: one row's input ids ``x[0..T-1]``, for each horizon ``k`` the
targets ``x[k..T-1+k]`` with their per-position loss and mask, and the model's
top-5 guesses. :class:`~shiftstudio.gui.widgets.shift_view.ShiftView` draws the inputs as a strip of cells and,
under them, one strip per horizon shifted right by ``k`` cells, so that each
target sits under the input it continues; the selected column gets an arrow
from input ``t`` to each of its targets ``t + k``. Targets are coloured by loss
(or by the probability the model gave them); unscored ones (mask 0) are grey.

Updates arrive as fast as training logs; the pane redraws at most
``REDRAW_HZ`` times a second and "Freeze" holds the batch on screen.

Laid out for a short dock: the details of a position sit beside the strips
(one column per horizon, never taller than the top 5), and when the K target
strips do not all fit they scroll together under the input strip, which stays
at the top.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from PySide6.QtCore import QSize, Qt, QTimer
from PySide6.QtWidgets import (
    QCheckBox, QComboBox, QFrame, QHBoxLayout, QLabel, QListWidget, QListWidgetItem, QScrollArea, QSizePolicy,
    QSpinBox, QSplitter, QTextBrowser, QVBoxLayout, QWidget,
)

from shiftstudio.core.errors import ShiftStudioError
from shiftstudio.core.runs.layout import RunLayout
from shiftstudio.core.train.control import ViewRequest
from shiftstudio.gui.panes import Pane, PaneContext
from shiftstudio.gui.run_controller import RunController
from shiftstudio.gui.widgets.elided_label import ElidedLabel
from shiftstudio.gui.widgets.shift_view import (
    GAP, PLACEHOLDER, ROW_H, BatchModel, ColourLegend, ShiftView, visible_token,
)

if TYPE_CHECKING:
    from shiftstudio.core.data.tokenizer import TextTokenizer

log = logging.getLogger(__name__)

REDRAW_HZ = 4
MAX_SAMPLES = 200
DETAIL_COLUMN_W = 140  # pixels a horizon's column of details takes, about


FOLLOWED_PLACEHOLDER = "This run trains in another process: its batches are not logged, so none shows here."


class _StripsArea(QScrollArea):
    """The strips' scroll area: it asks for the height of every strip (its maximum height), so that the
    layout gives it that before the samples list gets the rest."""

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        hint = super().sizeHint()
        return QSize(hint.width(), max(self.minimumHeight(), min(self.maximumHeight(), 2000)))


class InspectorPane(Pane):
    """Row picker, freeze, colour mode, the shift view, details of the selected position, and samples.

    With a :class:`RunController` it follows the runs: their batch views, samples and tokenizers, and it
    asks the trainer for the row picked. Without one (tests, tools) it shows what it is handed.
    """

    title = "Batch inspector"

    def __init__(self, runs: RunController | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        self.runs = runs
        self.tokenizer: TextTokenizer | None = None
        self.vocab_size: int | None = None
        self.batch: BatchModel | None = None
        self._latest = None  # the newest report, drawn on the next tick
        self._dirty = False
        self.reports_seen = 0
        self._build()
        self._timer = QTimer(self)
        self._timer.setInterval(int(1000 / REDRAW_HZ))
        self._timer.timeout.connect(self._tick)
        self._timer.start()
        if runs is not None:
            runs.batch_viewed.connect(self.show_report)
            runs.sampled.connect(self.add_sample)
            runs.run_started.connect(self._on_runs_run_started)
            runs.run_opened.connect(self._on_runs_run_opened)

    @classmethod
    def from_context(cls, ctx: PaneContext) -> Self:
        return cls(ctx.runs)

    def _build(self) -> None:
        self.row = QSpinBox()
        self.row.setObjectName("inspector_row")
        self.row.setToolTip("Which row of the batch to show (the trainer sends the chosen row at every log interval)")
        self.row.setSpecialValueText("cycle")
        self.row.setRange(-1, 4095)
        self.row.setValue(-1)
        self.row.valueChanged.connect(self._on_row_changed)
        self.freeze = QCheckBox("Freeze")
        self.freeze.setObjectName("inspector_freeze")
        self.freeze.setToolTip("Hold the batch on screen; new batches are ignored until you untick this")
        self.colour_by = QComboBox()
        self.colour_by.setObjectName("inspector_colour_by")
        self.colour_by.setToolTip("Colour target cells by their loss, or by the probability the model gave them")
        self.colour_by.addItem("Colour by loss", "loss")
        self.colour_by.addItem("Colour by p(target)", "prob")
        self.colour_by.currentIndexChanged.connect(self._on_colour_changed)
        self.legend = ColourLegend()
        self.view = ShiftView()
        self.view.hovered.connect(self._on_view_hovered)
        self.view.selected.connect(self._on_view_selected)
        self.scroll = _StripsArea()
        self.scroll.setObjectName("inspector_scroll")
        self.scroll.setToolTip(self.view.toolTip())
        self.scroll.setWidget(self.view)
        self.scroll.setWidgetResizable(False)
        self.scroll.verticalScrollBar().valueChanged.connect(self._on_scroll_vertical_value_changed)
        self._fit_scroll()
        self.summary = ElidedLabel("No batch yet.")  # one line (all of it in the tooltip): the strips keep the height
        self.summary.setObjectName("inspector_summary")
        self.details = QTextBrowser()
        self.details.setObjectName("inspector_details")
        self.details.setToolTip("The model's top-5 guesses at the hovered or clicked position, one column per horizon")
        self.details.setMinimumWidth(220)
        self.details.setFrameShape(QFrame.Shape.NoFrame)
        self.details.setLineWrapMode(QTextBrowser.LineWrapMode.NoWrap)  # never taller: more horizons scroll sideways
        self.details.setPlaceholderText("Click or hover a cell: the model's top 5 guesses there, for each horizon.")
        self.samples = QListWidget()
        self.samples.setObjectName("inspector_samples")
        self.samples.setToolTip("A short text sampled at every evaluation: watch the model learn to write")
        self.samples.setWordWrap(True)
        self.samples.setAlternatingRowColors(True)
        self.samples.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Ignored)  # what the strips leave

        top = QHBoxLayout()
        top.addWidget(QLabel("Row"))
        top.addWidget(self.row)
        top.addWidget(self.freeze)
        top.addWidget(self.colour_by)
        top.addStretch(1)
        top.addWidget(self.legend, 2)
        strips = QWidget()
        left = QVBoxLayout(strips)
        left.setContentsMargins(0, 0, 0, 0)
        left.setSpacing(3)
        left.addWidget(self.scroll)
        left.addWidget(self.summary)
        left.addWidget(QLabel("Samples during training"))
        left.addWidget(self.samples, 1)
        self.splitter = QSplitter(Qt.Orientation.Horizontal)  # the details beside the strips: both get the height
        self.splitter.setObjectName("inspector_splitter")
        self.splitter.addWidget(strips)
        self.splitter.addWidget(self.details)
        self.splitter.setStretchFactor(0, 3)
        self.splitter.setStretchFactor(1, 2)
        self.splitter.setCollapsible(0, False)
        self.splitter.setCollapsible(1, False)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 4, 6, 4)
        layout.setSpacing(4)
        layout.addLayout(top)
        layout.addWidget(self.splitter, 1)

    def _fit_scroll(self) -> None:
        """The strips' area: tall enough for every strip when there is room, for the inputs and one target
        strip at least (the rest scroll under the inputs)."""
        frame = 2 * self.scroll.frameWidth() + self.scroll.horizontalScrollBar().sizeHint().height()
        self.scroll.setMaximumHeight(self.view.sizeHint().height() + frame)
        self.scroll.setMinimumHeight(2 * (ROW_H + GAP) + GAP + frame)

    def _size_details(self) -> None:
        """Room beside the strips for a column of details per horizon (up to half the width)."""
        total = sum(self.splitter.sizes())
        wanted = DETAIL_COLUMN_W * self.batch.K + 24 if self.batch is not None else 0
        if total > 0 and wanted:
            side = min(max(wanted, self.details.minimumWidth()), total // 2)
            self.splitter.setSizes([total - side, side])

    def _on_scroll_vertical_value_changed(self, value: int) -> None:
        self.view.set_top(value)

    def _on_view_hovered(self, k: int, t: int) -> None:
        self._show_position(k, t)

    def _on_view_selected(self, k: int, t: int) -> None:
        self._show_position(k, t)

    # -- data in --------------------------------------------------------------------
    def _on_runs_run_started(self, report: Any) -> None:
        self.set_run(report.run_dir)
        if self.runs is not None and self.runs.following:  # batch views are not logged: a followed run has none
            self.batch = self._latest = None
            self._dirty = False
            self.view.set_model(None)
            self.view.set_placeholder(FOLLOWED_PLACEHOLDER)
            self.summary.setText("No batch: the run trains in another process.")
        else:
            self.view.set_placeholder(PLACEHOLDER)

    def _on_runs_run_opened(self, run_dir: Path, records: list) -> None:
        self.set_run(run_dir)

    def set_run(self, run_dir: str | Path | None) -> None:
        """Load the run's tokenizer (for token texts) and clear the samples of the previous run."""
        if run_dir is None:
            return
        try:
            from shiftstudio.core.data.tokenizer import TextTokenizer

            self.set_tokenizer(TextTokenizer.load(RunLayout(run_dir).tokenizer_file))
        except (OSError, ShiftStudioError) as exc:
            log.warning("inspector: no tokenizer for %s: %s", run_dir, exc)
            self.tokenizer = None

    def set_tokenizer(self, tokenizer: TextTokenizer | None) -> None:
        if tokenizer is not self.tokenizer:
            self.samples.clear()
        self.tokenizer = tokenizer
        self.vocab_size = None if tokenizer is None else tokenizer.vocab_size

    def token_text(self, token_id: int) -> str:
        if self.tokenizer is None:
            return f"#{token_id}"
        return self.tokenizer.token_text(token_id)

    def show_report(self, report: Any) -> None:
        """Take a batch view (any rate): the newest one is drawn at the next tick unless frozen."""
        self.reports_seen += 1
        if self.freeze.isChecked():
            return
        self._latest = report
        self._dirty = True

    def _tick(self) -> None:
        if self._dirty and self._latest is not None and not self.freeze.isChecked():
            self._dirty = False
            self.draw_report(self._latest)

    def draw_report(self, report: Any) -> None:
        horizons = self.batch.K if self.batch is not None else 0
        self.batch = BatchModel(report, self.token_text)
        self.view.set_model(self.batch, self.vocab_size)
        self._fit_scroll()
        if self.batch.K != horizons:
            self._size_details()
        self.legend.scale = self.view.scale
        self.legend.update()
        self.summary.setText(self.batch.summary())
        if self.view.selected_t is not None:
            self._show_position(1, self.view.selected_t)

    def add_sample(self, report: Any) -> None:
        item = QListWidgetItem(f"step {report.step}: {report.prompt}{report.text}")
        item.setToolTip(f"Sampled at step {report.step} from the prompt {report.prompt!r}")
        self.samples.addItem(item)
        while self.samples.count() > MAX_SAMPLES:
            self.samples.takeItem(0)
        self.samples.scrollToBottom()

    # -- controls ---------------------------------------------------------------------
    def select_column(self, t: int | None, horizon: int = 1) -> None:
        """Select input column ``t`` as a click would: it stays marked and its details show."""
        self.view.select(t)
        if t is not None:
            rect = self.view.cell_rect(0, t)
            self.scroll.ensureVisible(int(rect.center().x()), int(rect.center().y()), int(rect.width() * 4), 0)
            self._show_position(horizon, t)

    def _on_row_changed(self, row: int) -> None:
        runs = self.runs
        if runs is not None:
            runs.set_views(ViewRequest(row=None if row < 0 else row))

    def _on_colour_changed(self) -> None:
        mode = self.colour_by.currentData()
        self.view.colour_by = self.legend.colour_by = mode
        self.view.update()
        self.legend.update()

    def _show_position(self, k: int, t: int) -> None:
        """The details of input column ``t``: its input, then one column per horizon (target, loss, p, rank, top 5)."""
        if self.batch is None:
            return
        b = self.batch
        head = f"<b>input t={t}</b>: {_token(b, b.inputs[t])}"
        targets, stats, ranks, rows = [], [], [], [[] for _ in range(5)]
        for horizon in range(1, b.K + 1):
            p = b.position(horizon, t)
            rank = f"rank {p.rank}" if p.rank else "not in the top 5"
            state = " · <i>not scored (mask 0)</i>" if not p.scored else ""
            targets.append(f"<td colspan='3'><b>target t+{horizon}</b>: {_token(b, p.target)}&nbsp;&nbsp;</td>")
            stats.append(f"<td colspan='3'>loss {p.loss:.3f} · p = {100 * p.prob:.1f}%</td>")
            ranks.append(f"<td colspan='3'>{rank}{state}</td>")
            for i in range(5):
                if i < len(p.top):
                    token, prob = p.top[i]
                    mark = "◀" if token == p.target else ""
                    rows[i].append(f"<td>{_html(visible_token(b.text(token)))}</td>"
                                   f"<td align='right'>&nbsp;{100 * prob:.1f}%</td><td>{mark}&nbsp;&nbsp;</td>")
                else:
                    rows[i].append("<td colspan='3'></td>")
        table = "".join(f"<tr>{''.join(cells)}</tr>" for cells in (targets, stats, ranks, *rows))
        self.details.setHtml(f"{head}<table cellspacing='0' cellpadding='1'>{table}</table>")


def _token(batch: BatchModel, token_id: Any) -> str:
    return f"{_html(visible_token(batch.text(token_id)))} <small>(id {int(token_id)})</small>"


def _html(text: str) -> str:
    import html

    return html.escape(text)


if __name__ == "__main__":
    import sys

    from shiftstudio.gui.panes import preview

    sys.exit(preview(InspectorPane, open_sample=False))
