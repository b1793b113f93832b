"""Which weights the playground samples from: a checkpoint of the run (or its live weights), a Hugging Face
folder, EMA, a second one to compare.

:class:`WeightsPicker` lists the run's checkpoints (latest, best, every step),
while a run trains its live weights, and the Hugging Face folders opened
before; its last entry, "Hugging Face folder…", opens another (a folder
dialog). So Compare can put the base model beside its fine-tuned checkpoint.
"EMA weights" is only enabled when every chosen checkpoint has an EMA copy;
otherwise its tooltip says why.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QCheckBox, QComboBox, QGridLayout, QLabel, QWidget

from shiftstudio.core.errors import ShiftStudioError
from shiftstudio.core.runs.layout import EMA_FILE, checkpoint_name
from shiftstudio.gui.generation_worker import BEST, HF, LATEST, LIVE, Source
from shiftstudio.gui.widgets import named

EMA_TIP = "Use the checkpoint's averaged (EMA) weights, when the run keeps them"
PICK_HF = "pick-hf"  # the "Hugging Face folder…" entry: opens a folder dialog
HF_PREFIX = HF + ":"  # item data of a Hugging Face folder: "hf:/path/to/folder"
MAX_HF_FOLDERS = 8
HF_TIP = "Sample from a pretrained model saved as a local Hugging Face folder (GPT-2: config.json, weights, tokenizer)"



class WeightsPicker(QWidget):
    """"Sample from", "EMA weights" and "Compare with"; ``compare_toggled`` when comparing is switched."""

    compare_toggled = Signal(bool)
    hf_folders_changed = Signal(object)  # list[str]: the Hugging Face folders offered, newest first
    problem = Signal(str)  # a folder that cannot be used, in one line

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._checkpoints: dict[str, Any] = {}  # source data -> CheckpointInfo (for its EMA file)
        self._hf_folders: list[str] = []
        self._items: list[tuple[str, str]] = []
        self._previous: dict[int, Any] = {}  # id(combo) -> the data chosen before "Hugging Face folder…"
        self.source = named(QComboBox(self), "generate_source",
                             "Which weights to sample from: a checkpoint of the run, the live weights of a running "
                             "training, or a Hugging Face folder")
        self.ema = named(QCheckBox("EMA weights", self), "generate_ema", EMA_TIP)
        self.compare = named(QCheckBox("Compare with", self), "generate_compare",
                              "Run the same prompt, settings and seed on second weights, side by side (e.g. the base model beside its fine-tuned checkpoint)")
        self.compare_source = named(QComboBox(self), "generate_compare_source", "The second weights to compare with: a checkpoint or a Hugging Face folder")
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
        self.source.activated.connect(self._on_source_activated)
        self.compare_source.activated.connect(self._on_compare_source_activated)
        self._fill()

    # -- Hugging Face folders ----------------------------------------------------------
    def hf_folders(self) -> list[str]:
        return list(self._hf_folders)

    def set_hf_folders(self, folders: list[str]) -> None:
        """The Hugging Face folders to offer (remembered ones; those gone from disk are left out)."""
        self._hf_folders = [str(f) for f in folders if isinstance(f, str) and Path(f).is_dir()][:MAX_HF_FOLDERS]
        self._fill()

    def ask_hf_folder(self) -> str:
        """A folder dialog (tests replace this method); '' when cancelled."""
        from PySide6.QtWidgets import QFileDialog

        return QFileDialog.getExistingDirectory(self, "Sample from a Hugging Face model folder")

    def add_hf_folder(self, folder: str | Path, compare: bool = False) -> bool:
        """Offer ``folder`` (first among the folders) and choose it in the source combo (``compare``: in the
        compared one); False, with :attr:`problem`, when it is not a model folder."""
        path = Path(folder).expanduser()
        if not (path / "config.json").is_file():
            self.problem.emit(f"{path} is not a Hugging Face model folder (no config.json)")
            return False
        text = str(path.resolve())
        self._hf_folders = [text, *(f for f in self._hf_folders if f != text)][:MAX_HF_FOLDERS]
        self._fill()
        combo = self.compare_source if compare else self.source
        combo.setCurrentIndex(combo.findData(HF_PREFIX + text))
        self.hf_folders_changed.emit(self.hf_folders())
        return True

    def _pick_hf(self, combo: QComboBox) -> None:
        previous = self._previous.get(id(combo))
        combo.blockSignals(True)  # back to what was chosen until a folder is (a cancelled dialog changes nothing)
        combo.setCurrentIndex(max(0, combo.findData(previous)) if previous is not None else self._default_index(combo))
        combo.blockSignals(False)
        folder = self.ask_hf_folder()
        if folder:
            self.add_hf_folder(folder, compare=combo is self.compare_source)
        self._update_ema()

    def _on_source_activated(self, index: int) -> None:
        if self.source.itemData(index) == PICK_HF:
            self._pick_hf(self.source)

    def _on_compare_source_activated(self, index: int) -> None:
        if self.compare_source.itemData(index) == PICK_HF:
            self._pick_hf(self.compare_source)

    # -- the lists ---------------------------------------------------------------------
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
        self._items = items
        self._fill()

    def _fill(self) -> None:
        """The combos: the run's items, the Hugging Face folders, and "Hugging Face folder…" last."""
        items = self._items + [(f"{Path(f).name} (Hugging Face)", HF_PREFIX + f) for f in self._hf_folders]
        for combo in (self.source, self.compare_source):
            current = combo.currentData()
            combo.blockSignals(True)
            combo.clear()
            for text, data in items:
                combo.addItem(text, data)
                if data.startswith(HF_PREFIX):
                    combo.setItemData(combo.count() - 1, data[len(HF_PREFIX):], 3)  # ToolTipRole: the full path
            combo.addItem("Hugging Face folder…", PICK_HF)
            combo.setItemData(combo.count() - 1, HF_TIP, 3)
            index = combo.findData(current) if current != PICK_HF else -1
            combo.setCurrentIndex(index if index >= 0 else self._default_index(combo))
            self._previous[id(combo)] = combo.currentData()
            combo.blockSignals(False)
        self._update_ema()

    def _default_index(self, combo: QComboBox) -> int:
        """The first weights (the second for the compared combo, where there is one); the last entry when none."""
        real = [i for i in range(combo.count()) if combo.itemData(i) != PICK_HF]
        if not real:
            return combo.count() - 1
        return real[min(1, len(real) - 1)] if combo is self.compare_source else real[0]

    def has_source(self) -> bool:
        """Something to sample from is chosen (not the "Hugging Face folder…" entry)."""
        return self.source.currentData() not in (None, PICK_HF)

    @staticmethod
    def _source(run_dir: Path | None, data: str, ema: bool) -> Source:
        if data.startswith(HF_PREFIX):
            return Source.hf_folder(data[len(HF_PREFIX):])
        return Source(run_dir, data, ema)

    def sources(self, run_dir: Path | None) -> list[Source]:
        """The weights to sample from: the chosen source, and the compared one when Compare is on."""
        ema = self.ema.isChecked() and self.ema.isEnabled()
        out = [self._source(run_dir, self.source.currentData(), ema)]
        if self.compare.isChecked() and self.compare_source.currentData() not in (None, PICK_HF):
            out.append(self._source(run_dir, self.compare_source.currentData(), ema))
        return out

    # -- EMA ---------------------------------------------------------------------------
    def ema_problem(self) -> str:
        """Why the EMA weights cannot be used for the chosen source(s); "" when they can."""
        chosen = [self.source.currentData()]
        if self.compare.isChecked():
            chosen.append(self.compare_source.currentData())
        for data in chosen:
            if data in (None, PICK_HF):
                return "There is no checkpoint to sample from yet."
            if data.startswith(HF_PREFIX):
                return "A Hugging Face folder has no EMA weights: pick a checkpoint of a run to use them."
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
        if self.source.currentData() != PICK_HF:
            self._previous[id(self.source)] = self.source.currentData()
        self._update_ema()

    def _on_compare_source_index_changed(self, _index: int) -> None:
        if self.compare_source.currentData() != PICK_HF:
            self._previous[id(self.compare_source)] = self.compare_source.currentData()
        self._update_ema()

    def _on_compare_toggled(self, on: bool) -> None:
        self.compare_source.setEnabled(on)
        self._update_ema()
        self.compare_toggled.emit(on)
