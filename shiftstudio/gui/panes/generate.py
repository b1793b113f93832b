"""The Generate pane: a playground that streams text sampled from a run's model.

Sampling runs in a :class:`~shiftstudio.gui.generation_worker.GenerationWorker` on its own ``QThread``: it loads
the weights (a checkpoint, its EMA copy, or a snapshot of a running training
handed over by :class:`~shiftstudio.gui.run_controller.RunController`) and
advances one or two :class:`~shiftstudio.core.generate.generation.Generation` iterators a
token at a time, sending tokens to the GUI in batches (at most ~30 a second).
Stop is a flag checked before every token, so it ends a stream within one.

Each generated token keeps its probability and the model's top-5 guesses:
"Colour by probability" shades the output, and hovering a token shows them.
"Compare" runs the same prompt, settings and seed on a second checkpoint,
side by side.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable, Self

from PySide6.QtCore import QThread, Qt
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QGridLayout, QGroupBox, QHBoxLayout, QLabel, QLineEdit,
    QPlainTextEdit, QPushButton, QSizePolicy, QSpinBox, QSplitter, QVBoxLayout, QWidget,
)

from shiftstudio import paths
from shiftstudio.core.errors import GenerationError, ShiftStudioError
from shiftstudio.core.runs.layout import checkpoint_name
from shiftstudio.gui.generation_worker import BEST, LATEST, LIVE, GenerationWorker, Source
from shiftstudio.gui.panes import Pane, PaneContext
from shiftstudio.gui.run_controller import RunController
from shiftstudio.gui.widgets.prompt_history import PromptHistory
from shiftstudio.gui.widgets.token_output import OutputView

log = logging.getLogger(__name__)

HISTORY_FILE = "playground-history.json"

# -- the pane -------------------------------------------------------------------------


class GeneratePane(Pane):
    """Prompt, sampling controls, Generate / Stop, and one or two streaming outputs.

    With a :class:`RunController` it offers the checkpoints of the run on screen (and its live weights
    while it trains); without one, those of the folder given to :meth:`set_run`.
    """

    title = "Generate"

    def __init__(self, runs: RunController | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        self.runs = runs
        self.run_dir: Path | None = None
        self._thread: QThread | None = None
        self._worker: GenerationWorker | None = None
        self._started = 0.0
        self._counts = [0, 0]
        self._build()
        self.history.load()
        if runs is not None:  # what can be sampled from changes with these
            for signal in (runs.run_started, runs.checkpoint_saved, runs.run_finished, runs.run_failed, runs.state_changed):
                signal.connect(self._on_runs_sources_changed)
            runs.run_opened.connect(self._on_runs_run_opened)
        self._refresh_sources()

    @classmethod
    def from_context(cls, ctx: PaneContext) -> Self:
        return cls(ctx.runs)

    # -- building ---------------------------------------------------------------------
    def _build(self) -> None:
        def tip(widget: QWidget, name: str, text: str) -> QWidget:
            widget.setObjectName(name)
            widget.setToolTip(text)
            return widget

        self.prompt = tip(QPlainTextEdit(), "generate_prompt", "The text the model continues (empty: start a new document)")
        self.prompt.setPlaceholderText("Type a prompt, e.g. ROMEO:")
        self.prompt.setMaximumHeight(90)
        self.history = tip(PromptHistory(paths.config_dir() / HISTORY_FILE), "generate_history",
                           "Prompts used before: pick one to use it again")
        self.history.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.history.setMinimumContentsLength(16)
        self.history.activated.connect(self._on_history_activated)

        self.temperature = tip(QDoubleSpinBox(), "generate_temperature", "Randomness: 0 always picks the most likely token; 1 samples the model as it is")
        self.temperature.setRange(0.0, 5.0)
        self.temperature.setSingleStep(0.05)
        self.temperature.setValue(0.8)
        self.top_k = tip(QSpinBox(), "generate_top_k", "Sample only among the K most likely tokens (0 = off)")
        self.top_k.setRange(0, 100_000)
        self.top_k.setSpecialValueText("off")
        self.top_p = tip(QDoubleSpinBox(), "generate_top_p", "Nucleus sampling: only the most likely tokens covering this share of probability (1 = off)")
        self.top_p.setRange(0.01, 1.0)
        self.top_p.setSingleStep(0.05)
        self.top_p.setValue(1.0)
        self.repetition = tip(QDoubleSpinBox(), "generate_repetition_penalty", "Above 1 makes tokens already in the text less likely")
        self.repetition.setRange(0.5, 3.0)
        self.repetition.setSingleStep(0.05)
        self.repetition.setValue(1.0)
        self.max_tokens = tip(QSpinBox(), "generate_max_new_tokens", "How many tokens to generate at most")
        self.max_tokens.setRange(1, 100_000)
        self.max_tokens.setValue(300)
        self.seed = tip(QSpinBox(), "generate_seed", "Random seed: the same seed and settings write the same text (-1 = a new seed each time)")
        self.seed.setRange(-1, 2**31 - 1)
        self.seed.setValue(1337)
        self.seed.setSpecialValueText("random")
        self.stop_text = tip(QLineEdit(), "generate_stop", "Stop when this text appears (it is not shown); \\n for a newline")
        self.stop_text.setPlaceholderText("e.g. \\n\\n")
        self.stop_eot = tip(QCheckBox("Stop at end of document"), "generate_stop_eot", "End the text when the model writes <|endoftext|>")
        self.stop_eot.setChecked(True)

        self.source = tip(QComboBox(), "generate_source", "Which weights to sample from: a checkpoint of the run, or the live weights of a running training")
        self.ema = tip(QCheckBox("EMA weights"), "generate_ema", "Use the checkpoint's averaged (EMA) weights, when the run keeps them")
        self.compare = tip(QCheckBox("Compare with"), "generate_compare", "Run the same prompt, settings and seed on a second checkpoint, side by side")
        self.compare_source = tip(QComboBox(), "generate_compare_source", "The second checkpoint to compare with")
        self.compare_source.setEnabled(False)
        self.compare.toggled.connect(self.compare_source.setEnabled)
        self.compare.toggled.connect(lambda on: self.output_b_box.setVisible(on))

        self.generate_button = tip(QPushButton("Generate"), "generate_button", "Sample text from the model (Ctrl+Return)")
        self.generate_button.setShortcut("Ctrl+Return")
        self.generate_button.setDefault(True)
        self.stop_button = tip(QPushButton("Stop"), "generate_stop_button", "Stop generating (Esc)")
        self.stop_button.setShortcut("Esc")
        self.stop_button.setEnabled(False)
        self.colour = tip(QCheckBox("Colour by probability"), "generate_colour", "Shade each token by how likely the model thought it (red unlikely, green likely)")
        self.copy_button = tip(QPushButton("Copy"), "generate_copy", "Copy the generated text to the clipboard")
        self.generate_button.clicked.connect(self.generate)
        self.stop_button.clicked.connect(self.stop)
        self.colour.toggled.connect(self._on_colour_toggled)
        self.copy_button.clicked.connect(self.copy_output)

        self.output_a = OutputView("generate_output")
        self.output_b = OutputView("generate_output_compare")
        self.title_a = QLabel("Output")
        self.title_b = QLabel("Compare")
        self.output_a_box = self._titled(self.title_a, self.output_a)
        self.output_b_box = self._titled(self.title_b, self.output_b)
        self.output_b_box.setVisible(False)
        self.status = QLabel("Pick a run with a checkpoint, type a prompt and press Generate.")
        self.status.setObjectName("generate_status")
        self.status.setWordWrap(True)

        controls = QGroupBox("Sampling")
        form = QFormLayout(controls)
        form.addRow("Temperature", self.temperature)
        form.addRow("Top-k", self.top_k)
        form.addRow("Top-p", self.top_p)
        form.addRow("Repetition penalty", self.repetition)
        form.addRow("Max new tokens", self.max_tokens)
        form.addRow("Seed", self.seed)
        form.addRow("Stop text", self.stop_text)
        form.addRow("", self.stop_eot)
        weights = QGroupBox("Weights")
        grid = QGridLayout(weights)
        grid.addWidget(QLabel("Sample from"), 0, 0)
        grid.addWidget(self.source, 0, 1)
        grid.addWidget(self.ema, 1, 1)
        grid.addWidget(self.compare, 2, 0)
        grid.addWidget(self.compare_source, 2, 1)
        side = QVBoxLayout()
        side.addWidget(weights)
        side.addWidget(controls)
        side.addStretch(1)
        side_widget = QWidget()
        side_widget.setLayout(side)
        side_widget.setMaximumWidth(340)

        prompt_row = QHBoxLayout()
        prompt_row.addWidget(QLabel("History"))
        prompt_row.addWidget(self.history, 1)
        buttons = QHBoxLayout()
        buttons.addWidget(self.generate_button)
        buttons.addWidget(self.stop_button)
        buttons.addStretch(1)
        buttons.addWidget(self.colour)
        buttons.addWidget(self.copy_button)
        outputs = QSplitter(Qt.Orientation.Horizontal)
        outputs.addWidget(self.output_a_box)
        outputs.addWidget(self.output_b_box)
        main = QVBoxLayout()
        main.addWidget(QLabel("Prompt"))
        main.addWidget(self.prompt)
        main.addLayout(prompt_row)
        main.addLayout(buttons)
        main.addWidget(outputs, 1)
        main.addWidget(self.status)
        root = QHBoxLayout(self)
        root.addLayout(main, 1)
        root.addWidget(side_widget)

    @staticmethod
    def _titled(title: QLabel, view: QWidget) -> QWidget:
        box = QWidget()
        layout = QVBoxLayout(box)
        layout.setContentsMargins(0, 0, 0, 0)
        title.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Fixed)
        layout.addWidget(title)
        layout.addWidget(view, 1)
        return box

    # -- sources ---------------------------------------------------------------------
    def set_run(self, run_dir: str | Path | None) -> None:
        self.run_dir = Path(run_dir) if run_dir else None
        self._refresh_sources()

    def _on_runs_sources_changed(self, *_args: Any) -> None:
        self._refresh_sources()

    def _on_runs_run_opened(self, run_dir: Path, records: list) -> None:
        self.set_run(run_dir)

    def _refresh_sources(self) -> None:
        run_dir = self.runs.run_dir if self.runs is not None else None
        if run_dir is not None:
            self.run_dir = Path(run_dir)
        items: list[tuple[str, str]] = []
        if self.runs is not None and self.runs.is_active and self._live_provider() is not None:
            items.append(("Live weights of the running training", LIVE))
        steps = []
        if self.run_dir is not None:
            try:
                from shiftstudio.core.runs.checkpoint import list_checkpoints  # light: no torch work until used

                steps = list_checkpoints(self.run_dir)
            except (OSError, ShiftStudioError):
                steps = []
        if steps:
            items.append((f"Latest checkpoint (step {steps[-1].step})", LATEST))
            if any(i.is_best for i in steps):
                items.append(("Best checkpoint", BEST))
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
        self._update_buttons()

    def _live_provider(self) -> Callable[[], Any] | None:
        return self.runs.snapshot_provider if self.runs is not None else None

    # -- generating ------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._thread is not None

    def _update_buttons(self) -> None:
        has_source = self.source.count() > 0
        self.generate_button.setEnabled(has_source and not self.running)
        self.stop_button.setEnabled(self.running)
        if not has_source and not self.running:
            self.status.setText("No checkpoint yet: train a run (or open one) to generate from it.")

    def settings(self):
        from shiftstudio.core.generate.filters import SamplingSettings

        stop = self.stop_text.text().replace("\\n", "\n").replace("\\t", "\t")
        return SamplingSettings(
            max_new_tokens=self.max_tokens.value(), temperature=self.temperature.value(), top_k=self.top_k.value(),
            top_p=self.top_p.value(), repetition_penalty=self.repetition.value(),
            seed=None if self.seed.value() < 0 else self.seed.value(), stop=(stop,) if stop else (),
            stop_at_eot=self.stop_eot.isChecked(),
        )

    def generate(self) -> bool:
        """Start sampling with the current prompt and settings; False (with a message) if it cannot."""
        if self.running or self.source.count() == 0:
            return False
        try:
            settings = self.settings()
        except GenerationError as exc:
            self._message(str(exc), error=True)
            return False
        if settings.seed is None:  # draw it here, so that a compared pair shares it
            import random

            settings.seed = random.SystemRandom().randrange(2**31)
        sources = [Source(self.run_dir, self.source.currentData(), self.ema.isChecked())]
        if self.compare.isChecked() and self.compare_source.count():
            sources.append(Source(self.run_dir, self.compare_source.currentData(), self.ema.isChecked()))
        prompt = self.prompt.toPlainText()
        self.history.remember(prompt)
        self.title_a.setText(f"Output · {sources[0].label}")
        self.title_b.setText(f"Compare · {sources[1].label}" if len(sources) > 1 else "Compare")
        for view in (self.output_a, self.output_b):
            view.colour = self.colour.isChecked()
            view.clear_tokens(prompt)
        self._counts = [0, 0]
        self._started = time.perf_counter()
        snapshot = self._live_provider() if any(s.checkpoint == LIVE for s in sources) else None
        worker = GenerationWorker(sources, prompt, settings, snapshot)
        thread = QThread(self)
        thread.setObjectName("generation_thread")
        worker.moveToThread(thread)
        thread.started.connect(worker.run)
        worker.loaded.connect(self._on_loaded)
        worker.tokens.connect(self._on_tokens)
        worker.finished.connect(self._on_finished)
        worker.failed.connect(self._on_failed)
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

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt naming
        self.shutdown()
        super().closeEvent(event)

    # -- worker signals ---------------------------------------------------------------
    def _on_loaded(self, index: int, what: str) -> None:
        (self.title_a if index == 0 else self.title_b).setText(("Output · " if index == 0 else "Compare · ") + what)
        self._message(f"Generating from {what} …")

    def _on_tokens(self, index: int, batch: list) -> None:
        (self.output_a if index == 0 else self.output_b).append_tokens(batch)
        self._counts[index] += len(batch)
        seconds = max(time.perf_counter() - self._started, 1e-6)
        self._message(f"{self._counts[0]} tokens · {self._counts[0] / seconds:.1f} tokens/s")

    def _on_finished(self, index: int, reason: str, count: int, seconds: float) -> None:
        if index == 0:
            why = {"length": "reached max new tokens", "eot": "end of document", "stop": "stop text",
                   "stopped": "stopped"}.get(reason, reason)
            self._message(f"{count} tokens in {seconds:.1f} s · {count / max(seconds, 1e-6):.1f} tokens/s · {why}")

    def _on_failed(self, message: str) -> None:
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
        for view in (self.output_a, self.output_b):
            view.colour = on
            if view.tokens:
                view.recolour()  # re-shade (or un-shade) the tokens already shown

    def copy_output(self) -> None:
        QGuiApplication.clipboard().setText(self.output_a.toPlainText())
        self._message("Copied the output to the clipboard.")

    def output_text(self, index: int = 0) -> str:
        """The generated text only (without the prompt)."""
        view = self.output_a if index == 0 else self.output_b
        return "".join(t for t, _, _ in view.tokens)

    # -- prompt history -------------------------------------------------------------------
    def _on_history_activated(self, index: int) -> None:
        text = self.history.prompt_at(index)
        if text is not None:
            self.prompt.setPlainText(text)


if __name__ == "__main__":
    import sys

    from shiftstudio.gui.panes import preview

    sys.exit(preview(GeneratePane, open_sample=False))
