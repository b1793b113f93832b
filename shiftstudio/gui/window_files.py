"""The main window's File side: opening a corpus, a run folder or a dropped file, the recent runs, exports.

A mixin of :class:`~shiftstudio.gui.main_window.MainWindow` (which provides
``ctx``, ``settings``, ``docks``, ``train_pane``, ``model_pane`` and
``recent_menu``), kept apart so that each module stays readable.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QFileDialog

from shiftstudio import paths
from shiftstudio.core.runs.layout import RUN_FILE, TOKENIZER_FILE, is_run_dir


class WindowFilesMixin:
    # -- opening things ------------------------------------------------------
    def open_corpus(self, sources: list[str]) -> None:
        self.ctx.session.open_corpus([str(s) for s in sources])
        self.raise_pane("corpus")

    def open_run(self, run_dir: str | Path, load_config: bool = True) -> None:
        """Open a run folder: its curves and where it stands, and (``load_config``) its settings into the form."""
        self.ctx.runs.open_run(Path(run_dir), load_config=load_config)

    def open_dropped(self, sources: list[str]) -> None:
        """A file or folder dropped on the window: a run folder, a tokenizer.json or a corpus."""
        if len(sources) == 1:
            path = Path(sources[0])
            if path.is_dir() and is_run_dir(path):
                return self.open_run(path)
            if path.name == RUN_FILE:
                return self.open_run(path.parent)
            if path.name == TOKENIZER_FILE:
                self.ctx.config.set_value("tokenizer", str(path))
                self.ctx.session.train_tokenizer()
                self.raise_pane("tokenizer")
                return None
        self.open_corpus(sources)
        return None

    def ask_open_corpus(self) -> None:
        files, _ = QFileDialog.getOpenFileNames(self, "Open corpus files", "", "Text (*.txt *.md *.py *.jsonl *.ndjson *.rst);;All files (*)")
        if files:
            self.open_corpus(files)

    def ask_open_corpus_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open corpus folder")
        if folder:
            self.open_corpus([folder])

    def ask_open_run(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open run folder", str(paths.runs_dir()))
        if folder:
            self.open_run(folder)

    def _on_sample_action_triggered(self) -> None:
        self.open_corpus([])

    def _on_recent_menu_about_to_show(self) -> None:
        self.recent_menu.clear()
        recent = self.settings.recent_runs()
        if not recent:
            self.recent_menu.addAction("(none yet)").setEnabled(False)
        for i, run in enumerate(recent):
            action = self.recent_menu.addAction(f"&{i + 1} {Path(run).name}")
            action.setObjectName(f"recent_run_{i}_action")
            action.setToolTip(run)
            action.setData(run)
            action.triggered.connect(self._on_recent_action_triggered)

    def _on_recent_action_triggered(self) -> None:
        run = self.sender().data()
        if run:
            self.open_run(run)

    # -- drag and drop -------------------------------------------------------
    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802 - Qt's name
        urls = event.mimeData().urls()
        if urls and all(u.isLocalFile() for u in urls):
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802
        sources = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        if sources:
            event.acceptProposedAction()
            self.open_dropped(sources)

    # -- saving and exporting ------------------------------------------------
    def _on_save_preset_action_triggered(self) -> None:
        if self.model_pane is not None:
            self.raise_pane("model")
            self.model_pane.save_as_preset()

    def _on_export_png_action_triggered(self) -> None:
        if self.train_pane is not None:
            self.train_pane.ask_export_png()

    def _on_export_csv_action_triggered(self) -> None:
        if self.train_pane is not None:
            self.train_pane.ask_export_csv()
