"""``RUN_DIR/metrics.jsonl``: every report of a run, one JSON object a line.

CLI runs and GUI runs leave the same history, and the GUI rebuilds a run's
curves from it. Train records carry ``kind step time_s tokens loss lr
grad_norm tokens_per_s``; eval records ``kind step time_s tokens train_loss
val_loss val_ppl`` (and per-horizon losses). Batch views are not logged:
they are large and only matter live.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Iterator

from shiftstudio.core import io
from shiftstudio.core.errors import DiskFull
from shiftstudio.core.runs.layout import RunLayout

log = logging.getLogger(__name__)

STEP_KINDS = ("train", "eval", "sample", "checkpoint")  # records tied to a step: dropped past a resume point


class MetricsLog:
    """Appends reports to ``metrics.jsonl``, a line at a time straight to the file (no buffer), so a crash loses
    nothing written; a write that fails (a full disk) is taken back whole, never left as half a line."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = RunLayout(run_dir).metrics_file
        self._fd = -1

    def open(self) -> "MetricsLog":
        """Open the log for appending; a last line that a crash left without its newline is ended first, so
        the next record starts a line of its own (readers skip the cut line; a resume drops it)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o644)
        if _ends_mid_line(self.path):
            os.write(self._fd, b"\n")
        return self

    def append(self, record: dict[str, Any]) -> int:
        """Write one JSON-ready record (a report's ``to_json()``) as a line; returns the log's size after it.

        Raises :class:`DiskFull` (or another ``OSError``) when the line cannot be written, except for a
        ``failed`` record: that one is written if it can be (a full disk must not hide why a run ended, and
        the report still reaches whoever drives the run)."""
        if self._fd < 0:
            self.open()
        data = (json.dumps(record, separators=(",", ":")) + "\n").encode("utf-8")
        start = os.fstat(self._fd).st_size
        written = 0
        try:
            while written < len(data):
                written += os.write(self._fd, data[written:])
        except OSError as exc:
            if written:  # half a line would stay: cut it off again
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, start)
            if record.get("kind") == "failed":
                log.info("could not log the failure to %s: %s", self.path, exc)
                return start
            if io.is_disk_full(exc):
                raise DiskFull(self.path, io.disk_full_code(exc)) from exc
            raise
        return os.lseek(self._fd, 0, os.SEEK_CUR)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def truncate_after(self, step: int) -> int:
        """Drop step records past ``step`` (logged after the checkpoint a resumed run starts from), and lines a
        crash cut short or that are not records.

        Returns how many lines were dropped. The file is rewritten atomically.
        """
        if not self.path.is_file():
            return 0
        kept: list[str] = []
        dropped = 0
        with open(self.path, encoding="utf-8", errors="replace", newline="") as f:
            for line in f:
                rec = parse_record(line)
                if rec is None:  # a line cut short by a crash, or garbage
                    dropped += not line.isspace()
                    continue
                if rec.get("kind") in STEP_KINDS and _step(rec) > step:
                    dropped += 1
                    continue
                kept.append(line if line.endswith("\n") else line + "\n")
        if dropped or _ends_mid_line(self.path):  # (a whole last record that lost only its newline is kept)
            io.write_text(self.path, "".join(kept))
        return dropped


def _ends_mid_line(path: Path) -> bool:
    """Whether the file's last byte is not a newline (a line cut short by a crash)."""
    try:
        with open(path, "rb") as f:
            if f.seek(0, os.SEEK_END) == 0:
                return False
            f.seek(-1, os.SEEK_END)
            return f.read(1) != b"\n"
    except OSError:
        return False


def _step(record: dict[str, Any]) -> int:
    """A record's step (0 when it has none, or not a number)."""
    step = record.get("step", 0)
    return step if isinstance(step, int) and not isinstance(step, bool) else 0


def whole_lines(data: bytes) -> tuple[list[bytes], int]:
    """The complete lines of a chunk of the log and the bytes they span: a last line still being written (no
    newline yet) is left for the next read."""
    end = data.rfind(b"\n") + 1
    return data[:end].splitlines(), end


def parse_record(line: bytes | str) -> dict[str, Any] | None:
    """One line's record; None for a line a crash cut short (followed by more) or anything but an object."""
    try:
        rec = json.loads(line)
    except (ValueError, RecursionError):  # (UnicodeDecodeError and JSONDecodeError are ValueErrors)
        return None
    return rec if isinstance(rec, dict) else None


def read_metrics(run_dir: str | Path, kinds: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    """All records of a run (optionally only some kinds), skipping lines that do not parse."""
    return list(iter_metrics(run_dir, kinds))


def iter_metrics(run_dir: str | Path, kinds: tuple[str, ...] | None = None) -> Iterator[dict[str, Any]]:
    path = RunLayout(run_dir).metrics_file
    if not path.is_file():
        return
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            rec = parse_record(line)
            if rec is None:
                if not line.isspace():
                    log.warning("%s:%d: skipping a line that is not a JSON record", path, n)
                continue
            if kinds is None or rec.get("kind") in kinds:
                yield rec


def headline_val_loss(record: dict) -> float | None:
    """Head 1's validation loss from a metrics record (older runs logged the mean over heads as ``val_loss``;
    their per-horizon list has head 1 first)."""
    per = record.get("val_loss_per_horizon")
    if isinstance(per, list) and per and isinstance(per[0], (int, float)):
        return float(per[0])
    value = record.get("val_loss")
    return float(value) if isinstance(value, (int, float)) else None
