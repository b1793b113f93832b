"""A run out of memory in the window (``on_out_of_memory = stop``): the message offers to go on with half the
micro-batch, from the step the run kept, with the same batches; "Always do this" also turns splitting on, in the
form and for the run. The device's limit is played by ``SHIFTSTUDIO_INJECT_OOM`` (see tests/core/test_oom.py);
the window, the trainer and the run folder are the real ones."""

from __future__ import annotations

import json
from pathlib import Path

from PySide6.QtCore import Qt

from shiftstudio.core.train.trainer import OOM_ENV  # (torch too: not inside the tests' timeouts)
from shiftstudio.gui.run_controller import FAILED, FINISHED

SHORT = {"max_iters": 10, "lr_decay_iters": 10, "eval_interval": 5, "log_interval": 1, "on_out_of_memory": "stop"}
RESUMED_NOTE = "resumed with micro_splits = 2 (was 1): going on with 2 rows, 2 pieces per micro-batch (the same batch per step)"


def fail_out_of_memory(window, qtbot, on_failure=None):
    """Start a run that runs out of memory in step 5 (after step 4, its first 4 steps done); its FailedReport.
    ``on_failure(report)`` is called as the window hears of it (after the Train pane)."""
    runs = window.ctx.runs
    window.ctx.config.load_flat(SHORT)
    failures: list = []
    runs.run_failed.connect(lambda report: failures.append((report, runs.state)))
    if on_failure is not None:
        runs.run_failed.connect(on_failure)
    assert runs.start_action.isEnabled(), window.panes["train"].reason_label.text()
    qtbot.mouseClick(window.panes["train"].start_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: bool(failures), timeout=60_000)
    report, state = failures[0]
    assert state == FAILED
    return report


def press(qtbot, window, button_name: str) -> None:
    """Press the offer's button ``button_name``."""
    buttons = {b.objectName(): b for b in window.panes["train"].messages.actions_offered()}
    assert list(buttons) == ["train_oom_go_on_button", "train_oom_always_button"]
    assert all(b.isVisible() and b.isEnabled() for b in buttons.values())
    assert buttons["train_oom_go_on_button"].text() == "Go on with half the micro-batch"
    qtbot.mouseClick(buttons[button_name], Qt.LeftButton)


def finish(qtbot, window, finished: list) -> Path:
    """Wait for the resumed run to finish (``finished``: what run_finished said); the run folder."""
    runs, train = window.ctx.runs, window.panes["train"]
    qtbot.waitUntil(lambda: bool(finished) and not runs.thread_running, timeout=60_000)
    report = finished[0]
    assert report.reason == "completed" and report.step == 10 and runs.state == FINISHED
    assert train.messages.actions_offered() == []  # the offer is answered
    return Path(report.run_dir)


