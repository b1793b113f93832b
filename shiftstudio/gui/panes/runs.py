"""The Runs pane: every run at a glance, and what to do with one.

A table of the run library (:class:`~shiftstudio.gui.run_library.RunLibrary`): name, state, steps done /
planned, tokens, best and last validation loss, wall time, parameters, corpus, tokenizer, origin, device,
created, tags and notes — sortable by any column (numbers as numbers) and filtered by the words typed above
it. Its actions, in the toolbar and the context menu: open (also a double-click), resume, fork ("new run
from this checkpoint"), compare (two runs or more), rename, notes & tags, delete (asks; to the system trash
where there is one, and never a run that is training), reveal in the file manager, add a folder of runs.

The table refreshes every few seconds while the pane is visible (off the GUI thread), and at once when the
window starts, checkpoints or ends a run.
"""

from __future__ import annotations

import math
import shutil
import sys
from pathlib import Path
from typing import Any, Self

from PySide6.QtCore import (
    QAbstractTableModel, QFile, QItemSelectionModel, QModelIndex, QPersistentModelIndex, QSortFilterProxyModel, Qt, QUrl,
)
from PySide6.QtGui import QAction, QDesktopServices, QKeySequence
from PySide6.QtWidgets import (
    QAbstractItemView, QDialog, QDialogButtonBox, QFileDialog, QFormLayout, QHBoxLayout, QHeaderView, QInputDialog,
    QLabel, QLineEdit, QMenu, QMessageBox, QPlainTextEdit, QTableView, QToolBar, QVBoxLayout, QWidget,
)

from shiftstudio.core.errors import RunError
from shiftstudio.format import human_count, human_duration
from shiftstudio.gui.panes import Pane, PaneContext
from shiftstudio.gui.run_controller import RunController
from shiftstudio.gui.run_library import RunLibrary
from shiftstudio.gui.widgets.message_bar import MessageBar

COLUMNS: list[tuple[str, str, str]] = [  # (key, title, tooltip)
    ("name", "Name", "The run's folder"),
    ("state", "State", "running / paused (a process trains it now), new, finished, stopped, failed, crashed "
     "(its process died without a final report), interrupted, broken"),
    ("steps", "Steps", "Steps done / planned"),
    ("tokens", "Tokens", "Training tokens seen"),
    ("best_val", "Best val", "Best validation loss (head 1)"),
    ("last_val", "Last val", "Last validation loss (head 1)"),
    ("time_s", "Time", "Training wall time (pauses excluded)"),
    ("params", "Params", "Parameters"),
    ("corpus", "Corpus", "What it trains on"),
    ("tokenizer", "Tokenizer", "Tokenizer (vocabulary)"),
    ("origin", "Origin", "From scratch, or fine-tuned from a model"),
    ("device", "Device", "Where it trained last"),
    ("created", "Created", "When the run was made"),
    ("tags", "Tags", "Your tags"),
    ("notes", "Notes", "Your notes"),
]
KEYS = [key for key, _, _ in COLUMNS]
STATE_COLOURS = {"running": "#0072B2", "paused": "#E69F00", "failed": "#D55E00", "crashed": "#D55E00",
                 "broken": "#D55E00"}
SORT_ROLE = Qt.UserRole + 1


def _loss(value: float | None) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.4f}"


def cell_text(entry: Any, key: str) -> str:
    if key == "steps":
        return f"{entry.steps:,} / {entry.max_iters:,}" if entry.max_iters else f"{entry.steps:,}"
    if key == "tokens":
        return human_count(entry.tokens) if entry.tokens else "–"
    if key in ("best_val", "last_val"):
        return _loss(getattr(entry, key))
    if key == "time_s":
        return human_duration(entry.time_s) if entry.time_s else "–"
    if key == "params":
        return human_count(entry.params) if entry.params else "–"
    if key == "created":
        return entry.created.replace("T", " ")[:16]
    if key == "tags":
        return ", ".join(entry.tags)
    if key == "notes":
        return entry.notes.splitlines()[0] if entry.notes else ""
    return str(getattr(entry, key))


def sort_value(entry: Any, key: str) -> Any:
    """What a column sorts by: numbers as numbers, runs without the figure last."""
    if key in ("steps", "tokens", "time_s", "params", "best_val", "last_val"):
        value = getattr(entry, key)
        return math.inf if value is None else float(value)
    return cell_text(entry, key).lower()


