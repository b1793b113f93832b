"""Following a run that another process trains: the new lines of its ``metrics.jsonl``.

:class:`MetricsFollower` remembers how far it has read. Each :meth:`poll`
reads what was appended since — whole lines only: a line being written stays
for the next poll — and notices when the log was rewritten (a resume cuts the
records past its checkpoint, and the file is replaced: read it again from the
start) or deleted. The window polls a few times a second, so a line shows
within a second of being written. Torch-free and Qt-free.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shiftstudio.core.runs.layout import RunLayout
from shiftstudio.core.runs.metrics import parse_record, whole_lines

MAX_READ = 64 << 20  # bytes a poll reads at most: a huge backlog arrives over several polls


@dataclass
class FollowUpdate:
    records: list[dict[str, Any]] = field(default_factory=list)
    reset: bool = False  # the log was rewritten: drop what was shown and take ``records`` from the start
    gone: bool = False  # the run folder (or its log) has disappeared


class MetricsFollower:
    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = RunLayout(run_dir).metrics_file
        self.offset = 0
        self._ino: int | None = None
        self._partial = b""

    def poll(self) -> FollowUpdate:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            gone = not self.run_dir.exists() or self._ino is not None
            return FollowUpdate(gone=gone)
        update = FollowUpdate()
        if self._ino is not None and (st.st_ino != self._ino or st.st_size < self.offset):
            update.reset = True  # rewritten: start again
            self.offset, self._partial = 0, b""
        self._ino = st.st_ino
        if st.st_size <= self.offset:
            return update
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read(min(st.st_size - self.offset, MAX_READ))
        except FileNotFoundError:
            return FollowUpdate(gone=True)
        self.offset += len(data)
        data = self._partial + data
        lines, end = whole_lines(data)
        self._partial = data[end:]
        update.records = [rec for rec in map(parse_record, lines) if rec is not None]
        return update
