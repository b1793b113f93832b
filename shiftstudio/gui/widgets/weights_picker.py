"""Which weights the playground samples from: a checkpoint of the run (or its live weights), EMA, a second one to compare.

:class:`WeightsPicker` lists the run's checkpoints (latest, best, every step)
and, while a run trains, its live weights. "EMA weights" is only enabled when
every chosen checkpoint has an EMA copy; otherwise its tooltip says why.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QCheckBox, QComboBox, QGridLayout, QLabel, QWidget

from shiftstudio.core.errors import ShiftStudioError
from shiftstudio.core.runs.layout import EMA_FILE, checkpoint_name
from shiftstudio.gui.generation_worker import BEST, LATEST, LIVE, Source
from shiftstudio.gui.widgets import named

EMA_TIP = "Use the checkpoint's averaged (EMA) weights, when the run keeps them"



class WeightsPicker(QWidget):
    """"Sample from", "EMA weights" and "Compare with"; ``compare_toggled`` when comparing is switched."""

    compare_toggled = Signal(bool)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._checkpoints: dict[str, Any] = {}  # source data -> CheckpointInfo (for its EMA file)
        self.source = named(QComboBox(self), "generate_source",
                             "Which weights to sample from: a checkpoint of the run, or the live weights of a running training")
        self.ema = named(QCheckBox("EMA weights", self), "generate_ema", EMA_TIP)
        self.compare = named(QCheckBox("Compare with", self), "generate_compare",
                              "Run the same prompt, settings and seed on a second checkpoint, side by side")
        self.compare_source = named(QComboBox(self), "generate_compare_source", "The second checkpoint to compare with")
        self.compare_source.setEnabled(False)
        for combo in (self.source, self.compare_source):  # long names are cut, not widening the pane
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(14)
        grid = QGridLayout(self)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.setVerticalSpacing(3)
        grid.addWidget(QLabel("Sample from", self), 0, 0)
        grid.addWidget(self.source, 0, 1)
        grid.addWidget(self.ema, 1, 1)
        grid.addWidget(self.compare, 2, 0)
        grid.addWidget(self.compare_source, 2, 1)
        grid.setColumnStretch(1, 1)
        self.compare.toggled.connect(self._on_compare_toggled)
        self.source.currentIndexChanged.connect(self._on_source_index_changed)
        self.compare_source.currentIndexChanged.connect(self._on_compare_source_index_changed)

    def refresh(self, run_dir: Path | None, live: bool) -> None:
        """List the checkpoints of ``run_dir`` (and the live weights when ``live``), keeping the choices made."""
        items: list[tuple[str, str]] = [("Live weights of the running training", LIVE)] if live else []
        steps = []
        if run_dir is not None:
            try:
                from shiftstudio.core.runs.checkpoint import list_checkpoints

                steps = list_checkpoints(run_dir)
            except (OSError, ShiftStudioError):
                steps = []
        self._checkpoints = {checkpoint_name(i.step): i for i in steps}
        if steps:
            items.append((f"Latest checkpoint (step {steps[-1].step})", LATEST))
            self._checkpoints[LATEST] = steps[-1]
            best = [i for i in steps if i.is_best]
            if best:
                items.append((f"Best checkpoint (step {best[-1].step})", BEST))
                self._checkpoints[BEST] = best[-1]
            items += [(f"step {i.step}" + (" · best" if i.is_best else ""), checkpoint_name(i.step)) for i in reversed(steps)]
        for combo in (self.source, self.compare_source):
            current = combo.currentData()
            combo.blockSignals(True)
            combo.clear()
            for text, data in items:
                combo.addItem(text, data)
            index = combo.findData(current)
            combo.setCurrentIndex(index if index >= 0 else (min(1, combo.count() - 1) if combo is self.compare_source else 0))
            combo.blockSignals(False)
        self._update_ema()

    def has_source(self) -> bool:
        return self.source.count() > 0

    def sources(self, run_dir: Path | None) -> list[Source]:
        """The weights to sample from: the chosen source, and the compared one when Compare is on."""
        ema = self.ema.isChecked() and self.ema.isEnabled()
        out = [Source(run_dir, self.source.currentData(), ema)]
        if self.compare.isChecked() and self.compare_source.count():
            out.append(Source(run_dir, self.compare_source.currentData(), ema))
        return out

    # -- EMA ---------------------------------------------------------------------------
    def ema_problem(self) -> str:
        """Why the EMA weights cannot be used for the chosen source(s); "" when they can."""
        chosen = [self.source.currentData()]
        if self.compare.isChecked():
            chosen.append(self.compare_source.currentData())
        for data in chosen:
            if data is None:
                return "There is no checkpoint to sample from yet."
            if data == LIVE:
                return "The live weights of a running training have no EMA copy here: pick a checkpoint to use EMA weights."
            info = self._checkpoints.get(data)
            if info is None or not (Path(info.path) / EMA_FILE).is_file():
                step = f"step {info.step}" if info is not None else str(data)
                return f"Checkpoint {step} has no EMA weights: the run trained without EMA (ema_decay = 0)."
        return ""

    def _update_ema(self) -> None:
        problem = self.ema_problem()
        if problem:
            self.ema.setChecked(False)
        self.ema.setEnabled(not problem)
        self.ema.setToolTip(f"{EMA_TIP}. Not available: {problem}" if problem else EMA_TIP)

    def _on_source_index_changed(self, _index: int) -> None:
        self._update_ema()

    def _on_compare_source_index_changed(self, _index: int) -> None:
        self._update_ema()

    def _on_compare_toggled(self, on: bool) -> None:
        self.compare_source.setEnabled(on)
        self._update_ema()
        self.compare_toggled.emit(on)
