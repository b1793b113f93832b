"""The pane registry: adding a pane to the window is one line in ``PANES``.

A pane is a ``QWidget`` built as ``Pane(ctx)`` from a :class:`PaneContext`
(the shared models and services). It shows what they publish and calls their
methods; it never reaches into another pane. Each pane also runs alone:
``python -m shiftstudio.gui.panes.model`` opens just that pane.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from typing import Any

from PySide6.QtWidgets import QWidget

from shiftstudio.gui.config_model import ConfigModel
from shiftstudio.gui.run_controller import RunController
from shiftstudio.gui.session import Session


@dataclass(frozen=True)
class PaneSpec:
    key: str
    title: str
    factory: str  # "module:Class"
    area: str  # "left" | "right" | "bottom" (dock widgets) or "center" (tabs in the middle)
    shortcut: str = ""  # toggles/raises the pane


PANES: list[PaneSpec] = [
    PaneSpec("corpus", "Corpus", "shiftstudio.gui.panes.corpus:CorpusPane", "left", "Ctrl+1"),
    PaneSpec("tokenizer", "Tokenizer", "shiftstudio.gui.panes.tokenizer:TokenizerPane", "left", "Ctrl+2"),
    PaneSpec("model", "Model & training", "shiftstudio.gui.panes.model:ModelPane", "left", "Ctrl+3"),
    PaneSpec("train", "Train", "shiftstudio.gui.panes.train:TrainPane", "center", "Ctrl+4"),
    PaneSpec("inspector", "Batch inspector", "shiftstudio.gui.panes.inspector:InspectorPane", "bottom", "Ctrl+5"),
    PaneSpec("generate", "Generate", "shiftstudio.gui.panes.generate:GeneratePane", "bottom", "Ctrl+6"),
]


@dataclass
class PaneContext:
    """What every pane is given: the models and services of one window."""

    config: ConfigModel
    session: Session
    runs: RunController
    settings: Any = None  # gui.settings.Settings, for panes that remember view options


def make_context(settings: Any = None) -> PaneContext:
    config = ConfigModel()
    return PaneContext(config=config, session=Session(config), runs=RunController(config), settings=settings)


def create_pane(spec: PaneSpec, ctx: PaneContext) -> QWidget:
    module, _, name = spec.factory.partition(":")
    cls = getattr(importlib.import_module(module), name)
    pane = cls(ctx)
    pane.setObjectName(f"{spec.key}_pane")
    return pane


def preview(cls: type, open_sample: bool = True) -> int:
    """Run one pane alone in a window (Orange's WidgetPreview idea)."""
    from PySide6.QtWidgets import QApplication

    from shiftstudio.gui import style

    app = QApplication.instance() or QApplication(sys.argv[:1])
    style.apply_theme(app)
    ctx = make_context()
    pane = cls(ctx)
    pane.setWindowTitle(f"ShiftStudio – {cls.__name__}")
    pane.resize(900, 640)
    pane.show()
    if open_sample:
        ctx.session.open_corpus([])
    code = app.exec()
    ctx.runs.shutdown()
    ctx.session.shutdown()
    return code
