"""Model & training pane: presets, the generated settings form, validation and live figures.

What changes while the user edits (the "changed from the preset" note, an
error) sits *below* the form, so the fields never move under the pointer.
"""

from __future__ import annotations

import os
import re
from typing import Self

from PySide6.QtWidgets import (
    QComboBox,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from shiftstudio import paths
from shiftstudio.config import ConfigError, RunConfig, SECTIONS
from shiftstudio.presets import load_preset, preset_description, preset_paths
from shiftstudio.core import io
from shiftstudio.format import human_bytes, human_count
from shiftstudio.gui.config_model import ConfigModel
from shiftstudio.gui.panes import Pane, PaneContext
from shiftstudio.gui.session import Session
from shiftstudio.gui.widgets.config_form import ConfigForm
from shiftstudio.gui.widgets.message_bar import MessageBar

# How the training fields are grouped on screen (a field left out lands in "More").
TRAIN_GROUPS = (
    ("Optimisation", ("batch_size", "gradient_accumulation_steps", "learning_rate", "min_lr", "max_iters", "warmup_iters", "lr_decay_iters", "weight_decay", "beta1", "beta2", "grad_clip")),
    ("Evaluation & checkpoints", ("eval_interval", "eval_iters", "log_interval", "checkpoint_interval", "keep_checkpoints", "early_stop_patience", "ema_decay")),
    ("Device", ("device", "dtype", "compile", "num_threads", "seed")),
)
PRESET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
ASSUMED_VOCAB = 256  # until a tokenizer is built


def form_groups() -> list[tuple[str, list[str]]]:
    groups = [("Model", list(SECTIONS["model"].__dataclass_fields__))]
    train_keys = list(SECTIONS["train"].__dataclass_fields__)
    placed: set[str] = set()
    for title, keys in TRAIN_GROUPS:
        keys = [k for k in keys if k in train_keys]
        placed.update(keys)
        groups.append((title, keys))
    rest = [k for k in train_keys if k not in placed]
    if rest:
        groups.append(("More", rest))
    return groups


def save_preset(config: RunConfig, name: str) -> str:
    """Write ``config`` as a user preset; returns the file path. Raises ValueError for a bad name."""
    if not PRESET_NAME.match(name):
        raise ValueError("a preset name uses letters, digits, '.', '_' or '-' (up to 64)")
    path = paths.user_presets_dir() / f"{name}.toml"
    io.write_text(path, config.to_toml(name=name, description="Saved from the ShiftStudio app."))
    return str(path)


def total_memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


class ModelPane(Pane):
    """Edits the model and training settings of the config; figures use the session's tokenizer and device."""

    title = "Model & training"

    def __init__(self, session: Session, config: ConfigModel, parent: QWidget | None = None):
        super().__init__(parent)
        self.session = session
        self.config = config

        self.preset_combo = QComboBox(self)
        self.preset_combo.setObjectName("model_preset_combo")
        self.preset_combo.setToolTip("Load a preset: every setting below changes (the corpus stays)")
        self.preset_combo.setMinimumContentsLength(12)
        self.save_preset_button = QPushButton("Save as preset…", self)
        self.save_preset_button.setObjectName("model_save_preset_button")
        self.save_preset_button.setToolTip("Save these settings as a preset of your own")
        self.preset_label = QLabel("", self)
        self.preset_label.setObjectName("model_preset_description")
        self.preset_label.setWordWrap(True)
        self.preset_label.setProperty("role", "hint")
        self.preset_label.setMinimumHeight(2 * self.preset_label.fontMetrics().lineSpacing())  # room for most texts
        self.changed_label = QLabel("", self)  # below the form: appearing never moves a field
        self.changed_label.setObjectName("model_changed_label")
        self.changed_label.setWordWrap(True)
        self.changed_label.setProperty("role", "hint")
        self.changed_label.setToolTip("The settings that differ from the preset last loaded")
        self.changed_label.hide()
        self.messages = MessageBar(self, "model_message_bar")
        self._preset_cache: dict[str, dict] = {}

        figures = QGroupBox("Live figures", self)
        grid = QGridLayout(figures)
        self.figure_labels: dict[str, QLabel] = {}
        entries = (
            ("params", "Parameters", "All trainable weights, with the (tied) embedding"),
            ("non_embedding", "Non-embedding", "Weights outside the token and position embeddings"),
            ("flops", "FLOPs per token", "Forward + backward floating-point operations per training token (≈ 6N + attention)"),
            ("tokens_per_step", "Tokens per step", "batch_size × gradient_accumulation_steps × block_size"),
            ("memory", "Memory (estimate)", "Weights, gradients, AdamW state and activations for one micro-batch"),
            ("vocab", "Vocabulary", "From the tokenizer pane once built; assumed until then"),
        )
        for i, (key, title, tip) in enumerate(entries):
            name = QLabel(title, figures)
            name.setToolTip(tip)
            value = QLabel("–", figures)
            value.setObjectName(f"model_figure_{key}")
            value.setToolTip(tip)
            value.setProperty("role", "figure")
            grid.addWidget(name, i // 2, (i % 2) * 2)
            grid.addWidget(value, i // 2, (i % 2) * 2 + 1)
            self.figure_labels[key] = value
        grid.setColumnStretch(1, 1)
        grid.setColumnStretch(3, 1)

        self.form = ConfigForm(self.config, groups=form_groups())
        scroll = QScrollArea(self)
        scroll.setObjectName("model_form_scroll")
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.form)
        scroll.setFrameShape(QScrollArea.NoFrame)

        top = QHBoxLayout()
        top.addWidget(QLabel("Preset", self))
        top.addWidget(self.preset_combo, 1)
        top.addWidget(self.save_preset_button)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.preset_label)
        layout.addWidget(figures)
        layout.addWidget(scroll, 1)
        layout.addWidget(self.changed_label)
        layout.addWidget(self.messages)

        self.reload_presets()
        self.preset_combo.activated.connect(self._on_preset_combo_activated)
        self.save_preset_button.clicked.connect(self._on_save_preset_clicked)
        self.config.values_changed.connect(self._on_config_values_changed)
        self.config.validity_changed.connect(self._on_config_validity_changed)
        self.config.preset_changed.connect(self._on_config_preset_changed)
        self.session.tokenizer_changed.connect(self._on_session_tokenizer_changed)
        self.session.device_probed.connect(self._on_session_device_probed)
        self._on_config_validity_changed(self.config.error)
        self.update_figures()

    @classmethod
    def from_context(cls, ctx: PaneContext) -> Self:
        return cls(ctx.session, ctx.config)

    # -- presets -------------------------------------------------------------
    def reload_presets(self) -> None:
        self.preset_combo.blockSignals(True)
        self.preset_combo.clear()
        for name in preset_paths():
            self.preset_combo.addItem(name, name)
            self.preset_combo.setItemData(self.preset_combo.count() - 1, preset_description(name), 3)  # ToolTipRole
        self.preset_combo.blockSignals(False)
        self._on_config_preset_changed(self.config.preset)

    def _on_preset_combo_activated(self, index: int) -> None:
        name = self.preset_combo.itemData(index)
        if name:
            self.apply_preset(name)

    def apply_preset(self, name: str) -> None:
        try:
            config = load_preset(name)
        except ConfigError as exc:
            self.messages.show_message(str(exc), "error")
            return
        self.config.load(config, keep=("corpus",), preset=name)

    def _on_config_preset_changed(self, name: str) -> None:
        index = self.preset_combo.findData(name)
        self.preset_combo.setCurrentIndex(index)
        self._show_preset_description()

    def _preset_values(self, name: str) -> dict:
        if name not in self._preset_cache:
            try:
                self._preset_cache[name] = load_preset(name).to_flat()
            except ConfigError:
                self._preset_cache[name] = {}
        return self._preset_cache[name]

    def changed_from_preset(self) -> list[str]:
        """The model and training settings that differ from the preset last loaded."""
        name = self.config.preset
        if not name:
            return []
        preset = self._preset_values(name)
        keys = [*SECTIONS["model"].__dataclass_fields__, *SECTIONS["train"].__dataclass_fields__]
        return [k for k in keys if k in preset and preset[k] != self.config.value(k)]

    def _show_preset_description(self) -> None:
        name = self.config.preset
        self.preset_label.setText(preset_description(name) if name else "Custom settings.")
        changed = self.changed_from_preset()
        if changed:
            shown = ", ".join(changed[:6]) + (f" and {len(changed) - 6} more" if len(changed) > 6 else "")
            self.changed_label.setText(f"Changed from the preset {name}: {shown}.")
        self.changed_label.setVisible(bool(changed))

    def ask_preset_name(self) -> str:
        """Modal prompt (tests replace this method)."""
        name, ok = QInputDialog.getText(self, "Save preset", "Preset name:", text=self.config.preset or "my-preset")
        return name.strip() if ok else ""

    def _on_save_preset_clicked(self) -> None:
        self.save_as_preset()

    def save_as_preset(self, name: str | None = None) -> str:
        if not self.config.is_valid:
            self.messages.show_message(f"Cannot save an invalid config: {self.config.error}", "error")
            return ""
        name = name if name is not None else self.ask_preset_name()
        if not name:
            return ""
        try:
            path = save_preset(self.config.config, name)
        except (ValueError, OSError) as exc:
            self.messages.show_message(f"Could not save the preset: {exc}", "error")
            return ""
        self._preset_cache.pop(name, None)
        self.config.set_preset_name(name)
        self.reload_presets()
        self.messages.show_message(f"Saved preset '{name}' ({path}).", "info")
        return path

    # -- validation and figures ---------------------------------------------
    def _on_config_validity_changed(self, error: str) -> None:
        if error:
            self.messages.show_message(f"{error}. Training is disabled until this is fixed.", "error")
        elif self.messages.level() == "error":
            self.messages.clear()
        self.update_figures()

    def _on_config_values_changed(self, keys: set[str]) -> None:
        self.update_figures()
        self._show_preset_description()

    def _on_session_tokenizer_changed(self, info: object) -> None:
        self.update_figures()

    def _on_session_device_probed(self, summary: object) -> None:
        self.update_figures()

    def _vocab(self) -> tuple[int, bool]:
        info = self.session.tokenizer
        if info is not None:
            return info.vocab_size, True
        if self.config.value("tokenizer") == "bpe":
            return int(self.config.value("vocab_size")), False
        return ASSUMED_VOCAB, False

    def _dtype(self, cfg: RunConfig) -> str:
        dtype = cfg.train.dtype
        if dtype != "auto":
            return dtype
        device = cfg.train.device
        kind = device.split(":")[0] if device != "auto" else (self.session.device.kind if self.session.device else "cpu")
        return "bfloat16" if kind == "cuda" else "float32"

    def update_figures(self) -> None:
        labels = self.figure_labels
        if not self.config.is_valid:
            for label in labels.values():
                label.setText("–")
            return
        from shiftstudio.core.model import estimate

        cfg = self.config.config
        vocab, known = self._vocab()
        labels["vocab"].setText(f"{vocab:,}" + ("" if known else " (assumed)"))
        labels["params"].setText(human_count(estimate.count_params(cfg.model, vocab)))
        labels["non_embedding"].setText(human_count(estimate.count_params(cfg.model, vocab, non_embedding=True)))
        labels["flops"].setText(human_count(estimate.flops_per_token(cfg.model, vocab)))
        labels["tokens_per_step"].setText(f"{cfg.train.tokens_per_step_factor * cfg.model.block_size:,}")
        dtype = self._dtype(cfg)
        memory = estimate.estimate_memory(cfg.model, cfg.train, vocab, dtype)
        device = self.session.device.text if self.session.device else cfg.train.device
        text = f"{human_bytes(memory['total'])} ({dtype})"
        ram = total_memory_bytes()
        if ram and (self.session.device is None or self.session.device.kind == "cpu"):
            text += f" of {human_bytes(ram)} RAM"
        labels["memory"].setText(text)
        labels["memory"].setToolTip(
            f"Estimated for {device}:\n" + "\n".join(f"  {k}: {human_bytes(v)}" for k, v in memory.items() if k != "total")
        )


if __name__ == "__main__":
    from shiftstudio.gui.panes import preview

    raise SystemExit(preview(ModelPane))
