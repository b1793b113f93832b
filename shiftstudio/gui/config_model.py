"""The settings being edited: flat values, validated as they change.

Every form in every pane edits one :class:`ConfigModel`; no pane talks to
another. The model keeps the raw values (which may be an invalid combination
while the user types), the last valid :class:`~shiftstudio.config.RunConfig`,
and the current error with the keys it names, so forms can mark the fields.
"""

from __future__ import annotations

import re
from typing import Any, Iterable

from PySide6.QtCore import QObject, Signal

from shiftstudio.config import RunConfig, field_index, field_problem, parse_value
from shiftstudio.core.errors import ConfigError


class ConfigModel(QObject):
    """Flat config values plus their validity. Lives in the GUI thread."""

    values_changed = Signal(object)  # set[str]: keys whose value changed
    validity_changed = Signal(str)  # the error ('' = valid)
    preset_changed = Signal(str)  # name of the preset last loaded ('' = none)

    def __init__(self, config: RunConfig | None = None, parent: QObject | None = None):
        super().__init__(parent)
        config = config or RunConfig()
        self._values: dict[str, Any] = config.to_flat()
        self._field_errors: dict[str, str] = {}
        self.config: RunConfig = config  # last valid config
        self.error = ""
        self.error_keys: set[str] = set()
        self.preset = ""

    # -- reading -------------------------------------------------------------
    def value(self, key: str) -> Any:
        return self._values[key]

    def values(self) -> dict[str, Any]:
        return dict(self._values)

    @property
    def is_valid(self) -> bool:
        return not self.error

    # -- editing -------------------------------------------------------------
    def set_value(self, key: str, value: Any) -> None:
        """A form changed one field. Parses and range-checks it (with the words the CLI uses: see
        :func:`~shiftstudio.config.field_problem`), then revalidates."""
        try:
            value = parse_value(key, value)
            problem = field_problem(key, value)
        except ConfigError as exc:
            problem = str(exc)
        if problem:
            self.set_field_error(key, problem)
            return
        had_error = self._field_errors.pop(key, None) is not None
        changed = self._values.get(key) != value
        self._values[key] = value
        if changed or had_error:
            self._validate()
        if changed:
            self.values_changed.emit({key})

    def set_field_error(self, key: str, message: str) -> None:
        """A form cannot read what was typed (e.g. 'abc' for a number)."""
        if self._field_errors.get(key) == message:
            return
        self._field_errors[key] = message
        self._validate()

    def load(self, config: RunConfig, keep: Iterable[str] = (), preset: str = "") -> None:
        """Replace every value (a preset, an opened run), except the ``keep`` keys."""
        keep = set(keep)
        if preset != self.preset:
            self.preset = preset
            self.preset_changed.emit(preset)
        flat = config.to_flat()
        changed = {k for k, v in flat.items() if k not in keep and self._values.get(k) != v}
        for key in changed:
            self._values[key] = flat[key]
        self._field_errors.clear()
        self._validate()
        if changed:
            self.values_changed.emit(changed)

    def set_preset_name(self, name: str) -> None:
        if name != self.preset:
            self.preset = name
            self.preset_changed.emit(name)

    def load_flat(self, flat: dict[str, Any]) -> None:
        """Apply saved values one by one, skipping unknown keys and bad values."""
        index = field_index()
        changed = set()
        for key, raw in flat.items():
            if key not in index:
                continue
            try:
                value = parse_value(key, raw)
            except ConfigError:
                continue
            if self._values.get(key) != value and not field_problem(key, value):
                self._values[key] = value
                changed.add(key)
        self._validate()
        if changed:
            self.values_changed.emit(changed)

    # -- validation ----------------------------------------------------------
    def _validate(self) -> None:
        if self._field_errors:
            key, message = next(iter(self._field_errors.items()))
            error, keys = message, set(self._field_errors)
        else:
            try:
                self.config = RunConfig.from_flat(self._values)
                error, keys = "", set()
            except ConfigError as exc:
                error = str(exc)
                keys = {k for k in self._values if re.search(rf"\b{re.escape(k)}\b", error)}
        if (error, keys) != (self.error, self.error_keys):
            self.error, self.error_keys = error, keys
            self.validity_changed.emit(error)
