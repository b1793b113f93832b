"""The main window: menus, shortcuts, docks from the pane registry, status bar, persistence.

Built in two steps so the window is on screen fast: ``MainWindow(...)`` makes
only menus, the status bar and the (Qt-only) models; :meth:`build` — called
right after the window shows — creates the panes, which import pyqtgraph.
torch is first imported by the device probe, in a worker thread.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QByteArray, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QCloseEvent, QDragEnterEvent, QDropEvent, QKeySequence
from PySide6.QtWidgets import QApplication, QDockWidget, QFileDialog, QLabel, QMainWindow, QMenu, QMessageBox, QTabWidget

from shiftstudio import paths
from shiftstudio.presets import load_preset, preset_paths
from shiftstudio.core.errors import ConfigError
from shiftstudio.core.runs.layout import RUN_FILE, TOKENIZER_FILE, is_run_dir
from shiftstudio.gui import style
from shiftstudio.gui.docks import DockLayout
from shiftstudio.gui.panes import PANES, Pane, PaneContext, create_pane, make_context
from shiftstudio.gui.run_controller import ACTIVE_STATES
from shiftstudio.gui.settings import Settings
from shiftstudio.gui.status_bar import StatusBar

if TYPE_CHECKING:  # the panes' modules import pyqtgraph: only once the window shows (see build)
    from shiftstudio.gui.panes.model import ModelPane
    from shiftstudio.gui.panes.train import TrainPane

log = logging.getLogger(__name__)

DEFAULT_PRESET = "cpu-tiny"
GPU_PRESET = "gpu-small"
LAYOUT_VERSION = 3  # bump when the default layout changes: a saved layout of another version is ignored


class MainWindow(QMainWindow):
    built = Signal()  # the panes exist (after the first show)
    painted = Signal()  # the window has been painted once (emitted once, on the next event-loop turn)

    def __init__(self, settings: Settings | None = None, ctx: PaneContext | None = None):
        super().__init__()
        self.settings = settings or Settings()
        self.ctx = ctx or make_context(self.settings)
        self.panes: dict[str, Pane] = {}
        self.docks: dict[str, QDockWidget] = {}
        self.train_pane: TrainPane | None = None  # the panes the menus act on (None until build, or when unregistered)
        self.model_pane: ModelPane | None = None
        self._default_dock_state: QByteArray | None = None  # the layout as built, for View > Reset layout
        self._default_config = True  # nothing chose the settings yet (GPU preset may replace them)
        self._close_after_stop = False
        self._painted = False
        self.setObjectName("main_window")
        self.setWindowTitle("ShiftStudio")
        self.setWindowIcon(style.app_icon())
        self.setAcceptDrops(True)
        self.setDockOptions(QMainWindow.AnimatedDocks | QMainWindow.AllowTabbedDocks)
        self.setTabPosition(Qt.AllDockWidgetAreas, QTabWidget.North)
        self.setCorner(Qt.BottomLeftCorner, Qt.LeftDockWidgetArea)  # the left panes run the full height
        self.setCorner(Qt.TopLeftCorner, Qt.LeftDockWidgetArea)
        self.resize(1360, 860)
        self.center = QTabWidget(self)
        self.center.setObjectName("center_tabs")
        self.center.setDocumentMode(True)
        self.center.tabBar().setAutoHide(True)
        self.loading_label = QLabel("Loading…", self.center)
        self.loading_label.setAlignment(Qt.AlignCenter)
        self.setCentralWidget(self.center)
        self.center.addTab(self.loading_label, "Loading")
        self.status_bar = StatusBar(self.ctx.session, self)
        self.setStatusBar(self.status_bar)
        self._make_menus()
        geometry = self.settings.get_bytes("geometry")
        if geometry:
            self.restoreGeometry(QByteArray(geometry))
        self._initial_config()

    # -- construction --------------------------------------------------------
    def _action(self, text: str, name: str, slot, shortcut: str | QKeySequence | None = None, tip: str = "") -> QAction:
        action = QAction(text, self)
        action.setObjectName(name)
        if shortcut:
            action.setShortcut(QKeySequence(shortcut))
        action.setToolTip(tip or text)
        action.setStatusTip(tip or text)
        action.triggered.connect(slot)
        return action

    def _make_menus(self) -> None:
        runs = self.ctx.runs
        menu = self.menuBar()
        file_menu = menu.addMenu("&File")
        self.open_corpus_action = self._action("Open corpus…", "open_corpus_action", self.ask_open_corpus, QKeySequence.Open, "Open text files to train on (Ctrl+O)")
        self.open_folder_action = self._action("Open corpus folder…", "open_corpus_folder_action", self.ask_open_corpus_folder, None, "Open every text file in a folder")
        self.sample_action = self._action("Use the sample corpus", "sample_corpus_action", self._on_sample_action_triggered, None, "Tiny shakespeare, shipped with the app")
        self.open_run_action = self._action("Open run…", "open_run_action", self.ask_open_run, "Ctrl+Shift+O", "Open a run folder to see its curves or resume it")
        self.recent_menu = QMenu("Recent runs", self)
        self.recent_menu.setObjectName("recent_runs_menu")
        self.recent_menu.aboutToShow.connect(self._on_recent_menu_about_to_show)
        self.save_preset_action = self._action("Save config as preset…", "save_preset_action", self._on_save_preset_action_triggered, None, "Save the current settings as a preset of your own")
        self.export_png_action = self._action("Export plots as PNG…", "export_png_action", self._on_export_png_action_triggered)
        self.export_csv_action = self._action("Export metrics as CSV…", "export_csv_action", self._on_export_csv_action_triggered)
        self.quit_action = self._action("Quit", "quit_action", self.close, QKeySequence.Quit, "Quit ShiftStudio (Ctrl+Q)")
        self.quit_action.setShortcut(QKeySequence("Ctrl+Q"))
        for a in (self.open_corpus_action, self.open_folder_action, self.sample_action, None, self.open_run_action):
            file_menu.addSeparator() if a is None else file_menu.addAction(a)
        file_menu.addMenu(self.recent_menu)
        for a in (None, self.save_preset_action, self.export_png_action, self.export_csv_action, None, self.quit_action):
            file_menu.addSeparator() if a is None else file_menu.addAction(a)
        train_menu = menu.addMenu("&Train")
        for a in (runs.start_action, runs.pause_action, runs.stop_action, None, runs.checkpoint_action):
            train_menu.addSeparator() if a is None else train_menu.addAction(a)
        for a in (runs.start_action, runs.pause_action, runs.stop_action, runs.checkpoint_action):
            self.addAction(a)  # shortcuts work wherever the focus is
        self.view_menu = menu.addMenu("&View")
        self.theme_group = style.theme_actions(self, self.settings.get("theme", "system"))
        self.view_menu.addMenu("Theme").addActions(self.theme_group.actions())
        self.theme_group.triggered.connect(self._on_theme_group_triggered)
        self.reset_layout_action = self._action("Reset layout", "reset_layout_action", self.reset_layout)
        self.view_menu.addAction(self.reset_layout_action)
        self.view_menu.addSeparator()
        help_menu = menu.addMenu("&Help")
        help_menu.addAction(self._action("About ShiftStudio", "about_action", self._on_about_action_triggered))

    def _initial_config(self) -> None:
        saved = self.settings.get("last_config")
        config = self.ctx.config
        name = DEFAULT_PRESET if DEFAULT_PRESET in preset_paths() else next(iter(preset_paths()), "")
        if name:
            try:
                config.load(load_preset(name), preset=name)
            except ConfigError as exc:
                log.warning("preset %s unusable: %s", name, exc)
        if isinstance(saved, dict):
            config.load_flat(saved)
            config.set_preset_name(self.settings.get("last_preset", "") or "")
            self._default_config = False

    def build(self) -> None:
        """Create the panes (imports pyqtgraph); call once, after the window shows."""
        if self.panes:
            return
        from shiftstudio.gui.panes.model import ModelPane
        from shiftstudio.gui.panes.train import TrainPane

        self.center.removeTab(0)
        self.loading_label.deleteLater()
        docks = DockLayout(self)
        for spec in PANES:
            pane = create_pane(spec, self.ctx)
            self.panes[spec.key] = pane
            if isinstance(pane, TrainPane):
                self.train_pane = pane
            elif isinstance(pane, ModelPane):
                self.model_pane = pane
            if spec.area == "center":
                self.center.addTab(pane, spec.title)
                continue
            dock = docks.add(spec, pane)
            self.view_menu.addAction(dock.toggleViewAction())
            self.docks[spec.key] = dock
        docks.finish()
        self._default_dock_state = self.saveState(LAYOUT_VERSION)
        state = self.settings.get_bytes("window_state")
        if state:
            self.restoreState(QByteArray(state), LAYOUT_VERSION)
        self.setFocus()
        self._connect_models()
        self.restore_view_settings()
        self.built.emit()

    def _connect_models(self) -> None:
        runs, session = self.ctx.runs, self.ctx.session
        runs.state_changed.connect(self._on_runs_state_changed)
        runs.progress_changed.connect(self._on_runs_progress_changed)
        runs.run_started.connect(self._on_runs_run_started)
        runs.run_opened.connect(self._on_runs_run_opened)
        runs.thread_finished.connect(self._on_runs_thread_finished)
        session.device_probed.connect(self._on_session_device_probed)
        session.corpus_opened.connect(self._on_session_corpus_opened)

    def start(self, run_dir: str | None = None, corpus: list[str] | None = None) -> None:
        """After :meth:`build`: open what the command line asked for, probe the device."""
        if run_dir:
            self._default_config = False
            self.open_run(run_dir)
        elif corpus:
            self.open_corpus(corpus)
        else:
            last = self.settings.get("last_corpus")
            sources = [p for p in last if Path(p).exists()] if isinstance(last, list) else []
            self.open_corpus(sources)
        self.ctx.session.probe_device()

    # -- opening things ------------------------------------------------------
    def open_corpus(self, sources: list[str]) -> None:
        self.ctx.session.open_corpus([str(s) for s in sources])
        self._raise_pane("corpus")

    def open_run(self, run_dir: str | Path) -> None:
        self.ctx.runs.open_run(Path(run_dir))

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
                self._raise_pane("tokenizer")
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

    def _raise_pane(self, key: str) -> None:
        dock = self.docks.get(key)
        if dock is not None:
            dock.show()
            dock.raise_()

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

    # -- menu actions --------------------------------------------------------
    def _on_save_preset_action_triggered(self) -> None:
        if self.model_pane is not None:
            self._raise_pane("model")
            self.model_pane.save_as_preset()

    def _on_export_png_action_triggered(self) -> None:
        if self.train_pane is not None:
            self.train_pane.ask_export_png()

    def _on_export_csv_action_triggered(self) -> None:
        if self.train_pane is not None:
            self.train_pane.ask_export_csv()

    def _on_theme_group_triggered(self, action: QAction) -> None:
        theme = action.data()
        self.settings.set("theme", theme)
        style.apply_theme(QApplication.instance(), theme)

    def _on_about_action_triggered(self) -> None:
        from shiftstudio import __version__

        QMessageBox.about(self, "About ShiftStudio", f"<b>ShiftStudio {__version__}</b><br>A desktop workbench for training small language models.")

    def reset_layout(self) -> None:
        if self._default_dock_state is not None:
            self.restoreState(self._default_dock_state, LAYOUT_VERSION)
            for dock in self.docks.values():
                dock.show()

    # -- model signals -------------------------------------------------------
    def _on_runs_state_changed(self, state: str) -> None:
        self.status_bar.show_state(state)
        running = state in ACTIVE_STATES
        self.open_run_action.setEnabled(not running)
        self.recent_menu.setEnabled(not running)

    def _on_runs_progress_changed(self, step: int, max_iters: int, eta: float) -> None:
        self.status_bar.show_progress(step, max_iters, eta)

    def _on_runs_run_started(self, report) -> None:
        self.settings.add_recent_run(report.run_dir)
        self.settings.save()
        self.status_bar.show_device(report.device)
        self.setWindowTitle(f"ShiftStudio – {Path(report.run_dir).name}")

    def _on_runs_run_opened(self, run_dir: Path, records: list) -> None:
        self.settings.add_recent_run(run_dir)
        self.setWindowTitle(f"ShiftStudio – {run_dir.name}")
        self._default_config = False
        self.ctx.session.open_corpus(list(self.ctx.config.value("corpus")))

    def _on_session_device_probed(self, summary) -> None:
        if self.ctx.runs.state not in ACTIVE_STATES:
            self.status_bar.show_device(summary.text)
        if summary.kind == "cuda" and self._default_config and GPU_PRESET in preset_paths():
            self.ctx.config.load(load_preset(GPU_PRESET), keep=("corpus",), preset=GPU_PRESET)
        self._default_config = False

    def _on_session_corpus_opened(self, info) -> None:
        self.settings.set("last_corpus", list(info.paths))

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt's name
        super().paintEvent(event)
        if not self._painted:
            self._painted = True
            # after the children have painted and the frame is out; the context object (self) cancels the
            # timer if the window is deleted first
            QTimer.singleShot(0, self, self.painted.emit)

    # -- closing -------------------------------------------------------------
    def confirm_stop_on_close(self) -> bool:
        """Ask whether to stop the run (tests replace this method)."""
        answer = QMessageBox.question(
            self, "Training is running",
            "A training run is in progress. Stop it (a checkpoint is saved) and quit?",
            QMessageBox.Yes | QMessageBox.No, QMessageBox.No,
        )
        return answer == QMessageBox.Yes

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt's name
        runs = self.ctx.runs
        if runs.is_active:
            event.ignore()
            if self._close_after_stop:
                return
            if not self.confirm_stop_on_close():
                return
            self._close_after_stop = True
            runs.stop()
            self.status_bar.showMessage("Stopping: saving a checkpoint before quitting…")
            return
        runs.wait(30_000)  # a run that just ended: its thread is on its last lines
        for pane in self.panes.values():  # panes with threads of their own (the playground's sampler)
            pane.shutdown()
        self.save_settings()
        self.ctx.session.shutdown()
        runs.shutdown()
        event.accept()

    def _on_runs_thread_finished(self) -> None:
        if self._close_after_stop:
            QTimer.singleShot(0, self, self.close)

    def save_settings(self) -> None:
        s = self.settings
        s.set_bytes("geometry", bytes(self.saveGeometry().data()))
        if self.panes:
            s.set_bytes("window_state", bytes(self.saveState(LAYOUT_VERSION).data()))
        s.set("last_config", self.ctx.config.values())
        s.set("last_preset", self.ctx.config.preset)
        if self.train_pane is not None:
            s.set("plot", self.train_pane.curves.view_settings())
        s.save()

    def restore_view_settings(self) -> None:
        plot = self.settings.get("plot")
        if self.train_pane is not None and isinstance(plot, dict):
            self.train_pane.curves.apply_view_settings(plot)