def log_of(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_out_of_memory_offers_to_go_on_with_half_the_micro_batch(window, qtbot, monkeypatch) -> None:
    monkeypatch.setenv(OOM_ENV, "2:5")  # from step 5 on, pieces of more than 2 rows (of 4) "do not fit"
    runs, train = window.ctx.runs, window.panes["train"]
    seen: dict = {}
    finished: list = []
    runs.run_finished.connect(finished.append)

    def on_failure(report) -> None:  # what the pane shows, then a press at once: the failed run's thread (which
        # holds the run folder's lock) has not ended yet, so the resume waits for it
        seen.update(text=train.messages.text(), visible=train.messages.isVisible(), level=train.messages.level(),
                    detail=train.messages.detail(), checkpoint=runs.checkpoint_step, thread=runs.thread_running)
        press(qtbot, window, "train_oom_go_on_button")
        seen.update(state_after=runs.state, again=runs.go_on_in_pieces(2))  # waiting: once, and not yet started

    report = fail_out_of_memory(window, qtbot, on_failure)
    assert (report.out_of_memory, report.step, report.micro_splits, report.suggested_micro_splits) == (True, 4, 1, 2)
    text = seen["text"]
    assert seen["visible"] and seen["level"] == "warning"
    for needle in ("out of memory in step 5 (micro-batches of 4 rows)", "Step 4 is saved: the run can go on from there",
                   "2 pieces of 2 rows", "the batch per step and the results stay the same, it is only slower"):
        assert needle in text, text
    assert seen["detail"] == "" and "Traceback" not in text
    assert seen["checkpoint"] == 4  # the last completed step, kept
    assert seen["thread"] and seen["state_after"] == FAILED and seen["again"] is False

    run_dir = finish(qtbot, window, finished)
    records = log_of(run_dir)
    steps = [r["step"] for r in records if r["kind"] == "train"]
    assert steps == list(range(1, 11))  # each step once: step 5 followed step 4
    notes = [(i, r["message"]) for i, r in enumerate(records) if r["kind"] == "note"]
    assert [message for _, message in notes] == [RESUMED_NOTE]
    at = {r["step"]: i for i, r in enumerate(records) if r["kind"] == "train"}
    assert at[4] < notes[0][0] < at[5]  # said where the run went on
    assert [r["resumed"] for r in records if r["kind"] == "started"] == [False, True]
    # going on once changes no setting: the form and the run keep 'stop'
    assert window.ctx.config.config.train.on_out_of_memory == "stop"
    assert json.loads((run_dir / "run.json").read_text())["config"]["train"]["on_out_of_memory"] == "stop"


def test_always_do_this_goes_on_and_splits_by_itself_from_then_on(window, qtbot, monkeypatch) -> None:
    monkeypatch.setenv(OOM_ENV, "1:5")  # from step 5 on only single rows fit: 4 -> 2 (the offer) -> 1 (by itself)
    runs = window.ctx.runs
    report = fail_out_of_memory(window, qtbot)
    assert report.suggested_micro_splits == 2
    qtbot.waitUntil(lambda: not runs.thread_running, timeout=30_000)  # (this time the resume starts at once)
    assert window.panes["train"].messages.isVisible()
    finished: list = []
    runs.run_finished.connect(finished.append)
    shown: list = []  # what the Train pane says as each note arrives (it is connected first)
    train = window.panes["train"]
    runs.noted.connect(lambda note: shown.append((note.message, train.messages.text(), train.messages.level())))
    press(qtbot, window, "train_oom_always_button")
    run_dir = finish(qtbot, window, finished)
    split_note = ("out of memory at step 5 with micro-batches of 2 rows: going on with 1 rows, 4 pieces per micro-batch "
                  "(the same batch per step)")
    assert [message for message, _, _ in shown] == [RESUMED_NOTE, split_note]
    assert shown[1][1] == "O" + split_note[1:] + ". The run goes on." and shown[1][2] == "warning"
    assert train.messages.text().startswith("Training finished at step 10")
    assert train.messages.text().endswith(f"Along the way: O{split_note[1:]}.")  # said again at the end
    assert window.ctx.config.config.train.on_out_of_memory == "split"  # in the form …
    assert json.loads((run_dir / "run.json").read_text())["config"]["train"]["on_out_of_memory"] == "split"  # … and the run
    assert runs.run_config.train.on_out_of_memory == "split"  # (so the form and the open run still agree)
    records = log_of(run_dir)
    assert [r["message"] for r in records if r["kind"] == "note"] == [RESUMED_NOTE, split_note]
    assert [r["step"] for r in records if r["kind"] == "train"] == list(range(1, 11))


def test_on_out_of_memory_changed_in_the_form_resumes_the_run_instead_of_starting_a_new_one(window, qtbot,
                                                                                           monkeypatch) -> None:
    """on_out_of_memory is how a run reacts, not what it trains: after the run stopped out of memory, setting it to
    split in the form keeps Start on "Resume run" (said in its tooltip), and the resumed run records it and splits
    by itself."""
    monkeypatch.setenv(OOM_ENV, "2:5")
    runs, config = window.ctx.runs, window.ctx.config
    report = fail_out_of_memory(window, qtbot)
    qtbot.waitUntil(lambda: not runs.thread_running, timeout=30_000)
    assert report.out_of_memory and report.step == 4
    run_dir = runs.run_dir
    config.set_value("on_out_of_memory", "split")
    plan = runs.plan()
    assert plan.mode == "resume" and plan.applied == {"on_out_of_memory": "split"}, plan
    assert runs.start_action.text() == "Resume run"
    assert "From then on: on_out_of_memory = split." in plan.why
    dropout = config.value("dropout")
    config.set_value("dropout", dropout + 0.05)  # a setting of what the run trains still means a new run
    assert runs.plan().mode == "new"
    config.set_value("dropout", dropout)
    assert runs.plan().mode == "resume"
    finished: list = []
    runs.run_finished.connect(finished.append)
    qtbot.mouseClick(window.panes["train"].start_button, Qt.LeftButton)
    assert finish(qtbot, window, finished) == run_dir  # the same folder, on to step 10
    assert json.loads((run_dir / "run.json").read_text())["config"]["train"]["on_out_of_memory"] == "split"
    assert runs.run_config.train.on_out_of_memory == "split" and runs.plan().applied == {}
    records = log_of(run_dir)
    assert [r["message"] for r in records if r["kind"] == "note"] == [
        "out of memory at step 5 with micro-batches of 4 rows: going on with 2 rows, 2 pieces per micro-batch "
        "(the same batch per step)"]
    assert [r["step"] for r in records if r["kind"] == "train"] == list(range(1, 11))
