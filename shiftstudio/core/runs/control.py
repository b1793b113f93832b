"""Requests to a run that another process trains: ``RUN_DIR/control.json``.

The window (or any tool) asks a trainer in another process — the CLI,
``torchrun`` — to pause, resume, stop (saving a checkpoint) or save a
checkpoint now by writing ``{"request": ..., "id": n, "time": ...}``
atomically. The trainer looks between steps: one ``stat`` a step, reading the
file only when it changed, and serves each request once (by ``id``). It
answers in its ``metrics.jsonl`` with a ``control`` record, which a follower
sees like any other line.

Torch-free and Qt-free.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path

from shiftstudio.core import io
from shiftstudio.core.errors import RunError
from shiftstudio.core.runs.layout import RunLayout

REQUESTS = ("pause", "resume", "stop", "checkpoint")


def send_request(run_dir: str | Path, request: str) -> int:
    """Ask the process training ``run_dir`` to ``request``; returns the request's id."""
    if request not in REQUESTS:
        raise ValueError(f"unknown request {request!r}: one of {', '.join(REQUESTS)}")
    path = RunLayout(run_dir).control_file
    last = _read(path)
    rid = int(last.get("id", 0)) + 1 if last else 1
    try:
        io.write_json(path, {"request": request, "id": rid, "time": datetime.now(timezone.utc).isoformat(timespec="seconds")},
                      durable=False)
    except OSError as exc:
        raise RunError(f"could not write {path}: {exc.strerror or exc}") from None
    return rid


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


class ControlWatcher:
    """The trainer's side: :meth:`poll` returns each new request once (None most of the time, after one
    ``stat``). Requests written before the watcher started are old news and are skipped."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = RunLayout(run_dir).control_file
        self._stamp = self._stat()
        self._seen = int(_read(self.path).get("id", 0) or 0) if self._stamp else 0

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size  # each request is a new file (an atomic replace)

    def poll(self) -> str | None:
        stamp = self._stat()
        if stamp is None or stamp == self._stamp:
            return None
        self._stamp = stamp
        data = _read(self.path)
        rid, request = data.get("id"), data.get("request")
        if not isinstance(rid, int) or rid <= self._seen or request not in REQUESTS:
            return None
        self._seen = rid
        return request
