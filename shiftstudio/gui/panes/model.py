"""Model & training pane: presets, the generated settings form, validation and live figures.

What changes while the user edits (the "changed from the preset" note, an
error) sits *below* the form, so the fields never move under the pointer.

"Start from" (the top of the Model group) sets ``init_from``: a new model, a
run's checkpoint or a local Hugging Face folder. A source is read off the GUI
thread (:func:`~shiftstudio.gui.widgets.source_picker.read_source`); then the
architecture fields take the source's values and are locked, ``block_size`` is
capped at the source's context, the tokenizer is the source's, the LoRA group
opens, and — only when the user picked it — fine-tuning defaults are applied
once (:func:`finetune_defaults`). "New model" unlocks the fields and gives back
the architecture and tokenizer the settings had before.
"""

from __future__ import annotations

import math
import os
import re
from typing import Any, Self

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
from shiftstudio.config import SCRATCH, ConfigError, ModelConfig, RunConfig, SECTIONS
from shiftstudio.presets import load_preset, preset_description, preset_paths
from shiftstudio.core import io
from shiftstudio.format import human_bytes, human_count
from shiftstudio.gui.config_model import ConfigModel
from shiftstudio.gui.panes import Pane, PaneContext
from shiftstudio.gui.session import Session
from shiftstudio.gui.widgets.config_form import ConfigForm
from shiftstudio.gui.widgets.message_bar import MessageBar
from shiftstudio.gui.widgets.source_picker import SourceInfo, SourcePicker, is_scratch, read_source, tokenizer_matches
from shiftstudio.gui.workers import Task

# How the training fields are grouped on screen (a field left out lands in "More").
TRAIN_GROUPS = (
    ("Optimisation", ("batch_size", "gradient_accumulation_steps", "learning_rate", "min_lr", "max_iters", "warmup_iters", "lr_decay_iters", "weight_decay", "beta1", "beta2", "grad_clip", "optimizer", "muon_lr", "muon_momentum")),
    ("LoRA", ("lora_rank", "lora_alpha", "lora_dropout", "lora_targets")),
    ("Evaluation & checkpoints", ("eval_interval", "eval_iters", "log_interval", "checkpoint_interval", "keep_checkpoints", "early_stop_patience", "ema_decay")),
    ("Device", ("device", "dtype", "compile", "num_threads", "parallel", "seed")),
)
PRESET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
ASSUMED_VOCAB = 256  # until a tokenizer is built
SOURCE_KEY = "init_from"  # shown as the "Start from" control, not as a line edit
REMEMBERED_KEYS = ("n_layer", "n_head", "n_embd", "bias", "pos", "norm", "activation", "tie_weights", "norm_eps",
                   "block_size", "tokenizer")  # what a source replaces and "New model" gives back

# Fine-tuning defaults, applied once when a source is picked: a pretrained model wants a far smaller step than
# one trained from scratch (full fine-tuning 5e-5, as transformers' Trainer; LoRA's few adapter weights take a
# larger one), a short warmup, no dropout on a model that was trained without it, and cosine decay to lr / 10.
FULL_FT_LR, LORA_LR = 5e-5, 2e-4
FT_WARMUP_SHARE = 0.02
FT_HINT = "Fine-tuning defaults applied: learning_rate {lr:g} ({mode}), min_lr lr / 10, warmup {warmup} steps, dropout 0."
FT_TIP = ("A pretrained model is fine-tuned with a much smaller learning rate than a new one: 5e-5 for full "
          "fine-tuning, 2e-4 with LoRA (only the small adapters learn). A short warmup (2 % of the steps) and no "
          "dropout; the cosine schedule ends at a tenth of the peak. Change any of them as you like: they are "
          "set once, when the source is picked, and switch between the two rates when LoRA is turned on or off "
          "while you keep the default.")
LORA_ON_TIP = ("LoRA adapts a pretrained model: its weights stay frozen and small rank-r adapters on the chosen "
               "layers learn instead (lora_rank 0 = full fine-tuning, every weight learns). Far fewer trainable "
               "weights, so far less memory for gradients and AdamW.")
LORA_OFF_TIP = ("LoRA adapts a pretrained model: pick a run's checkpoint or a Hugging Face folder under "
                "Start from (Model) to use it.")


