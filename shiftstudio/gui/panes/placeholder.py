"""Room for the panes of later issues: the batch inspector and the Generate playground.

Each placeholder says what is coming and, where the data already exists,
shows a hint of it (the inspector counts the batch views the engine sends),
so the window's layout is the final one from the start.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from shiftstudio.gui.panes import PaneContext


class ComingPane(QWidget):
    """A clearly labelled placeholder: a heading, what the pane will do, and a status line."""

    key = "coming"
    title = ""
    heading = ""
    text = ""

    def __init__(self, ctx: PaneContext, parent: QWidget | None = None):
        super().__init__(parent)
        self.ctx = ctx
        heading = QLabel(f"{self.heading} <span style='font-weight:normal'>— coming in a later release</span>", self)
        heading.setObjectName(f"{self.key}_coming_heading")
        heading.setProperty("role", "heading")
        heading.setTextFormat(Qt.RichText)
        body = QLabel(self.text, self)
        body.setObjectName(f"{self.key}_coming_text")
        body.setWordWrap(True)
        body.setTextFormat(Qt.RichText)
        body.setAlignment(Qt.AlignLeft | Qt.AlignTop)
        self.status = QLabel("", self)
        self.status.setObjectName(f"{self.key}_coming_status")
        self.status.setProperty("role", "hint")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 10, 12, 10)
        layout.addWidget(heading)
        layout.addWidget(body)
        layout.addWidget(self.status)
        layout.addStretch(1)


class InspectorPlaceholder(ComingPane):
    key = "inspector"
    title = "Batch inspector"
    heading = "Batch inspector"
    text = (
        "For one row of the current batch: the input tokens above the target tokens they are scored against, "
        "shifted by <i>k</i>, each target coloured by its loss, the model's top guesses on hover, and masked "
        "targets shown as such."
    )

    def __init__(self, ctx: PaneContext, parent: QWidget | None = None):
        super().__init__(ctx, parent)
        self._views = 0
        self.status.setText("The engine already sends a batch view at every log point; none received yet.")
        ctx.runs.batch_viewed.connect(self._on_runs_batch_viewed)

    def _on_runs_batch_viewed(self, report: Any) -> None:
        self._views += 1
        tokens = int(getattr(report.input_ids, "size", 0))
        self.status.setText(f"{self._views:,} batch views received (latest: step {report.step:,}, {tokens} tokens in the row).")


class GeneratePlaceholder(ComingPane):
    key = "generate"
    title = "Generate"
    heading = "Generate"
    text = (
        "The playground: a prompt, temperature, top-k, top-p, max new tokens and seed; tokens stream in as they "
        "are sampled, coloured by probability, from the last checkpoint — even while training goes on. Until then, "
        "the Train pane shows a short sample at every evaluation."
    )
