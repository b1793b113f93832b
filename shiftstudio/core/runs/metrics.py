"""``RUN_DIR/metrics.jsonl``: every report of a run, one JSON object a line.

CLI runs and GUI runs leave the same history, and the GUI rebuilds a run's
curves from it. Train records carry ``kind step time_s tokens loss lr
grad_norm tokens_per_s``; eval records ``kind step time_s tokens train_loss
val_loss val_ppl`` (and per-horizon losses). Batch views are not logged:
they are large and only matter live.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Iterator

from shiftstudio.core import io
from shiftstudio.core.runs.layout import RunLayout

log = logging.getLogger(__name__)

STEP_KINDS = ("train", "eval", "sample", "checkpoint")  # records tied to a step: dropped past a resume point


class MetricsLog:
    """Appends reports to ``metrics.jsonl``; flushed after each line so a crash loses nothing written."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = RunLayout(run_dir).metrics_file
        self._file = None

    def open(self) -> "MetricsLog":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")
        return self

    def append(self, record: dict[str, Any]) -> int:
        """Write one JSON-ready record (a report's ``to_json()``) as a line; returns the log's size after it."""
        if self._file is None:
            self.open()
        assert self._file is not None
        self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._file.flush()
        return self._file.tell()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def truncate_after(self, step: int) -> int:
        """Drop train/eval records past ``step`` (logged after the checkpoint a resumed run starts from).

        Returns how many lines were dropped. The file is rewritten atomically.
        """
        if not self.path.is_file():
            return 0
        kept: list[str] = []
        dropped = 0
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:  # a line cut short by a crash
                    dropped += 1
                    continue
                if rec.get("kind") in STEP_KINDS and int(rec.get("step", 0)) > step:
                    dropped += 1
                    continue
                kept.append(line if line.endswith("\n") else line + "\n")
        if dropped:
            io.write_text(self.path, "".join(kept))
        return dropped


def whole_lines(data: bytes) -> tuple[list[bytes], int]:
    """The complete lines of a chunk of the log and the bytes they span: a last line still being written (no
    newline yet) is left for the next read."""
    end = data.rfind(b"\n") + 1
    return data[:end].splitlines(), end


def parse_record(line: bytes) -> dict[str, Any] | None:
    """One line's record; None for a line a crash cut short (followed by more) or anything but an object."""
    try:
        rec = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None
    return rec if isinstance(rec, dict) else None


def read_metrics(run_dir: str | Path, kinds: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    """All records of a run (optionally only some kinds), skipping lines that do not parse."""
    return list(iter_metrics(run_dir, kinds))


def iter_metrics(run_dir: str | Path, kinds: tuple[str, ...] | None = None) -> Iterator[dict[str, Any]]:
    path = RunLayout(run_dir).metrics_file
    if not path.is_file():
        return
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                log.warning("%s:%d: skipping a line that is not JSON", path, n)
                continue
            if isinstance(rec, dict) and (kinds is None or rec.get("kind") in kinds):
                yield rec


def headline_val_loss(record: dict) -> float | None:
    """Head 1's validation loss from a metrics record (older runs logged the mean over heads as ``val_loss``;
    their per-horizon list has head 1 first)."""
    per = record.get("val_loss_per_horizon")
    if isinstance(per, list) and per and isinstance(per[0], (int, float)):
        return float(per[0])
    value = record.get("val_loss")
    return float(value) if isinstance(value, (int, float)) else None
