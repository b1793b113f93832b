"""Drawing the shift: a row's input tokens as a strip of cells, its targets below them offset by k.

:class:`BatchModel` wraps one :class:`~shiftstudio.core.train.reports.BatchViewReport`
(inputs, per-horizon targets, losses, mask, top-5 guesses). :class:`ShiftView`
paints the inputs as cells and, under them, one strip per horizon shifted
right by ``k`` cells, so that each target sits under the input it continues;
the selected column gets an arrow from input ``t`` to each of its targets
``t + k``. Targets are coloured by loss (or by the probability the model gave
them); unscored ones (mask 0) are grey. :class:`ColourLegend` is the scale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from PySide6.QtCore import QPointF, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QFont, QFontMetrics, QLinearGradient, QPainter, QPainterPath, QPen, QPolygonF
from PySide6.QtWidgets import QSizePolicy, QWidget

MAX_LOSS_SCALE = 8.0  # the loss colour scale runs 0 .. min(max loss, ln V, this)
MIN_CELL, MAX_CELL = 22, 96
ROW_H, GAP, LABEL_W = 30, 14, 64


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


PLACEHOLDER = "Start training: the current batch shows here."


class ShiftView(QWidget):
    """The painted strips. Emits ``hovered``/``selected`` with (k, t) of a target cell, or k = 0 for an input.

    In a scroll area too short for every strip, the input strip stays at the top of the visible part
    (:meth:`set_top`, from the vertical scroll bar) and the target strips scroll together under it.
    """

    hovered = Signal(int, int)
    selected = Signal(int, int)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("inspector_view")
        self.setToolTip("Inputs (top) and, under them, the targets each is scored against, shifted by k; "
                        "click a cell to see the model's top-5 guesses there")
        self.setMouseTracking(True)
        self.model: BatchModel | None = None
        self.placeholder = PLACEHOLDER  # said while there is no batch
        self.colour_by = "loss"
        self.cell = MIN_CELL
        self.selected_t: int | None = None
        self.hover: tuple[int, int] | None = None
        self.top = 0  # the first row of the widget in view (its scroll area's vertical offset)
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
        self._refit()

    def set_placeholder(self, text: str) -> None:
        """What the view says while it has no batch (the default: :data:`PLACEHOLDER`)."""
        if text != self.placeholder:
            self.placeholder = text
            if self.model is None:
                self._refit()

    def _refit(self) -> None:
        """Take the size :meth:`sizeHint` now asks for (the view sits in a scroll area) and repaint."""
        self.updateGeometry()
        self.resize(self.sizeHint())
        self.update()

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt naming
        if self.model is None:
            return QSize(max(400, self.fontMetrics().horizontalAdvance(self.placeholder) + 24), ROW_H * 2 + GAP * 2)
        m = self.model
        return QSize(LABEL_W + (m.T + m.K) * self.cell + 8, (m.K + 1) * (ROW_H + GAP) + GAP)

    def set_top(self, top: int) -> None:
        """The vertical scroll offset: the input strip is drawn there, over the targets scrolled under it."""
        if top != self.top:
            self.top = max(0, int(top))
            self.update()  # all of it: the scroll moved the pixels, the input strip has to be drawn anew

    @property
    def header_height(self) -> int:
        """Height of the band the input strip takes at the top of the visible part."""
        return GAP // 2 + ROW_H + GAP // 2

    def strip_y(self, strip: int) -> int:
        if strip == 0:
            return self.top + GAP // 2  # sticks to the top of the view
        return GAP // 2 + strip * (ROW_H + GAP)

    def cell_rect(self, strip: int, t: int) -> QRectF:
        column = t + strip  # a target of horizon k sits k columns right of its input
        return QRectF(LABEL_W + column * self.cell, self.strip_y(strip), self.cell - 2, ROW_H)

    def hit(self, x: float, y: float) -> tuple[int, int] | None:
        if self.model is None or x < LABEL_W:
            return None
        if y < self.top + self.header_height:  # the input strip (and the band around it)
            strip = 0
            if not 0 <= y - self.strip_y(0) <= ROW_H:
                return None
        else:
            strip = int((y - GAP // 2) // (ROW_H + GAP))
            if not 1 <= strip <= self.model.K or not 0 <= y - self.strip_y(strip) <= ROW_H:
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
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, self.placeholder)
            return
        m = self.model
        painter.setFont(self._font)
        fm = QFontMetrics(self._font)
        left = max(0, int((event.rect().left() - LABEL_W) // self.cell) - m.K - 1)
        right = min(m.T, int((event.rect().right() - LABEL_W) // self.cell) + 2)
        text_pen = QPen(QColor(30, 30, 30))
        for strip in [*range(1, m.K + 1), 0]:  # the input strip last: it lies over targets scrolled under it
            y = self.strip_y(strip)
            if strip == 0:
                painter.fillRect(QRectF(0, self.top, self.width(), self.header_height), pal.base())
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
        if self.hover is not None and (self.hover[0] == 0 or self.cell_rect(*self.hover).top() >= self.top + self.header_height):
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
            if dst.top() < self.top + self.header_height:
                continue  # scrolled under the input strip
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
