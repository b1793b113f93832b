"""The run library: summaries folded from the log's new bytes, locks held by live processes (and found stale
when one dies), requests through the control file to a trainer in another process, following a log, broken
folders listed with the reason, and the `runs` command."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shiftstudio.cli import main
from shiftstudio.core.errors import RunLocked
from shiftstudio.core.runs.control import ControlWatcher, send_request
from shiftstudio.core.runs.follow import MetricsFollower
from shiftstudio.core.runs.folder import run_summary
from shiftstudio.core.runs.layout import RunLayout
from shiftstudio.core.runs.library import (
    filter_runs, list_runs, parse_tags, read_entry, read_notes, rename_run, sort_runs, write_notes,
)
from shiftstudio.core.runs.lock import RunLock, lock_state
from shiftstudio.core.runs.summary import current_summary, read_summary

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def run_copy(tiny_run: Path, tmp_path: Path) -> Path:
    """A writable copy of the session's tiny run (4 steps, evals at 2 and 4)."""
    return Path(shutil.copytree(tiny_run, tmp_path / "runs" / "tiny"))


def append(run: Path, *records: dict, raw: bytes = b"") -> None:
    with open(RunLayout(run).metrics_file, "ab") as f:
        for r in records:
            f.write(json.dumps(r).encode() + b"\n")
        f.write(raw)


# -- summaries -------------------------------------------------------------------------------------


def test_an_entry_has_the_figures_of_the_whole_log(run_copy: Path) -> None:
    RunLayout(run_copy).summary_file.unlink(missing_ok=True)
    entry = read_entry(run_copy)
    full = run_summary(run_copy)
    assert entry.state == "finished" and entry.problem == ""
    assert (entry.steps, entry.max_iters, entry.tokens) == (full["steps"], full["max_iters"], full["tokens"]) == (4, 4, entry.tokens)
    assert entry.best_val == pytest.approx(full["best_val_loss"]) and entry.last_val == pytest.approx(full["last_eval"]["val_loss"])
    assert entry.time_s == pytest.approx(full["time_s"]) and entry.device.startswith("CPU")
    assert entry.params == full["n_params"] and entry.origin == "scratch" and entry.corpus == "corpus.txt"
    assert entry.tokenizer.startswith("char") and entry.tokens > 0
    assert read_summary(run_copy).log_bytes == RunLayout(run_copy).metrics_file.stat().st_size  # written back


def test_the_summary_folds_only_the_new_whole_lines(run_copy: Path) -> None:
    before, _ = current_summary(run_copy)
    size = RunLayout(run_copy).metrics_file.stat().st_size
    assert before.log_bytes == size
    # a later evaluation, better than any before, and half of a line still being written
    append(run_copy, {"kind": "eval", "step": 6, "tokens": 999_999, "time_s": 50.0, "val_loss": 0.5, "train_loss": 0.6},
           raw=b'{"kind": "train", "step": 7, "lo')
    after, changed = current_summary(run_copy)
    assert changed and after.best_val == 0.5 and after.best_step == 6 and after.tokens == 999_999 and after.steps == 6
    assert after.log_bytes == RunLayout(run_copy).metrics_file.stat().st_size - len(b'{"kind": "train", "step": 7, "lo')
    # the stored summary is what a second reader starts from: it reads nothing more (a sentinel proves it)
    stored = read_summary(run_copy)
    stored.best_val = -1.0
    RunLayout(run_copy).summary_file.write_text(json.dumps(stored.to_json()))
    again, changed = current_summary(run_copy)
    assert not changed and again.best_val == -1.0
    append(run_copy, raw=b'ss": 0.4}\n')  # the line is finished
    done, changed = current_summary(run_copy)
    assert changed and done.steps == 7 and done.last_train_loss == 0.4 and done.best_val == -1.0


def test_a_rewritten_log_rebuilds_the_summary(run_copy: Path) -> None:
    current_summary(run_copy)
    log = RunLayout(run_copy).metrics_file
    lines = log.read_text().splitlines(keepends=True)
    kept = [line for line in lines if json.loads(line).get("step", 0) <= 2]  # a resume from step 2 cuts the rest
    tmp = log.with_name("new.jsonl")
    tmp.write_text("".join(kept))
    os.replace(tmp, log)  # a new file, as the trainer's rewrite makes
    summary, changed = current_summary(run_copy)
    assert changed and summary.steps == 2 and summary.last_event == "started"
    assert read_entry(run_copy).state == "interrupted"  # no final report and no lock file


