"""Several processes from the window: Start with Processes 2 launches torchrun (detached, its output in the
run's logs/), the window follows the run to its end; a failing rank shows as a failure; closing the window
asks whether to stop a run it launched or leave it training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shiftstudio.core.runs.control import send_request
from shiftstudio.core.runs.layout import RunLayout
from shiftstudio.core.runs.lock import lock_state
from shiftstudio.gui.run_controller import FAILED, FINISHED


@pytest.fixture(autouse=True)
def _torch_imported() -> None:
    import torch  # noqa: F401 - imported up front, not inside the first test's timeouts


def steps_logged(run: Path) -> list[int]:
    out = []
    for line in RunLayout(run).metrics_file.read_text().splitlines():
        rec = json.loads(line)
        if rec.get("kind") == "train":
            out.append(rec["step"])
    return out


def probed(window, qtbot) -> None:
    """The device probe has run (the window starts it after start-up; the fixture's window is built directly)."""
    if window.ctx.session.device is None:
        with qtbot.waitSignal(window.ctx.session.device_probed, timeout=60_000):
            window.ctx.session.probe_device()
    assert window.panes["train"].train_on_combo.count() == 3  # this window, 2 CPU processes with DDP or FSDP


def launch(window, qtbot, choice: str = "2 CPU processes · DDP", **settings) -> Path:
    runs = window.ctx.runs
    probed(window, qtbot)
    window.ctx.config.load_flat({"gradient_accumulation_steps": 2, "max_iters": 40, "lr_decay_iters": 40,
                                 "eval_interval": 20, **settings})
    window.panes["train"].choose_train_on(choice)
    assert runs.processes == 2
    with qtbot.waitSignal(runs.run_started, timeout=240_000) as started:
        assert runs.start(new=True)
    assert "2 ranks (torchrun)" in started.args[0].device  # the job's own start, as its rank 0 logged it
    return Path(started.args[0].run_dir)


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_start_with_two_processes_launches_torchrun_and_follows_the_run(window, qtbot, parallel) -> None:
    runs = window.ctx.runs
    settings = {"optimizer": "adamw"} if parallel == "fsdp" else {}  # (FSDP refuses Muon, cpu-tiny's optimizer)
    run = launch(window, qtbot, f"2 CPU processes · {parallel.upper()}", **settings)
    assert json.loads((run / "run.json").read_text())["config"]["train"]["parallel"] == parallel
    assert runs.launched == run
    with qtbot.waitSignal(runs.run_finished, timeout=240_000) as finished:
        pass
    assert finished.args[0].reason == "completed"
    qtbot.waitUntil(lambda: not runs.thread_running, timeout=30_000)
    assert runs.state == FINISHED and runs.launched is None
    assert steps_logged(run) == list(range(2, 41, 2))  # every log point once: rank 0 writes
    logs = list(RunLayout(run).logs_dir.glob("torchrun-*.log"))
    assert len(logs) == 1 and "finished at step 40" in logs[0].read_text()
    samples = [json.loads(line) for line in RunLayout(run).metrics_file.read_text().splitlines() if '"sample"' in line]
    assert [s["step"] for s in samples] == [20, 40]  # written as a run in the window writes them


def test_gradient_accumulation_must_divide_among_the_processes(window, qtbot) -> None:
    runs = window.ctx.runs
    window.ctx.config.load_flat({"gradient_accumulation_steps": 3})
    probed(window, qtbot)
    window.panes["train"].choose_train_on("2 CPU processes · DDP")
    with qtbot.waitSignal(runs.open_failed, timeout=5_000) as failed:
        assert not runs.start(new=True)
    assert "must be a multiple of the number of processes (2)" in failed.args[0] and not runs.is_active


def test_fsdp_refusals_are_said_before_anything_is_made(window, qtbot) -> None:
    runs = window.ctx.runs
    window.ctx.config.load_flat({"gradient_accumulation_steps": 2, "ema_decay": 0.9})
    probed(window, qtbot)
    window.panes["train"].choose_train_on("2 CPU processes · FSDP")
    with qtbot.waitSignal(runs.open_failed, timeout=5_000) as failed:
        assert not runs.start(new=True)
    assert failed.args[0].startswith("parallel = fsdp does not support a weight EMA") and not runs.is_active


def test_a_failing_rank_shows_as_a_failure(window, qtbot, monkeypatch) -> None:
    monkeypatch.setenv("SHIFTSTUDIO_INJECT_FAULT", "1:300")  # (the detached job inherits the environment) late enough to be followed
    runs = window.ctx.runs
    run = launch(window, qtbot, max_iters=2000, lr_decay_iters=2000)
    with qtbot.waitSignal(runs.run_failed, timeout=120_000) as failed:
        pass
    assert failed.args[0].message.startswith("rank 1 of 2: RuntimeError: a fault injected at step 300")  # the cause
    qtbot.waitUntil(lambda: not runs.thread_running, timeout=30_000)
    assert runs.state == FAILED and window.isVisible()
    qtbot.waitUntil(lambda: lock_state(run)[0] != "held", timeout=60_000)  # the whole job ended


def test_closing_the_window_can_leave_a_launched_run_training_and_another_window_follows_it(window, qtbot) -> None:
    runs = window.ctx.runs
    run = launch(window, qtbot, max_iters=100_000, lr_decay_iters=100_000, eval_interval=100_000)
    try:
        left_training(window, qtbot, runs, run)
    finally:
        stop_job(qtbot, run)


def stop_job(qtbot, run: Path) -> None:
    """A test that leaves a job training never leaves it behind, whatever fails."""
    if lock_state(run)[0] == "held":
        send_request(run, "stop")
        qtbot.waitUntil(lambda: lock_state(run)[0] != "held", timeout=120_000)


def left_training(window, qtbot, runs, run: Path) -> None:
    from shiftstudio.gui.main_window import MainWindow
    from shiftstudio.gui.settings import Settings

    asked = []
    window.ask_stop_launched_run = lambda: asked.append(True) or "leave"
    window.close()
    assert asked and not window.isVisible()
    qtbot.waitUntil(lambda: not runs.following, timeout=30_000)  # the window let go of it
    size = RunLayout(run).metrics_file.stat().st_size
    qtbot.waitUntil(lambda: RunLayout(run).metrics_file.stat().st_size > size, timeout=60_000)  # still training
    assert lock_state(run)[0] == "held"
    second = MainWindow(Settings())  # a later window (the Runs tab opens a run this way) follows it again
    qtbot.addWidget(second)
    second.show()
    second.build()
    with qtbot.waitSignal(second.ctx.runs.run_started, timeout=60_000):
        second.open_run(str(run), load_config=False)
    assert "2 ranks (torchrun)" in second.ctx.runs.following
    with qtbot.waitSignal(second.ctx.runs.run_finished, timeout=120_000) as finished:
        second.ctx.runs.stop()  # Stop goes through the run's control file: the job saves a checkpoint and ends
    assert finished.args[0].reason == "stopped"
    qtbot.waitUntil(lambda: lock_state(run)[0] != "held", timeout=120_000)
    second.ctx.runs.wait(30_000)
    second.ctx.session.shutdown()


def test_closing_the_window_can_stop_the_run_it_launched(window, qtbot) -> None:
    run = launch(window, qtbot, max_iters=100_000, lr_decay_iters=100_000, eval_interval=100_000)
    window.ask_stop_launched_run = lambda: "stop"
    window.close()
    try:
        qtbot.waitUntil(lambda: lock_state(run)[0] != "held", timeout=120_000)
    finally:
        stop_job(qtbot, run)
    finished = [json.loads(line) for line in RunLayout(run).metrics_file.read_text().splitlines()
                if '"finished"' in line]
    assert finished and finished[-1]["reason"] == "stopped"
    assert (RunLayout(run).checkpoints_dir / f"step-{finished[-1]['step']}").is_dir()  # the stop saved


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA (the job must fail)")
def test_a_launch_that_fails_before_training_shows_the_logs_last_lines(window, qtbot) -> None:
    """A job that ends before its rank 0 starts (here: device cuda on a machine without one) is a failure with
    the reason from its log, and the log is kept in the run's logs/ folder."""
    runs = window.ctx.runs
    window.ctx.config.load_flat({"gradient_accumulation_steps": 2, "device": "cuda"})
    probed(window, qtbot)
    window.panes["train"].choose_train_on("2 CPU processes · DDP")
    with qtbot.waitSignal(runs.run_failed, timeout=120_000) as failed:
        assert runs.start(new=True)
    report = failed.args[0]
    assert report.message.startswith("the torchrun job ended: ") and "cuda" in report.message.lower()
    logs = list(paths_runs().glob("*/logs/torchrun-*.log"))
    assert len(logs) == 1 and report.detail and report.detail.splitlines()[-1] in logs[0].read_text()
    assert runs.state == FAILED and not runs.is_active
    assert "the torchrun job ended" in window.panes["train"].messages.text()


def paths_runs() -> Path:
    from shiftstudio import paths

    return paths.runs_dir()


def test_the_jobs_command_carries_a_changed_out_of_memory_policy(tmp_path: Path) -> None:
    """A resume launched with on_out_of_memory changed in the form passes it to every rank's ``resume`` (which
    records it with the run); without one the run keeps its own."""
    from shiftstudio.cli.options import parse
    from shiftstudio.cli.train import RESUME
    from shiftstudio.gui.launcher import torchrun_arguments

    run = tmp_path / "run"
    plain = torchrun_arguments(run, 2, 40, "")
    changed = torchrun_arguments(run, 2, 40, "", on_out_of_memory="split")
    assert "--on_out_of_memory" not in plain
    assert changed == plain + ["--on_out_of_memory", "split"]
    rank_args = changed[changed.index("shiftstudio") + 1:]  # what each rank's `python -m shiftstudio` is given
    assert rank_args[0] == "resume"
    values, positionals, _ = parse(RESUME, rank_args[1:])
    assert (values["on_out_of_memory"], values["max_iters"], positionals) == ("split", 40, [str(run)])
