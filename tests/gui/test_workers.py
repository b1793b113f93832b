"""Threading contract: batched steps (<= ~20 emissions/s), order kept, flags, errors as signals."""

from __future__ import annotations

import threading
import time

from PySide6.QtCore import QObject, QThread

from shiftstudio.core.errors import CorpusError
from shiftstudio.core.train.control import ViewRequest
from shiftstudio.core.train.reports import CheckpointReport, EvalReport, FinishedReport, StepReport
from shiftstudio.gui.throttling import StepBatcher, ThrottledProgress
from shiftstudio.gui.workers import Task, TrainerLike, TrainingWorker
from tests.gui.doubles import assert_implements


class FakeTrainer:
    """Stands in for the engine's Trainer (the whole TrainerLike protocol): yields fast step reports, honours
    the flags, records the views it is asked for."""

    def __init__(self, n_steps: int = 3000, delay: float = 0.0002, fail_at: int | None = None):
        self.n_steps, self.delay, self.fail_at = n_steps, delay, fail_at
        self._stop = threading.Event()
        self._paused = threading.Event()
        self.checkpoints = 0
        self.views: list[ViewRequest] = []

    def pause(self): self._paused.set()
    def resume(self): self._paused.clear()
    def stop(self): self._stop.set()
    def request_checkpoint(self): self.checkpoints += 1
    def set_views(self, views): self.views.append(views)
    def snapshot(self, timeout=60.0): raise AssertionError("not used by these tests")

    def run(self):
        for step in range(1, self.n_steps + 1):
            while self._paused.is_set() and not self._stop.is_set():
                time.sleep(0.005)
            if self._stop.is_set():
                yield CheckpointReport(step=step - 1, path="x")
                yield FinishedReport(step=step - 1, reason="stopped", best_val_loss=None, run_dir="r")
                return
            if step == self.fail_at:
                raise RuntimeError("boom")
            time.sleep(self.delay)
            yield StepReport(step=step, loss=1.0, lr=1e-3, grad_norm=1.0, tokens_per_s=1.0, tokens=step, time_s=0.0, ms_per_iter=0.2)
            if step % 500 == 0:
                yield EvalReport(step=step, tokens=step, time_s=0.0, train_loss=1.0, val_loss=1.0, val_ppl=2.7, train_ppl=2.7, best_val_loss=1.0, is_best=True)
        yield FinishedReport(step=self.n_steps, reason="completed", best_val_loss=1.0, run_dir="r")


class Recorder(QObject):
    """Lives in the GUI thread; records what arrives, in order, with arrival times."""

    def __init__(self, worker: TrainingWorker):
        super().__init__()
        self.events: list[tuple[str, object, float]] = []
        worker.steps_logged.connect(self.on_steps)
        worker.evaluated.connect(self.on_eval)
        worker.checkpoint_saved.connect(self.on_checkpoint)
        worker.run_finished.connect(self.on_finished)
        worker.run_failed.connect(self.on_failed)

    def on_steps(self, batch): self.events.append(("steps", batch, time.monotonic()))
    def on_eval(self, r): self.events.append(("eval", r, time.monotonic()))
    def on_checkpoint(self, r): self.events.append(("checkpoint", r, time.monotonic()))
    def on_finished(self, r): self.events.append(("finished", r, time.monotonic()))
    def on_failed(self, r): self.events.append(("failed", r, time.monotonic()))


def test_the_fake_trainer_follows_the_protocol() -> None:
    assert_implements(FakeTrainer(), TrainerLike)


def run_worker(qtbot, trainer: FakeTrainer, during=None, views: ViewRequest | None = None):
    worker = TrainingWorker(lambda progress, cancel: trainer)
    if views is not None:
        worker.set_views(views)  # before the trainer exists: handed over when it does
    recorder = Recorder(worker)
    thread = QThread()
    worker.moveToThread(thread)
    thread.started.connect(worker.run)
    worker.done.connect(thread.quit)
    with qtbot.waitSignal(thread.finished, timeout=30_000):
        thread.start()
        if during is not None:
            during(worker)
    thread.wait()
    return recorder.events


