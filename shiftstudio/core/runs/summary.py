"""``RUN_DIR/summary.json``: a run's figures and state in a few hundred bytes.

The library lists hundreds of runs; reading every ``metrics.jsonl`` (which
grows by a line a log point, for as long as a run trains) would make that
slow. So each run keeps a digest of its log: steps, tokens, wall time, best
and last validation loss (head 1), the device, the last lifecycle event —
and how many bytes of the log it has folded in, and which file that was
(``log_id``: a resume rewrites the log as a new file). The trainer updates it
as it trains; a reader folds in only the lines written since (usually none)
and rebuilds it from the whole log only when it is missing, unreadable, or
the log was rewritten.

Torch-free and Qt-free.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Iterable

from shiftstudio.core import io
from shiftstudio.core.runs.layout import RunLayout
from shiftstudio.core.runs.metrics import headline_val_loss, parse_record, whole_lines

SUMMARY_SCHEMA = 1


@dataclass
class Summary:
    schema_version: int = SUMMARY_SCHEMA
    log_bytes: int = 0  # bytes of metrics.jsonl folded in: whole lines only
    log_id: int = 0  # the log file's inode when folded (0: unknown)
    steps: int = 0
    max_iters: int = 0  # as the last start planned (0: never started)
    tokens: int = 0
    time_s: float = 0.0
    best_val: float | None = None
    best_step: int | None = None
    last_val: float | None = None
    last_val_step: int | None = None
    last_train_loss: float | None = None
    device: str = ""
    starts: int = 0
    last_event: str = ""  # "" (never trained) | "started" | "finished" | "failed"
    reason: str = ""  # finished: completed | stopped | early_stop; failed: the message
    paused: bool = False  # the last control record was a pause
    # the library's check of the newest checkpoint, kept so that a listing need not re-read its state.json:
    # [folder name, state.json's mtime_ns, its size, {file: expected size}]
    checkpoint_check: list | None = None

    def fold(self, rec: dict[str, Any]) -> None:
        """Take one metrics record into account (records in log order)."""
        kind = rec.get("kind")
        step = rec.get("step")
        if isinstance(step, int) and kind in ("started", "train", "eval", "finished", "failed", "checkpoint"):
            self.steps = step if kind == "started" else max(self.steps, step)
        tokens, time_s = rec.get("tokens"), rec.get("time_s")
        if isinstance(tokens, int):
            self.tokens = max(self.tokens, tokens)
        if isinstance(time_s, (int, float)) and math.isfinite(time_s):
            self.time_s = max(self.time_s, float(time_s))
        if kind == "started":
            self.starts += 1
            self.last_event, self.reason, self.paused = "started", "", False
            self.device = str(rec.get("device", ""))
            if isinstance(rec.get("max_iters"), int):
                self.max_iters = rec["max_iters"]
        elif kind == "train":
            loss = rec.get("loss")
            if isinstance(loss, (int, float)) and math.isfinite(loss):
                self.last_train_loss = float(loss)
        elif kind == "eval":
            val = headline_val_loss(rec)
            if val is not None and math.isfinite(val):
                self.last_val, self.last_val_step = val, step if isinstance(step, int) else None
                if self.best_val is None or val < self.best_val:
                    self.best_val, self.best_step = val, self.last_val_step
        elif kind == "finished":
            self.last_event, self.reason, self.paused = "finished", str(rec.get("reason", "")), False
        elif kind == "failed":
            self.last_event, self.reason, self.paused = "failed", str(rec.get("message", "")), False
        elif kind == "control":
            request = rec.get("request")
            if request in ("pause", "resume"):
                self.paused = request == "pause"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> "Summary | None":
        """None for anything that is not a summary of this schema."""
        if not isinstance(data, dict) or data.get("schema_version") != SUMMARY_SCHEMA:
            return None
        known = {f.name for f in fields(cls)}
        try:
            out = cls(**{k: v for k, v in data.items() if k in known})
        except TypeError:
            return None
        if not isinstance(out.log_bytes, int) or out.log_bytes < 0 or not isinstance(out.log_id, int):
            return None
        return out


TRAIN_PREFIX = b'{"kind":"train",'  # how the trainer writes a step record (compact separators)


def _lines(data: bytes) -> tuple[list[dict[str, Any]], int]:
    """The records of the whole lines in ``data`` and the bytes they span (a partly written last line waits).

    Step records are most of a log and only the last of a run of them matters to a summary (their step, tokens
    and time only grow, and the loss wanted is the last): the others are not parsed."""
    lines, end = whole_lines(data)
    records = []
    for i, line in enumerate(lines):
        if line.startswith(TRAIN_PREFIX) and i + 1 < len(lines) and lines[i + 1].startswith(TRAIN_PREFIX):
            continue
        rec = parse_record(line)
        if rec is not None:
            records.append(rec)
    return records, end


def fold_records(summary: Summary, records: Iterable[dict[str, Any]]) -> Summary:
    for rec in records:
        summary.fold(rec)
    return summary


def read_summary(run_dir: str | Path) -> Summary | None:
    try:
        return Summary.from_json(json.loads(RunLayout(run_dir).summary_file.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, ValueError):
        return None


def write_summary(run_dir: str | Path, summary: Summary) -> None:
    """Best effort (a cache: a read-only run folder simply has none)."""
    try:
        io.write_json(RunLayout(run_dir).summary_file, summary.to_json(), indent=None, durable=False)
    except OSError:
        pass


def current_summary(run_dir: str | Path, write: bool = True) -> tuple[Summary, bool]:
    """The run's summary brought up to date with its log: ``(summary, changed)``. Reads only the log's new
    bytes when the stored summary is of the same file; rebuilds otherwise. ``write``: store it back when it
    changed. Raises OSError when the log exists but cannot be read."""
    layout = RunLayout(run_dir)
    stored = read_summary(run_dir)
    try:
        st = os.stat(layout.metrics_file)
    except FileNotFoundError:  # never trained
        fresh = Summary()
        changed = stored is None or stored.to_json() != fresh.to_json()
        if changed and write:
            write_summary(run_dir, fresh)
        return fresh, changed
    summary = stored
    if summary is None or summary.log_id != st.st_ino or st.st_size < summary.log_bytes:
        summary = Summary(log_id=st.st_ino)  # missing, unreadable, or another file: from the start
    if st.st_size == summary.log_bytes and summary is stored:
        return summary, False
    with open(layout.metrics_file, "rb") as f:
        f.seek(summary.log_bytes)
        data = f.read()
    records, used = _lines(data)
    fold_records(summary, records)
    summary.log_bytes += used
    changed = summary is not stored or used > 0
    if changed and write:
        write_summary(run_dir, summary)
    return summary, changed