class RunsTableModel(QAbstractTableModel):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.entries: list[Any] = []

    def set_entries(self, entries: list[Any]) -> None:
        """Replace the rows, keeping a row's place when the same runs come back (a refresh)."""
        if [e.path for e in entries] == [e.path for e in self.entries]:
            self.entries = list(entries)
            if entries:
                self.dataChanged.emit(self.index(0, 0), self.index(len(entries) - 1, len(COLUMNS) - 1))
            return
        self.beginResetModel()
        self.entries = list(entries)
        self.endResetModel()

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(self.entries)

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.DisplayRole) -> Any:  # noqa: N802
        if orientation != Qt.Horizontal or not 0 <= section < len(COLUMNS):
            return None
        if role == Qt.DisplayRole:
            return COLUMNS[section][1]
        if role == Qt.ToolTipRole:
            return COLUMNS[section][2]
        return None

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.DisplayRole) -> Any:
        if not index.isValid():
            return None
        entry, key = self.entries[index.row()], KEYS[index.column()]
        if role == Qt.DisplayRole:
            return cell_text(entry, key)
        if role == SORT_ROLE:
            return sort_value(entry, key)
        if role == Qt.UserRole:
            return entry
        if role == Qt.ToolTipRole:
            if key == "state" and (entry.problem or entry.holder):
                return "\n".join(t for t in (entry.problem, entry.holder and f"lock: {entry.holder}") if t)
            if key == "notes" and entry.notes:
                return entry.notes
            if key == "name":
                return str(entry.path)
            return None
        if role == Qt.ForegroundRole and key == "state" and entry.state in STATE_COLOURS:
            from PySide6.QtGui import QColor

            return QColor(STATE_COLOURS[entry.state])
        if role == Qt.TextAlignmentRole and key in ("steps", "tokens", "best_val", "last_val", "time_s", "params"):
            return int(Qt.AlignRight | Qt.AlignVCenter)
        return None