def test_steps_are_batched_and_order_is_kept(qtbot) -> None:
    start = time.monotonic()
    trainer = FakeTrainer(n_steps=3000)
    events = run_worker(qtbot, trainer, views=ViewRequest(row=3))
    assert trainer.views == [ViewRequest(row=3)]
    duration = time.monotonic() - start
    step_batches = [e for e in events if e[0] == "steps"]
    seen = [r.step for kind, batch, _ in step_batches for r in batch]
    assert seen == list(range(1, 3001))  # nothing lost, nothing reordered
    assert len(step_batches) <= 22 * duration + 5  # ~20 emissions a second at most
    assert len(step_batches) < 300
    # every eval arrives after all steps up to its own step, and before later ones
    last_step = 0
    for kind, payload, _ in events:
        if kind == "steps":
            assert payload[0].step == last_step + 1
            last_step = payload[-1].step
        elif kind == "eval":
            assert payload.step == last_step
    assert events[-1][0] == "finished"


def test_a_lone_step_is_not_held_back(qtbot) -> None:
    got: list[tuple[float, list]] = []
    batcher = StepBatcher(lambda batch: got.append((time.monotonic(), batch)), interval=0.05)
    t0 = time.monotonic()
    batcher.add("a")
    batcher.add("b")  # within the interval: held, then flushed by the timer
    time.sleep(0.2)
    assert [b for _, b in got] == [["a"], ["b"]]
    assert got[1][0] - t0 < 0.15


def test_pause_resume_stop_and_checkpoint_flags(qtbot) -> None:
    trainer = FakeTrainer(n_steps=100_000, delay=0.0005)

    def drive(worker: TrainingWorker) -> None:
        qtbot.wait(150)
        worker.pause()
        qtbot.wait(100)
        worker.request_checkpoint()
        worker.resume()
        qtbot.wait(100)
        worker.stop()

    events = run_worker(qtbot, trainer, during=drive)
    assert trainer.checkpoints == 1
    assert events[-1][0] == "finished" and events[-1][1].reason == "stopped"
    assert events[-2][0] == "checkpoint"


def test_an_exception_becomes_a_failed_report_with_details(qtbot) -> None:
    events = run_worker(qtbot, FakeTrainer(n_steps=50, fail_at=20))
    kind, report, _ = events[-1]
    assert kind == "failed"
    assert "boom" in report.message and not report.expected
    assert "Traceback" in report.detail
    assert sum(len(b) for k, b, _ in events if k == "steps") == 19


def test_throttled_progress_only_reports_changes() -> None:
    seen: list[tuple] = []
    progress = ThrottledProgress(lambda *a: seen.append(a), "Reading", interval=10.0)
    for done in range(0, 1_000_001, 100):
        progress(done, 1_000_000)
    assert seen[0] == ("Reading", 0, 1_000_000)
    assert seen[-1] == ("Reading", 1_000_000, 1_000_000)
    assert len(seen) == 2


def test_task_reports_success_failure_and_cancel(qtbot) -> None:
    ok = Task(lambda progress, cancel: 42)
    with qtbot.waitSignal(ok.succeeded, timeout=5000) as blocker:
        ok.start()
    assert blocker.args == [42]
    qtbot.waitUntil(lambda: not ok.is_running())

    bad = Task(lambda progress, cancel: (_ for _ in ()).throw(CorpusError("not text")))
    with qtbot.waitSignal(bad.failed, timeout=5000) as blocker:
        bad.start()
    assert blocker.args == ["not text", "", True]  # an error of the core's family: its line, no traceback
    qtbot.waitUntil(lambda: not bad.is_running())

    bug = Task(lambda progress, cancel: (_ for _ in ()).throw(ValueError("not text")))
    with qtbot.waitSignal(bug.failed, timeout=5000) as blocker:
        bug.start()
    message, detail, expected = blocker.args  # any other exception is a bug: named, with its traceback
    assert message == "Unexpected error: ValueError: not text" and not expected
    assert detail.startswith("Traceback") and detail.rstrip().endswith("ValueError: not text")
    qtbot.waitUntil(lambda: not bug.is_running())

    def slow(progress, cancel):
        while not cancel():
            time.sleep(0.01)
        return None

    cancelled = Task(slow)
    with qtbot.waitSignal(cancelled.cancelled, timeout=5000):
        cancelled.start()
        cancelled.cancel()
    qtbot.waitUntil(lambda: not cancelled.is_running())
