"""The Generate pane: a playground that streams text sampled from a run's model.

Sampling runs in a :class:`~shiftstudio.gui.generation_worker.GenerationWorker` on its own ``QThread``: it loads
the weights (a checkpoint, its EMA copy, or a snapshot of a running training
handed over by :class:`~shiftstudio.gui.run_controller.RunController`) and
advances one or two :class:`~shiftstudio.core.generate.generation.Generation` iterators a
token at a time, sending tokens to the GUI in batches (at most ~30 a second).
Stop is a flag checked before every token, so it ends a stream within one.

Each generated token keeps its probability and the model's top-5 guesses:
"Colour" shades the output "by probability", and hovering a token shows them.
"Compare" runs the same prompt, settings and seed on a second checkpoint,
side by side; "Save…" writes the text (both outputs when comparing).

Speculative decoding: a model trained with ``shift = K >= 2`` has K heads, and
heads 2..K draft the next tokens for head 1 to verify (the same text when
greedy, the same distribution when sampling, in fewer passes). The
"Speculative" box is on for such a model and disabled, saying why, for a
1-head one (K comes from the run's config; a Hugging Face folder has 1 head).
While it streams the status line shows tokens/s and the mean accepted drafts
per pass; when comparing, each side shows its own above its output. The
colouring "by accepted drafts" marks the tokens that came from accepted drafts.

Which weights: :class:`~shiftstudio.gui.widgets.weights_picker.WeightsPicker`
("EMA weights" only where the checkpoint has them), a run's checkpoints or a
local Hugging Face folder (no run needed; the folders opened are remembered
in the window's settings), so a base model can be compared with its
fine-tuned checkpoint. The sampling controls
(:class:`~shiftstudio.gui.widgets.sampling_controls.SamplingControls`) are
remembered in the window's settings. The layout keeps the controls compact so
that the output gets the height of a short dock.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable, Self

from PySide6.QtCore import QEvent, QThread, Qt
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QCheckBox, QComboBox, QFileDialog, QFrame, QHBoxLayout, QLabel, QPlainTextEdit, QPushButton, QScrollArea,
    QSizePolicy, QSplitter, QToolButton, QVBoxLayout, QWidget,
)

from shiftstudio import paths
from shiftstudio.core import io
from shiftstudio.core.errors import GenerationError
from shiftstudio.gui.generation_worker import (  # noqa: F401 - (re-exported)
    BEST, HF, LATEST, LIVE, GenerationWorker, Source,
)
from shiftstudio.gui.panes import Pane, PaneContext
from shiftstudio.gui.run_controller import RunController
from shiftstudio.gui.widgets.elided_label import ElidedLabel
from shiftstudio.gui.widgets.prompt_history import PromptHistory
from shiftstudio.gui.widgets.sampling_controls import SETTINGS_KEY, SamplingControls
from shiftstudio.gui.widgets.token_output import BY_DRAFTS, BY_PROBABILITY, DRAFT_LEGEND, OutputView, draft_colour, text_colour
from shiftstudio.gui.widgets.weights_picker import HF_PREFIX, PICK_HF, WeightsPicker
from shiftstudio.gui.widgets import named

log = logging.getLogger(__name__)

__all__ = ["BEST", "LATEST", "LIVE", "NO_CHECKPOINT", "READY", "GeneratePane", "GenerationWorker", "Source", "stats_text"]

HISTORY_FILE = "playground-history.json"
READY = "Type a prompt and press Generate."
NO_CHECKPOINT = "No checkpoint yet: train a run (or open one), or pick a Hugging Face folder, to generate from it."
HF_FOLDERS_KEY = "generate_hf_folders"  # the Hugging Face folders sampled from, in the window's settings
COLOURINGS = [("by probability", BY_PROBABILITY,
               "Shade each token by how likely the model thought it (red unlikely, green likely)"),
              ("by accepted drafts", BY_DRAFTS,
               "Mark the tokens that came from accepted drafts of speculative decoding (blue): heads 2..K drafted "
               "them and head 1 accepted them")]
COLOUR_TIP = "Colour the generated tokens: by probability, or by accepted drafts (speculative decoding)"
WHY = {"length": "reached max new tokens", "eot": "end of document", "stop": "stop text", "stopped": "stopped"}


def stats_text(stats: dict) -> str:
    """A stream's speed, and for speculative decoding its mean accepted drafts per pass: "42.1 tok/s · 1.8
    accepted/pass"."""
    text = f"{stats.get('tokens_per_s', 0.0):.1f} tok/s"
    if stats.get("speculative"):
        return f"{text} · {stats.get('mean_accepted_per_pass', 0.0):.1f} accepted/pass"
    if stats.get("heads", 1) >= 2:
        return f"{text} · speculative off"
    return text


