"""A run that another process trains, seen as a trainer: :class:`FollowedRun`.

The window drives every run through the same worker and signals, whoever
trains it. For a run whose lock another process holds (the CLI, ``torchrun``,
a second window) ``FollowedRun.run()`` yields the reports that process writes
to ``metrics.jsonl`` — rebuilt from their records as they appear, a few times
a second — and its pause / resume / stop / checkpoint go to that process
through the run's control file (:mod:`~shiftstudio.core.runs.control`).
Nothing here writes to the run except those requests.

It ends with the run's own final report; with a failure report when the run's
process dies without one (its lock goes stale: *crashed*) or the folder
disappears; or quietly when the follower is :meth:`detach`-ed (the window
closes and leaves the run training).
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import Any, Iterator

from shiftstudio.core.errors import RunError
from shiftstudio.core.runs.control import send_request
from shiftstudio.core.runs.follow import MetricsFollower
from shiftstudio.core.runs.lock import lock_state
from shiftstudio.core.train.control import ViewRequest
from shiftstudio.core.train.reports import (
    CheckpointReport, EvalReport, FailedReport, FinishedReport, NoteReport, Report, SampleReport, StartedReport,
    StepReport,
)

POLL_S = 0.2  # how often the log is read: a line shows within a second of being written
LOCK_CHECK_S = 1.0  # how often the lock is checked (has the run's process died?)
REPORTS: dict[str, type] = {
    "started": StartedReport, "train": StepReport, "eval": EvalReport, "sample": SampleReport,
    "checkpoint": CheckpointReport, "finished": FinishedReport, "failed": FailedReport, "note": NoteReport,
}


def report_from_record(record: dict[str, Any]) -> Report | None:
    """The report a ``metrics.jsonl`` record was written from (None for other kinds, or a record that lacks a
    field the report needs)."""
    cls = REPORTS.get(record.get("kind", ""))
    if cls is None:
        return None
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    try:
        return cls(**{k: v for k, v in record.items() if k in names})
    except TypeError:
        return None


class FollowedRun:
    """See the module docstring. ``follower`` continues where the history already shown ends; ``started`` is
    the log's last start record (what the run is: device, plan), if any."""

    def __init__(self, run_dir: str | Path, follower: MetricsFollower | None = None,
                 started: dict[str, Any] | None = None, step: int = 0, max_iters: int = 0) -> None:
        self.run_dir = Path(run_dir)
        self.follower = follower or MetricsFollower(self.run_dir)
        self.started = started or {}
        self.step = step
        self.max_iters = max_iters  # the plan, when the log has no start record saying it
        self._detached = threading.Event()

    # -- steering: requests to the training process --------------------------------------------
    def pause(self) -> None:
        send_request(self.run_dir, "pause")

    def resume(self) -> None:
        send_request(self.run_dir, "resume")

    def stop(self) -> None:
        send_request(self.run_dir, "stop")

    def request_checkpoint(self) -> None:
        send_request(self.run_dir, "checkpoint")

    def set_views(self, views: ViewRequest) -> None:
        """Batch views are not logged: a followed run shows none."""

    def snapshot(self, timeout: float = 60.0) -> Any:
        raise RunError("this run trains in another process: generate from one of its checkpoints")

    def detach(self) -> None:
        """Stop following (the run goes on training in its own process)."""
        self._detached.set()

    # -- the reports -------------------------------------------------------------------------------
    def run(self) -> Iterator[Report]:
        s = self.started
        yield StartedReport(
            run_dir=str(self.run_dir), step=self.step, max_iters=int(s.get("max_iters") or self.max_iters),
            n_params=int(s.get("n_params") or 0), device=str(s.get("device") or "another process"),
            dtype=str(s.get("dtype") or ""), tokens_per_step=int(s.get("tokens_per_step") or 0), resumed=True,
            source=str(s.get("source") or ""),
        )
        last_lock_check = 0.0
        clock = 0.0
        while not self._detached.is_set():
            update = self.follower.poll()
            if update.gone:
                yield FailedReport(step=self.step, message=f"{self.run_dir.name} was deleted or moved while it was "
                                   "followed")
                return
            for record in update.records:
                if update.reset and int(record.get("step") or 0) <= self.step and record.get("kind") != "started":
                    continue  # the log was rewritten (a resume): what was shown already stays
                report = report_from_record(record)
                if report is None or isinstance(report, StartedReport):
                    continue
                self.step = max(self.step, int(getattr(report, "step", 0) or 0))
                yield report
                if isinstance(report, (FinishedReport, FailedReport)):
                    return
            clock += POLL_S
            if clock - last_lock_check >= LOCK_CHECK_S:
                last_lock_check = clock
                if lock_state(self.run_dir)[0] != "held":  # its process has ended: read what it wrote last
                    for record in self.follower.poll().records:
                        report = report_from_record(record)
                        if report is None or isinstance(report, StartedReport):
                            continue
                        yield report
                        if isinstance(report, (FinishedReport, FailedReport)):
                            return
                    yield FailedReport(step=self.step, message=(
                        f"the process training {self.run_dir.name} ended without a final report (crashed or killed); "
                        "resume the run to go on from its last checkpoint"))
                    return
            self._detached.wait(POLL_S)
