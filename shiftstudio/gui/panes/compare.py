"""The Compare pane: the runs the Runs pane asked to compare, overlaid (:class:`~shiftstudio.gui.compare_view.CompareView`:
curves one colour a run, the settings that differ with each run's figures, samples side by side)."""

from __future__ import annotations

from pathlib import Path
from typing import Self

from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from shiftstudio.gui.panes import Pane, PaneContext
from shiftstudio.gui.run_library import RunLibrary

EMPTY = "Select two runs or more in the Runs pane and press Compare."


class ComparePane(Pane):
    def __init__(self, library: RunLibrary, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        from shiftstudio.gui.compare_view import CompareView

        self.setObjectName("compare_pane")
        self.hint = QLabel(EMPTY, self)
        self.hint.setObjectName("compare_hint")
        self.view = CompareView(self)
        self.view.hide()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.hint)
        layout.addWidget(self.view, 1)
        library.compare_requested.connect(self._on_library_compare_requested)

    @classmethod
    def from_context(cls, ctx: PaneContext) -> Self:
        return cls(ctx.library)

    def shutdown(self) -> bool:
        return self.view.shutdown()

    def show_runs(self, run_dirs: list[Path]) -> None:
        self.hint.hide()
        self.view.show()
        self.view.set_runs(run_dirs)

    def _on_library_compare_requested(self, run_dirs: list[Path]) -> None:
        self.show_runs(run_dirs)


if __name__ == "__main__":
    from shiftstudio.gui.panes import preview

    raise SystemExit(preview(ComparePane))
