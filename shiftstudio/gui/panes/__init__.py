"""The pane registry: adding a pane to the window is one line in ``PANES``.

A pane is a :class:`Pane` (a ``QWidget``) whose constructor takes the typed
models and services it uses (``InspectorPane(runs)``, ``CorpusPane(session,
config)`` …); ``Pane.from_context(ctx)`` picks them out of a
:class:`PaneContext`, which is how the window and :func:`preview` build it.
A pane shows what the models publish and calls their methods; it never
reaches into another pane. Each pane also runs alone:
``python -m shiftstudio.gui.panes.model`` opens just that pane.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from typing import Any, Self

from PySide6.QtWidgets import QWidget

from shiftstudio.gui.config_model import ConfigModel
from shiftstudio.gui.run_controller import RunController
from shiftstudio.gui.run_library import RunLibrary
from shiftstudio.gui.session import Session


@dataclass(frozen=True)
class PaneSpec:
    key: str
    title: str
    factory: str  # "module:Class"
    area: str  # "left" | "right" | "bottom" (dock widgets), "center" (tabs in the middle), "tab" (a middle tab
    # that opens when asked for — its Ctrl+N, the View menu — and can be closed)
    shortcut: str = ""  # toggles/raises the pane


PANES: list[PaneSpec] = [
    PaneSpec("corpus", "Corpus", "shiftstudio.gui.panes.corpus:CorpusPane", "left", "Ctrl+1"),
    PaneSpec("tokenizer", "Tokenizer", "shiftstudio.gui.panes.tokenizer:TokenizerPane", "left", "Ctrl+2"),
    PaneSpec("model", "Model & training", "shiftstudio.gui.panes.model:ModelPane", "left", "Ctrl+3"),
    PaneSpec("train", "Train", "shiftstudio.gui.panes.train:TrainPane", "center", "Ctrl+4"),
    PaneSpec("inspector", "Batch inspector", "shiftstudio.gui.panes.inspector:InspectorPane", "bottom", "Ctrl+5"),
    PaneSpec("generate", "Generate", "shiftstudio.gui.panes.generate:GeneratePane", "bottom", "Ctrl+6"),
    PaneSpec("runs", "Runs", "shiftstudio.gui.panes.runs:RunsPane", "tab", "Ctrl+7"),
    PaneSpec("compare", "Compare", "shiftstudio.gui.panes.compare:ComparePane", "tab", "Ctrl+8"),
]


@dataclass
class PaneContext:
    """What every pane is given: the models and services of one window."""

    config: ConfigModel
    session: Session
    runs: RunController
    settings: Any = None  # gui.settings.Settings, for panes that remember view options
    library: RunLibrary | None = None  # the runs under the runs folders (the Runs and Compare panes)


def make_context(settings: Any = None) -> PaneContext:
    config = ConfigModel()
    runs = RunController(config)
    return PaneContext(config=config, session=Session(config), runs=runs, settings=settings,
                       library=RunLibrary(settings, runs))


class Pane(QWidget):
    """What the window needs of every pane: a way to build it from a context, and a way to stop it."""

    @classmethod
    def from_context(cls, ctx: PaneContext) -> Self:
        """The pane, given the models and services of ``ctx`` that it uses."""
        raise NotImplementedError(f"{cls.__name__} does not say how to build it from a PaneContext")

    def shutdown(self) -> bool:
        """Stop the pane's own threads and wait for them (the window calls this as it closes); True when
        none is left. Most panes have none."""
        return True


def pane_class(spec: PaneSpec) -> type[Pane]:
    """The pane class a spec names (imports its module: pyqtgraph for the Train pane)."""
    module, _, name = spec.factory.partition(":")
    cls = getattr(importlib.import_module(module), name)
    if not (isinstance(cls, type) and issubclass(cls, Pane)):
        raise TypeError(f"{spec.factory} is not a Pane")
    return cls


def create_pane(spec: PaneSpec, ctx: PaneContext) -> Pane:
    pane = pane_class(spec).from_context(ctx)
    pane.setObjectName(f"{spec.key}_pane")
    return pane


def preview(cls: type[Pane], open_sample: bool = True) -> int:
    """Run one pane alone in a window (Orange's WidgetPreview idea)."""
    from PySide6.QtWidgets import QApplication

    from shiftstudio.gui import style

    app = QApplication.instance() or QApplication(sys.argv[:1])
    style.apply_theme(app)
    ctx = make_context()
    pane = cls.from_context(ctx)
    pane.setWindowTitle(f"ShiftStudio – {cls.__name__}")
    pane.resize(900, 640)
    pane.show()
    if open_sample:
        ctx.session.open_corpus([])
    code = app.exec()
    ctx.runs.shutdown()
    ctx.session.shutdown()
    return code
