"""A form generated from the config dataclasses: one editor per field.

Editors come from each field's type and metadata (``minimum``, ``maximum``,
``step``, ``decimals``, ``choices``); tooltips come from its help text and
:func:`~shiftstudio.config.range_text`, and the model checks values with
:func:`~shiftstudio.config.field_problem`, so the range a tooltip shows is the
one an error names. There
is no hand-written list of fields: a new config field shows up by itself.
The form edits a :class:`~shiftstudio.gui.config_model.ConfigModel` and marks
the fields that the model's current error names. A field linked to another
(``lr_decay_iters`` follows ``max_iters`` …) has a link button beside it that
says how it follows; typing a value unlinks it, the button links it again.

A few settings get an editor of their own: ``lora_targets`` (a comma list of
the block's layers) is a row of checkboxes, and a caller may put a widget of
its own in a field's row (``custom``: the Model pane's "Start from"). Fields
can be locked (:meth:`ConfigForm.lock`: disabled, the tooltip says why) and
given a tighter maximum (:meth:`ConfigForm.set_limit`) while a source model
decides them.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from shiftstudio.config import LORA_TARGET_CHOICES, field_index, field_type, range_text
from shiftstudio.gui.config_model import LINKS, ConfigModel

INT32_MAX = 2**31 - 1
EDITOR_MAX_WIDTH = 280
DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")
# comma-list settings shown as checkboxes: key -> ((value, label), ...)
FLAG_CHOICES = {
    "lora_targets": tuple(zip(LORA_TARGET_CHOICES, ("attention qkv", "attention output", "MLP in", "MLP out"))),
}


def field_tooltip(key: str) -> str:
    section, f = field_index()[key]
    meta = f.metadata
    parts = [f"<b>{key}</b> <i>[{section}]</i><br>{meta['help']}"]
    valid = range_text(meta)  # the same bounds, in the same words, as the error for a value outside them
    if valid:
        parts.append(f"Range: {valid}")
    if "choices" in meta:
        parts.append("Choices: " + ", ".join(meta["choices"]))
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    parts.append(f"Default: {default!r}")
    return "<br>".join(parts)


def format_float(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) < 1e-3 or abs(value) >= 1e6:
        return f"{value:.6g}"
    return f"{value:.8g}"


class FloatEdit(QLineEdit):
    """A number field that accepts 3e-4 as well as 0.0003."""

    def set_number(self, value: float) -> None:
        if self.text().strip():
            try:
                if math.isclose(float(self.text()), value, rel_tol=1e-12, abs_tol=0.0):
                    return
            except ValueError:
                pass
        self.setText(format_float(value))


class FlagsEdit(QWidget):
    """A comma-separated list of choices as a grid of checkboxes; ``changed(text)`` with the new list."""

    changed = Signal(str)

    def __init__(self, key: str, choices: Sequence[tuple[str, str]], parent: QWidget | None = None):
        super().__init__(parent)
        self.boxes: dict[str, QCheckBox] = {}
        grid = QGridLayout(self)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.setVerticalSpacing(2)
        for i, (value, label) in enumerate(choices):
            box = QCheckBox(label, self)
            box.setObjectName(f"cfg_{key}_{value}")
            box.toggled.connect(self._on_box_toggled)
            grid.addWidget(box, i // 2, i % 2)
            self.boxes[value] = box

    def set_text(self, text: str) -> None:
        chosen = {p.strip() for p in text.split(",")}
        for value, box in self.boxes.items():
            box.blockSignals(True)
            box.setChecked(value in chosen)
            box.blockSignals(False)

    def text(self) -> str:
        return ",".join(v for v, box in self.boxes.items() if box.isChecked())

    def setToolTip(self, tip: str) -> None:  # noqa: N802 - Qt's name: the boxes say it too
        super().setToolTip(tip)
        for box in self.boxes.values():
            box.setToolTip(tip)

    def _on_box_toggled(self, _checked: bool) -> None:
        self.changed.emit(self.text())


class ConfigForm(QWidget):
    """Editors for ``keys``, optionally in titled groups: ``[(title, keys), ...]``."""

    def __init__(
        self,
        model: ConfigModel,
        keys: Sequence[str] | None = None,
        groups: Sequence[tuple[str, Sequence[str]]] | None = None,
        parent: QWidget | None = None,
        custom: dict[str, tuple[str, QWidget]] | None = None,
    ):
        """``custom``: key -> (label, widget) for fields whose row holds the caller's own widget (it keeps
        the model up to date itself; it is not one of :attr:`editors`)."""
        super().__init__(parent)
        self.model = model
        self.editors: dict[str, QWidget] = {}
        self.labels: dict[str, QLabel] = {}
        self.link_buttons: dict[str, QToolButton] = {}  # the linked fields' link toggles
        self.groups: dict[str, QGroupBox] = {}  # title -> its box
        self._custom = dict(custom or {})
        self._tooltips: dict[str, str] = {}
        self._locked: dict[str, str] = {}  # key -> why it cannot be edited now
        self._limits: dict[str, tuple[int, str]] = {}  # key -> (a tighter maximum, why)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        if groups:
            for title, group_keys in groups:
                box = QGroupBox(title.replace("&", "&&"), self)  # '&' would mark a shortcut
                box.setObjectName("group_" + "".join(c if c.isalnum() else "_" for c in title.lower()))
                box.setLayout(self._make_form(group_keys))
                layout.addWidget(box)
                self.groups[title] = box
        else:
            layout.addLayout(self._make_form(list(keys or [])))
        layout.addStretch(1)
        # one label column for all groups, so the editors line up from group to group
        width = max((label.sizeHint().width() for label in self.labels.values()), default=0)
        for label in self.labels.values():
            label.setMinimumWidth(width)
        model.values_changed.connect(self._on_model_values_changed)
        model.validity_changed.connect(self._on_model_validity_changed)
        model.links_changed.connect(self._on_model_links_changed)
        self._on_model_validity_changed(model.error)
        self._on_model_links_changed()

    # -- building ------------------------------------------------------------
    def _make_form(self, keys: Sequence[str]) -> QFormLayout:
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.AllNonFixedFieldsGrow)
        form.setLabelAlignment(Qt.AlignRight | Qt.AlignVCenter)
        for key in keys:
            if key in self._custom:
                text, widget = self._custom[key]
                label = QLabel(text, self)
                label.setToolTip(widget.toolTip())
                label.setBuddy(widget)
                label.setAlignment(Qt.AlignRight | Qt.AlignTop)
                self.labels[key] = label
                form.addRow(label, widget)
                continue
            editor = self._make_editor(key)
            tip = field_tooltip(key)
            self._tooltips[key] = tip
            editor.setObjectName(f"cfg_{key}")
            editor.setToolTip(tip)
            editor.setMaximumWidth(EDITOR_MAX_WIDTH)
            label = QLabel(key, self)
            label.setToolTip(tip)
            label.setBuddy(editor)
            label.setAlignment(Qt.AlignRight | Qt.AlignVCenter)
            self.editors[key] = editor
            self.labels[key] = label
            form.addRow(label, self._with_link_button(key, editor) if key in LINKS else editor)
        return form

    def _with_link_button(self, key: str, editor: QWidget) -> QWidget:
        """The editor with a checkable link button beside it (checked: the field follows its source)."""
        button = QToolButton(self)
        button.setObjectName(f"cfg_{key}_link")
        button.setCheckable(True)
        button.setAutoRaise(True)
        button.setProperty("role", "link")
        button.toggled.connect(lambda checked, k=key: self._on_link_button_toggled(k, checked))
        self.link_buttons[key] = button
        link, metrics = LINKS[key], button.fontMetrics()
        texts = (f"linked {link.text}", f"link to {link.source}")  # a fixed width: the editor never moves
        button.setMinimumWidth(max(metrics.horizontalAdvance(t) for t in texts) + 16)
        row = QWidget(self)
        layout = QHBoxLayout(row)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(editor, 1)
        layout.addWidget(button)
        return row

    def _make_editor(self, key: str) -> QWidget:
        _, f = field_index()[key]
        meta = f.metadata
        kind = field_type(f)
        value = self.model.value(key)
        if key in FLAG_CHOICES:
            flags = FlagsEdit(key, FLAG_CHOICES[key], self)
            flags.set_text(str(value))
            flags.changed.connect(lambda text, k=key: self.model.set_value(k, text))
            return flags
        if kind is bool:
            box = QCheckBox(self)
            box.setChecked(bool(value))
            box.toggled.connect(lambda checked, k=key: self.model.set_value(k, checked))
            return box
        if "choices" in meta or key == "device":
            combo = QComboBox(self)
            combo.addItems(list(meta.get("choices", DEVICE_CHOICES)))
            if "choices" not in meta:
                combo.setEditable(True)  # device also takes cuda:N
            combo.setCurrentText(str(value))
            combo.currentTextChanged.connect(lambda text, k=key: self.model.set_value(k, text))
            return combo
        if kind is int:
            spin = QSpinBox(self)
            spin.setRange(int(max(meta.get("minimum", -INT32_MAX), -INT32_MAX)), int(min(meta.get("maximum", INT32_MAX), INT32_MAX)))
            spin.setGroupSeparatorShown(True)
            spin.setValue(int(value))
            spin.setMinimumWidth(110)
            spin.valueChanged.connect(lambda v, k=key: self.model.set_value(k, v))
            return spin
        if kind is float and "step" in meta:
            spin = QDoubleSpinBox(self)
            spin.setDecimals(max(2, len(str(meta["step"]).split(".")[-1])))
            spin.setRange(float(meta.get("minimum", 0.0)), float(meta.get("maximum", 1e9)))
            spin.setSingleStep(float(meta["step"]))
            spin.setValue(float(value))
            spin.valueChanged.connect(lambda v, k=key: self.model.set_value(k, v))
            return spin
        if kind is float:
            edit = FloatEdit(self)
            edit.set_number(float(value))
            edit.textEdited.connect(lambda text, k=key: self._on_float_edited(k, text))
            return edit
        edit = QLineEdit(self)
        edit.setText(", ".join(value) if isinstance(value, list) else str(value))
        edit.textEdited.connect(lambda text, k=key: self.model.set_value(k, text))
        return edit

    # -- editing -------------------------------------------------------------
    def _on_float_edited(self, key: str, text: str) -> None:
        try:
            value = float(text.strip())
        except ValueError:
            self.model.set_field_error(key, f"{key} must be a number, got {text.strip()!r}" if text.strip() else f"{key} is empty")
            return
        self.model.set_value(key, value)

    def _on_link_button_toggled(self, key: str, checked: bool) -> None:
        if checked:
            self.model.link(key)
        else:
            self.model.unlink(key)

    def _on_model_links_changed(self) -> None:
        for key, button in self.link_buttons.items():
            link, linked = LINKS[key], self.model.is_linked(key)
            button.blockSignals(True)
            button.setChecked(linked)
            button.blockSignals(False)
            button.setText(f"linked {link.text}" if linked else f"link to {link.source}")
            button.setToolTip(
                f"Linked: {key} follows {link.source} ({key} {link.text}). Typing a value of your own unlinks it; "
                "click to unlink it now." if linked else
                f"Not linked: {key} keeps its value when {link.source} changes. Click to link it again "
                f"({key} {link.text})."
            )

    def _on_model_values_changed(self, keys: set[str]) -> None:
        for key in keys:
            editor = self.editors.get(key)
            if editor is not None:
                self._show_value(editor, self.model.value(key))

    def _show_value(self, editor: QWidget, value: Any) -> None:
        editor.blockSignals(True)
        try:
            if isinstance(editor, FlagsEdit):
                editor.set_text(str(value))
            elif isinstance(editor, QCheckBox):
                editor.setChecked(bool(value))
            elif isinstance(editor, QComboBox):
                editor.setCurrentText(str(value))
            elif isinstance(editor, (QSpinBox, QDoubleSpinBox)):
                editor.setValue(value)
            elif isinstance(editor, FloatEdit):
                editor.set_number(float(value))
            elif isinstance(editor, QLineEdit):
                editor.setText(", ".join(value) if isinstance(value, list) else str(value))
        finally:
            editor.blockSignals(False)

    def _on_model_validity_changed(self, error: str) -> None:
        for key, editor in self.editors.items():
            bad = key in self.model.error_keys
            if bool(editor.property("invalid")) != bad:
                editor.setProperty("invalid", bad)
                editor.style().unpolish(editor)
                editor.style().polish(editor)
            self._show_tooltip(key)

    def _show_tooltip(self, key: str) -> None:
        tip = self._tooltips[key]
        if key in self._limits:
            tip = f"<b>{self._limits[key][1]}</b><br>{tip}"
        if key in self._locked:
            tip = f"<b>{self._locked[key]}</b><br>{tip}"
        if key in self.model.error_keys:
            tip = f"<span style='color:#d64545'><b>{self.model.error}</b></span><br>{tip}"
        self.editors[key].setToolTip(tip)
        if key in self.labels:
            self.labels[key].setToolTip(tip)

    # -- what a source model decides ---------------------------------------------------
    def lock(self, keys: dict[str, str]) -> None:
        """Make exactly ``keys`` read-only (key -> why, shown first in the tooltip); an empty dict unlocks all."""
        keys = {k: why for k, why in keys.items() if k in self.editors}
        for key in set(self._locked) | set(keys):
            self.editors[key].setEnabled(key not in keys)
            button = self.link_buttons.get(key)
            if button is not None:
                button.setEnabled(key not in keys)
        self._locked, before = keys, self._locked
        for key in set(before) | set(keys):
            self._show_tooltip(key)

    def locked_keys(self) -> set[str]:
        return set(self._locked)

    def set_limit(self, key: str, maximum: int | None, why: str = "") -> None:
        """A tighter maximum for an integer field (``None``: the field's own again)."""
        editor = self.editors.get(key)
        if not isinstance(editor, QSpinBox):
            return
        own = int(min(field_index()[key][1].metadata.get("maximum", INT32_MAX), INT32_MAX))
        editor.blockSignals(True)  # the model's value is the caller's to change, not the spin box's clamp
        editor.setMaximum(own if maximum is None else min(own, int(maximum)))
        editor.blockSignals(False)
        if maximum is None:
            self._limits.pop(key, None)
        else:
            self._limits[key] = (int(maximum), why)
        self._show_tooltip(key)

    def invalid_keys(self) -> set[str]:
        return {k for k, e in self.editors.items() if e.property("invalid")}