# -- the pane -------------------------------------------------------------------------


class GeneratePane(Pane):
    """Prompt, sampling controls, Generate / Stop, and one or two streaming outputs.

    With a :class:`RunController` it offers the checkpoints of the run on screen (and its live weights
    while it trains); without one, those of the folder given to :meth:`set_run`. With a settings object
    (``gui.settings.Settings``) the sampling controls come back as they were left.
    """

    title = "Generate"

    def __init__(self, runs: RunController | None = None, settings: Any = None, parent: QWidget | None = None):
        super().__init__(parent)
        self.runs = runs
        self.app_settings = settings
        self.run_dir: Path | None = None
        self._thread: QThread | None = None
        self._worker: GenerationWorker | None = None
        self._started = 0.0
        self._counts = [0, 0]
        self._stats: list[dict] = [{}, {}]  # the latest stats of each stream (plain data from the worker)
        self._heads_cache: dict[Path, int] = {}  # run folder -> K of its model
        self._build()
        self.history.load()
        if settings is not None:
            folders = settings.get(HF_FOLDERS_KEY)
            if isinstance(folders, list):
                self.weights.set_hf_folders(folders)
            saved = settings.get(SETTINGS_KEY)
            self.controls.apply_values(saved)
            if isinstance(saved, dict) and isinstance(saved.get("colour"), bool):
                self.colour.setChecked(saved["colour"])
            if isinstance(saved, dict) and self.colouring.findData(saved.get("colouring")) >= 0:
                self.colouring.setCurrentIndex(self.colouring.findData(saved["colouring"]))
        self.colouring.currentIndexChanged.connect(self._on_colouring_index_changed)
        self._update_legend()
        self.controls.changed.connect(self._on_controls_changed)
        if runs is not None:  # what can be sampled from changes with these
            for signal in (runs.run_started, runs.checkpoint_saved, runs.run_finished, runs.run_failed, runs.state_changed):
                signal.connect(self._on_runs_sources_changed)
            runs.run_opened.connect(self._on_runs_run_opened)
        self._refresh_sources()

    @classmethod
    def from_context(cls, ctx: PaneContext) -> Self:
        return cls(ctx.runs, ctx.settings)

    # -- building ---------------------------------------------------------------------
    def _build(self) -> None:
        self.prompt = named(QPlainTextEdit(), "generate_prompt", "The text the model continues (empty: start a new document)")
        self.prompt.setPlaceholderText("Prompt, e.g. ROMEO:   (Ctrl+Return generates)")
        lines = self.prompt.fontMetrics().lineSpacing()
        self.prompt.setFixedHeight(3 * lines + 14)  # three lines: the output gets the height
        self.history = named(PromptHistory(paths.config_dir() / HISTORY_FILE), "generate_history",
                              "Prompts used before: pick one to use it again")
        self.history.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.history.setMinimumContentsLength(12)
        self.history.setPlaceholderText("History")
        self.history.activated.connect(self._on_history_activated)
        self.controls = SamplingControls()
        for name in ("temperature", "top_k", "top_p", "repetition", "max_tokens", "seed", "stop_text", "stop_eot",
                     "speculative"):
            setattr(self, name, getattr(self.controls, name))  # (the pane's own names for them)

        self.weights = WeightsPicker()
        self.source, self.ema = self.weights.source, self.weights.ema
        self.compare, self.compare_source = self.weights.compare, self.weights.compare_source
        self.weights.compare_toggled.connect(self._on_weights_compare_toggled)
        self.weights.hf_folders_changed.connect(self._on_weights_hf_folders_changed)
        self.weights.problem.connect(self._on_weights_problem)
        self.source.currentIndexChanged.connect(self._on_source_index_changed)
        self.compare_source.currentIndexChanged.connect(self._on_compare_source_index_changed)
        self.compare.toggled.connect(self._on_compare_toggled)

        self.generate_button = named(QPushButton("Generate"), "generate_button", "Sample text from the model (Ctrl+Return)")
        self.generate_button.setShortcut("Ctrl+Return")
        self.generate_button.setDefault(True)
        self.stop_button = named(QPushButton("Stop"), "generate_stop_button", "Stop generating (Esc)")
        self.stop_button.setShortcut("Esc")
        self.stop_button.setEnabled(False)
        self.colour = named(QCheckBox("Colour"), "generate_colour", COLOUR_TIP)
        self.colouring = named(QComboBox(), "generate_colouring", COLOUR_TIP)
        for i, (text, data, tip) in enumerate(COLOURINGS):
            self.colouring.addItem(text, data)
            self.colouring.setItemData(i, tip, Qt.ItemDataRole.ToolTipRole)
        self.colouring.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.colouring.setMinimumContentsLength(12)  # (cut, not widening the pane)
        self.draft_legend = QLabel("draft")  # what an accepted draft looks like, shown with that colouring
        self.draft_legend.setObjectName("generate_draft_legend")
        self.draft_legend.setToolTip(f"Blue background: {DRAFT_LEGEND}")
        self.draft_legend.setVisible(False)
        self.copy_button = named(QToolButton(), "generate_copy", "Copy the generated text to the clipboard")
        self.copy_button.setText("Copy")
        self.save_button = named(QToolButton(), "generate_save", "Save the prompt and the generated text to a text file (both outputs when comparing)")
        self.save_button.setText("Save…")
        self.generate_button.clicked.connect(self._on_generate_button_clicked)
        self.stop_button.clicked.connect(self._on_stop_button_clicked)
        self.colour.toggled.connect(self._on_colour_toggled)
        self.copy_button.clicked.connect(self._on_copy_button_clicked)
        self.save_button.clicked.connect(self._on_save_button_clicked)

        self.output_a = OutputView("generate_output")
        self.output_b = OutputView("generate_output_compare")
        self.title_a = ElidedLabel("Output")  # (cut with "…" when narrow, never misleadingly clipped)
        self.title_b = ElidedLabel("Compare")
        self.stats_a = ElidedLabel("")  # each side's tok/s and accepted drafts per pass, when comparing
        self.stats_b = ElidedLabel("")
        for label, name in ((self.stats_a, "generate_stats"), (self.stats_b, "generate_stats_compare")):
            label.setObjectName(name)
            label.setAlignment(Qt.AlignmentFlag.AlignRight)
        self.output_a_box = self._titled(self.title_a, self.stats_a, self.output_a)
        self.output_b_box = self._titled(self.title_b, self.stats_b, self.output_b)
        self.output_b_box.setVisible(False)
        self.title_a.setVisible(False)  # titles only tell the two outputs apart when comparing
        self.stats_a.setVisible(False)  # (the status line has them when not comparing)
        self.status = ElidedLabel(READY)
        self.status.setObjectName("generate_status")

        buttons = QHBoxLayout()
        buttons.addWidget(self.generate_button)
        buttons.addWidget(self.stop_button)
        buttons.addWidget(self.history, 1)
        buttons.addWidget(self.copy_button)
        buttons.addWidget(self.save_button)
        outputs = QSplitter(Qt.Orientation.Horizontal)
        outputs.setObjectName("generate_outputs_splitter")
        outputs.addWidget(self.output_a_box)
        outputs.addWidget(self.output_b_box)
        main = QVBoxLayout()
        main.setSpacing(4)
        main.addWidget(self.prompt)
        main.addLayout(buttons)
        main.addWidget(outputs, 1)
        main.addWidget(self.status)

        side = QWidget()
        side_layout = QVBoxLayout(side)
        side_layout.setContentsMargins(0, 0, 4, 0)
        side_layout.addWidget(self.weights)
        side_layout.addWidget(self.controls)
        colour_row = QHBoxLayout()
        colour_row.setSpacing(4)
        colour_row.addWidget(self.colour)
        colour_row.addWidget(self.colouring, 1)
        colour_row.addWidget(self.draft_legend)
        side_layout.addLayout(colour_row)
        side_layout.addStretch(1)
        self.side_scroll = QScrollArea()  # never taller than the dock: the controls scroll in a very short one
        self.side_scroll.setObjectName("generate_controls_scroll")
        self.side_scroll.setWidget(side)
        self.side_scroll.setWidgetResizable(True)
        self.side_scroll.setFrameShape(QFrame.Shape.NoFrame)
        self.side_scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.side_scroll.setFixedWidth(side.sizeHint().width() + self.side_scroll.verticalScrollBar().sizeHint().width() + 4)
        self.side_scroll.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Ignored)
        root = QHBoxLayout(self)
        root.setContentsMargins(6, 6, 6, 6)
        root.addLayout(main, 1)
        root.addWidget(self.side_scroll)

    @staticmethod
    def _titled(title: QLabel, stats: QLabel, view: QWidget) -> QWidget:
        box = QWidget()
        layout = QVBoxLayout(box)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        title.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        title.setMinimumWidth(80)
        # the stats get their whole text where there is room, and are cut (never widening the pane) where not
        stats.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Fixed)
        stats.setMinimumWidth(1)
        header = QHBoxLayout()
        header.setSpacing(6)
        header.addWidget(title, 1)
        header.addWidget(stats)
        layout.addLayout(header)
        layout.addWidget(view, 1)
        return box

    def _on_controls_changed(self) -> None:
        self._remember()

    def _remember(self) -> None:
        if self.app_settings is not None:  # written to disk with the window's other settings
            self.app_settings.set(SETTINGS_KEY, {**self.controls.values(), "colour": self.colour.isChecked(),
                                                 "colouring": self.colouring.currentData()})

    # -- sources ---------------------------------------------------------------------
    def set_run(self, run_dir: str | Path | None) -> None:
        self.run_dir = Path(run_dir) if run_dir else None
        self._heads_cache.clear()
        self._refresh_sources()

    def _on_runs_sources_changed(self, *_args: Any) -> None:
        self._refresh_sources()

    def _on_runs_run_opened(self, run_dir: Path, records: list) -> None:
        self.set_run(run_dir)

    def _refresh_sources(self) -> None:
        run_dir = self.runs.run_dir if self.runs is not None else None
        if run_dir is not None:
            self.run_dir = Path(run_dir)
        live = self.runs is not None and self.runs.is_active and self._live_provider() is not None
        self.weights.refresh(self.run_dir, live)
        self._update_buttons()

    def _live_provider(self) -> Callable[[], Any] | None:
        return self.runs.snapshot_provider if self.runs is not None else None

    def _on_weights_compare_toggled(self, on: bool) -> None:
        self.output_b_box.setVisible(on)
        self.title_a.setVisible(on)
        self.stats_a.setVisible(on)

    # -- how many heads the chosen model has (speculative decoding needs K >= 2) -------------
    def source_heads(self, data: Any) -> int:
        """K of the model behind a source combo's item: the run's ``shift`` for its checkpoints and live
        weights, 1 for a Hugging Face folder; 0 for no model (nothing chosen, "Hugging Face folder…")."""
        if not isinstance(data, str) or data == PICK_HF:
            return 0
        if data.startswith(HF_PREFIX) or data == HF:
            return 1
        if self.run_dir is None:
            return 0
        heads = self._heads_cache.get(self.run_dir)
        if heads is None:
            from shiftstudio.core.errors import ShiftStudioError
            from shiftstudio.core.runs.folder import load_run_config

            try:
                heads = int(load_run_config(self.run_dir).model.shift)
            except (OSError, ValueError, ShiftStudioError) as exc:
                log.debug("no model shift for %s: %s", self.run_dir, exc)
                return 0  # unknown: the worker decides from the loaded model
            self._heads_cache[self.run_dir] = heads
        return heads

    def _update_speculative(self) -> None:
        """Offer speculative decoding when a chosen model (or the compared one) has K >= 2 heads; each stream
        only decodes speculatively where its own model can."""
        chosen = [self.source_heads(self.source.currentData())]
        if self.compare.isChecked():
            chosen.append(self.source_heads(self.compare_source.currentData()))
        known = [k for k in chosen if k > 0]
        self.controls.set_heads(max(known) if known else 2)  # nothing known yet: leave it offered

    def _on_compare_source_index_changed(self, _index: int) -> None:
        if not self.running:
            self._update_speculative()

    def _on_compare_toggled(self, _on: bool) -> None:
        if not self.running:
            self._update_speculative()

    def _on_weights_hf_folders_changed(self, folders: list) -> None:
        if self.app_settings is not None:  # written to disk with the window's other settings
            self.app_settings.set(HF_FOLDERS_KEY, list(folders))
        self._update_buttons()

    def _on_weights_problem(self, message: str) -> None:
        self._message(message, error=True)

    def _on_source_index_changed(self, _index: int) -> None:
        if not self.running:
            self._update_buttons()

    def add_hf_folder(self, folder: str | Path, compare: bool = False) -> bool:
        """Offer a Hugging Face folder and choose it (``compare``: as the compared weights)."""
        return self.weights.add_hf_folder(folder, compare)

    # -- generating ------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._thread is not None

    def _update_buttons(self) -> None:
        self._update_speculative()
        has_source = self.weights.has_source()
        self.generate_button.setEnabled(has_source and not self.running)
        self.stop_button.setEnabled(self.running)
        if not has_source and not self.running:
            self._message(NO_CHECKPOINT)
        elif self.status.text() == NO_CHECKPOINT:  # a checkpoint came (a run finished, was opened or resumed)
            self._message(READY)

    def settings(self):
        """The sampling settings of the controls (the core's ``SamplingSettings``)."""
        return self.controls.sampling_settings()

    def generate(self) -> bool:
        """Start sampling with the current prompt and settings; False (with a message) if it cannot."""
        if self.running or not self.weights.has_source():
            return False
        try:
            settings = self.settings()
        except GenerationError as exc:
            self._message(str(exc), error=True)
            return False
        if settings.seed is None:  # draw it here, so that a compared pair shares it
            import random

            settings.seed = random.SystemRandom().randrange(2**31)
        sources = self.weights.sources(self.run_dir)
        prompt = self.prompt.toPlainText()
        self.history.remember(prompt)
        self.title_a.setText(f"Output · {sources[0].label}")
        self.title_b.setText(f"Compare · {sources[1].label}" if len(sources) > 1 else "Compare")
        for view in (self.output_a, self.output_b):
            view.colour = self.colour.isChecked()
            view.colouring = self.colouring.currentData()
            view.clear_tokens(prompt)
        for label in (self.stats_a, self.stats_b):
            label.setText("")
        self._counts = [0, 0]
        self._stats = [{}, {}]
        self._started = time.perf_counter()
        snapshot = self._live_provider() if any(s.checkpoint == LIVE for s in sources) else None
        worker = GenerationWorker(sources, prompt, settings, snapshot, speculative=self.controls.speculative_on())
        thread = QThread(self)
        thread.setObjectName("generation_thread")
        worker.moveToThread(thread)
        thread.started.connect(worker.run)
        worker.loaded.connect(self._on_worker_loaded)
        worker.tokens.connect(self._on_worker_tokens)
        worker.finished.connect(self._on_worker_finished)
        worker.failed.connect(self._on_worker_failed)
        worker.done.connect(thread.quit)
        thread.finished.connect(self._on_thread_finished)
        self._worker, self._thread = worker, thread
        self._message(f"Loading {sources[0].label} …")
        thread.start()
        self._update_buttons()
        return True

    def stop(self) -> None:
        if self._worker is not None:
            self._worker.stop()

    def shutdown(self, ms: int = 10_000) -> bool:
        """Stop and wait for the sampling thread (the window calls this when it closes)."""
        if self._thread is None:
            return True
        self.stop()
        return self._thread.wait(ms)

    def changeEvent(self, event) -> None:  # noqa: N802 - Qt naming
        super().changeEvent(event)
        if event.type() == QEvent.Type.PaletteChange:
            self._update_legend()  # the theme changed: the chip in the new theme's draft colour

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt naming
        self.shutdown()
        super().closeEvent(event)

    # -- worker signals ---------------------------------------------------------------
    def _on_worker_loaded(self, index: int, what: str) -> None:
        (self.title_a if index == 0 else self.title_b).setText(("Output · " if index == 0 else "Compare · ") + what)
        self._message(f"Generating from {what} …")

    def _on_worker_tokens(self, index: int, batch: list, stats: dict | None = None) -> None:
        (self.output_a if index == 0 else self.output_b).append_tokens(batch)
        self._counts[index] += len(batch)
        if stats is None:  # (a worker without stats: the pane's own clock)
            seconds = max(time.perf_counter() - self._started, 1e-6)
            stats = {"tokens": self._counts[index], "tokens_per_s": self._counts[index] / seconds}
        self._show_stats(index, stats)
        if index == 0:
            self._message(f"{self._counts[0]} tokens · {stats_text(stats)}")

    def _on_worker_finished(self, index: int, reason: str, count: int, seconds: float, stats: dict | None = None) -> None:
        if stats is None:
            stats = {"tokens": count, "tokens_per_s": count / max(seconds, 1e-6)}
        self._show_stats(index, stats)
        if index == 0:
            why = WHY.get(reason, reason)
            self._message(f"{count} tokens in {seconds:.1f} s · {stats_text(stats)} · {why}")

    def _show_stats(self, index: int, stats: dict) -> None:
        """Keep a stream's stats and show them above its output (seen when comparing)."""
        self._stats[index] = dict(stats)
        label = self.stats_a if index == 0 else self.stats_b
        label.setText(stats_text(stats))
        tip = f"{stats.get('tokens', 0)} tokens · {stats_text(stats)}"
        if stats.get("speculative") and stats.get("passes"):
            histogram = " ".join(f"{n}:{c}" for n, c in enumerate(stats.get("histogram", [])))
            tip += (f"\n{stats['passes']} passes, {stats.get('accepted', 0)} drafts accepted"
                    f"\npasses by drafts accepted: {histogram}")
        label.setToolTip(tip)

    def stream_stats(self, index: int = 0) -> dict:
        """The latest stats of stream ``index`` (tokens, tokens_per_s, speculative, passes, accepted,
        mean_accepted_per_pass, histogram); empty before any token."""
        return dict(self._stats[index])

    def _on_worker_failed(self, message: str) -> None:
        self._message(message, error=True)

    def _on_thread_finished(self) -> None:
        if self._thread is not None:
            self._thread.deleteLater()
        if self._worker is not None:
            self._worker.deleteLater()
        self._thread = self._worker = None
        self._update_buttons()

    # -- small things ------------------------------------------------------------------
    def _message(self, text: str, error: bool = False) -> None:
        self.status.setText(text)
        self.status.setProperty("error", error)
        self.status.setStyleSheet("color: #c0392b;" if error else "")

    def _on_colour_toggled(self, on: bool) -> None:
        self._remember()
        self._update_legend()
        for view in (self.output_a, self.output_b):
            view.colour = on
            if view.tokens:
                view.recolour()  # re-shade (or un-shade) the tokens already shown

    def _on_colouring_index_changed(self, _index: int) -> None:
        for view in (self.output_a, self.output_b):
            view.colouring = self.colouring.currentData()
        if not self.colour.isChecked():
            self.colour.setChecked(True)  # picking a colouring means wanting to see it (recolours, remembers)
            return
        self._remember()
        self._update_legend()
        for view in (self.output_a, self.output_b):
            if view.tokens:
                view.recolour()

    def _update_legend(self) -> None:
        """The "draft" chip beside the colouring, in the colour of an accepted draft, while that colouring is on."""
        show = self.colour.isChecked() and self.colouring.currentData() == BY_DRAFTS
        if show:
            dark = self.output_a.palette().base().color().lightness() < 128
            self.draft_legend.setStyleSheet(f"background: {draft_colour(dark).name()}; color: {text_colour(dark).name()};"
                                            " padding: 0 3px; border-radius: 2px;")
        self.draft_legend.setVisible(show)

    def _on_generate_button_clicked(self) -> None:
        self.generate()

    def _on_stop_button_clicked(self) -> None:
        self.stop()

    def _on_copy_button_clicked(self) -> None:
        self.copy_output()

    def copy_output(self) -> None:
        QGuiApplication.clipboard().setText(self.output_a.toPlainText())
        self._message("Copied the output to the clipboard.")

    def output_text(self, index: int = 0) -> str:
        """The generated text only (without the prompt)."""
        view = self.output_a if index == 0 else self.output_b
        return "".join(t[0] for t in view.tokens)

    def saved_text(self) -> str:
        """What Save writes: the prompt and the output; with Compare on, both outputs under their titles."""
        if not self.output_b_box.isVisibleTo(self):
            return self.output_a.toPlainText()
        return "".join(f"── {title.text()} ──\n{view.toPlainText()}\n\n"
                       for title, view in ((self.title_a, self.output_a), (self.title_b, self.output_b)))

    def save_output(self, path: str | Path) -> bool:
        """Write :meth:`saved_text` to ``path`` (UTF-8, atomically); False (with a message) when it cannot."""
        try:
            io.write_text(path, self.saved_text())
        except OSError as exc:
            self._message(f"Could not write {path}: {exc}", error=True)
            return False
        self._message(f"Saved {path}.")
        return True

    def _on_save_button_clicked(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save generated text", "generated.txt", "Text (*.txt);;All files (*)")
        if path:
            self.save_output(path)

    # -- prompt history -------------------------------------------------------------------
    def _on_history_activated(self, index: int) -> None:
        text = self.history.prompt_at(index)
        if text is not None:
            self.prompt.setPlainText(text)


if __name__ == "__main__":
    import sys

    from shiftstudio.gui.panes import preview

    sys.exit(preview(GeneratePane, open_sample=False))
