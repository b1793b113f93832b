"""The settings being edited: flat values, validated as they change.

Every form in every pane edits one :class:`ConfigModel`; no pane talks to
another. The model keeps the raw values (which may be an invalid combination
while the user types), the last valid :class:`~shiftstudio.config.RunConfig`,
and the current error with the keys it names, so forms can mark the fields.

Some settings are *linked* to ``max_iters`` (see :data:`LINKS`): while linked
they follow it (``lr_decay_iters = max_iters``, ``eval_interval ≈ max_iters / 8``,
``warmup_iters ≤ max_iters / 10``); typing a value of one's own unlinks it,
:meth:`ConfigModel.link` links it again. Loading a preset, a run or saved
settings links exactly the fields whose values follow their rule, so the link
state is never stored: it is read from the values.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from PySide6.QtCore import QObject, Signal

from shiftstudio.config import RunConfig, field_index, field_problem, parse_value
from shiftstudio.core.errors import ConfigError


def nice_interval(x: float) -> int:
    """The "round" number nearest to ``x`` on a log scale: 1 … 9, then 10, 20, 25, 50, 100, 200, 250, 500 …
    (at least 1)."""
    if x < 10:
        return max(1, round(x))
    scale = 10 ** math.floor(math.log10(x))
    candidates = [m * scale for m in (1, 2, 2.5, 5, 10)]
    return int(min(candidates, key=lambda c: abs(math.log(c / x))))


@dataclass(frozen=True)
class Link:
    """A setting that follows another while linked: ``value = rule(source value, own value)``."""

    source: str
    text: str  # how it follows, for the form: "= max_iters"
    rule: Callable[[int, int], int]  # (source value, the field's own value) -> linked value

    def value(self, source: int, own: int) -> int:
        return int(self.rule(int(source), int(own)))


LINKS: dict[str, Link] = {
    "lr_decay_iters": Link("max_iters", "= max_iters", lambda m, own: m),
    "eval_interval": Link("max_iters", "≈ max_iters / 8", lambda m, own: nice_interval(m / 8)),
    # a cap: the field keeps its own value (the preset's warmup) unless the run is too short for it
    "warmup_iters": Link("max_iters", "≤ max_iters / 10", lambda m, own: min(own, m // 10)),
}


class ConfigModel(QObject):
    """Flat config values plus their validity. Lives in the GUI thread."""

    values_changed = Signal(object)  # set[str]: keys whose value changed
    validity_changed = Signal(str)  # the error ('' = valid)
    preset_changed = Signal(str)  # name of the preset last loaded ('' = none)
    links_changed = Signal()  # a field was linked or unlinked

    def __init__(self, config: RunConfig | None = None, parent: QObject | None = None):
        super().__init__(parent)
        config = config or RunConfig()
        self._values: dict[str, Any] = config.to_flat()
        self._field_errors: dict[str, str] = {}
        self.config: RunConfig = config  # last valid config
        self.error = ""
        self.error_keys: set[str] = set()
        self.preset = ""
        self._linked: dict[str, int] = {}  # linked key -> its own value (what a cap link keeps when it can)
        self._relink(set(LINKS))

    # -- reading -------------------------------------------------------------
    def value(self, key: str) -> Any:
        return self._values[key]

    def values(self) -> dict[str, Any]:
        return dict(self._values)

    @property
    def is_valid(self) -> bool:
        return not self.error

    def is_linked(self, key: str) -> bool:
        return key in self._linked

    def linked_keys(self) -> set[str]:
        return set(self._linked)

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
        unlinked = changed and self._linked.pop(key, None) is not None  # typed by hand: no longer follows
        keys = {key} | (self._follow(key) if changed else set())
        if changed or had_error:
            self._validate()
        if unlinked:
            self.links_changed.emit()
        if changed:
            self.values_changed.emit(keys)

    def set_field_error(self, key: str, message: str) -> None:
        """A form cannot read what was typed (e.g. 'abc' for a number)."""
        if self._field_errors.get(key) == message:
            return
        self._field_errors[key] = message
        self._validate()

    def load(self, config: RunConfig, keep: Iterable[str] = (), preset: str = "") -> None:
        """Replace every value (a preset, an opened run), except the ``keep`` keys. The linked fields are those
        whose loaded value follows its rule."""
        keep = set(keep)
        if preset != self.preset:
            self.preset = preset
            self.preset_changed.emit(preset)
        flat = config.to_flat()
        changed = {k for k, v in flat.items() if k not in keep and self._values.get(k) != v}
        for key in changed:
            self._values[key] = flat[key]
        self._field_errors.clear()
        links = self._relink(set(LINKS) - keep)
        self._validate()
        if links:
            self.links_changed.emit()
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
        given = set(flat) & set(LINKS)  # given: linked when they follow their rule; the rest follow
        links = self._relink(given)
        for source in {link.source for link in LINKS.values()} & changed:
            changed |= self._follow(source)
        self._validate()
        if links:
            self.links_changed.emit()
        if changed:
            self.values_changed.emit(changed)

    # -- links ---------------------------------------------------------------
    def link(self, key: str) -> None:
        """Link ``key`` to its source again (the form's link button): it takes the linked value now."""
        if key not in LINKS or key in self._linked:
            return
        self._linked[key] = int(self._values[key])
        keys = self._follow(LINKS[key].source, only={key})
        self._validate()
        self.links_changed.emit()
        if keys:
            self.values_changed.emit(keys)

    def unlink(self, key: str) -> None:
        """Keep ``key`` at its value when its source changes."""
        if self._linked.pop(key, None) is not None:
            self.links_changed.emit()

    def _relink(self, keys: set[str]) -> bool:
        """Link each of ``keys`` whose value is what its rule gives (it was following), unlink the others;
        True when a link changed."""
        before = dict(self._linked)
        for key in keys:
            link, value = LINKS[key], int(self._values[key])
            if link.value(self._values[link.source], value) == value:
                self._linked[key] = value
            else:
                self._linked.pop(key, None)
        return before.keys() != self._linked.keys()

    def _follow(self, source: str, only: set[str] | None = None) -> set[str]:
        """Give the fields linked to ``source`` their linked values; returns the keys that changed."""
        changed = set()
        for key, own in self._linked.items():
            link = LINKS[key]
            if link.source != source or (only is not None and key not in only):
                continue
            value = link.value(self._values[source], own)
            if self._values[key] != value and not field_problem(key, value):
                self._values[key] = value
                self._field_errors.pop(key, None)
                changed.add(key)
        return changed

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
