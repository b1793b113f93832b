"""The playground's sampling controls: temperature, top-k, top-p, repetition penalty, max tokens, seed, stop text,
speculative decoding.

A compact two-column grid (it has to fit a dock a few hundred pixels tall).
:meth:`SamplingControls.sampling_settings` turns the values into the core's
``SamplingSettings``; :meth:`values` / :meth:`apply_values` are what the window
remembers between starts (a plain dict, in ``gui.settings.Settings``).

"Speculative decoding" (heads 2..K draft, head 1 verifies: the same text, fewer
passes) depends on the model: :meth:`SamplingControls.set_heads` enables it for
a model with K >= 2 heads and disables it, saying why, for K = 1. The choice
the user made is kept while it is disabled and comes back with a K >= 2 model.
"""

from __future__ import annotations

import math
from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QCheckBox, QDoubleSpinBox, QGridLayout, QLabel, QLineEdit, QSpinBox, QWidget

from shiftstudio.gui.widgets import named

SETTINGS_KEY = "playground"  # the key of the remembered values in gui.settings.Settings
SPECULATIVE_TIP = ("Self-speculative decoding: heads 2..K draft the next tokens and head 1 verifies them in one pass. "
                   "The same text (greedy) or the same distribution (sampling), in fewer passes")


def one_head_reason(heads: int = 1) -> str:
    """Why speculative decoding is off for a model with ``heads`` (< 2) heads, in one line."""
    return f"this model has {heads} head{'s' if heads != 1 else ''}: speculative decoding needs shift ≥ 2"


