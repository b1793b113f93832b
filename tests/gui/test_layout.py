"""The window's layout as a user meets it: default dock sizes at laptop and desktop sizes, a form that does not
jump while it is edited, Start's reason shown whole, and every pane's Ctrl+N."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import QPoint, Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication, QScrollArea

from shiftstudio.gui.panes import PANES
from shiftstudio.gui.panes.train import CURVES_MIN_HEIGHT

# (window size, the bottom panes' default height at least, the Train pane's at least, the bottom panes' height
# they can be given at least by moving the separator up)
SIZES = [((1366, 768), 290, 390, 340), ((1600, 1000), 390, 520, 560)]


@pytest.mark.parametrize(("size", "bottom_min", "center_min", "grown_min"), SIZES)
def test_default_layout_gives_the_bottom_panes_room_and_the_curves_give_way(qtbot, tmp_path: Path, size, bottom_min,
                                                                             center_min, grown_min) -> None:
    from shiftstudio.gui.main_window import MainWindow
    from shiftstudio.gui.settings import Settings

    window = MainWindow(Settings(tmp_path / "gui.json"))  # no saved layout: the defaults
    qtbot.addWidget(window)
    window.resize(*size)
    window.show()
    window.build()
    inspector, generate = window.docks["inspector"], window.docks["generate"]
    train = window.panes["train"]
    qtbot.waitUntil(lambda: inspector.height() > 100, timeout=5000)
    assert window.size().toTuple() == size
    assert inspector.height() >= bottom_min, inspector.height()
    assert window.center.height() >= center_min, window.center.height()
    # the left panes open wide enough for themselves: the model form needs no horizontal scroll bar, nothing
    # in the pane is wider than the pane
    window.raise_pane("model")
    model = window.panes["model"]
    qtbot.waitUntil(lambda: model.isVisible(), timeout=5000)
    QApplication.processEvents()
    dock_scroll = window.docks["model"].widget()  # the dock's scroll area, around the pane
    assert isinstance(dock_scroll, QScrollArea) and not dock_scroll.horizontalScrollBar().isVisible()
    assert dock_scroll.viewport().width() >= model.minimumSizeHint().width()
    scroll = model.findChild(QScrollArea, "model_form_scroll")
    assert not scroll.horizontalScrollBar().isVisible()
    assert scroll.viewport().width() >= model.form.minimumSizeHint().width()
    # the bottom panes are tabbed together: each gets that height when it is in front
    window.raise_pane("generate")
    qtbot.waitUntil(lambda: generate.isVisible() and generate.height() == inspector.height(), timeout=5000)
    # the separator above them moves up a long way: the curves shrink (the plots with them), the docks grow
    plots_before = train.curves.graphics.height()
    window.resizeDocks([generate], [grown_min + 300], Qt.Vertical)
    qtbot.waitUntil(lambda: generate.height() >= grown_min, timeout=5000)
    # …but not below what keeps two rows of plots readable
    assert train.curves.graphics.height() < plots_before and train.curves.graphics.height() >= CURVES_MIN_HEIGHT
    assert window.size().toTuple() == size  # the window did not have to grow for it
    window.ctx.session.shutdown()


def test_the_model_form_does_not_move_while_it_is_edited(window, qtbot) -> None:
    """The "changed from the preset" note and the error banner appear below the form: the fields stay put."""
    pane = window.panes["model"]
    pane.apply_preset("cpu-tiny")  # the preset as it is: no note yet
    window.raise_pane("model")
    first = pane.form.editors["n_layer"]
    qtbot.waitUntil(lambda: first.isVisible(), timeout=5000)
    assert not pane.changed_label.isVisible() and not pane.messages.isVisible()

    def y() -> int:
        qtbot.wait(100)  # the layouts settle (a shown widget re-lays out its parents over a few event turns)
        return first.mapTo(window, QPoint(0, 0)).y()

    top = y()
    pane.form.editors["dropout"].setValue(0.25)  # differs from the preset: the note appears
    qtbot.waitUntil(lambda: pane.changed_label.isVisible(), timeout=2000)
    assert "dropout" in pane.changed_label.text() and y() == top
    pane.form.editors["n_head"].setValue(3)  # 128 % 3: the error banner appears
    qtbot.waitUntil(lambda: pane.messages.isVisible(), timeout=2000)
    assert pane.messages.level() == "error" and y() == top
    fields_top = first.mapTo(pane, QPoint(0, 0)).y()
    assert pane.changed_label.geometry().top() > fields_top and pane.messages.geometry().top() > fields_top  # below
    pane.form.editors["n_head"].setValue(4)
    qtbot.waitUntil(lambda: not pane.messages.isVisible(), timeout=2000)
    assert y() == top


def test_why_start_is_disabled_is_shown_whole(window, qtbot) -> None:
    config, train = window.ctx.config, window.panes["train"]
    config.set_value("n_embd", 30)  # 30 % 2 heads is fine, but rope needs an even head size: 15 is odd
    config.set_value("n_layer", 3)
    assert not config.is_valid
    label = train.reason_label
    qtbot.waitUntil(lambda: label.isVisible(), timeout=2000)
    assert label.text() == f"Fix the settings first: {config.error}"  # the whole sentence, not an elided one
    assert label.wordWrap() and label.objectName() == "train_reason_label"
    width = 260  # a narrow Train pane: the sentence wraps onto more lines and the label grows to show them all
    narrow = label.fontMetrics().boundingRect(0, 0, width, 10_000, Qt.TextWordWrap, label.text())
    assert narrow.height() > label.fontMetrics().height()  # (several lines at that width)
    assert label.heightForWidth(width) >= narrow.height()
    assert label.height() >= label.heightForWidth(label.width())  # at its own width, nothing is cut off
    config.set_value("n_embd", 32)
    qtbot.waitUntil(lambda: not label.isVisible(), timeout=2000)


@pytest.mark.parametrize("spec", PANES, ids=[spec.key for spec in PANES])
def test_each_pane_has_a_working_ctrl_n(window, qtbot, spec) -> None:
    """Ctrl+1 … Ctrl+8 bring their pane forward (showing a hidden dock, opening a closed middle tab) and put the
    keyboard focus in it; Ctrl+4 is the Train pane in the middle, Ctrl+7 and Ctrl+8 the Runs and Compare tabs."""
    assert spec.shortcut == f"Ctrl+{PANES.index(spec) + 1}"
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow, timeout=5000)
    pane = window.panes[spec.key]
    dock = window.docks.get(spec.key)
    # another pane takes the focus (one tabbed with it, where there is one: then it is also in front)
    other = next((s.key for s in PANES if s.key != spec.key and s.area == spec.area), "model")
    if dock is not None:
        dock.hide()  # hidden (View menu): the shortcut shows it again
    window.raise_pane(other, focus=True)  # the focus elsewhere
    assert not pane.isAncestorOf(QApplication.focusWidget())
    QTest.keyClick(window, getattr(Qt, f"Key_{spec.shortcut[-1]}"), Qt.ControlModifier)
    qtbot.waitUntil(lambda: pane.isVisible() and pane.isAncestorOf(QApplication.focusWidget()), timeout=3000)
    if dock is not None:
        assert dock.isVisible() and not pane.visibleRegion().isEmpty()  # in front of its tab group
    else:
        assert window.center.currentWidget() is pane
    action = window.findChild(type(window.reset_layout_action), f"focus_{spec.key}_action")
    assert action is not None and action.shortcut().toString() == spec.shortcut and action in window.view_menu.actions()
    assert spec.shortcut in action.toolTip()


@pytest.mark.parametrize("width", [1400, 1920])
def test_the_run_name_and_the_checkpoint_are_never_clipped(window, qtbot, width) -> None:
    """The Train pane's run name and last checkpoint, beside the buttons and the Train-on choice, in a common window
    width: the checkpoint is shown whole; the name whole, or cut in the middle with "…" (its date and what differs
    both show), never clipped mid-letter."""
    runs, train = window.ctx.runs, window.panes["train"]
    window.resize(width, 900)
    window.ctx.config.load_flat({"max_iters": 4, "lr_decay_iters": 4, "eval_interval": 2})
    with qtbot.waitSignal(runs.run_finished, timeout=60_000) as finished:
        runs.start()
    qtbot.waitUntil(lambda: not runs.thread_running, timeout=30_000)
    QApplication.processEvents()
    name = f"Run: {Path(finished.args[0].run_dir).name}"
    checkpoint, label = train.checkpoint_label, train.run_label
    assert checkpoint.text() == "Checkpoint: step 4 (best)"
    assert checkpoint.isVisible() and checkpoint.fontMetrics().horizontalAdvance(checkpoint.text()) <= checkpoint.contentsRect().width()
    assert label.isVisible() and label.full_text() == name
    shown = label.text()
    assert label.fontMetrics().horizontalAdvance(shown) <= label.contentsRect().width()
    if shown != name:  # cut: both ends of the name are still there
        head, tail = shown.split("…")
        assert name.startswith(head) and name.endswith(tail) and len(head) >= 8 and len(tail) >= 4
