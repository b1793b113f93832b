"""The main window: menus, shortcuts, docks from the pane registry, status bar, persistence.

Built in two steps so the window is on screen fast: ``MainWindow(...)`` makes
only menus, the status bar and the (Qt-only) models; :meth:`build` — called
right after the window shows — creates the panes, which import pyqtgraph.
torch is first imported by the device probe, in a worker thread.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

from PySide6.QtCore import QByteArray, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QActionGroup, QCloseEvent, QDragEnterEvent, QDropEvent, QKeySequence
from PySide6.QtWidgets import (
    QApplication, QDockWidget, QFileDialog, QFrame, QLabel, QMainWindow, QMenu, QMessageBox, QScrollArea, QTabWidget, QWidget,
)

from shiftstudio import paths
from shiftstudio.config import ConfigError, load_preset, preset_paths
from shiftstudio.gui import style
from shiftstudio.format import human_bytes, human_duration
from shiftstudio.gui.panes import PANES, PaneContext, create_pane, make_context
from shiftstudio.gui.run_controller import ACTIVE_STATES, STATE_TEXT
from shiftstudio.gui.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_PRESET = "cpu-tiny"
GPU_PRESET = "gpu-small"
LAYOUT_VERSION = 3  # bump when the default layout changes: a saved layout of another version is ignored
DEFAULT_LEFT_WIDTH = 470  # at least; wider if a left pane needs it (up to 40 % of the window)
DEFAULT_BOTTOM_SHARE = 0.36  # of the window's height, for the inspector / playground


def process_memory() -> int:
    """Resident memory of this process in bytes (0 where unknown)."""
    try:
        with open("/proc/self/statm") as fh:
            import os

            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource
        import sys

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return rss if sys.platform == "darwin" else rss * 1024


class MainWindow(QMainWindow):
    built = Signal()  # the panes exist (after the first show)
    painted = Signal()  # the window has been painted once (emitted once, on the next event-loop turn)

    def __init__(self, settings: Settings | None = None, ctx: PaneContext | None = None):
        super().__init__()
        self.settings = settings or Settings()
        self.ctx = ctx or make_context(self.settings)
        self.panes: dict[str, QWidget] = {}
        self.docks: dict[str, QDockWidget] = {}
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
        self._make_status_bar()
        self._make_menus()
        geometry = self.settings.get_bytes("geometry")
        if geometry:
            self.restoreGeometry(QByteArray(geometry))
        self._initial_config()

    # -- construction --------------------------------------------------------
    def _make_status_bar(self) -> None:
        bar = self.statusBar()
        bar.setObjectName("status_bar")
        self.device_label = QLabel("Device: probing…", self)
        self.device_label.setObjectName("status_device_label")
        self.device_label.setToolTip("Where training runs (CUDA GPU, Apple MPS or the CPU with its threads)")
        self.memory_label = QLabel("", self)
        self.memory_label.setObjectName("status_memory_label")
        self.memory_label.setToolTip("Memory in use by ShiftStudio (and on the GPU, when training there)")
        self.state_label = QLabel(STATE_TEXT["idle"], self)
        self.state_label.setObjectName("status_state_label")
        self.state_label.setToolTip("What the training run is doing")
        self.step_label = QLabel("", self)
        self.step_label.setObjectName("status_step_label")
        self.step_label.setToolTip("Optimizer step and estimated time left")
        self.step_label.setMinimumWidth(self.step_label.fontMetrics().horizontalAdvance("Step 100,000 / 100,000 · ETA 0:00:00"))
        self.memory_label.setMinimumWidth(self.memory_label.fontMetrics().horizontalAdvance("Memory: 000.0 MB · GPU 00.0 GB"))
        for w in (self.state_label, self.step_label, self.memory_label, self.device_label):
            bar.addPermanentWidget(w)
        self._memory_timer = QTimer(self)
        self._memory_timer.setInterval(1000)
        self._memory_timer.timeout.connect(self._on_memory_timer_timeout)
        self._memory_timer.start()
        self._on_memory_timer_timeout()

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
        theme_menu = self.view_menu.addMenu("Theme")
        self.theme_group = QActionGroup(self)
        current = self.settings.get("theme", "system")
        for theme in style.THEMES:
            action = QAction(theme.capitalize(), self, checkable=True)
            action.setObjectName(f"theme_{theme}_action")
            action.setData(theme)
            action.setChecked(theme == current)
            self.theme_group.addAction(action)
            theme_menu.addAction(action)
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
        ctx = self.ctx
        self.center.removeTab(0)
        self.loading_label.deleteLater()
        areas = {"left": Qt.LeftDockWidgetArea, "right": Qt.RightDockWidgetArea, "bottom": Qt.BottomDockWidgetArea}
        first_in_area: dict[str, QDockWidget] = {}
        for spec in PANES:
            pane = create_pane(spec, ctx)
            self.panes[spec.key] = pane
            if spec.area == "center":
                self.center.addTab(pane, spec.title)
                continue
            dock = QDockWidget(spec.title.replace("&", "&&"), self)  # '&' would be read as a shortcut mark
            dock.setObjectName(f"{spec.key}_dock")
            # a pane taller or wider than its dock scrolls, so the window fits a 1366x768 laptop screen
            scroll = QScrollArea(dock)
            scroll.setObjectName(f"{spec.key}_scroll")
            scroll.setWidgetResizable(True)
            scroll.setFrameShape(QFrame.NoFrame)
            scroll.setWidget(pane)
            dock.setWidget(scroll)
            dock.setFeatures(QDockWidget.DockWidgetMovable | QDockWidget.DockWidgetFloatable | QDockWidget.DockWidgetClosable)
            self.addDockWidget(areas.get(spec.area, Qt.LeftDockWidgetArea), dock)
            if spec.area in first_in_area:
                self.tabifyDockWidget(first_in_area[spec.area], dock)
            else:
                first_in_area[spec.area] = dock
            toggle = dock.toggleViewAction()
            toggle.setObjectName(f"view_{spec.key}_action")
            if spec.shortcut:
                toggle.setShortcut(QKeySequence(spec.shortcut))
            toggle.setToolTip(f"Show or hide the {spec.title} pane")
            self.view_menu.addAction(toggle)
            self.docks[spec.key] = dock
        for dock in first_in_area.values():
            dock.raise_()
        if "left" in first_in_area:
            needed = max(self.panes[s.key].minimumSizeHint().width() for s in PANES if s.area == "left") + 24
            width = min(max(DEFAULT_LEFT_WIDTH, needed), int(self.width() * 0.4))
            self.resizeDocks([first_in_area["left"]], [width], Qt.Horizontal)
        if "bottom" in first_in_area:
            self.resizeDocks([first_in_area["bottom"]], [max(260, int(self.height() * DEFAULT_BOTTOM_SHARE))], Qt.Vertical)
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
            if path.is_dir() and (path / "run.json").is_file():
                return self.open_run(path)
            if path.name == "run.json":
                return self.open_run(path.parent)
            if path.name == "tokenizer.json":
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
        pane = self.panes.get("model")
        if pane is not None:
            self._raise_pane("model")
            pane.save_as_preset()

    def _on_export_png_action_triggered(self) -> None:
        pane = self.panes.get("train")
        if pane is not None:
            pane._on_curves_export_png_requested()

    def _on_export_csv_action_triggered(self) -> None:
        pane = self.panes.get("train")
        if pane is not None:
            pane._on_curves_export_csv_requested()

    def _on_theme_group_triggered(self, action: QAction) -> None:
        theme = action.data()
        self.settings.set("theme", theme)
        style.apply_theme(QApplication.instance(), theme)

    def _on_about_action_triggered(self) -> None:
        from shiftstudio import __version__

        QMessageBox.about(self, "About ShiftStudio", f"<b>ShiftStudio {__version__}</b><br>A desktop workbench for training small language models.")

    def reset_layout(self) -> None:
        if getattr(self, "_default_dock_state", None) is not None:
            self.restoreState(self._default_dock_state, LAYOUT_VERSION)
            for dock in self.docks.values():
                dock.show()

    # -- model signals -------------------------------------------------------
    def _on_runs_state_changed(self, state: str) -> None:
        self.state_label.setText(STATE_TEXT.get(state, state))
        running = state in ACTIVE_STATES
        self.open_run_action.setEnabled(not running)
        self.recent_menu.setEnabled(not running)

    def _on_runs_progress_changed(self, step: int, max_iters: int, eta: float) -> None:
        eta_text = f" · ETA {human_duration(eta)}" if not math.isnan(eta) and eta > 0 else ""
        self.step_label.setText(f"Step {step:,} / {max_iters:,}{eta_text}")

    def _on_runs_run_started(self, report) -> None:
        self.settings.add_recent_run(report.run_dir)
        self.settings.save()
        self.device_label.setText(report.device)
        self.setWindowTitle(f"ShiftStudio – {Path(report.run_dir).name}")

    def _on_runs_run_opened(self, run_dir: Path, records: list) -> None:
        self.settings.add_recent_run(run_dir)
        self.setWindowTitle(f"ShiftStudio – {run_dir.name}")
        self._default_config = False
        self.ctx.session.open_corpus(list(self.ctx.config.value("corpus")))

    def _on_session_device_probed(self, summary) -> None:
        if self.ctx.runs.state not in ACTIVE_STATES:
            self.device_label.setText(summary.text)
        if summary.kind == "cuda" and self._default_config and GPU_PRESET in preset_paths():
            self.ctx.config.load(load_preset(GPU_PRESET), keep=("corpus",), preset=GPU_PRESET)
        self._default_config = False

    def _on_session_corpus_opened(self, info) -> None:
        self.settings.set("last_corpus", list(info.paths))

    def _on_memory_timer_timeout(self) -> None:
        text = f"Memory: {human_bytes(process_memory())}"
        device = self.ctx.session.device
        if device is not None and device.kind == "cuda":
            import sys

            torch = sys.modules.get("torch")
            if torch is not None:
                text += f" · GPU {human_bytes(torch.cuda.memory_allocated())}"
        self.memory_label.setText(text)

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
            self.statusBar().showMessage("Stopping: saving a checkpoint before quitting…")
            return
        runs.wait(30_000)  # a run that just ended: its thread is on its last lines
        for pane in self.panes.values():  # panes with threads of their own (the playground's sampler)
            shutdown = getattr(pane, "shutdown", None)
            if callable(shutdown):
                shutdown()
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
        curves = getattr(self.panes.get("train"), "curves", None)
        if curves is not None:
            s.set("plot", {"smoothing": curves.smoothing, "x_mode": curves.x_mode, "log_y": curves.log_y})
        s.save()

    def restore_view_settings(self) -> None:
        curves = getattr(self.panes.get("train"), "curves", None)
        plot = self.settings.get("plot")
        if curves is not None and isinstance(plot, dict):
            curves.set_smoothing(float(plot.get("smoothing", curves.smoothing)))
            curves.set_x_mode(str(plot.get("x_mode", "step")))
            curves.set_log_y(bool(plot.get("log_y", False)))
