"""Where a model starts from: "New model", a run's checkpoint, or a local Hugging Face folder.

:func:`read_source` reads what ``init_from`` names (``config.json`` or the run's
settings, and the tokenizer; never the weights) into a :class:`SourceInfo` of
plain data: it runs in a worker thread, since it imports the core (torch).
:class:`SourcePicker` is the control the Model pane puts at the top of its
Model group: a choice of where to start and, below it, what the source is.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QComboBox, QFileDialog, QLabel, QVBoxLayout, QWidget

from shiftstudio.config import SCRATCH, ModelConfig
from shiftstudio.core.runs.layout import is_run_dir
from shiftstudio.format import human_count
from shiftstudio.gui.widgets import named
from shiftstudio.gui.widgets.config_form import EDITOR_MAX_WIDTH

NEW, RUN, HF = "scratch", "run", "hf"
KIND_NAMES = {"gpt2": "GPT-2", "gpt_neox": "GPT-NeoX"}
SOURCE_TIP = (
    "Where the model starts: new random weights, a checkpoint of one of your runs, or a pretrained model saved as a "
    "local Hugging Face folder (GPT-2). With a source, the architecture and the tokenizer are the source's."
)


@dataclass(frozen=True)
class SourceInfo:
    """What a source decides, as plain data for the GUI thread."""

    init_from: str  # as the run records it: the HF folder, or RUN/checkpoints/step-N
    kind: str  # "hf" | "run"
    label: str
    summary: str  # one line: "GPT-2 2×32, 27.6k parameters, context 64"
    architecture: dict[str, Any]
    n_positions: int
    vocab_size: int
    n_params: int
    tokenizer_path: str  # the source's tokenizer, as the run will use it (a cached tokenizer.json)
    tokenizer_kind: str  # "byte-level BPE", "char" …
    warnings: list[str] = field(default_factory=list)

    @property
    def tokenizer_text(self) -> str:
        return f"{self.vocab_size:,} tokens, {self.tokenizer_kind}"


_cache: dict[tuple, SourceInfo] = {}
_lock = threading.Lock()


def _stamp(path: Path) -> tuple:
    """What changes when the files a source is read from change (modification times of the folder's files)."""
    try:
        return tuple(sorted((p.name, p.stat().st_mtime_ns) for p in path.iterdir() if p.is_file()))
    except OSError:
        return ()


def read_source(init_from: str) -> SourceInfo:
    """Read the source ``init_from`` names (in a worker thread: it imports the core); raises the core's
    one-line errors (:class:`~shiftstudio.core.errors.ConfigError`, ``RunError``, ``TokenizerError``)."""
    from shiftstudio.core.data.tokenizer import TextTokenizer
    from shiftstudio.core.model.estimate import count_params
    from shiftstudio.core.runs.layout import RunLayout
    from shiftstudio.core.runs.origin import cached_tokenizer_path, open_source

    from shiftstudio import paths

    path = Path(init_from.strip()).expanduser()
    key = (str(path), _stamp(path), _stamp(path.parent), str(paths.cache_dir()))
    with _lock:  # two panes may ask at once: the second gets the first's answer
        known = _cache.get(key)
        if known is not None and Path(known.tokenizer_path).is_file():
            return known
        source = open_source(init_from)
        tokenizer: TextTokenizer = source.tokenizer()
        tokenizer_path = cached_tokenizer_path(tokenizer)
        vocab = int(tokenizer.vocab_size)
        shape = ModelConfig(**source.architecture, block_size=source.n_positions)
        n_params = count_params(shape, vocab)
        a = source.architecture
        if source.kind == "hf":
            init_text = str(source.path)
            family = KIND_NAMES.get(source.hf_source.model_type, source.hf_source.model_type)
        else:
            init_text = str(RunLayout(source.path).checkpoints_dir / source.checkpoint)
            family = "GPT"
        kind_text = tokenizer_kind_text(tokenizer)
        summary = f"{family} {a['n_layer']}×{a['n_embd']}, {human_count(n_params)} parameters, context {source.n_positions:,}"
        info = SourceInfo(init_text, source.kind, source.label, summary, dict(a), int(source.n_positions), vocab, n_params,
                          str(tokenizer_path), kind_text)
        _cache[key] = info
        return info


def tokenizer_kind_text(tokenizer: Any) -> str:
    """'character-level', 'byte-level BPE' or 'from a file', for a core ``TextTokenizer``."""
    from tokenizers import decoders

    if tokenizer.kind == "char":
        return "character-level"
    if tokenizer.kind == "bpe" or isinstance(tokenizer.tk.decoder, decoders.ByteLevel):
        return "byte-level BPE"
    return "from a file"


def tokenizer_matches(spec: str, info: SourceInfo) -> bool:
    """``spec`` (the settings' tokenizer) already is the source's: its cached copy, here or under another home (a
    run made elsewhere records its own path; the file name is the tokenizer's fingerprint)."""
    if spec == info.tokenizer_path:
        return True
    path = Path(spec)
    return path.name == Path(info.tokenizer_path).name and path.is_file()


def is_scratch(init_from: str) -> bool:
    return init_from.strip() in ("", SCRATCH)


class SourcePicker(QWidget):
    """"Start from": New model / A run's checkpoint… / A Hugging Face folder…, and what the source is.

    ``chosen(path)`` when the user picked a folder (nothing has changed yet: the pane reads it first),
    ``scratch_chosen()`` for New model. :meth:`show_source` shows what the settings start from.
    """

    chosen = Signal(str)
    scratch_chosen = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.combo = named(QComboBox(self), "model_source_combo", SOURCE_TIP)
        self.combo.setMaximumWidth(EDITOR_MAX_WIDTH)
        self.combo.addItem("New model", NEW)
        self.combo.addItem("A run's checkpoint…", RUN)
        self.combo.addItem("A Hugging Face folder…", HF)
        self.combo.setItemData(0, "Train a new model from random weights, with the architecture below", 3)  # ToolTipRole
        self.combo.setItemData(1, "Fine-tune a run of yours: pick its folder (its best checkpoint) or one of its "
                                  "checkpoints/step-N folders", 3)
        self.combo.setItemData(2, "Fine-tune a pretrained GPT-2 saved locally (config.json, model.safetensors or "
                                  "pytorch_model.bin, and its tokenizer)", 3)
        self.label = named(QLabel("", self), "model_source_label", "The model the weights come from")
        font = self.label.font()
        font.setBold(True)
        self.label.setFont(font)
        self.label.setWordWrap(True)
        self.summary = named(QLabel("", self), "model_source_summary", "The source model's shape, size and context")
        self.summary.setWordWrap(True)
        self.summary.setProperty("role", "hint")
        self.hint = named(QLabel("", self), "model_source_hint", "")
        self.hint.setWordWrap(True)
        self.hint.setProperty("role", "hint")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addWidget(self.combo)
        layout.addWidget(self.label)
        layout.addWidget(self.summary)
        layout.addWidget(self.hint)
        self._kind = NEW
        self.show_source(None)
        self.combo.activated.connect(self._on_combo_activated)

    # -- what the settings start from ------------------------------------------------
    @property
    def kind(self) -> str:
        return self._kind

    def show_source(self, info: SourceInfo | None) -> None:
        """Show what the settings start from: ``info``, or a new model (None)."""
        if info is not None:
            self._kind = info.kind
            self.label.setText(info.label)
            self.label.setToolTip(f"Weights from {info.init_from}")
            self.summary.setText(f"{info.summary} · tokenizer: {info.tokenizer_text}")
        else:
            self._kind = NEW
            self.label.setText("")
            self.summary.setText("")
            self.hint.setText("")
        for widget in (self.label, self.summary):
            widget.setVisible(bool(widget.text()))
        self.hint.setVisible(bool(self.hint.text()) and info is not None)
        self.combo.setCurrentIndex(self.combo.findData(self._kind))

    def show_pending(self, init_from: str, text: str) -> None:
        """A source named by the settings that is being read, or cannot be (``text`` says which)."""
        path = Path(init_from)
        self._kind = RUN if path.parent.name == "checkpoints" or is_run_dir(path) else HF
        self.label.setText(path.name or init_from)
        self.label.setToolTip(init_from)
        self.summary.setText(text)
        self.hint.setText("")
        for widget in (self.label, self.summary):
            widget.setVisible(bool(widget.text()))
        self.hint.setVisible(False)
        self.combo.setCurrentIndex(self.combo.findData(self._kind))

    def show_hint(self, text: str, tip: str = "") -> None:
        self.hint.setText(text)
        self.hint.setToolTip(tip)
        self.hint.setVisible(bool(text))

    # -- choosing --------------------------------------------------------------------
    def ask_folder(self, kind: str) -> str:
        """A folder dialog (tests replace this method); '' when cancelled."""
        if kind == RUN:
            from shiftstudio import paths

            title, start = "Start from a run or one of its checkpoints", str(paths.runs_dir())
        else:
            title, start = "Start from a Hugging Face model folder", ""
        return QFileDialog.getExistingDirectory(self, title, start)

    def choose(self, kind: str) -> None:
        """What picking an entry does: New model at once; a folder dialog for the others."""
        if kind == NEW:
            if self._kind != NEW:
                self.scratch_chosen.emit()
            return
        folder = self.ask_folder(kind)
        self.combo.setCurrentIndex(self.combo.findData(self._kind))  # unchanged until the pane has read it
        if folder:
            self.chosen.emit(folder)

    def _on_combo_activated(self, index: int) -> None:
        self.choose(self.combo.itemData(index))