class SamplingControls(QWidget):
    """The sampling settings as spin boxes; ``changed`` fires when any of them does."""

    changed = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.temperature = named(QDoubleSpinBox(self), "generate_temperature",
                                  "Randomness: 0 always picks the most likely token; 1 samples the model as it is")
        self.temperature.setRange(0.0, 5.0)
        self.temperature.setSingleStep(0.05)
        self.temperature.setValue(0.8)
        self.top_k = named(QSpinBox(self), "generate_top_k", "Sample only among the K most likely tokens (0 = off)")
        self.top_k.setRange(0, 100_000)
        self.top_k.setSpecialValueText("off")
        self.top_p = named(QDoubleSpinBox(self), "generate_top_p",
                            "Nucleus sampling: only the most likely tokens covering this share of probability (1 = off)")
        self.top_p.setRange(0.01, 1.0)
        self.top_p.setSingleStep(0.05)
        self.top_p.setValue(1.0)
        self.repetition = named(QDoubleSpinBox(self), "generate_repetition_penalty",
                                 "Repetition penalty: above 1 makes tokens already in the text less likely")
        self.repetition.setRange(0.5, 3.0)
        self.repetition.setSingleStep(0.05)
        self.repetition.setValue(1.0)
        self.max_tokens = named(QSpinBox(self), "generate_max_new_tokens", "How many tokens to generate at most")
        self.max_tokens.setRange(1, 100_000)
        self.max_tokens.setValue(300)
        self.seed = named(QSpinBox(self), "generate_seed",
                           "Random seed: the same seed and settings write the same text (-1 = a new seed each time)")
        self.seed.setRange(-1, 2**31 - 1)
        self.seed.setValue(1337)
        self.seed.setSpecialValueText("random")
        self.stop_text = named(QLineEdit(self), "generate_stop", "Stop when this text appears (it is not shown); \\n for a newline")
        self.stop_text.setPlaceholderText("e.g. \\n\\n")
        self.stop_eot = named(QCheckBox("Stop at end of document", self), "generate_stop_eot",
                               "End the text when the model writes <|endoftext|>")
        self.stop_eot.setChecked(True)
        self.speculative = named(QCheckBox("Speculative", self), "generate_speculative", SPECULATIVE_TIP)
        self.speculative.setChecked(True)
        self._speculative_wanted = True  # the user's choice, kept while a 1-head model disables the box
        self.heads = 2  # of the chosen model (set_heads); the box is enabled until told otherwise

        grid = QGridLayout(self)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.setHorizontalSpacing(6)
        grid.setVerticalSpacing(3)
        pairs = [("Temperature", self.temperature), ("Top-k", self.top_k), ("Top-p", self.top_p),  # (wide ones on the right)
                 ("Max tokens", self.max_tokens), ("Repetition", self.repetition), ("Seed", self.seed)]
        for i, (text, widget) in enumerate(pairs):
            label = QLabel(text, self)
            label.setToolTip(widget.toolTip())
            label.setBuddy(widget)
            grid.addWidget(label, i // 2, 2 * (i % 2))
            grid.addWidget(widget, i // 2, 2 * (i % 2) + 1)
        stop_label = QLabel("Stop text", self)
        stop_label.setBuddy(self.stop_text)
        stop_label.setToolTip(self.stop_text.toolTip())
        grid.addWidget(stop_label, 3, 0)
        grid.addWidget(self.stop_text, 3, 1, 1, 3)
        grid.addWidget(self.stop_eot, 4, 0, 1, 3)  # (one row for both: the side panel stays as short as it was)
        grid.addWidget(self.speculative, 4, 3)
        grid.setColumnStretch(1, 1)
        grid.setColumnStretch(3, 1)

        for spin in (self.temperature, self.top_k, self.top_p, self.repetition, self.max_tokens, self.seed):
            spin.valueChanged.connect(self._on_control_changed)
        self.stop_text.textChanged.connect(self._on_control_changed)
        self.stop_eot.toggled.connect(self._on_control_changed)
        self.speculative.toggled.connect(self._on_speculative_toggled)

    def _on_speculative_toggled(self, on: bool) -> None:
        if self.speculative.isEnabled():  # a user's choice, not the box being switched off for a 1-head model
            self._speculative_wanted = on
        self.changed.emit()

    # -- speculative decoding ---------------------------------------------------------------
    def set_heads(self, heads: int) -> None:
        """The chosen model has ``heads`` (K) heads: speculative decoding is offered for K >= 2 (on unless the
        user turned it off); for K = 1 the box is off and disabled, its tooltip saying why."""
        self.heads = heads
        if heads >= 2:
            self.speculative.setEnabled(True)
            self.speculative.setChecked(self._speculative_wanted)
            self.speculative.setToolTip(f"{SPECULATIVE_TIP} (this model has {heads} heads)")
        else:
            self.speculative.setEnabled(False)  # first: unchecking a disabled box keeps the user's choice
            self.speculative.setChecked(False)
            self.speculative.setToolTip(f"Not available: {one_head_reason(heads)}")

    def speculative_on(self) -> bool:
        """Whether to decode speculatively (the box is checked and the model has K >= 2 heads)."""
        return self.speculative.isEnabled() and self.speculative.isChecked()

    def _on_control_changed(self, *_args: Any) -> None:
        self.changed.emit()

    def sampling_settings(self):
        """The values as the core's ``SamplingSettings`` (raises ``GenerationError`` for an impossible one)."""
        from shiftstudio.core.generate.filters import SamplingSettings

        stop = self.stop_text.text().replace("\\n", "\n").replace("\\t", "\t")
        return SamplingSettings(
            max_new_tokens=self.max_tokens.value(), temperature=self.temperature.value(), top_k=self.top_k.value(),
            top_p=self.top_p.value(), repetition_penalty=self.repetition.value(),
            seed=None if self.seed.value() < 0 else self.seed.value(), stop=(stop,) if stop else (),
            stop_at_eot=self.stop_eot.isChecked(),
        )

    # -- remembered between starts ------------------------------------------------------
    def values(self) -> dict[str, Any]:
        return {
            "temperature": self.temperature.value(), "top_k": self.top_k.value(), "top_p": self.top_p.value(),
            "repetition_penalty": self.repetition.value(), "max_new_tokens": self.max_tokens.value(),
            "seed": self.seed.value(), "stop": self.stop_text.text(), "stop_at_eot": self.stop_eot.isChecked(),
            "speculative": self._speculative_wanted,
        }

    def apply_values(self, saved: Any) -> None:
        """Values from :meth:`values` (a missing or malformed one keeps its current value; spin boxes clamp)."""
        if not isinstance(saved, dict):
            return
        spins = {"temperature": self.temperature, "top_k": self.top_k, "top_p": self.top_p,
                 "repetition_penalty": self.repetition, "max_new_tokens": self.max_tokens, "seed": self.seed}
        for key, spin in spins.items():
            value = saved.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                value = min(max(value, spin.minimum()), spin.maximum())
                spin.setValue(int(value) if isinstance(spin, QSpinBox) else float(value))
        if isinstance(saved.get("stop"), str):
            self.stop_text.setText(saved["stop"])
        if isinstance(saved.get("stop_at_eot"), bool):
            self.stop_eot.setChecked(saved["stop_at_eot"])
        if isinstance(saved.get("speculative"), bool):
            self._speculative_wanted = saved["speculative"]
            if self.speculative.isEnabled():
                self.speculative.setChecked(saved["speculative"])
