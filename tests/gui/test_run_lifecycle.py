"""A run's life across sessions, with the real trainer on tiny settings: continued with a larger max_iters, quit
mid-run, reopened at the next start where it stands, resumed (or deliberately not); F5's meaning in words; saving
while paused; run names; Start pressed before the window is ready."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QStyle

from shiftstudio.gui.run_controller import IDLE, PAUSED, RUNNING
from tests.gui.conftest import TINY

LONG = 100_000  # runs until stopped


@pytest.fixture(autouse=True)
def _torch_imported() -> None:
    import torch  # noqa: F401 - (the app's device probe imports it; here it must not count against the timeouts)


def click_start(qtbot, window) -> object:
    runs = window.ctx.runs
    assert runs.start_action.isEnabled(), window.panes["train"].reason_label.text()
    with qtbot.waitSignal(runs.run_started, timeout=60_000) as started:
        qtbot.mouseClick(window.panes["train"].start_button, Qt.LeftButton)
    return started.args[0]


def activate(qtbot, window) -> None:
    """Key presses reach the window's shortcuts (as a user's do): it is the active window."""
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow, timeout=5000)


def new_window(qtbot):
    from shiftstudio.gui.main_window import MainWindow
    from shiftstudio.gui.settings import Settings

    window = MainWindow(Settings())  # the settings the last window saved as it closed
    qtbot.addWidget(window)
    window.confirm_stop_on_close = lambda: True
    window.show()
    window.build()
    return window


def test_a_continued_run_quit_mid_run_is_reopened_where_it_stands(window, qtbot) -> None:
    runs, config = window.ctx.runs, window.ctx.config
    config.load_flat({"max_iters": 10, "lr_decay_iters": 10, "eval_interval": 5, "log_interval": 3})
    assert config.is_linked("lr_decay_iters")
    click_start(qtbot, window)
    with qtbot.waitSignal(runs.run_finished, timeout=60_000) as finished:
        pass
    qtbot.waitUntil(lambda: not runs.thread_running, timeout=30_000)
    run_dir = Path(finished.args[0].run_dir)

    # a larger max_iters continues the run: F5 says so (button, tooltip, status bar), keeping the run's schedule
    config.set_value("max_iters", LONG)
    assert config.value("lr_decay_iters") == LONG  # (linked: it followed)
    assert runs.start_action.text() == "Resume run"
    tip = runs.start_action.toolTip()
    assert tip.startswith(f"Resume {run_dir.name} from step 10 to {LONG:,} (F5)") and "lr_decay_iters (10)" in tip
    assert window.status_bar.plan_label.text() == f"F5 resumes {run_dir.name} at step 10"
    assert window.panes["train"].start_button.toolTip() == tip
    report = click_start(qtbot, window)
    assert report.resumed and report.step == 10 and report.max_iters == LONG
    assert config.value("lr_decay_iters") == 10 and not config.is_linked("lr_decay_iters")  # what the run uses
    assert json.loads((run_dir / "run.json").read_text())["config"]["train"]["max_iters"] == LONG  # the new plan
    with qtbot.waitSignal(runs.checkpoint_saved, timeout=60_000, check_params_cb=lambda r: r.step > 10):
        pass

    # quit mid-run: a checkpoint is saved where it stopped
    with qtbot.waitSignal(runs.run_finished, timeout=60_000) as finished:
        window.close()
    qtbot.waitUntil(lambda: not window.isVisible(), timeout=30_000)
    stopped_at = finished.args[0].step
    assert (run_dir / "checkpoints" / f"step-{stopped_at}").is_dir()
    # as after a crash: steps logged past the newest checkpoint (a resume starts at the checkpoint, and drops them)
    metrics = run_dir / "metrics.jsonl"
    last_train = [r for r in map(json.loads, metrics.read_text().splitlines()) if r["kind"] == "train"][-1]
    with metrics.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps({**last_train, "step": stopped_at + 7}) + "\n")

    # the next start reopens it (never training by itself), where the newest checkpoint stands
    again = new_window(qtbot)
    a_runs, a_config, a_train = again.ctx.runs, again.ctx.config, again.panes["train"]
    with qtbot.waitSignal(a_runs.run_opened, timeout=30_000) as opened:
        again.start()
    assert opened.args[0] == run_dir and a_runs.step == stopped_at and a_runs.max_iters == LONG
    qtbot.waitUntil(lambda: again.ctx.session.corpus is not None, timeout=30_000)
    assert a_runs.state == IDLE and not a_runs.thread_running
    assert a_train.progress_bar.format() == f"Idle · step {stopped_at:,} / {LONG:,}"
    assert f"checkpoint at step {stopped_at:,} of {LONG:,}" in a_train.messages.text()
    assert a_config.value("max_iters") == LONG and a_runs.start_action.text() == "Resume run"

    # File › Recent runs: the form takes the run's settings, its recorded plan included
    a_config.set_value("max_iters", 10)
    again._on_recent_menu_about_to_show()
    recent = again.recent_menu.actions()[0]
    assert recent.objectName() == "recent_run_0_action" and recent.data() == str(run_dir)
    with qtbot.waitSignal(a_runs.run_opened, timeout=30_000):
        recent.trigger()
    assert a_config.value("max_iters") == LONG and a_runs.start_action.text() == "Resume run"

    # other settings: F5 would start a new run, and says that the open one can be resumed; it asks first
    a_config.set_value("n_embd", 64)
    assert a_runs.start_action.text() == "Start new run"
    where = f"step {stopped_at:,} of {LONG:,}"
    assert f"The open run {run_dir.name} ({where}) can be resumed instead" in a_runs.start_action.toolTip()
    assert again.status_bar.plan_label.text() == "F5 starts a new run (the open one can be resumed)"
    asked: list[str] = []
    again.confirm_new_run = lambda question: asked.append(question) or False  # "No"
    activate(qtbot, again)
    QTest.keyClick(again, Qt.Key_F5)
    assert asked and asked[0].startswith(f"Start a new run? The open run ({where}) can be resumed instead")
    assert a_runs.state == IDLE and not a_runs.thread_running and len(list(run_dir.parent.iterdir())) == 1

    # back to the run's settings: F5 resumes it from its checkpoint
    a_config.set_value("n_embd", 32)
    report = click_start(qtbot, again)
    assert report.resumed and report.run_dir == str(run_dir) and report.step == stopped_at and report.max_iters == LONG
    with qtbot.waitSignal(a_runs.run_finished, timeout=60_000):
        a_runs.stop()
    qtbot.waitUntil(lambda: not a_runs.thread_running, timeout=30_000)
    again.ctx.session.shutdown()


def test_pausing_saving_while_paused_and_resuming(window, qtbot) -> None:
    runs, train, status = window.ctx.runs, window.panes["train"], window.status_bar
    assert not runs.checkpoint_action.isEnabled() and "no run is training" in runs.checkpoint_action.toolTip()
    window.ctx.config.load_flat({"max_iters": LONG, "lr_decay_iters": LONG, "eval_interval": 10_000})
    click_start(qtbot, window)
    qtbot.waitUntil(lambda: "ETA" in train.progress_bar.format(), timeout=30_000)
    assert "ETA" in status.step_label.text()
    play = train.style().standardIcon(QStyle.SP_MediaPlay).pixmap(16).toImage()
    pause = train.style().standardIcon(QStyle.SP_MediaPause).pixmap(16).toImage()
    assert runs.pause_action.icon().pixmap(16).toImage() == pause

    activate(qtbot, window)
    QTest.keyClick(window, Qt.Key_F6)
    assert runs.state == PAUSED
    assert runs.pause_action.text() == "Resume" and runs.pause_action.toolTip().startswith("Resume training")
    assert runs.pause_action.icon().pixmap(16).toImage() == play  # play: what pressing it does now
    qtbot.wait(300)  # step reports already on their way arrive: still no ETA
    assert "ETA" not in train.progress_bar.format() and "ETA" not in status.step_label.text()
    assert train.progress_bar.format().startswith("Paused · step")
    assert runs.checkpoint_action.isEnabled() and "paused" in runs.checkpoint_action.toolTip()
    with qtbot.waitSignal(runs.checkpoint_saved, timeout=30_000) as saved:
        QTest.keyClick(window, Qt.Key_S, Qt.ControlModifier)
    assert runs.state == PAUSED and (Path(saved.args[0].path) / "model.safetensors").is_file()
    assert f"Checkpoint: step {saved.args[0].step:,}" in train.checkpoint_label.text()

    QTest.keyClick(window, Qt.Key_F6)
    assert runs.state == RUNNING and runs.pause_action.text() == "Pause"
    assert runs.pause_action.icon().pixmap(16).toImage() == pause
    qtbot.waitUntil(lambda: "ETA" in train.progress_bar.format(), timeout=30_000)
    with qtbot.waitSignal(runs.run_finished, timeout=60_000):
        runs.stop()


def test_a_new_run_is_named_for_what_differs_from_its_preset(window, qtbot) -> None:
    from shiftstudio.core.runs.folder import run_name_tags
    from shiftstudio.presets import load_preset

    config = window.ctx.config
    assert config.preset == "cpu-tiny"
    config.load_flat({"max_iters": 2, "lr_decay_iters": 2, "shift": 2, "pos": "rope"})
    preset = load_preset("cpu-tiny")
    tags = run_name_tags(config.config, preset)
    assert tags != run_name_tags(config.config)  # (against the defaults the name would say other things)
    report = click_start(qtbot, window)
    name = Path(report.run_dir).name
    assert name.endswith("-2x32-" + "-".join(tags[:4]).lower()) and "-k2" in name and "rope" not in name, name
    qtbot.waitUntil(lambda: not window.ctx.runs.thread_running, timeout=60_000)


def test_f5_before_the_window_is_ready_is_queued_with_feedback(qtbot, tiny_corpus: Path) -> None:
    """A press of F5 while the window still loads is taken, said, and carried out once the corpus is read."""
    from shiftstudio.gui.main_window import WAIT_CORPUS, WAIT_WINDOW, MainWindow
    from shiftstudio.gui.settings import Settings

    window = MainWindow(Settings())
    qtbot.addWidget(window)
    window.confirm_stop_on_close = lambda: True
    window.ctx.config.load_flat({**TINY, "max_iters": 4, "lr_decay_iters": 4})
    window.show()
    activate(qtbot, window)
    runs = window.ctx.runs
    assert runs.start_action.isEnabled() and window.loading_page.start_button.defaultAction() is runs.start_action
    QTest.keyClick(window, Qt.Key_F5)
    assert runs.state == IDLE and runs.queued_start == WAIT_WINDOW
    assert window.loading_page.hint.text() == WAIT_WINDOW and window.status_bar.currentMessage() == WAIT_WINDOW
    window.build()
    window.start(corpus=[str(tiny_corpus)])  # the corpus is read in a worker: the press waits for it, and says so
    assert runs.state == IDLE and runs.queued_start == WAIT_CORPUS
    assert window.panes["train"].progress_bar.format() == WAIT_CORPUS and window.status_bar.currentMessage() == WAIT_CORPUS
    with qtbot.waitSignal(runs.run_started, timeout=60_000) as started:
        pass
    assert window.ctx.session.corpus.paths == [str(tiny_corpus)]
    record = json.loads((Path(started.args[0].run_dir) / "run.json").read_text())
    assert record["config"]["data"]["corpus"] == [str(tiny_corpus)]  # the corpus read, not the one before it
    assert runs.queued_start == "" and window.status_bar.currentMessage() == ""
    with qtbot.waitSignal(runs.run_finished, timeout=60_000):
        pass
    runs.wait(30_000)
    window.ctx.session.shutdown()
