"""The batch inspector: a row of the current batch, inputs above the targets they are scored against.

The engine sends a :class:`~shiftstudio.core.reports.BatchViewReport` every log
interval: one row's input ids ``x[0..T-1]``, for each horizon ``k`` the
targets ``x[k..T-1+k]`` with their per-position loss and mask, and the model's
top-5 guesses. :class:`ShiftView` draws the inputs as a strip of cells and,
under them, one strip per horizon shifted right by ``k`` cells, so that each
target sits under the input it continues; the selected column gets an arrow
from input ``t`` to each of its targets ``t + k``. Targets are coloured by loss
(or by the probability the model gave them); unscored ones (mask 0) are grey.

Updates arrive as fast as training logs; the pane redraws at most
``REDRAW_HZ`` times a second and "Freeze" holds the batch on screen.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QPointF, QRectF, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QFont, QFontMetrics, QLinearGradient, QPainter, QPainterPath, QPen, QPolygonF
from PySide6.QtWidgets import (
    QCheckBox, QComboBox, QHBoxLayout, QLabel, QListWidget, QListWidgetItem, QScrollArea, QSizePolicy, QSpinBox,
    QSplitter, QTextBrowser, QVBoxLayout, QWidget,
)

log = logging.getLogger(__name__)

REDRAW_HZ = 4
MAX_LOSS_SCALE = 8.0  # the loss colour scale runs 0 .. min(max loss, ln V, this)
MIN_CELL, MAX_CELL = 22, 96
ROW_H, GAP, LABEL_W = 30, 14, 64
MAX_SAMPLES = 200


def visible_token(text: str) -> str:
    """A token's text with whitespace made visible: ␣ for space (BPE's leading space too), ↵, ⇥."""
    if text == "":
        return "∅"
    return text.replace(" ", "␣").replace("\n", "↵").replace("\r", "␍").replace("\t", "⇥")


def loss_colour(value: float, scale: float) -> QColor:
    """0 (good) green → yellow → red (bad) at ``scale``."""
    f = min(max(value / scale, 0.0), 1.0) if scale > 0 else 0.0
    return QColor.fromHsvF((1 - f) * 0.33, 0.55, 0.97)


def prob_colour(p: float) -> QColor:
    """p(target) 1 (good) green … 0 (bad) red, on the same hues as loss."""
    return QColor.fromHsvF(min(max(p, 0.0), 1.0) * 0.33, 0.55, 0.97)


@dataclass
class Position:
    """What the detail panel shows for one target: horizon k, input column t."""

    k: int
    t: int
    target: int
    loss: float
    prob: float
    rank: int | None  # 1..5, or None when the target is outside the top 5
    scored: bool
    top: list[tuple[int, float]]


class BatchModel:
    """A batch view plus the tokenizer's texts: the numbers the view and the panel read."""

    def __init__(self, report: Any, token_text):
        self.report = report
        self.step = int(report.step)
        self.row = int(report.row)
        self.inputs = np.asarray(report.input_ids)  # (T,)
        self.targets = np.asarray(report.target_ids)  # (K, T)
        self.loss = np.asarray(report.loss, dtype=np.float64)  # (K, T)
        self.mask = np.asarray(report.mask)  # (K, T)
        self.top_ids = np.asarray(report.top_ids)  # (K, T, 5)
        self.top_probs = np.asarray(report.top_probs)  # (K, T, 5)
        self.K, self.T = self.targets.shape
        self._text = token_text

    def text(self, token_id: int) -> str:
        return self._text(int(token_id))

    def position(self, k: int, t: int) -> Position:
        target = int(self.targets[k - 1, t])
        ids = self.top_ids[k - 1, t]
        hits = np.flatnonzero(ids == target)
        top = [(int(i), float(p)) for i, p in zip(ids, self.top_probs[k - 1, t]) if i >= 0]
        loss = float(self.loss[k - 1, t])
        return Position(k, t, target, loss, math.exp(-loss), int(hits[0]) + 1 if hits.size else None,
                        bool(self.mask[k - 1, t] > 0), top)

    def summary(self) -> str:
        parts = []
        for k in range(1, self.K + 1):
            scored = self.mask[k - 1] > 0
            n = int(scored.sum())
            if n == 0:
                parts.append(f"k={k}: nothing scored")
                continue
            losses = np.where(scored, self.loss[k - 1], -np.inf)
            mean = float(self.loss[k - 1][scored].mean())
            correct = int(((self.top_ids[k - 1, :, 0] == self.targets[k - 1]) & scored).sum())
            worst = np.argsort(-losses)[: min(3, n)]
            worst_text = ", ".join(f"t={int(t)} {visible_token(self.text(self.targets[k - 1, t]))!s} ({losses[t]:.2f})" for t in worst)
            head = f"k={k}: " if self.K > 1 else ""
            parts.append(f"{head}mean loss {mean:.3f} · top-1 correct {correct}/{n} · worst {worst_text}")
        return f"step {self.step}, row {self.row} — " + " | ".join(parts)


