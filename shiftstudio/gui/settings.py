"""What the app remembers between starts: layout, last corpus, last settings.

One JSON file in :func:`shiftstudio.paths.config_dir` (which honours
``SHIFTSTUDIO_HOME``), written atomically. Window geometry and dock state are
Qt byte arrays, stored base64-encoded. A damaged file is set aside, never fatal.
"""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path
from typing import Any, Callable

from shiftstudio import paths
from shiftstudio.core import io
from shiftstudio.core.runs.layout import is_run_dir

log = logging.getLogger(__name__)

FILE_NAME = "gui.json"
MAX_RECENT = 10


class Settings:
    """A small dict-like store with typed helpers for the app's own keys."""

    def __init__(self, path: Path | None = None):
        self.path = path or paths.config_dir() / FILE_NAME
        self.on_save_failed: Callable[[str], None] | None = None  # told why a save failed (one line)
        self._data: dict[str, Any] = {}
        self._load()

    def _load(self) -> None:
        if not self.path.is_file():
            return
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise ValueError("not an object")
            self._data = data
        except (OSError, ValueError) as exc:
            log.warning("settings file %s is unreadable (%s); starting afresh", self.path, exc)
            try:
                self.path.replace(self.path.with_suffix(".json.bad"))
            except OSError:
                pass

    def save(self) -> bool:
        """Write the file (atomically: a failed save leaves the previous one whole). False when it could not be
        written; ``on_save_failed`` (the window's status bar) is told why, in one line."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            io.write_text(self.path, json.dumps(self._data, indent=1, sort_keys=True))
        except OSError as exc:
            log.warning("cannot save settings to %s: %s", self.path, exc)
            why = "the disk is full" if io.is_disk_full(exc) else (exc.strerror or str(exc))
            if self.on_save_failed is not None:
                self.on_save_failed(f"Could not save the app's settings to {self.path}: {why}. Runs are not affected; "
                                    "the previous settings file is kept.")
            return False
        return True

    # -- plain values --------------------------------------------------------
    def get(self, key: str, default: Any = None) -> Any:
        return self._data.get(key, default)

    def set(self, key: str, value: Any) -> None:
        self._data[key] = value

    def get_bytes(self, key: str) -> bytes | None:
        raw = self._data.get(key)
        if not isinstance(raw, str):
            return None
        try:
            return base64.b64decode(raw.encode("ascii"))
        except (ValueError, UnicodeEncodeError):
            return None

    def set_bytes(self, key: str, value: bytes) -> None:
        self._data[key] = base64.b64encode(bytes(value)).decode("ascii")

    # -- recent runs ---------------------------------------------------------
    def recent_runs(self) -> list[str]:
        runs = self._data.get("recent_runs", [])
        return [r for r in runs if isinstance(r, str) and is_run_dir(r)]

    def add_recent_run(self, run_dir: str | Path) -> None:
        text = str(Path(run_dir))
        runs = [r for r in self._data.get("recent_runs", []) if r != text]
        self._data["recent_runs"] = [text, *runs][:MAX_RECENT]
