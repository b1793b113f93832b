"""The Runs pane in the real window: the library's table (sorted, filtered, broken folders shown with their
reason), its actions — open, resume, fork, compare, rename, notes and tags, delete to the trash (never a run
that trains) — and runs started in the window appearing at once."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from shiftstudio import paths
from shiftstudio.core.runs.library import read_notes
from shiftstudio.core.runs.lock import RunLock
from shiftstudio.gui.panes.runs import KEYS


@pytest.fixture(autouse=True)
def _torch_imported() -> None:
    import torch  # noqa: F401


@pytest.fixture
def library_runs(tiny_run: Path, tiny_k2_run: Path) -> dict[str, Path]:
    runs = paths.runs_dir()
    out = {"alpha": Path(shutil.copytree(tiny_run, runs / "alpha")), "beta-k2": Path(shutil.copytree(tiny_k2_run, runs / "beta-k2"))}
    broken = Path(shutil.copytree(tiny_run, runs / "gamma-broken"))
    (broken / "run.json").write_text("{ cut short")
    out["gamma-broken"] = broken
    return out


def show_runs(window, qtbot):
    pane = window.panes["runs"]
    library = window.ctx.library
    with qtbot.waitSignal(library.entries_changed, timeout=20_000):
        window.raise_pane("runs")
        qtbot.waitUntil(pane.isVisible, timeout=5_000)
    qtbot.waitUntil(lambda: not library.refreshing, timeout=20_000)
    return pane


def names(pane) -> list[str]:
    return [pane.proxy.index(r, 0).data() for r in range(pane.proxy.rowCount())]


def select(pane, *wanted: str) -> None:
    pane.select_paths([paths.runs_dir() / w for w in wanted])
    assert sorted(e.name for e in pane.selected_entries()) == sorted(wanted)


def refreshed(qtbot, window) -> None:
    with qtbot.waitSignal(window.ctx.library.entries_changed, timeout=20_000):
        window.ctx.library.refresh()


def test_the_table_lists_sorts_and_filters_runs_and_says_why_one_is_broken(window, qtbot, library_runs) -> None:
    pane = show_runs(window, qtbot)
    assert sorted(names(pane)) == ["alpha", "beta-k2", "gamma-broken"]
    rows = {pane.proxy.index(r, 0).data(): r for r in range(pane.proxy.rowCount())}
    state = lambda name: pane.proxy.index(rows[name], KEYS.index("state")).data()  # noqa: E731
    assert state("alpha") == "finished" and state("gamma-broken") == "broken"
    assert "run.json is corrupt" in pane.proxy.index(rows["gamma-broken"], KEYS.index("state")).data(Qt.ToolTipRole)
    steps = pane.proxy.index(rows["alpha"], KEYS.index("steps")).data()
    assert steps == "4 / 4"
    pane.table.sortByColumn(KEYS.index("best_val"), Qt.AscendingOrder)
    entries = [pane.proxy.index(r, 0).data(Qt.UserRole) for r in range(pane.proxy.rowCount())]
    vals = [e.best_val for e in entries if e.best_val is not None]
    assert vals == sorted(vals) and entries[-1].name == "gamma-broken"  # no figure: last
    qtbot.keyClicks(pane.filter_edit, "k2 finished")
    assert names(pane) == ["beta-k2"] and pane.count_label.text() == "1 of 3 runs"
    pane.filter_edit.clear()
    assert len(names(pane)) == 3
    select(pane, "gamma-broken")
    assert not pane.open_action.isEnabled() and pane.delete_action.isEnabled()


def test_open_compare_and_fork_go_where_they_should(window, qtbot, library_runs) -> None:
    pane = show_runs(window, qtbot)
    select(pane, "alpha")
    with qtbot.waitSignal(window.ctx.runs.run_opened, timeout=20_000) as opened:
        pane.open_action.trigger()
    assert opened.args[0] == library_runs["alpha"] and window.windowTitle().endswith("alpha")
    select(pane, "alpha", "beta-k2")
    assert pane.compare_action.isEnabled() and not pane.open_action.isEnabled()
    pane.compare_action.trigger()
    compare = window.panes["compare"]
    qtbot.waitUntil(compare.isVisible, timeout=5_000)
    assert sorted(compare.view.runs) == sorted([library_runs["alpha"], library_runs["beta-k2"]])
    window.raise_pane("runs")
    select(pane, "beta-k2")
    pane.fork_action.trigger()
    init_from = Path(window.ctx.config.value("init_from"))
    assert init_from.parent.parent == library_runs["beta-k2"] and init_from.name.startswith("step-")
    assert json.loads((init_from / "state.json").read_text()).get("best") and window.ctx.config.value("shift") == 2
    assert window.panes["model"].isVisible()


def test_rename_notes_and_delete_to_the_trash(window, qtbot, library_runs, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))  # the trash lives under it (Qt follows XDG)
    pane = show_runs(window, qtbot)
    select(pane, "alpha")
    pane.ask_text = lambda title, label, text: "alpha renamed"
    pane.rename_action.trigger()
    qtbot.waitUntil(lambda: "alpha renamed" in names(pane), timeout=20_000)
    assert not library_runs["alpha"].exists()
    select(pane, "alpha renamed")

    def fill(dialog) -> bool:
        dialog.notes_edit.setPlainText("lr too high?\nsecond line")
        dialog.tags_edit.setText("baseline, cpu")
        return True

    pane.run_notes_dialog = fill
    pane.notes_action.trigger()
    qtbot.waitUntil(lambda: pane.selected_entries() and pane.selected_entries()[0].tags == ["baseline", "cpu"], timeout=20_000)
    assert read_notes(paths.runs_dir() / "alpha renamed") == ("lr too high?\nsecond line", ["baseline", "cpu"])
    row = names(pane).index("alpha renamed")
    assert pane.proxy.index(row, KEYS.index("tags")).data() == "baseline, cpu"
    qtbot.keyClicks(pane.filter_edit, "baseline")
    assert names(pane) == ["alpha renamed"]
    pane.filter_edit.clear()
    # a run that trains cannot be deleted: the action is off, and asking anyway says why
    with RunLock.acquire(library_runs["beta-k2"], "a test"):
        refreshed(qtbot, window)
        select(pane, "beta-k2")
        assert not pane.delete_action.isEnabled() and not pane.rename_action.isEnabled()
        pane.confirm = lambda title, question: True
        pane.delete_selected()
        assert library_runs["beta-k2"].exists() and "it is training" in pane.messages._text.text()
    refreshed(qtbot, window)
    select(pane, "alpha renamed")
    asked = []
    pane.confirm = lambda title, question: asked.append(question) or True
    pane.delete_action.trigger()
    qtbot.waitUntil(lambda: "alpha renamed" not in names(pane), timeout=20_000)
    assert not (paths.runs_dir() / "alpha renamed").exists(), (asked, pane.messages._text.text())
    assert "to the trash" in asked[0]
    assert (tmp_path / "xdg" / "Trash" / "files" / "alpha renamed" / "run.json").is_file()  # in the trash, whole


def test_a_run_started_in_the_window_appears_at_once(window, qtbot, library_runs) -> None:
    pane = show_runs(window, qtbot)
    runs = window.ctx.runs
    before = set(names(pane))
    window.ctx.config.load_flat({"max_iters": 12, "lr_decay_iters": 12, "eval_interval": 6})
    with qtbot.waitSignal(runs.run_started, timeout=60_000) as started:
        runs.start(new=True)
    new = Path(started.args[0].run_dir).name
    qtbot.waitUntil(lambda: new in names(pane), timeout=20_000)
    assert set(names(pane)) - before == {new}
    with qtbot.waitSignal(runs.run_finished, timeout=60_000):
        pass
    qtbot.waitUntil(lambda: not runs.thread_running, timeout=30_000)
    qtbot.waitUntil(lambda: [e for e in window.ctx.library.entries if e.name == new][0].state == "finished", timeout=20_000)
    entry = [e for e in window.ctx.library.entries if e.name == new][0]
    assert entry.steps == 12 and entry.best_val is not None


def test_an_added_folder_lists_its_runs_and_a_vanished_one_says_so(window, qtbot, library_runs, tmp_path: Path) -> None:
    pane = show_runs(window, qtbot)
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(library_runs["alpha"], elsewhere / "delta")
    with qtbot.waitSignal(window.ctx.library.entries_changed, timeout=20_000):
        window.ctx.library.add_folder(elsewhere)
    qtbot.waitUntil(lambda: "delta" in names(pane), timeout=20_000)
    assert window.ctx.settings.get("library_folders") == [str(elsewhere)] and pane.remove_folder_action.isEnabled()
    shutil.rmtree(elsewhere)
    refreshed(qtbot, window)
    assert "delta" not in names(pane) and "not there any more" in pane.messages._text.text()
    pane.ask_item = lambda title, label, items: items[0]
    with qtbot.waitSignal(window.ctx.library.entries_changed, timeout=20_000):
        pane.remove_folder_action.trigger()
    assert window.ctx.library.extra_folders() == [] and not pane.remove_folder_action.isEnabled()
