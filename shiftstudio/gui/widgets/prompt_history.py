"""The playground's prompt history: a combo box of the prompts used before, kept in a JSON file."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from PySide6.QtWidgets import QComboBox, QWidget

from shiftstudio.core import io

log = logging.getLogger(__name__)

HISTORY_SIZE = 30
SHOWN_CHARS = 60


class PromptHistory(QComboBox):
    """The last ``size`` prompts, newest first; each item shows the prompt on one line and holds its full text.

    :meth:`load` reads the file (a missing or damaged one is an empty history); :meth:`remember` puts a
    prompt first and writes the file atomically. A file that cannot be written only costs the history.
    """

    def __init__(self, path: Path, size: int = HISTORY_SIZE, parent: QWidget | None = None):
        super().__init__(parent)
        self.path = path
        self.size = size

    def prompts(self) -> list[str]:
        return [self.itemData(i) for i in range(self.count())]

    def prompt_at(self, index: int) -> str | None:
        text = self.itemData(index)
        return text if isinstance(text, str) else None

    def load(self) -> None:
        try:
            items = json.loads(self.path.read_text(encoding="utf-8"))
            items = [s for s in items if isinstance(s, str)][: self.size]
        except (OSError, ValueError, TypeError):
            items = []
        self._show(items)

    def remember(self, prompt: str) -> None:
        items = ([prompt] + [p for p in self.prompts() if p != prompt])[: self.size]
        self._show(items)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # durable=False: written at every Generate, from the GUI thread; a crash costs at most the last prompt
            io.write_text(self.path, json.dumps(items, ensure_ascii=False, indent=1), durable=False)
        except OSError as exc:
            log.warning("cannot save the prompt history: %s", exc)

    def _show(self, items: list[str]) -> None:
        self.clear()
        for text in items:
            short = " ".join(text.split())
            self.addItem(short[:SHOWN_CHARS] + ("…" if len(short) > SHOWN_CHARS else "") or "(empty prompt)", text)
