"""Requests from other threads to a running trainer, served between steps.

The window's worker (and, later, a control file for a run in another
process) pauses, resumes, stops, asks for a checkpoint now, asks for a copy
of the live weights, and says what it shows of the live batch. None of it
touches the loop's tensors: each request sets a flag or queues a waiter, and
the loop serves them at the next step boundary, on its own thread.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from shiftstudio.core.errors import RunError


@dataclass(frozen=True)
class ViewRequest:
    """What a consumer shows of the live batch.

    ``batch_views`` turns the per-log-point :class:`BatchViewReport` on or off
    (the CLI shows none); ``row`` is the batch row to show (taken modulo the
    batch size), ``None`` cycles through the rows.
    """

    batch_views: bool = True
    row: int | None = None

    def __post_init__(self) -> None:
        if self.row is not None and int(self.row) < 0:
            object.__setattr__(self, "row", None)


class TrainerControl:
    """Thread-safe flags and queues between a training loop and the threads that steer it."""

    def __init__(self, views: ViewRequest | None = None) -> None:
        self._stop = threading.Event()
        self._unpaused = threading.Event()
        self._unpaused.set()
        self._checkpoint = threading.Event()
        self.views = views or ViewRequest()  # replaced whole, so reading it needs no lock
        self._lock = threading.Lock()
        self._waiters: list[tuple[threading.Event, list]] = []
        self._serving = False

    # -- any thread ------------------------------------------------------------------
    def pause(self) -> None:
        self._unpaused.clear()

    def resume(self) -> None:
        self._unpaused.set()

    def stop(self) -> None:
        """Save a checkpoint at the next step boundary and finish with reason 'stopped'."""
        self._stop.set()
        self._unpaused.set()

    def request_checkpoint(self) -> None:
        self._checkpoint.set()

    def set_views(self, views: ViewRequest) -> None:
        self.views = views

    @property
    def paused(self) -> bool:
        return not self._unpaused.is_set()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def request_snapshot(self, timeout: float) -> Any:
        """Block until the loop hands over what its snapshot function makes (at the next step boundary,
        also while paused); raises :class:`RunError` when the loop is not running or does not get there."""
        done, box = threading.Event(), []
        with self._lock:
            if not self._serving:
                raise RunError("the run is not training: pick one of its checkpoints instead of the live weights")
            self._waiters.append((done, box))
        if not done.wait(timeout):
            with self._lock:
                if (done, box) in self._waiters:
                    self._waiters.remove((done, box))
            raise RunError(f"training did not reach a step boundary within {timeout:g} s to copy its weights")
        if isinstance(box[0], BaseException):
            raise box[0]
        return box[0]

    # -- the loop's thread -----------------------------------------------------------------
    def start_serving(self) -> None:
        with self._lock:
            self._serving = True

    def take_checkpoint_request(self) -> bool:
        if self._checkpoint.is_set():
            self._checkpoint.clear()
            return True
        return False

    def has_snapshot_requests(self) -> bool:
        return bool(self._waiters)

    def serve_snapshots(self, make: Callable[[], Any]) -> None:
        """Answer every waiting snapshot request with ``make()`` (or the exception it raised)."""
        with self._lock:
            waiters, self._waiters = self._waiters, []
        if not waiters:
            return
        try:
            result = make()
        except (RuntimeError, MemoryError) as exc:  # out of memory: the sampler fails, training goes on
            result = RunError(f"could not copy the weights: {str(exc).splitlines()[0]}")
        for done, box in waiters:
            box.append(result)
            done.set()

    def stop_serving(self, reason: str) -> None:
        """The loop has ended: fail every waiting and later snapshot request with ``reason``."""
        with self._lock:
            waiters, self._waiters = self._waiters, []
            self._serving = False
        for done, box in waiters:
            box.append(RunError(reason))
            done.set()

    def wait_for_resume(self, timeout_s: float = 0.2) -> float:
        """Block while paused, at most ``timeout_s``; returns the seconds waited (paused time is not run time)."""
        t = time.perf_counter()
        self._unpaused.wait(timeout_s)
        return time.perf_counter() - t