class ShiftView(QWidget):
    """The painted strips. Emits ``hovered``/``selected`` with (k, t) of a target cell, or k = 0 for an input."""

    hovered = Signal(int, int)
    selected = Signal(int, int)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("inspector_view")
        self.setToolTip("Inputs (top) and, under them, the targets each is scored against, shifted by k; "
                        "click a cell to see the model's top-5 guesses there")
        self.setMouseTracking(True)
        self.model: BatchModel | None = None
        self.colour_by = "loss"
        self.cell = MIN_CELL
        self.selected_t: int | None = None
        self.hover: tuple[int, int] | None = None
        self.scale = MAX_LOSS_SCALE
        self._font = QFont(self.font())
        self._font.setStyleHint(QFont.StyleHint.Monospace)
        self._font.setFamily("monospace")
        self.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Fixed)

    # geometry: column c (0 .. T+K-1) at x = LABEL_W + c * cell; strip 0 = inputs, strip k = targets of horizon k
    def set_model(self, model: BatchModel | None, vocab_size: int | None = None) -> None:
        self.model = model
        if model is not None:
            fm = QFontMetrics(self._font)
            ids = np.unique(np.concatenate([model.inputs, model.targets.ravel()]))
            widest = max((fm.horizontalAdvance(visible_token(model.text(i))) for i in ids[:4096]), default=0)
            self.cell = int(min(MAX_CELL, max(MIN_CELL, widest + 10)))
            scored = model.loss[model.mask > 0]
            top = float(scored.max()) if scored.size else 1.0
            cap = math.log(vocab_size) if vocab_size and vocab_size > 1 else MAX_LOSS_SCALE
            self.scale = max(0.5, min(top, cap, MAX_LOSS_SCALE))
            if self.selected_t is not None and self.selected_t >= model.T:
                self.selected_t = None
        self.updateGeometry()
        self.resize(self.sizeHint())
        self.update()

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt naming
        if self.model is None:
            return QSize(400, ROW_H * 2 + GAP * 2)
        m = self.model
        return QSize(LABEL_W + (m.T + m.K) * self.cell + 8, (m.K + 1) * (ROW_H + GAP) + GAP)

    def strip_y(self, strip: int) -> int:
        return GAP // 2 + strip * (ROW_H + GAP)

    def cell_rect(self, strip: int, t: int) -> QRectF:
        column = t + strip  # a target of horizon k sits k columns right of its input
        return QRectF(LABEL_W + column * self.cell, self.strip_y(strip), self.cell - 2, ROW_H)

    def hit(self, x: float, y: float) -> tuple[int, int] | None:
        if self.model is None or x < LABEL_W:
            return None
        strip = int((y - GAP // 2) // (ROW_H + GAP))
        if not 0 <= strip <= self.model.K or (y - self.strip_y(strip)) > ROW_H:
            return None
        t = int((x - LABEL_W) // self.cell) - strip
        return (strip, t) if 0 <= t < self.model.T else None

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt naming
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        pal = self.palette()
        painter.fillRect(event.rect(), pal.base())
        if self.model is None:
            painter.setPen(pal.placeholderText().color())
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "Start training: the current batch shows here.")
            return
        m = self.model
        painter.setFont(self._font)
        fm = QFontMetrics(self._font)
        left = max(0, int((event.rect().left() - LABEL_W) // self.cell) - m.K - 1)
        right = min(m.T, int((event.rect().right() - LABEL_W) // self.cell) + 2)
        text_pen = QPen(QColor(30, 30, 30))
        for strip in range(m.K + 1):
            y = self.strip_y(strip)
            painter.setPen(pal.text().color())
            painter.drawText(QRectF(4, y, LABEL_W - 8, ROW_H), Qt.AlignmentFlag.AlignVCenter,
                             "input" if strip == 0 else f"t+{strip}")
            for t in range(left, right):
                rect = self.cell_rect(strip, t)
                if strip == 0:
                    token = int(m.inputs[t])
                    painter.setPen(Qt.PenStyle.NoPen)
                    painter.setBrush(pal.alternateBase() if t % 2 else pal.button())
                    painter.drawRoundedRect(rect, 3, 3)
                    painter.setPen(pal.text().color())
                else:
                    token = int(m.targets[strip - 1, t])
                    scored = m.mask[strip - 1, t] > 0
                    if not scored:
                        colour = QColor(190, 190, 190)
                    elif self.colour_by == "loss":
                        colour = loss_colour(float(m.loss[strip - 1, t]), self.scale)
                    else:
                        colour = prob_colour(math.exp(-float(m.loss[strip - 1, t])))
                    painter.setPen(Qt.PenStyle.NoPen)
                    painter.setBrush(colour)
                    painter.drawRoundedRect(rect, 3, 3)
                    painter.setPen(text_pen if scored else QPen(QColor(110, 110, 110)))
                label = fm.elidedText(visible_token(m.text(token)), Qt.TextElideMode.ElideRight, int(rect.width()) - 4)
                painter.drawText(rect, Qt.AlignmentFlag.AlignCenter, label)
        if self.selected_t is not None:
            self._draw_arrows(painter, self.selected_t)
        if self.hover is not None:
            painter.setPen(QPen(pal.highlight().color(), 2))
            painter.setBrush(Qt.BrushStyle.NoBrush)
            painter.drawRoundedRect(self.cell_rect(*self.hover).adjusted(-1, -1, 1, 1), 3, 3)

    def _draw_arrows(self, painter: QPainter, t: int) -> None:
        m = self.model
        colour = self.palette().highlight().color()
        painter.setPen(QPen(colour, 2))
        painter.setBrush(Qt.BrushStyle.NoBrush)
        src = self.cell_rect(0, t)
        painter.drawRoundedRect(src.adjusted(-1, -1, 1, 1), 3, 3)
        start = QPointF(src.center().x(), src.bottom())
        for k in range(1, m.K + 1):
            dst = self.cell_rect(k, t)
            painter.setPen(QPen(colour, 2))
            painter.setBrush(Qt.BrushStyle.NoBrush)
            painter.drawRoundedRect(dst.adjusted(-1, -1, 1, 1), 3, 3)
            end = QPointF(dst.center().x(), dst.top())
            path = QPainterPath(start)
            path.cubicTo(QPointF(start.x(), (start.y() + end.y()) / 2), QPointF(end.x(), (start.y() + end.y()) / 2), end)
            painter.drawPath(path)
            painter.setBrush(colour)
            head = QPolygonF([end, QPointF(end.x() - 4, end.y() - 7), QPointF(end.x() + 4, end.y() - 7)])
            painter.drawPolygon(head)

    def mouseMoveEvent(self, event) -> None:  # noqa: N802 - Qt naming
        hit = self.hit(event.position().x(), event.position().y())
        if hit != self.hover:
            self.hover = hit
            self.update()
            if hit is not None:
                self.hovered.emit(*hit)

    def leaveEvent(self, event) -> None:  # noqa: N802 - Qt naming
        self.hover = None
        self.update()
        super().leaveEvent(event)

    def mousePressEvent(self, event) -> None:  # noqa: N802 - Qt naming
        hit = self.hit(event.position().x(), event.position().y())
        if hit is not None:
            self.select(hit[1])
            self.selected.emit(*hit)

    def select(self, t: int | None) -> None:
        self.selected_t = t
        self.update()


class ColourLegend(QWidget):
    """The colour scale: a gradient with its two ends labelled."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("inspector_legend")
        self.setToolTip("Colour scale of the target cells; grey cells are not scored (loss mask 0)")
        self.colour_by = "loss"
        self.scale = MAX_LOSS_SCALE
        self.setMinimumSize(300, 24)

    def _labels(self) -> tuple[str, str]:
        return ("loss 0", f"{self.scale:.1f}+") if self.colour_by == "loss" else ("p(target) 1", "0")

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt naming
        fm = self.fontMetrics()
        left, right = self._labels()
        return QSize(fm.horizontalAdvance(left + right + "not scored") + 220, 24)

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt naming
        painter = QPainter(self)
        fm = self.fontMetrics()
        left, right = self._labels()
        h = 20
        left_w = fm.horizontalAdvance(left) + 6
        grey_text_w = fm.horizontalAdvance("not scored") + 4
        right_w = fm.horizontalAdvance("00.0+") + 8
        bar_w = max(40, self.width() - left_w - right_w - 14 - 6 - grey_text_w - 4)
        bar = QRectF(left_w, 4, bar_w, 12)
        gradient = QLinearGradient(bar.topLeft(), bar.topRight())
        for i in range(11):
            f = i / 10
            gradient.setColorAt(f, loss_colour(f * self.scale, self.scale) if self.colour_by == "loss" else prob_colour(1 - f))
        painter.fillRect(bar, gradient)
        painter.setPen(self.palette().text().color())
        painter.drawText(QRectF(0, 0, left_w - 4, h), Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter, left)
        painter.drawText(QRectF(bar.right() + 4, 0, right_w, h), Qt.AlignmentFlag.AlignVCenter, right)
        grey = QRectF(bar.right() + 4 + right_w, 4, 14, 12)
        painter.fillRect(grey, QColor(190, 190, 190))
        painter.drawText(QRectF(grey.right() + 4, 0, grey_text_w, h), Qt.AlignmentFlag.AlignVCenter, "not scored")


class InspectorPane(QWidget):
    """Row picker, freeze, colour mode, the shift view, details of the selected position, and samples."""

    def __init__(self, ctx: Any = None, parent: QWidget | None = None):
        super().__init__(parent)
        self.ctx = ctx
        self.runs = getattr(ctx, "runs", None)
        self.tokenizer = None
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
        if self.runs is not None:
            self.runs.batch_viewed.connect(self.show_report)
            self.runs.sampled.connect(self.add_sample)
            self.runs.run_started.connect(lambda report: self.set_run(report.run_dir))
            self.runs.run_opened.connect(lambda run_dir, _records: self.set_run(run_dir))

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
    def set_run(self, run_dir: str | Path | None) -> None:
        """Load the run's tokenizer (for token texts) and clear the samples of the previous run."""
        if run_dir is None:
            return
        try:
            from shiftstudio.core.tokenizer import TextTokenizer

            self.set_tokenizer(TextTokenizer.load(Path(run_dir) / "tokenizer.json"))
        except (OSError, ValueError) as exc:
            log.warning("inspector: no tokenizer for %s: %s", run_dir, exc)
            self.tokenizer = None

    def set_tokenizer(self, tokenizer: Any) -> None:
        if tokenizer is not self.tokenizer:
            self.samples.clear()
        self.tokenizer = tokenizer
        self.vocab_size = getattr(tokenizer, "vocab_size", None)

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
        if runs is not None and hasattr(runs, "set_view_row"):
            runs.set_view_row(None if row < 0 else row)

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
