"""Rate limits between a worker thread and the GUI: progress callbacks and step reports.

The GUI thread repaints for every signal it gets, so a worker tells it about
progress only when the shown value changes (at most ~10 times a second), and
hands training steps over in batches (at most ~20 a second). Qt-free and
thread-safe.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

STEP_EMIT_INTERVAL_S = 0.05  # at most ~20 steps_logged emissions a second
PROGRESS_INTERVAL_S = 0.1  # at most ~10 progress emissions a second


class ThrottledProgress:
    """A progress callback for the core that calls ``emit(phase, done, total)``
    only when the shown value changes, at most every ``interval`` seconds
    (and always for the last step). Accepts ``(done, total)``, ``(phase, done,
    total)`` or one object with ``phase``/``done``/``total`` attributes."""

    def __init__(self, emit: Callable[[str, int, int], None], phase: str = "", interval: float = PROGRESS_INTERVAL_S):
        self._emit = emit
        self._phase = phase
        self._interval = interval
        self._last_time = 0.0
        self._last_key: tuple[str, int] | None = None

    def __call__(self, *args: Any) -> None:
        if len(args) == 1:
            p = args[0]
            phase, done, total = str(p.phase), int(p.done), int(p.total)
        elif len(args) == 2:
            phase, done, total = self._phase, int(args[0]), int(args[1])
        else:
            phase, done, total = str(args[0]), int(args[1]), int(args[2])
        permille = int(1000 * done / total) if total > 0 else -1
        key = (phase, permille)
        finished = total > 0 and done >= total
        now = time.monotonic()
        if key == self._last_key:
            return
        if not finished and phase == (self._last_key or ("",))[0] and now - self._last_time < self._interval:
            return
        self._last_key, self._last_time = key, now
        self._emit(phase, done, total)


class StepBatcher:
    """Collects step reports and hands them on in batches, at most one batch per
    ``interval`` seconds. A held batch is flushed by a short timer thread, so a
    lone step never waits for the next report. Thread-safe."""

    def __init__(self, emit: Callable[[list], None], interval: float = STEP_EMIT_INTERVAL_S):
        self._emit = emit
        self._interval = interval
        self._lock = threading.Lock()
        self._pending: list = []
        self._last = -1e9
        self._timer: threading.Timer | None = None

    def add(self, report: Any) -> None:
        with self._lock:
            self._pending.append(report)
            wait = self._interval - (time.monotonic() - self._last)
            if wait <= 0:
                self._flush_locked()
            elif self._timer is None:
                self._timer = threading.Timer(wait, self.flush)
                self._timer.daemon = True
                self._timer.start()

    def flush(self) -> None:
        with self._lock:
            self._flush_locked()

    def run_locked(self, fn: Callable[[], None]) -> None:
        """Flush, then call ``fn`` under the same lock (keeps order with other signals)."""
        with self._lock:
            self._flush_locked()
            fn()

    def _flush_locked(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._pending:
            batch, self._pending = self._pending, []
            self._last = time.monotonic()
            self._emit(batch)