class RunsFilter(QSortFilterProxyModel):
    """Rows whose text contains every word typed (as the CLI's ``runs --filter``)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.words: list[str] = []
        self.setSortRole(SORT_ROLE)

    def set_text(self, text: str) -> None:
        if hasattr(self, "beginFilterChange"):  # Qt 6.9 and later
            self.beginFilterChange()
            self.words = text.lower().split()
            self.endFilterChange(QSortFilterProxyModel.Direction.Rows)
        else:
            self.words = text.lower().split()
            self.invalidateFilter()

    def filterAcceptsRow(self, row: int, parent: QModelIndex | QPersistentModelIndex) -> bool:  # noqa: N802
        if not self.words:
            return True
        entry = self.sourceModel().entries[row]
        text = entry.text()
        return all(w in text for w in self.words)


class NotesDialog(QDialog):
    def __init__(self, name: str, notes: str, tags: list[str], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("run_notes_dialog")
        self.setWindowTitle(f"Notes and tags · {name}")
        self.notes_edit = QPlainTextEdit(notes, self)
        self.notes_edit.setObjectName("run_notes_edit")
        self.tags_edit = QLineEdit(", ".join(tags), self)
        self.tags_edit.setObjectName("run_tags_edit")
        self.tags_edit.setPlaceholderText("comma-separated, e.g. baseline, lr sweep")
        form = QFormLayout()
        form.addRow("Notes", self.notes_edit)
        form.addRow("Tags", self.tags_edit)
        buttons = QDialogButtonBox(QDialogButtonBox.Save | QDialogButtonBox.Cancel, self)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(buttons)
        self.resize(460, 300)


class RunsPane(Pane):
    def __init__(self, library: RunLibrary, runs: RunController, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.library, self.runs = library, runs
        self.setObjectName("runs_pane")
        self.model = RunsTableModel(self)
        self.proxy = RunsFilter(self)
        self.proxy.setSourceModel(self.model)
        self.table = QTableView(self)
        self.table.setObjectName("runs_table")
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(KEYS.index("created"), Qt.DescendingOrder)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.ExtendedSelection)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.setAlternatingRowColors(True)
        self.table.setWordWrap(False)
        self.table.verticalHeader().hide()
        self.table.verticalHeader().setDefaultSectionSize(self.table.fontMetrics().height() + 8)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.Interactive)
        header.setStretchLastSection(True)
        for key, width in (("name", 300), ("state", 90), ("steps", 120), ("corpus", 130), ("origin", 150)):
            self.table.setColumnWidth(KEYS.index(key), width)
        self.table.setContextMenuPolicy(Qt.CustomContextMenu)
        self.table.customContextMenuRequested.connect(self._on_table_context_menu_requested)
        self.table.doubleClicked.connect(self._on_table_double_clicked)
        self.table.selectionModel().selectionChanged.connect(self._on_selection_changed)

        self.filter_edit = QLineEdit(self)
        self.filter_edit.setObjectName("runs_filter")
        self.filter_edit.setPlaceholderText("Filter: words in the name, state, corpus, origin, notes or tags")
        self.filter_edit.setClearButtonEnabled(True)
        self.filter_edit.setToolTip("Show only the runs whose name, state, corpus, tokenizer, origin, device, notes or tags contain every word typed")
        self.filter_edit.textChanged.connect(self._on_filter_edit_text_changed)
        self.count_label = QLabel("", self)
        self.count_label.setObjectName("runs_count")
        self.messages = MessageBar(self, "runs_message_bar")

        self.toolbar = QToolBar(self)
        self.toolbar.setObjectName("runs_toolbar")
        self.toolbar.setToolButtonStyle(Qt.ToolButtonTextOnly)

        def action(text: str, name: str, slot, tip: str, shortcut: str = "") -> QAction:
            a = QAction(text, self)
            a.setObjectName(name)
            a.setToolTip(tip)
            a.triggered.connect(slot)
            if shortcut:
                a.setShortcut(QKeySequence(shortcut))
                a.setShortcutContext(Qt.WidgetWithChildrenShortcut)
            self.addAction(a)
            return a

        self.open_action = action("Open", "runs_open_action", self.open_selected, "Open the run: its curves, samples and settings (double-click)", "Return")
        self.resume_action = action("Resume", "runs_resume_action", self.resume_selected, "Open the run and go on training it where it stopped")
        self.fork_action = action("Fork", "runs_fork_action", self.fork_selected, "A new run that starts from this run's best checkpoint (its settings in the Model pane, to change before Start)")
        self.compare_action = action("Compare", "runs_compare_action", self.compare_selected, "Overlay the curves of the selected runs and list the settings that differ")
        self.rename_action = action("Rename…", "runs_rename_action", self.rename_selected, "Rename the run's folder", "F2")
        self.notes_action = action("Notes…", "runs_notes_action", self.edit_notes, "Notes and tags of the run")
        self.delete_action = action("Delete…", "runs_delete_action", self.delete_selected, "Move the selected runs to the trash (asks first)", "Delete")
        self.reveal_action = action("Show folder", "runs_reveal_action", self.reveal_selected, "Show the run's folder in the file manager")
        self.add_folder_action = action("Add folder…", "runs_add_folder_action", self.ask_add_folder, "List the runs of another folder too")
        self.remove_folder_action = action("Remove folder…", "runs_remove_folder_action", self.ask_remove_folder,
                                           "Stop listing the runs of a folder you added (nothing is deleted)")
        self.refresh_action = action("Refresh", "runs_refresh_action", self.library.refresh, "List the runs again now")
        for a in (self.open_action, self.resume_action, self.fork_action, self.compare_action, None, self.rename_action,
                  self.notes_action, self.delete_action, self.reveal_action, None, self.add_folder_action, self.remove_folder_action, self.refresh_action):
            self.toolbar.addSeparator() if a is None else self.toolbar.addAction(a)

        top = QHBoxLayout()
        top.addWidget(self.filter_edit, 1)
        top.addWidget(self.count_label)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addWidget(self.toolbar)
        layout.addLayout(top)
        layout.addWidget(self.messages)
        layout.addWidget(self.table, 1)

        library.entries_changed.connect(self._on_library_entries_changed)
        library.refresh_failed.connect(self._on_library_refresh_failed)
        self._on_library_entries_changed(library.entries)

    @classmethod
    def from_context(cls, ctx: PaneContext) -> Self:
        return cls(ctx.library, ctx.runs)

    # -- showing ------------------------------------------------------------------------------------------
    def showEvent(self, event) -> None:  # noqa: N802 - Qt's name
        super().showEvent(event)
        self.library.watch(True)

    def hideEvent(self, event) -> None:  # noqa: N802
        super().hideEvent(event)
        self.library.watch(False)

    def _on_library_entries_changed(self, entries: list) -> None:
        selected = {e.path for e in self.selected_entries()}
        self.model.set_entries(entries)
        if selected:
            self.select_paths(selected)
        shown, total = self.proxy.rowCount(), len(entries)
        folders = ", ".join(str(f) for f in self.library.folders())
        self.count_label.setText(f"{shown} of {total} runs" if shown != total else f"{total} runs")
        self.count_label.setToolTip(f"Runs in {folders}")
        missing = [f for f in self.library.extra_folders() if not Path(f).is_dir()]
        if missing:
            self.messages.show_message(f"{', '.join(missing)}: not there any more (moved, deleted or on a disk that is "
                                       "not connected); Remove folder… stops listing it", "warning")
        self.remove_folder_action.setEnabled(bool(self.library.extra_folders()))
        self._on_selection_changed()

    def _on_library_refresh_failed(self, message: str) -> None:
        self.messages.show_message(f"Could not list the runs: {message}", "error")

    def _on_filter_edit_text_changed(self, text: str) -> None:
        self.proxy.set_text(text)
        self._on_library_entries_changed(self.model.entries)

    # -- selection -------------------------------------------------------------------------------------------
    def selected_entries(self) -> list[Any]:
        rows = sorted({i.row() for i in self.table.selectionModel().selectedRows()})
        return [self.proxy.data(self.proxy.index(r, 0), Qt.UserRole) for r in rows]

    def select_paths(self, paths: set[Path] | list[Path]) -> None:
        wanted = {Path(p) for p in paths}
        selection = self.table.selectionModel()
        selection.clearSelection()
        for row in range(self.proxy.rowCount()):
            entry = self.proxy.data(self.proxy.index(row, 0), Qt.UserRole)
            if entry.path in wanted:
                selection.select(self.proxy.index(row, 0),
                                 QItemSelectionModel.SelectionFlag.Select | QItemSelectionModel.SelectionFlag.Rows)

    def _on_selection_changed(self, *args) -> None:
        chosen = self.selected_entries()
        one = len(chosen) == 1
        usable = one and chosen[0].state != "broken"
        self.open_action.setEnabled(usable)
        self.resume_action.setEnabled(usable and not chosen[0].training and chosen[0].state not in ("new", "finished"))
        self.fork_action.setEnabled(usable and chosen[0].steps > 0 and not self.runs.is_active)
        self.compare_action.setEnabled(len(chosen) >= 2 and all(e.state != "broken" for e in chosen))
        self.rename_action.setEnabled(one and not chosen[0].training)
        self.notes_action.setEnabled(usable)
        self.delete_action.setEnabled(bool(chosen) and not any(e.training for e in chosen))
        self.reveal_action.setEnabled(one)

    def _on_table_double_clicked(self, index: QModelIndex) -> None:
        self.open_selected()

    def _on_table_context_menu_requested(self, pos) -> None:
        menu = QMenu(self)
        for a in (self.open_action, self.resume_action, self.fork_action, self.compare_action, None, self.rename_action,
                  self.notes_action, self.reveal_action, None, self.delete_action):
            menu.addSeparator() if a is None else menu.addAction(a)
        menu.exec(self.table.viewport().mapToGlobal(pos))

    # -- actions ------------------------------------------------------------------------------------------------
    def _one(self) -> Any | None:
        chosen = self.selected_entries()
        return chosen[0] if len(chosen) == 1 else None

    def open_selected(self) -> None:
        entry = self._one()
        if entry is not None and entry.state != "broken":
            self.library.open(entry.path)

    def resume_selected(self) -> None:
        entry = self._one()
        if entry is not None:
            self.library.open(entry.path, resume=True)

    def fork_selected(self) -> None:
        """A new run from the run's best checkpoint (else its newest)."""
        entry = self._one()
        if entry is None:
            return
        from shiftstudio.core.runs.layout import RunLayout, step_of

        folder = RunLayout(entry.path).checkpoints_dir
        steps = sorted(s for s in (step_of(p.name) for p in folder.iterdir()) if s is not None) if folder.is_dir() else []
        if not steps:
            self.messages.show_message(f"{entry.name} has no checkpoint to fork from yet.", "warning")
            return
        best = next((s for s in reversed(steps) if _is_best(folder / f"step-{s}")), steps[-1])
        self.library.fork(folder / f"step-{best}")

    def compare_selected(self) -> None:
        chosen = self.selected_entries()
        if len(chosen) >= 2:
            self.library.compare([e.path for e in chosen])

    def rename_selected(self) -> None:
        from shiftstudio.core.runs.library import rename_run

        entry = self._one()
        if entry is None:
            return
        if self.runs.is_active and self.runs.run_dir == entry.path:
            self.messages.show_message(f"{entry.name} is on screen and training: stop it before renaming it.", "warning")
            return
        name = self.ask_text("Rename run", "New name of the run's folder:", entry.name)
        if not name or name == entry.name:
            return
        try:
            new_path = rename_run(entry.path, name)
        except RunError as exc:
            self.messages.show_message(str(exc), "error")
            return
        if self.runs.run_dir == entry.path:  # the run on screen: open it where it now is
            self.library.open(new_path)
        self.library.refresh()

    def edit_notes(self) -> None:
        from shiftstudio.core.runs.library import parse_tags, write_notes

        entry = self._one()
        if entry is None:
            return
        dialog = NotesDialog(entry.name, entry.notes, entry.tags, self)
        if not self.run_notes_dialog(dialog):
            return
        try:
            write_notes(entry.path, dialog.notes_edit.toPlainText(), parse_tags(dialog.tags_edit.text()))
        except RunError as exc:
            self.messages.show_message(str(exc), "error")
            return
        self.library.refresh()

    def run_notes_dialog(self, dialog: NotesDialog) -> bool:
        """Show the notes dialog (tests fill it in and accept it instead)."""
        return dialog.exec() == QDialog.Accepted

    def delete_selected(self) -> None:
        from shiftstudio.core.runs.library import check_not_training

        chosen = self.selected_entries()
        if not chosen:
            return
        names = ", ".join(e.name for e in chosen[:5]) + (f" and {len(chosen) - 5} more" if len(chosen) > 5 else "")
        if not self.confirm("Delete runs", f"Move {len(chosen)} run{'s' if len(chosen) > 1 else ''} to the trash?\n{names}"):
            return
        problems = []
        for entry in chosen:
            try:
                if self.runs.is_active and self.runs.run_dir == entry.path:
                    raise RunError(f"cannot delete {entry.name}: it is training in this window; stop it first")
                check_not_training(entry.path, "delete")
                self._move_to_trash(entry.path)
            except (RunError, OSError) as exc:
                problems.append(str(exc) if isinstance(exc, RunError) else f"{entry.name}: {exc.strerror or exc}")
        if problems:
            self.messages.show_message("; ".join(problems), "error")
        self.library.refresh()

    def _move_to_trash(self, path: Path) -> None:
        """To the system trash (the freedesktop.org one, macOS's, or Windows' recycle bin through Qt); where there
        is none, delete for good only when the user agrees."""
        from shiftstudio.core.runs.trash import TrashError, move_to_trash

        why = ""
        if sys.platform == "win32":
            if QFile.moveToTrash(str(path)):
                return
            why = "the recycle bin refused it"
        else:
            try:
                move_to_trash(path)
                return
            except TrashError as exc:
                why = str(exc)
        if self.confirm("No trash", f"{why}. Delete {path.name} for good?"):
            shutil.rmtree(path)
        else:
            raise RunError(f"{path.name} was kept ({why})")

    def reveal_selected(self) -> None:
        entry = self._one()
        if entry is not None:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(entry.path)))

    def ask_add_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Add a folder of runs")
        if folder:
            self.library.add_folder(folder)

    def ask_remove_folder(self) -> None:
        folders = self.library.extra_folders()
        if not folders:
            return
        folder = self.ask_item("Remove folder", "Stop listing the runs of:", folders)
        if folder:
            self.messages.hide()
            self.library.remove_folder(folder)

    # -- dialogs (tests answer them by setting these attributes on the pane) -------------------------------------------------------------------------------
    def confirm(self, title: str, question: str) -> bool:
        return QMessageBox.question(self, title, question, QMessageBox.Yes | QMessageBox.No, QMessageBox.No) == QMessageBox.Yes

    def ask_item(self, title: str, label: str, items: list[str]) -> str:
        value, ok = QInputDialog.getItem(self, title, label, items, 0, False)
        return value if ok else ""

    def ask_text(self, title: str, label: str, text: str) -> str:
        value, ok = QInputDialog.getText(self, title, label, QLineEdit.Normal, text)
        return value.strip() if ok else ""


def _is_best(checkpoint: Path) -> bool:
    import json

    try:
        return bool(json.loads((checkpoint / "state.json").read_text(encoding="utf-8")).get("best"))
    except (OSError, ValueError):
        return False


if __name__ == "__main__":
    from shiftstudio.gui.panes import preview

    raise SystemExit(preview(RunsPane))