def finetune_defaults(lora_rank: int, max_iters: int) -> dict[str, Any]:
    """The training settings a fine-tuning run starts with (see :data:`FT_TIP`)."""
    lr = LORA_LR if lora_rank > 0 else FULL_FT_LR
    warmup = max(1, round(FT_WARMUP_SHARE * max_iters)) if max_iters > 1 else 0
    return {"learning_rate": lr, "min_lr": lr / 10, "warmup_iters": warmup, "dropout": 0.0}


def form_groups() -> list[tuple[str, list[str]]]:
    model_keys = list(SECTIONS["model"].__dataclass_fields__)
    groups = [("Model", [SOURCE_KEY] + [k for k in model_keys if k != SOURCE_KEY])]
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


def heads_text(model: ModelConfig) -> str:
    """The model pane's figure for heads 2..K: "residual 99.1K (linear 98.3K, block 394K)", the chosen kind first."""
    from shiftstudio.core.model import estimate

    if model.shift < 2:
        return "none (shift = 1)"
    by_kind = estimate.shift_head_params_by_kind(model)
    others = ", ".join(f"{kind} {human_count(n)}" for kind, n in by_kind.items() if kind != model.head_kind)
    return f"{model.head_kind} {human_count(by_kind[model.head_kind])} ({others})"


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
        entries = (  # two columns of short values, then the long ones (memory, heads) across the whole width:
            # side by side they made the pane wider than its dock (a horizontal scroll bar, the hints cut)
            ("params", "Parameters", "All the model's weights, with the (tied) embedding"),
            ("non_embedding", "Non-embedding", "Weights outside the token and position embeddings"),
            ("trainable", "Trainable / total", "The weights that learn, of all the weights: every one for a new model "
             "or full fine-tuning; with LoRA the adapters (and heads 2..K), of the model plus its adapters"),
            ("flops", "FLOPs per token", "Forward + backward floating-point operations per training token (≈ 6N + attention)"),
            ("vocab", "Vocabulary", "From the tokenizer pane once built (the source model's when fine-tuning); "
             "assumed until then"),
            ("tokens_per_step", "Tokens per step", "batch_size × gradient_accumulation_steps × block_size"),
            ("memory", "Memory (estimate)", "Weights, gradients and AdamW state (for the weights that learn) and "
             "activations for one micro-batch"),
            ("heads", "Heads 2..K", "Weights of the extra shift heads (they draft tokens for speculative decoding), "
             "for the chosen head kind and, in brackets, the other kinds at this shape"),
        )
        wide = ("memory", "heads")
        for i, (key, title, tip) in enumerate(entries):
            name = QLabel(title, figures)
            name.setToolTip(tip)
            value = QLabel("–", figures)
            value.setObjectName(f"model_figure_{key}")
            value.setToolTip(tip)
            value.setProperty("role", "figure")
            if key in wide:
                row = (len(entries) - len(wide)) // 2 + wide.index(key)
                grid.addWidget(name, row, 0)
                grid.addWidget(value, row, 1, 1, 3)
            else:
                grid.addWidget(name, i // 2, (i % 2) * 2)
                grid.addWidget(value, i // 2, (i % 2) * 2 + 1)
            self.figure_labels[key] = value
        grid.setColumnStretch(1, 1)
        grid.setColumnStretch(3, 1)

        self.source: SourceInfo | None = None  # what init_from names, once read
        self.source_picker = SourcePicker(self)
        self._source_task: Task | None = None
        self._before_source: dict[str, Any] = {}  # the settings a source replaced ("New model" gives them back)
        self._lora_on = False
        self.form = ConfigForm(self.config, groups=form_groups(), custom={SOURCE_KEY: ("Start from", self.source_picker)})
        self.lora_group = self.form.groups["LoRA"]
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
        self.source_picker.chosen.connect(self._on_source_picker_chosen)
        self.source_picker.scratch_chosen.connect(self._on_source_picker_scratch_chosen)
        self._on_config_validity_changed(self.config.error)
        self._show_unlocked()
        self._sync_source()
        self.update_figures()

    @classmethod
    def from_context(cls, ctx: PaneContext) -> Self:
        return cls(ctx.session, ctx.config)

    def shutdown(self) -> bool:
        task = self._source_task
        return task is None or task.wait(10_000)

    # -- start from: a new model or a source ---------------------------------
    @property
    def reading_source(self) -> bool:
        return self._source_task is not None

    def choose_source(self, path: str) -> None:
        """Start from the run, checkpoint or Hugging Face folder at ``path``: read it (off the GUI thread), then
        take its architecture and tokenizer and apply the fine-tuning defaults. Nothing changes if it cannot be
        read: the reason is shown in the message bar."""
        self._read_source(str(path), chosen=True)

    def choose_scratch(self) -> None:
        """A new model: no source; the architecture and tokenizer the settings had before one come back."""
        self._cancel_source_read()
        values: dict[str, Any] = {**self._before_source, SOURCE_KEY: SCRATCH, "lora_rank": 0}
        self._before_source = {}
        self.source = None
        self._show_unlocked()
        self.config.load_flat(values)
        self.update_figures()

    def _on_source_picker_chosen(self, path: str) -> None:
        self.choose_source(path)

    def _on_source_picker_scratch_chosen(self) -> None:
        self.choose_scratch()

    def _sync_source(self) -> None:
        """init_from changed (a preset, an opened run, saved settings): show and lock what it names."""
        init_from = str(self.config.value(SOURCE_KEY))
        if is_scratch(init_from):
            self._cancel_source_read()
            if self.source is not None:
                self.source = None
                self._show_unlocked()
            return
        if self.source is not None and self.source.init_from == init_from:
            return
        self._read_source(init_from, chosen=False)

    def _read_source(self, path: str, chosen: bool) -> None:
        self._cancel_source_read()
        task = Task(lambda progress, cancel: read_source(path), "Source")
        task.setProperty("chosen", chosen)
        task.setProperty("path", path)
        task.succeeded.connect(self._on_source_task_succeeded)
        task.failed.connect(self._on_source_task_failed)
        task.finished.connect(self._on_source_task_finished)
        self._source_task = task
        self.source_picker.combo.setEnabled(False)  # until it is read (a moment)
        if not chosen:
            self.source = None
            self.source_picker.show_pending(path, "Reading the source model…")
        task.start()

    def _cancel_source_read(self) -> None:
        if self._source_task is not None:
            self._source_task.cancel()  # its answer is ignored
            self._source_task = None
            self.source_picker.combo.setEnabled(True)

    def _on_source_task_succeeded(self, info: SourceInfo) -> None:
        task = self.sender()
        if task is not self._source_task:
            return
        self._apply_source(info, chosen=bool(task.property("chosen")))

    def _on_source_task_failed(self, message: str, detail: str, expected: bool) -> None:
        task = self.sender()
        if task is not self._source_task:
            return
        if task.property("chosen"):  # nothing changed: the settings keep their source (or none)
            self.messages.show_message(message, "error", detail)
            self.source_picker.show_source(self.source)
        else:
            self.messages.show_message(f"The source model cannot be read: {message}", "error", detail)
            self.source_picker.show_pending(str(task.property("path")), "The source model cannot be read.")

    def _on_source_task_finished(self) -> None:
        if self.sender() is self._source_task:
            self._source_task = None
            self.source_picker.combo.setEnabled(True)

    def _apply_source(self, info: SourceInfo, chosen: bool) -> None:
        values: dict[str, Any] = {**info.architecture, SOURCE_KEY: info.init_from,
                                  "block_size": min(int(self.config.value("block_size")), info.n_positions)}
        if not tokenizer_matches(str(self.config.value("tokenizer")), info):
            values["tokenizer"] = info.tokenizer_path
        if chosen:
            if self.source is None and is_scratch(str(self.config.value(SOURCE_KEY))):
                self._before_source = {k: self.config.value(k) for k in REMEMBERED_KEYS}
            values.update(finetune_defaults(int(self.config.value("lora_rank")), int(self.config.value("max_iters"))))
        self.source = info  # first: the init_from it sets is then known
        self._lora_on = int(self.config.value("lora_rank")) > 0
        self.form.set_limit("block_size", info.n_positions, f"At most {info.n_positions:,}: the source model's context.")
        self.config.load_flat(values)
        why = f"Read-only: it comes from the source model ({info.label}). Choose New model under Start from to change it."
        self.form.lock({k: why for k in info.architecture})
        self.source_picker.show_source(info)
        if chosen:
            self._show_finetune_hint()
            if self.messages.level() == "error" and self.config.is_valid:
                self.messages.clear()
        self.lora_group.setEnabled(True)
        self.lora_group.setToolTip(LORA_ON_TIP)
        self.update_figures()

    def _show_finetune_hint(self) -> None:
        train = self.config
        lr = float(train.value("learning_rate"))
        mode = "LoRA" if int(train.value("lora_rank")) > 0 else "full fine-tuning"
        self.source_picker.show_hint(FT_HINT.format(lr=lr, mode=mode, warmup=train.value("warmup_iters")), FT_TIP)

    def _show_unlocked(self) -> None:
        self.form.lock({})
        self.form.set_limit("block_size", None)
        self.source_picker.show_source(None)
        self.lora_group.setEnabled(False)
        self.lora_group.setToolTip(LORA_OFF_TIP)

    def _on_lora_rank_changed(self) -> None:
        """LoRA turned on or off while the learning rate is the other mode's default: take this mode's."""
        on = int(self.config.value("lora_rank")) > 0
        if on == self._lora_on:
            return
        self._lora_on = on
        if self.source is None:
            return
        old, new = (FULL_FT_LR, LORA_LR) if on else (LORA_LR, FULL_FT_LR)
        lr, min_lr = float(self.config.value("learning_rate")), float(self.config.value("min_lr"))
        if math.isclose(lr, old) and math.isclose(min_lr, old / 10):
            self.config.load_flat({"learning_rate": new, "min_lr": new / 10})
            if self.source_picker.hint.text():
                self._show_finetune_hint()

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
        if SOURCE_KEY in keys:
            self._sync_source()
        if "lora_rank" in keys:
            self._on_lora_rank_changed()
        self.update_figures()
        self._show_preset_description()

    def _on_session_tokenizer_changed(self, info: object) -> None:
        self.update_figures()

    def _on_session_device_probed(self, summary: object) -> None:
        self.update_figures()

    def _vocab(self) -> tuple[int, bool]:
        if self.source is not None:
            return self.source.vocab_size, True
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
        labels["vocab"].setText(f"{vocab:,}" + (" (the source's)" if self.source is not None else "" if known else " (assumed)"))
        labels["params"].setText(human_count(estimate.count_params(cfg.model, vocab)))
        trainable, total = estimate.count_trainable(cfg.model, cfg.train, vocab)
        if cfg.train.lora_rank > 0 and self.source is None:
            mode = "LoRA needs a source model (Start from)"
            labels["trainable"].setText(mode)
        else:
            mode = (f"LoRA r={cfg.train.lora_rank}" if cfg.train.lora_rank > 0
                    else "full fine-tuning" if self.source is not None else "new model")
            share = f" ({100 * trainable / total:.2g} %)" if trainable < total else ""
            labels["trainable"].setText(f"{human_count(trainable)} / {human_count(total)}{share}")
        labels["trainable"].setToolTip(f"{trainable:,} of {total:,} weights learn ({mode})")
        labels["non_embedding"].setText(human_count(estimate.count_params(cfg.model, vocab, non_embedding=True)))
        labels["flops"].setText(human_count(estimate.flops_per_token(cfg.model, vocab)))
        labels["tokens_per_step"].setText(f"{cfg.train.tokens_per_step_factor * cfg.model.block_size:,}")
        labels["heads"].setText(heads_text(cfg.model))
        dtype = self._dtype(cfg)
        memory = estimate.estimate_memory(cfg.model, cfg.train, vocab, dtype)
        device = self.session.device.text if self.session.device else cfg.train.device
        text = f"{human_bytes(memory['total'])} ({dtype})"
        ram = total_memory_bytes()
        if ram and (self.session.device is None or self.session.device.kind == "cpu"):
            text += f" of {human_bytes(ram)} RAM"
        labels["memory"].setText(text)
        labels["memory"].setToolTip(
            f"Estimated for {device}, {mode}:\n" + "\n".join(f"  {k}: {human_bytes(v)}" for k, v in memory.items() if k != "total")
        )


if __name__ == "__main__":
    from shiftstudio.gui.panes import preview

    raise SystemExit(preview(ModelPane))
