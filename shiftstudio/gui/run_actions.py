"""The run controller's actions (Start F5, Start new run Ctrl+F5, Pause/Resume F6, Stop Shift+F5, Save
checkpoint Ctrl+S): how each reads and whether it is enabled, for every state and start plan; and the
holding of Start presses while the window loads.

The menus, the Train pane's buttons and the shortcuts share these actions, so
their text, tooltip and status tip say the same everywhere. A press of Start
while held is queued (``start_queued`` says what it waits for) and handed on
when :meth:`RunActions.release` is called.
"""

from __future__ import annotations

from typing import Callable

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QAction, QKeySequence

from shiftstudio.gui.run_plan import StartPlan

PREPARING, RUNNING, PAUSED, STOPPING = "preparing", "running", "paused", "stopping"

CHECKPOINT_TIPS = {
    PAUSED: "Save a checkpoint of the paused run now (Ctrl+S)",
    RUNNING: "Save a checkpoint at the next step without stopping (Ctrl+S)",
    PREPARING: "Save checkpoint (Ctrl+S): not yet, the run is still preparing its data",
    STOPPING: "Save checkpoint (Ctrl+S): the run is stopping and saves one now",
}
NO_RUN_CHECKPOINT_TIP = "Save checkpoint (Ctrl+S): no run is training (Stop saves one; a finished run has one)"
NEW_RUN_TIP = "Start a new run with these settings, even when the open run could be resumed (Ctrl+F5)"


class RunActions(QObject):
    pressed = Signal(bool)  # Start (False) or Start new run (True) was pressed, and Start is not held
    start_queued = Signal(str)  # a held press waits for this ('' = it no longer waits)

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._hold = ""
        self._queued: bool | None = None  # a held press: new run?
        self.start = self._action("Start training", "train_start_action", "F5", self._on_start_triggered)
        self.new_run = self._action("Start new run", "train_new_run_action", "Ctrl+F5", self._on_new_run_triggered)
        self.pause = self._action("Pause", "train_pause_action", "F6")
        self.stop = self._action("Stop", "train_stop_action", "Shift+F5")
        self.checkpoint = self._action("Save checkpoint now", "train_checkpoint_action", "Ctrl+S")
        self.stop.setToolTip("Stop training and save a checkpoint (Shift+F5)")

    def _action(self, text: str, name: str, shortcut: str, slot: Callable | None = None) -> QAction:
        action = QAction(text, self)
        action.setObjectName(name)
        action.setShortcut(QKeySequence(shortcut))
        if slot is not None:
            action.triggered.connect(slot)
        return action

    def update(self, plan: StartPlan, state: str) -> None:
        """Enable and word the actions for ``state`` (a controller state) and what Start would do."""
        self.start.setEnabled(plan.ok)
        self.start.setText(plan.label)
        self.start.setToolTip(plan.why)
        self.start.setStatusTip(plan.why)
        self.new_run.setEnabled(plan.ok)
        self.new_run.setToolTip(NEW_RUN_TIP if plan.ok else plan.why)
        paused = state == PAUSED
        self.pause.setEnabled(state in (RUNNING, PAUSED))
        self.pause.setText("Resume" if paused else "Pause")
        self.pause.setToolTip("Resume training (F6)" if paused else "Pause training between two steps (F6); press again to resume")
        self.stop.setEnabled(state in (PREPARING, RUNNING, PAUSED))
        # the engine serves a checkpoint request at the next step boundary, and while paused
        self.checkpoint.setEnabled(state in (RUNNING, PAUSED))
        self.checkpoint.setToolTip(CHECKPOINT_TIPS.get(state, NO_RUN_CHECKPOINT_TIP))

    # -- holding Start -------------------------------------------------------
    def hold(self, reason: str) -> None:
        """Queue presses of Start until :meth:`release`; ``reason`` is what a queued press waits for."""
        self._hold = reason
        if self._queued is not None:
            self.start_queued.emit(reason)

    def release(self) -> bool | None:
        """Stop holding; returns the queued press (new run?) or None when Start was not pressed."""
        queued, self._hold, self._queued = self._queued, "", None
        if queued is not None:
            self.start_queued.emit("")
        return queued

    @property
    def queued(self) -> str:
        """While a press waits: what it waits for ('' otherwise)."""
        return self._hold if self._queued is not None else ""

    def _on_start_triggered(self) -> None:
        self._press(False)

    def _on_new_run_triggered(self) -> None:
        self._press(True)

    def _press(self, new: bool) -> None:
        if self._hold:
            self._queued = new
            self.start_queued.emit(self._hold)
        else:
            self.pressed.emit(new)
