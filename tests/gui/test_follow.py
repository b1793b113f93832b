"""Following a run that another process trains: the window opens a run the CLI is training, shows its curves
live from its log, sends Pause / Resume / Stop through the run's control file, and survives the run's process
dying; closing the window leaves such a run training."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shiftstudio.core.runs.layout import RunLayout
from shiftstudio.core.runs.lock import lock_state
from shiftstudio.gui.run_controller import FAILED, PAUSED, RUNNING, STOPPED
from tests.gui.conftest import TINY

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _torch_imported() -> None:
    import torch  # noqa: F401


@pytest.fixture
def cli_run(tmp_path: Path, tiny_corpus: Path):
    """A run folder trained by a `shiftstudio resume` child process (until stopped); yields (run, child)."""
    from shiftstudio.config import RunConfig
    from shiftstudio.core.runs.folder import prepare_and_create

    config = RunConfig().updated({"corpus": [str(tiny_corpus)], **TINY, "max_iters": 100_000, "lr_decay_iters": 100_000,
                                  "eval_interval": 20, "log_interval": 2})
    run = prepare_and_create(config, out_dir=tmp_path / "cli-run")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    child = subprocess.Popen([sys.executable, "-m", "shiftstudio", "resume", str(run)], cwd=ROOT, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while lock_state(run)[0] != "held" or not RunLayout(run).metrics_file.exists():
        assert child.poll() is None, child.stderr.read()
        assert time.monotonic() < deadline, "the child never started training"
        time.sleep(0.05)
    yield run, child
    child.kill()
    child.wait(10)


def log_records(run: Path) -> list[dict]:
    out = []
    for line in RunLayout(run).metrics_file.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


def open_and_follow(window, qtbot, run: Path):
    runs = window.ctx.runs
    with qtbot.waitSignal(runs.run_started, timeout=30_000):
        window.open_run(run)
    assert runs.following and "pid" in runs.following and runs.state == RUNNING
    assert "followed" in window.panes["train"].run_label.full_text()
    from shiftstudio.gui.panes.inspector import FOLLOWED_PLACEHOLDER

    inspector = window.panes["inspector"]  # batch views are not logged: it says so instead of "Start training"
    assert inspector.view.model is None and inspector.view.placeholder == FOLLOWED_PLACEHOLDER
    assert inspector.view.sizeHint().width() > inspector.view.fontMetrics().horizontalAdvance(FOLLOWED_PLACEHOLDER)
    return runs


def test_the_window_follows_a_cli_run_and_steers_it_through_the_control_file(window, qtbot, cli_run) -> None:
    run, child = cli_run
    runs = open_and_follow(window, qtbot, run)
    first = len(runs.metrics.steps)
    qtbot.waitUntil(lambda: len(runs.metrics.steps) > first + 5, timeout=30_000)  # new lines arrive and are drawn
    last_logged = max(r["step"] for r in log_records(run) if r.get("kind") == "train")
    assert runs.metrics.steps["step"][-1] <= last_logged
    runs.pause()
    assert runs.state == PAUSED
    qtbot.waitUntil(lambda: any(r.get("kind") == "control" and r["request"] == "pause" for r in log_records(run)),
                    timeout=30_000)
    runs.resume()
    qtbot.waitUntil(lambda: [r.get("request") for r in log_records(run) if r.get("kind") == "control"][-1:] == ["resume"],
                    timeout=30_000)
    assert runs.state == RUNNING
    with qtbot.waitSignal(runs.run_finished, timeout=60_000) as finished:
        runs.stop()
    assert finished.args[0].reason == "stopped"
    qtbot.waitUntil(lambda: not runs.thread_running, timeout=30_000)
    assert child.wait(30) == 0 and runs.state == STOPPED and not runs.following
    assert runs.metrics.steps["step"][-1] == max(r["step"] for r in log_records(run) if r.get("kind") == "train")


def test_a_followed_run_whose_process_dies_is_reported_and_the_window_survives(window, qtbot, cli_run) -> None:
    run, child = cli_run
    runs = open_and_follow(window, qtbot, run)
    with qtbot.waitSignal(runs.run_failed, timeout=30_000) as failed:
        child.send_signal(signal.SIGKILL)
    assert "ended without a final report" in failed.args[0].message and "\n" not in failed.args[0].message
    qtbot.waitUntil(lambda: not runs.thread_running, timeout=30_000)
    assert runs.state == FAILED and window.isVisible()


def test_closing_the_window_leaves_a_followed_run_training(qtbot, cli_run, tiny_corpus: Path) -> None:
    from shiftstudio.gui.main_window import MainWindow
    from shiftstudio.gui.settings import Settings

    run, child = cli_run
    window = MainWindow(Settings())
    qtbot.addWidget(window)
    window.confirm_stop_on_close = lambda: pytest.fail("closing must not offer to stop a run another process trains")
    window.show()
    window.build()
    open_and_follow(window, qtbot, run)
    window.close()
    qtbot.waitUntil(lambda: not window.isVisible(), timeout=10_000)
    size = RunLayout(run).metrics_file.stat().st_size
    qtbot.waitUntil(lambda: RunLayout(run).metrics_file.stat().st_size > size, timeout=30_000)  # still training
    assert child.poll() is None and lock_state(run)[0] == "held"
    assert not any(r.get("kind") == "control" for r in log_records(run))
