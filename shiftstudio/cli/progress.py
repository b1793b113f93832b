"""A terminal progress line for long CLI work (no Qt, no third-party bars).

On a terminal it redraws one line in place, at most ten times a second; when
output goes to a file or a pipe it prints nothing until :meth:`close`, so logs
stay clean.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressLine:
    def __init__(self, stream: TextIO | None = None, width: int = 28, min_interval: float = 0.1):
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.width = width
        self.min_interval = min_interval
        self._last = 0.0
        self._shown = False

    def bar(self, label: str, done: float, total: float, suffix: str = "") -> None:
        now = time.monotonic()
        if not self.tty or (now - self._last < self.min_interval and done < total):
            return
        self._last = now
        frac = min(1.0, done / total) if total else 1.0
        filled = int(frac * self.width)
        bar = "█" * filled + "·" * (self.width - filled)
        self.text(f"{label:<10} {bar} {frac * 100:5.1f}% {suffix}")

    def text(self, line: str) -> None:
        if not self.tty:
            return
        self.stream.write("\r\033[K" + line)
        self.stream.flush()
        self._shown = True

    def close(self) -> None:
        if self._shown:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self._shown = False
