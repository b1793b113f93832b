"""What the main window remembers between starts: its size and layout, the settings, the plots' options and
the last run (reopened at the next start, with the settings as they were left).

A mixin of :class:`~shiftstudio.gui.main_window.MainWindow` (which provides
``ctx``, ``settings``, ``panes``, ``docks`` and ``train_pane``).
"""

from __future__ import annotations

import logging

from PySide6.QtCore import QSize

from shiftstudio.core.errors import ConfigError
from shiftstudio.presets import load_preset, preset_paths

log = logging.getLogger(__name__)

DEFAULT_PRESET = "cpu-tiny"
LAYOUT_VERSION = 4  # bump when the default layout changes: a saved layout of another version is ignored
DEFAULT_SIZE = QSize(1360, 860)


class WindowStateMixin:
    def fit_to_screen(self) -> None:
        """The default size, made smaller where the screen is (a 1366x768 laptop); a size the user left at the
        last start (restored from the settings) is kept."""
        screen = self.screen()
        if self.has_saved_geometry or screen is None:
            return
        room = screen.availableGeometry()
        frame = self.frameGeometry().size() - self.geometry().size()  # title bar and borders (0 before it shows)
        self.resize(DEFAULT_SIZE.boundedTo(room.size() - frame))

    def _initial_config(self) -> None:
        saved = self.settings.get("last_config")
        config = self.ctx.config
        name = DEFAULT_PRESET if DEFAULT_PRESET in preset_paths() else next(iter(preset_paths()), "")
        if name:
            try:
                config.load(load_preset(name), preset=name)
            except ConfigError as exc:
                log.warning("preset %s unusable: %s", name, exc)
        if isinstance(saved, dict):
            config.load_flat(saved)
            config.set_preset_name(self.settings.get("last_preset", "") or "")
            self._default_config = False

    def reset_layout(self) -> None:
        """View › Reset layout: the docks as built, all shown."""
        if self._default_dock_state is not None:
            self.restoreState(self._default_dock_state, LAYOUT_VERSION)
            for dock in self.docks.values():
                dock.show()

    def save_settings(self) -> None:
        """Remember the window, the settings being edited and the open run (reopened at the next start)."""
        s = self.settings
        s.set_bytes("geometry", bytes(self.saveGeometry().data()))
        if self.panes:
            s.set_bytes("window_state", bytes(self.saveState(LAYOUT_VERSION).data()))
        s.set("last_config", self.ctx.config.values())
        s.set("last_preset", self.ctx.config.preset)
        s.set("last_run", str(self.ctx.runs.run_dir) if self.ctx.runs.run_dir is not None else None)
        if self.train_pane is not None:
            s.set("plot", self.train_pane.curves.view_settings())
        s.save()

    def restore_view_settings(self) -> None:
        plot = self.settings.get("plot")
        if self.train_pane is not None and isinstance(plot, dict):
            self.train_pane.curves.apply_view_settings(plot)
