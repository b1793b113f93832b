"""The run library as the window sees it: the runs of the runs folder and the folders the user added, kept up
to date off the GUI thread, and the requests the Runs pane makes of the rest of the window.

:class:`RunLibrary` lists runs with :func:`shiftstudio.core.runs.library.list_runs` in a worker
(:class:`~shiftstudio.gui.workers.Task`): every few seconds while someone watches (the Runs pane while it is
visible), at once when the window starts, pauses, checkpoints or ends a run, and when asked. Panes never talk
to each other: the Runs pane asks the library to open, resume, fork or compare runs, and the window (and the
Compare pane) listen to it.
"""

from __future__ import annotations

import logging
from pathlib import Path

from PySide6.QtCore import QObject, QTimer, Signal

from shiftstudio import paths
from shiftstudio.gui.workers import Task

log = logging.getLogger(__name__)

REFRESH_MS = 3000  # while watched: a run trained elsewhere moves in the table within a few seconds
FOLDERS_KEY = "library_folders"


class RunLibrary(QObject):
    entries_changed = Signal(object)  # list[RunEntry]
    refresh_failed = Signal(str)
    open_requested = Signal(object, bool)  # run folder, resume it once open
    fork_requested = Signal(object)  # a checkpoint folder: a new run starting from it
    compare_requested = Signal(object)  # list[Path]

    def __init__(self, settings=None, runs=None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.settings = settings
        self.entries: list = []
        self._task: Task | None = None
        self._again = False
        self._watchers = 0
        self._timer = QTimer(self)
        self._timer.setInterval(REFRESH_MS)
        self._timer.timeout.connect(self.refresh)
        if runs is not None:  # runs started in the window appear at once, and move as they train
            for signal in (runs.run_started, runs.checkpoint_saved, runs.run_finished, runs.run_failed, runs.state_changed):
                signal.connect(self._on_runs_changed)

    # -- folders -------------------------------------------------------------------------------------
    def extra_folders(self) -> list[str]:
        stored = self.settings.get(FOLDERS_KEY, []) if self.settings is not None else []
        return [f for f in stored if isinstance(f, str)]

    def folders(self) -> list[Path]:
        return [paths.runs_dir(), *(Path(f) for f in self.extra_folders())]

    def add_folder(self, folder: str | Path) -> None:
        text = str(Path(folder))
        if self.settings is not None and text not in self.extra_folders() and Path(text) != paths.runs_dir():
            self.settings.set(FOLDERS_KEY, [*self.extra_folders(), text])
            self.settings.save()
        self.refresh()

    def remove_folder(self, folder: str | Path) -> None:
        if self.settings is not None:
            self.settings.set(FOLDERS_KEY, [f for f in self.extra_folders() if f != str(Path(folder))])
            self.settings.save()
        self.refresh()

    # -- refreshing ------------------------------------------------------------------------------------
    def watch(self, on: bool) -> None:
        """Someone shows the library (the Runs pane is visible): refresh now and every few seconds."""
        self._watchers = max(0, self._watchers + (1 if on else -1))
        if self._watchers:
            if not self._timer.isActive():
                self._timer.start()
                self.refresh()
        else:
            self._timer.stop()

    @property
    def refreshing(self) -> bool:
        return self._task is not None

    def refresh(self) -> None:
        """List the runs again in a worker (a refresh asked for while one runs follows it)."""
        if self._task is not None:
            self._again = True
            return
        folders = self.folders()

        def work(progress, cancel):
            from shiftstudio.core.runs.library import list_runs

            return list_runs(folders)

        task = Task(work, "Listing runs")
        task.succeeded.connect(self._on_task_succeeded)
        task.failed.connect(self._on_task_failed)
        task.finished.connect(self._on_task_finished)
        self._task = task
        task.start()

    def _on_task_succeeded(self, entries: list) -> None:
        self.entries = entries
        self.entries_changed.emit(entries)

    def _on_task_failed(self, message: str, detail: str, expected: bool) -> None:
        log.warning("listing runs failed: %s", detail or message)
        self.refresh_failed.emit(message)

    def _on_task_finished(self) -> None:
        self._task = None
        if self._again:
            self._again = False
            self.refresh()

    def _on_runs_changed(self, *args) -> None:
        self.refresh()

    def wait(self) -> None:
        """Until the listing in flight (if any) has ended (tests, and the window as it closes)."""
        if self._task is not None:
            self._task.wait()

    # -- requests ------------------------------------------------------------------------------------------
    def open(self, run_dir: Path, resume: bool = False) -> None:
        self.open_requested.emit(Path(run_dir), resume)

    def fork(self, checkpoint: Path) -> None:
        self.fork_requested.emit(Path(checkpoint))

    def compare(self, run_dirs: list[Path]) -> None:
        self.compare_requested.emit([Path(p) for p in run_dirs])
