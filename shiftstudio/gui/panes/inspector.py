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
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import (
    QCheckBox, QComboBox, QHBoxLayout, QLabel, QListWidget, QListWidgetItem, QScrollArea, QSpinBox,
    QSplitter, QTextBrowser, QVBoxLayout, QWidget,
)

from shiftstudio.core.errors import ShiftStudioError
from shiftstudio.core.runs.layout import RunLayout
from shiftstudio.core.train.control import ViewRequest
from shiftstudio.gui.panes import Pane, PaneContext
from shiftstudio.gui.run_controller import RunController
from shiftstudio.gui.widgets.shift_view import GAP, ROW_H, BatchModel, ColourLegend, ShiftView, visible_token

if TYPE_CHECKING:
    from shiftstudio.core.data.tokenizer import TextTokenizer

log = logging.getLogger(__name__)

REDRAW_HZ = 4
MAX_SAMPLES = 200


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
        self.view.hovered.connect(self._show_position)
        self.view.selected.connect(self._show_position)
        self.scroll = QScrollArea()
        self.scroll.setObjectName("inspector_scroll")
        self.scroll.setWidget(self.view)
        self.scroll.setWidgetResizable(False)
        self.scroll.setMinimumHeight(ROW_H * 2 + GAP * 3 + 20)
        self.summary = QLabel("No batch yet.")
        self.summary.setObjectName("inspector_summary")
        self.summary.setWordWrap(True)
        self.summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.details = QTextBrowser()
        self.details.setObjectName("inspector_details")
        self.details.setToolTip("The model's top-5 guesses at the hovered or clicked position")
        self.details.setMinimumWidth(260)
        self.samples = QListWidget()
        self.samples.setObjectName("inspector_samples")
        self.samples.setToolTip("A short text sampled from a fixed prompt at every evaluation: watch the model learn to write")
        self.samples.setWordWrap(True)
        self.samples.setAlternatingRowColors(True)

        top = QHBoxLayout()
        top.addWidget(QLabel("Row"))
        top.addWidget(self.row)
        top.addWidget(self.freeze)
        top.addWidget(self.colour_by)
        top.addStretch(1)
        top.addWidget(self.legend, 2)
        lower = QSplitter(Qt.Orientation.Horizontal)
        details_box = QWidget()
        dl = QVBoxLayout(details_box)
        dl.setContentsMargins(0, 0, 0, 0)
        dl.addWidget(QLabel("Position"))
        dl.addWidget(self.details)
        samples_box = QWidget()
        sl = QVBoxLayout(samples_box)
        sl.setContentsMargins(0, 0, 0, 0)
        sl.addWidget(QLabel("Samples during training"))
        sl.addWidget(self.samples)
        lower.addWidget(details_box)
        lower.addWidget(samples_box)
        lower.setStretchFactor(1, 2)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.scroll)
        layout.addWidget(self.summary)
        layout.addWidget(lower, 1)

    # -- data in --------------------------------------------------------------------
    def _on_runs_run_started(self, report: Any) -> None:
        self.set_run(report.run_dir)

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
        self.batch = BatchModel(report, self.token_text)
        self.view.set_model(self.batch, self.vocab_size)
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
        if self.batch is None:
            return
        b = self.batch
        lines = [f"<b>input t={t}</b>: {_html(visible_token(b.text(b.inputs[t])))} <small>(id {int(b.inputs[t])})</small>"]
        for horizon in range(1, b.K + 1):
            p = b.position(horizon, t)
            rank = f"rank {p.rank}" if p.rank else "not in the top 5"
            state = "" if p.scored else " — <i>not scored (mask 0)</i>"
            lines.append(
                f"<br><b>target t+{horizon}</b>: {_html(visible_token(b.text(p.target)))} <small>(id {p.target})</small>"
                f"<br>loss {p.loss:.3f} · p = {100 * p.prob:.1f}% · {rank}{state}<table>"
            )
            for token, prob in p.top:
                mark = " ◀" if token == p.target else ""
                lines.append(f"<tr><td>{_html(visible_token(b.text(token)))}</td>"
                             f"<td align='right'>&nbsp;{100 * prob:.1f}%</td><td>{mark}</td></tr>")
            lines.append("</table>")
        self.details.setHtml("".join(lines))


def _html(text: str) -> str:
    import html

    return html.escape(text)


if __name__ == "__main__":
    import sys

    from shiftstudio.gui.panes import preview

    sys.exit(preview(InspectorPane, open_sample=False))