# -- locks ---------------------------------------------------------------------------------------------


def test_one_writer_a_second_lock_names_the_holder(run_copy: Path) -> None:
    assert lock_state(run_copy) == ("free", None)
    with RunLock.acquire(run_copy, "a test") as lock:
        state, info = lock_state(run_copy)
        assert state == "held" and info.pid == os.getpid() and info.purpose == "a test"
        with pytest.raises(RunLocked) as caught:
            RunLock.acquire(run_copy)
        message = str(caught.value)
        assert "\n" not in message and f"pid {os.getpid()}" in message and "(a test)" in message
        assert read_entry(run_copy).state == "running"
        assert lock.held
    assert lock_state(run_copy) == ("free", None) and not RunLayout(run_copy).lock_file.exists()


def test_a_killed_trainer_leaves_a_stale_lock_and_a_crashed_run(run_copy: Path) -> None:
    code = ("import sys, time; from shiftstudio.core.runs.lock import RunLock; "
            "RunLock.acquire(sys.argv[1], 'doomed'); print('locked', flush=True); time.sleep(60)")
    child = subprocess.Popen([sys.executable, "-c", code, str(run_copy)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert child.stdout.readline().strip() == "locked"
        append(run_copy, {"kind": "started", "step": 4, "max_iters": 8, "device": "CPU", "tokens": 1, "time_s": 1.0})
        assert lock_state(run_copy)[0] == "held" and read_entry(run_copy).state == "running"
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        child.kill()
    state, info = lock_state(run_copy)
    assert state == "stale" and info.pid == child.pid and info.purpose == "doomed"
    entry = read_entry(run_copy)
    assert entry.state == "crashed" and "without a final report" in entry.problem and f"pid {child.pid}" in entry.holder
    with RunLock.acquire(run_copy) as lock:  # a stale lock is taken over, and what it said is kept for the record
        assert lock.took_over is not None and lock.took_over.pid == child.pid


# -- a trainer in another process: locked, steered through the control file, followed ------------------


def start_training(run: Path, home: Path) -> subprocess.Popen:
    env = {**os.environ, "SHIFTSTUDIO_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "shiftstudio", "resume", str(run), "--max_iters", "200000"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)


def wait_for(predicate, timeout: float = 60.0, what: str = "") -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_run_trained_by_another_process_is_locked_paused_and_stopped_through_the_control_file(
        run_copy: Path, tiny_run: Path, capsys) -> None:
    home = tiny_run.parent / "home"
    follower = MetricsFollower(run_copy)
    seen: list[dict] = []
    seen += follower.poll().records
    child = start_training(run_copy, home)
    try:
        wait_for(lambda: lock_state(run_copy)[0] == "held", what="the trainer's lock")
        # a second writer is refused with one line naming the first, and writes nothing
        size = RunLayout(run_copy).metrics_file.stat().st_size
        assert main(["resume", str(run_copy), "--max_iters", "300000"]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"pid {child.pid}" in err and "shiftstudio resume" in err
        from shiftstudio.core.train.trainer import Trainer

        reports = list(Trainer(run_copy).run())
        assert [type(r).__name__ for r in reports] == ["FailedReport"] and f"pid {child.pid}" in reports[0].message
        assert lock_state(run_copy)[0] == "held"  # the refused trainer did not take or drop the lock
        def seen_one(test) -> bool:
            seen.extend(follower.poll().records)
            return any(test(r) for r in seen)

        wait_for(lambda: seen_one(lambda r: r.get("kind") == "train" and r["step"] > 4), what="training lines")
        assert RunLayout(run_copy).metrics_file.stat().st_size > size
        send_request(run_copy, "pause")
        wait_for(lambda: seen_one(lambda r: r.get("kind") == "control" and r["request"] == "pause"), 30, "the pause")
        assert read_entry(run_copy).state == "paused"
        paused_at = [r for r in seen if r.get("kind") == "control"][-1]["step"]
        time.sleep(0.5)
        assert all(r.get("step", 0) <= paused_at for r in follower.poll().records if r.get("kind") == "train")
        send_request(run_copy, "resume")
        wait_for(lambda: seen_one(lambda r: r.get("kind") == "train" and r["step"] > paused_at), 30, "training after the resume")
        assert read_entry(run_copy).state == "running"
        send_request(run_copy, "stop")
        out, err = child.communicate(timeout=60)
        assert child.returncode == 0, err
    finally:
        child.kill()
    seen += follower.poll().records
    finished = [r for r in seen if r.get("kind") == "finished"]
    assert finished and finished[-1]["reason"] == "stopped"
    assert any(r.get("kind") == "checkpoint" and r["step"] == finished[-1]["step"] for r in seen)
    entry = read_entry(run_copy)
    assert entry.state == "stopped" and entry.steps == finished[-1]["step"] and not RunLayout(run_copy).lock_file.exists()
    assert read_summary(run_copy).log_bytes == RunLayout(run_copy).metrics_file.stat().st_size  # the trainer kept it


def test_old_requests_are_not_served_again(run_copy: Path) -> None:
    send_request(run_copy, "stop")
    watcher = ControlWatcher(run_copy)  # a trainer starting after a stop request must not stop at once
    assert watcher.poll() is None
    send_request(run_copy, "pause")
    assert watcher.poll() == "pause" and watcher.poll() is None
    send_request(run_copy, "resume")
    assert watcher.poll() == "resume"
    with pytest.raises(ValueError):
        send_request(run_copy, "explode")


def test_the_follower_waits_for_whole_lines_and_starts_over_on_a_rewrite(run_copy: Path) -> None:
    follower = MetricsFollower(run_copy)
    first = follower.poll()
    assert first.records and not first.reset and not first.gone
    n = len(first.records)
    append(run_copy, raw=b'{"kind": "train", "step": 5, "loss"')
    assert follower.poll().records == []
    append(run_copy, raw=b': 1.5}\n{"kind": "train", "step": 6, "loss": 1.4}\n')
    assert [r["step"] for r in follower.poll().records] == [5, 6]
    log = RunLayout(run_copy).metrics_file
    tmp = log.with_name("x.jsonl")
    tmp.write_text("".join(log.read_text().splitlines(keepends=True)[:3]))
    os.replace(tmp, log)
    update = follower.poll()
    assert update.reset and len(update.records) == 3 < n
    shutil.rmtree(run_copy)
    assert follower.poll().gone


# -- broken folders, listing, filtering, sorting ---------------------------------------------------------


def test_broken_folders_are_listed_with_the_reason_and_never_break_the_listing(tiny_run: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    shutil.copytree(tiny_run, runs / "good")
    bad_json = Path(shutil.copytree(tiny_run, runs / "bad-json"))
    (bad_json / "run.json").write_text("{ not json")
    newer = Path(shutil.copytree(tiny_run, runs / "newer"))
    record = json.loads((newer / "run.json").read_text())
    record["schema_version"] = 99
    (newer / "run.json").write_text(json.dumps(record))
    orphan = Path(shutil.copytree(tiny_run, runs / "orphan"))
    (orphan / "run.json").unlink()
    cut = Path(shutil.copytree(tiny_run, runs / "cut"))
    assert read_entry(cut).state == "finished"  # listed once whole: its checkpoint's sizes are kept in the summary
    latest = max(RunLayout(cut).checkpoints_dir.iterdir(), key=lambda p: int(p.name.split("-")[1]))
    model = latest / "model.safetensors"
    model.write_bytes(model.read_bytes()[:100])  # cut short afterwards: the next listing still sees it
    (runs / "not-a-run").mkdir()
    (runs / "not-a-run" / "notes.txt").write_text("hello")
    entries = {e.name: e for e in list_runs([runs])}
    assert set(entries) == {"good", "bad-json", "newer", "orphan", "cut"}
    assert entries["good"].state == "finished"
    assert entries["bad-json"].state == "broken" and "run.json is corrupt" in entries["bad-json"].problem
    assert entries["newer"].state == "broken" and "newer ShiftStudio" in entries["newer"].problem
    assert entries["orphan"].state == "broken" and "no run.json" in entries["orphan"].problem
    assert entries["cut"].state == "broken" and f"{latest.name} is cut short" in entries["cut"].problem
    assert all("\n" not in e.problem for e in entries.values())


def test_runs_are_named_by_their_folder(tiny_run: Path, tmp_path: Path) -> None:
    run = Path(shutil.copytree(tiny_run, tmp_path / "a copy"))
    assert json.loads((run / "run.json").read_text())["name"] != "a copy" and read_entry(run).name == "a copy"


def test_filter_sort_notes_tags_and_rename(run_copy: Path, tiny_k2_run: Path, tmp_path: Path) -> None:
    k2 = Path(shutil.copytree(tiny_k2_run, run_copy.parent / "k2"))
    write_notes(k2, "the first try with two heads", parse_tags("baseline, heads ,baseline"))
    assert read_notes(k2) == ("the first try with two heads", ["baseline", "heads"])
    entries = list_runs([run_copy.parent])
    assert {e.path.name for e in filter_runs(entries, "BASELINE heads")} == {"k2"}
    assert {e.path.name for e in filter_runs(entries, "finished")} == {"k2", "tiny"}
    assert filter_runs(entries, "nothing-like-this") == []
    by_val = sort_runs(entries, "best_val")
    assert [e.best_val for e in by_val] == sorted(e.best_val for e in entries)
    with pytest.raises(ValueError):
        sort_runs(entries, "colour")
    moved = rename_run(k2, "two heads")
    assert moved.name == "two heads" and not k2.exists() and read_entry(moved).name == "two heads"
    assert read_notes(moved)[1] == ["baseline", "heads"]
    from shiftstudio.core.errors import RunError

    with pytest.raises(RunError, match="cannot be a folder name"):
        rename_run(moved, "a/b")
    with pytest.raises(RunError, match="already exists"):
        rename_run(moved, "tiny")
    with RunLock.acquire(moved):
        with pytest.raises(RunError, match="it is training"):
            rename_run(moved, "other")


# -- the runs command -----------------------------------------------------------------------------------


def test_runs_command_prints_the_table_and_json(run_copy: Path, tiny_k2_run: Path, capsys) -> None:
    shutil.copytree(tiny_k2_run, run_copy.parent / "k2")
    folder = str(run_copy.parent)
    assert main(["runs", "--folder", folder]) == 0
    lines = capsys.readouterr().out.strip().split("\n")
    assert lines[0].split()[:3] == ["name", "state", "steps"] and len(lines) == 3
    assert main(["runs", "--folder", folder, "--json", "--sort", "best_val"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["best_val"] for r in rows] == sorted(r["best_val"] for r in rows)
    assert {r["shift"] for r in rows} == {1, 2} and all(r["state"] == "finished" for r in rows)
    assert main(["runs", "--folder", folder, "--json", "--filter", "nothing-like-this"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert main(["runs", "--folder", str(run_copy.parent / "missing")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not a folder" in err
    assert main(["runs", "--folder", folder, "--sort", "colour"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


# -- the trash ---------------------------------------------------------------------------------------------


def test_runs_go_to_the_freedesktop_trash_with_where_they_came_from(tmp_path: Path, monkeypatch) -> None:
    from urllib.parse import unquote

    from shiftstudio.core.runs.trash import TrashError, move_to_trash

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    trash = tmp_path / "xdg" / "Trash"
    for i in range(2):  # two folders of the same name: the second gets another name in the trash
        run = tmp_path / f"place{i}" / "my run"
        run.mkdir(parents=True)
        (run / "run.json").write_text(str(i))
        target = move_to_trash(run)
        assert not run.exists() and (target / "run.json").read_text() == str(i)
        info = (trash / "info" / f"{target.name}.trashinfo").read_text().splitlines()
        assert info[0] == "[Trash Info]" and unquote(info[1].removeprefix("Path=")) == str(run)
        assert info[2].startswith("DeletionDate=")
    assert sorted(p.name for p in (trash / "files").iterdir()) == ["my run", "my run.2"]
    other = Path("/dev/shm")
    if other.is_dir() and os.stat(other).st_dev != os.stat(tmp_path).st_dev:
        away = other / f"shiftstudio-test-{os.getpid()}"
        away.mkdir()
        try:
            with pytest.raises(TrashError, match="another disk"):
                move_to_trash(away)
            assert away.exists()
        finally:
            shutil.rmtree(away, ignore_errors=True)
