"""The main window: menus, shortcuts, docks from the pane registry, status bar, persistence.

Built in two steps so the window is on screen fast: ``MainWindow(...)`` makes
only menus, the status bar, the (Qt-only) models and a loading page whose
Start button works; :meth:`build` — called right after the window shows —
creates the panes, which import pyqtgraph. torch is first imported by the
device probe, in a worker thread. Start (F5) is usable from the first paint:
until the panes are built, the corpus is read and the last run reopened, a
press is held and said so ("Starting as soon as …"), then carried out.

The File side (opening things, recent runs, drops, exports) is in
:mod:`~shiftstudio.gui.window_files`; what the window remembers between
starts (size, layout, settings, the last run) in :mod:`~shiftstudio.gui.window_state`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QByteArray, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence
from PySide6.QtWidgets import QApplication, QDockWidget, QMainWindow, QMenu, QMessageBox, QTabWidget

from shiftstudio.core.runs.layout import is_run_dir
from shiftstudio.gui import style
from shiftstudio.gui.docks import DockLayout
from shiftstudio.gui.panes import PANES, Pane, PaneContext, create_pane, make_context
from shiftstudio.gui.run_controller import ACTIVE_STATES
from shiftstudio.gui.run_plan import StartPlan
from shiftstudio.gui.settings import Settings
from shiftstudio.gui.status_bar import StatusBar
from shiftstudio.gui.widgets.loading_page import LoadingPage
from shiftstudio.gui.window_files import WindowFilesMixin
from shiftstudio.gui.window_state import DEFAULT_SIZE, LAYOUT_VERSION, WindowStateMixin
from shiftstudio.presets import load_preset, preset_paths

if TYPE_CHECKING:  # the panes' modules import pyqtgraph: only once the window shows (see build)
    from shiftstudio.gui.panes.model import ModelPane
    from shiftstudio.gui.panes.train import TrainPane

log = logging.getLogger(__name__)

GPU_PRESET = "gpu-small"
WAIT_WINDOW = "Starting as soon as the window is ready…"
WAIT_CORPUS = "Starting as soon as the corpus is read…"
WAIT_RUN = "Starting as soon as the last run is reopened…"
PROBE_DELAY_MS = 1500  # the device probe (torch) waits for the corpus read at start-up, at most this long


class MainWindow(WindowFilesMixin, WindowStateMixin, QMainWindow):
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
        self._starting_up = True  # until the panes are built, the corpus read and the last run reopened
        self._reading_corpus = False  # the corpus being read at start-up (a held Start waits for it)
        self._awaiting_run = False  # the run being opened at start-up (a held Start waits for it)
        self._reopening: Path | None = None  # the last run, being reopened at start with the settings kept
        self._resume_when_open: Path | None = None  # the Runs pane's Resume: start once the run is open
        # The device probe imports torch (seconds of the GIL): at start-up it waits for the corpus read, which
        # a press of Start waits for, rather than slow it down.
        self._probe_timer = QTimer(self)
        self._probe_timer.setSingleShot(True)
        self._probe_timer.setInterval(PROBE_DELAY_MS)
        self._probe_timer.timeout.connect(self._on_probe_timer_timeout)
        self.setObjectName("main_window")
        self.setWindowTitle("ShiftStudio")
        self.setWindowIcon(style.app_icon())
        self.setAcceptDrops(True)
        self.setDockOptions(QMainWindow.AnimatedDocks | QMainWindow.AllowTabbedDocks)
        self.setTabPosition(Qt.AllDockWidgetAreas, QTabWidget.North)
        self.setCorner(Qt.BottomLeftCorner, Qt.LeftDockWidgetArea)  # the left panes run the full height
        self.setCorner(Qt.TopLeftCorner, Qt.LeftDockWidgetArea)
        self.resize(DEFAULT_SIZE)
        self.center = QTabWidget(self)
        self.center.setObjectName("center_tabs")
        self.center.setDocumentMode(True)
        self.center.tabBar().setAutoHide(True)
        self.setCentralWidget(self.center)
        self.status_bar = StatusBar(self.ctx.session, self)
        self.settings.on_save_failed = lambda message: self.status_bar.showMessage(message, 15_000)
        self.setStatusBar(self.status_bar)
        self._make_menus()
        runs = self.ctx.runs
        runs.confirm_new_run = self._on_runs_confirm_new_run
        runs.hold_starts(WAIT_WINDOW)  # a press of F5 before the panes exist waits for them (and says so)
        runs.start_queued.connect(self._on_runs_start_queued)
        runs.plan_changed.connect(self._on_runs_plan_changed)
        self.loading_page = LoadingPage(runs.start_action, self.center)
        self.center.addTab(self.loading_page, "Loading")
        self.has_saved_geometry = bool(self.settings.get_bytes("geometry"))
        if self.has_saved_geometry:
            self.restoreGeometry(QByteArray(self.settings.get_bytes("geometry")))
        self._initial_config()
        self.status_bar.show_plan(runs.plan())

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
        self.export_model_action = self._action("Export model…", "export_model_action", self._on_export_model_action_triggered, None, "Write a run's checkpoint in the Hugging Face layout (loads in transformers)")
        self.quit_action = self._action("Quit", "quit_action", self.close, QKeySequence.Quit, "Quit ShiftStudio (Ctrl+Q)")
        self.quit_action.setShortcut(QKeySequence("Ctrl+Q"))
        for a in (self.open_corpus_action, self.open_folder_action, self.sample_action, None, self.open_run_action):
            file_menu.addSeparator() if a is None else file_menu.addAction(a)
        file_menu.addMenu(self.recent_menu)
        for a in (None, self.save_preset_action, self.export_png_action, self.export_csv_action, self.export_model_action, None, self.quit_action):
            file_menu.addSeparator() if a is None else file_menu.addAction(a)
        train_menu = menu.addMenu("&Train")
        for a in (runs.start_action, runs.new_run_action, runs.pause_action, runs.stop_action, None, runs.checkpoint_action):
            train_menu.addSeparator() if a is None else train_menu.addAction(a)
        for a in (runs.start_action, runs.new_run_action, runs.pause_action, runs.stop_action, runs.checkpoint_action):
            self.addAction(a)  # shortcuts work wherever the focus is
        self.view_menu = menu.addMenu("&View")
        self.theme_group = style.theme_actions(self, self.settings.get("theme", "system"))
        self.view_menu.addMenu("Theme").addActions(self.theme_group.actions())
        self.theme_group.triggered.connect(self._on_theme_group_triggered)
        self.reset_layout_action = self._action("Reset layout", "reset_layout_action", self.reset_layout)
        self.view_menu.addAction(self.reset_layout_action)
        self.view_menu.addSeparator()
        self.panes_menu = QMenu("Show or hide panes", self)  # the docks' toggles (the "go to" actions are above it)
        self.panes_menu.setObjectName("view_panes_menu")
        help_menu = menu.addMenu("&Help")
        help_menu.addAction(self._action("About ShiftStudio", "about_action", self._on_about_action_triggered))

    def build(self) -> None:
        """Create the panes (imports pyqtgraph); call once, after the window shows."""
        if self.panes:
            return
        from shiftstudio.gui.panes.model import ModelPane
        from shiftstudio.gui.panes.train import TrainPane

        self.center.removeTab(0)
        self.loading_page.deleteLater()
        self.loading_page = None
        docks = self.dock_layout = DockLayout(self, self.center)
        for spec in PANES:
            pane = create_pane(spec, self.ctx)
            self.panes[spec.key] = pane
            if isinstance(pane, TrainPane):
                self.train_pane = pane
            elif isinstance(pane, ModelPane):
                self.model_pane = pane
            dock = docks.add(spec, pane)
            if dock is not None:
                self.panes_menu.addAction(dock.toggleViewAction())
                self.docks[spec.key] = dock
        self.view_menu.addActions(docks.focus_actions)
        self.view_menu.addMenu(self.panes_menu)
        docks.finish()
        self._default_dock_state = self.saveState(LAYOUT_VERSION)
        state = self.settings.get_bytes("window_state")
        if state:
            self.restoreState(QByteArray(state), LAYOUT_VERSION)
        self.setFocus()
        self._connect_models()
        self.restore_view_settings()
        # Start stays held if start() (called next, when the app starts) opens things; otherwise it is free
        QTimer.singleShot(0, self, self._release_start_when_ready)
        self.built.emit()

    def _connect_models(self) -> None:
        runs, session = self.ctx.runs, self.ctx.session
        runs.state_changed.connect(self._on_runs_state_changed)
        runs.progress_changed.connect(self._on_runs_progress_changed)
        runs.run_started.connect(self._on_runs_run_started)
        runs.run_opened.connect(self._on_runs_run_opened)
        runs.thread_finished.connect(self._on_runs_thread_finished)
        runs.open_failed.connect(self._on_runs_open_failed)
        library = self.ctx.library
        if library is not None:
            library.open_requested.connect(self._on_library_open_requested)
            library.fork_requested.connect(self._on_library_fork_requested)
            library.compare_requested.connect(self._on_library_compare_requested)
        session.device_probed.connect(self._on_session_device_probed)
        session.corpus_opened.connect(self._on_session_corpus_opened)
        session.corpus_failed.connect(self._on_session_corpus_failed)
        session.corpus_cancelled.connect(self._on_session_corpus_cancelled)

    def start(self, run_dir: str | None = None, corpus: list[str] | None = None) -> None:
        """After :meth:`build`: open what the command line asked for (else the last run, if it still exists,
        with the settings as they were left, and the last corpus), probe the device. Never starts training; a
        press of Start held so far is carried out once the corpus is read and the run reopened."""
        last_run = self.settings.get("last_run")
        self._starting_up = True
        if run_dir:
            self._default_config = False
            self._awaiting_run = True
            self.open_run(run_dir)
        else:
            if isinstance(last_run, str) and is_run_dir(last_run) and not corpus:
                self._reopening, self._awaiting_run = Path(last_run), True
                self.open_run(last_run, load_config=False)
            if not corpus:
                last = self.settings.get("last_corpus")
                corpus = [p for p in last if Path(p).exists()] if isinstance(last, list) else []
            self._reading_corpus = True
            self.open_corpus(corpus)
        self._probe_timer.start(0 if not self._reading_corpus else PROBE_DELAY_MS)
        self._release_start_when_ready()

    def _on_probe_timer_timeout(self) -> None:
        self.ctx.session.probe_device()

    def _release_start_when_ready(self) -> None:
        """At start-up, Start is held (a press waits, and says what for) until nothing that decides what it
        does is still loading: the panes, the run being reopened, the corpus."""
        runs = self.ctx.runs
        if not self._starting_up or not self.panes:
            return
        if self._awaiting_run or self._reading_corpus:
            runs.hold_starts(WAIT_RUN if self._awaiting_run else WAIT_CORPUS)
            return
        self._starting_up = False
        runs.release_starts()

    def raise_pane(self, key: str, focus: bool = False) -> None:
        """Bring a pane forward (and with ``focus`` give it the keyboard focus), as its Ctrl+N does."""
        if self.panes:
            self.dock_layout.raise_pane(key, focus)

    def _on_theme_group_triggered(self, action: QAction) -> None:
        theme = action.data()
        self.settings.set("theme", theme)
        style.apply_theme(QApplication.instance(), theme)

    def _on_export_model_action_triggered(self) -> None:
        from shiftstudio.gui.export_dialog import ExportDialog  # imports the core's torch side: only when asked for

        run = self.ctx.runs.open_run_info
        self.export_dialog = ExportDialog(run.run_dir if run is not None else None, self)
        self.export_dialog.open()

    def _on_about_action_triggered(self) -> None:
        from shiftstudio import __version__

        QMessageBox.about(self, "About ShiftStudio", f"<b>ShiftStudio {__version__}</b><br>A desktop workbench for training small language models.")

    # -- model signals -------------------------------------------------------
    def _on_runs_state_changed(self, state: str) -> None:
        self.status_bar.show_state(state)
        if state in ACTIVE_STATES:
            self._default_config = False  # a run uses these settings: the device probe must not swap the preset
        running = state in ACTIVE_STATES
        self.open_run_action.setEnabled(not running)
        self.recent_menu.setEnabled(not running)

    def _on_runs_plan_changed(self, plan: StartPlan) -> None:
        self.status_bar.show_plan(plan)

    def _on_runs_start_queued(self, waiting_for: str) -> None:
        if waiting_for:
            self.status_bar.showMessage(waiting_for)
            if self.loading_page is not None:
                self.loading_page.show_waiting(waiting_for)
        else:
            self.status_bar.clearMessage()

    def _on_runs_confirm_new_run(self, question: str) -> bool:
        return self.confirm_new_run(question)

    def confirm_new_run(self, question: str) -> bool:
        """Ask before a new run leaves a resumable one behind (tests replace this method)."""
        answer = QMessageBox.question(self, "Start a new run?", question, QMessageBox.Yes | QMessageBox.No, QMessageBox.No)
        return answer == QMessageBox.Yes

    def _on_runs_progress_changed(self, step: int, max_iters: int, eta: float) -> None:
        self.status_bar.show_progress(step, max_iters, eta)

    def _on_runs_run_started(self, report) -> None:
        self.settings.add_recent_run(report.run_dir)
        self.settings.set("last_run", str(report.run_dir))
        self.settings.save()
        self.status_bar.show_device(report.device)
        self.setWindowTitle(f"ShiftStudio – {Path(report.run_dir).name}")

    def _on_runs_run_opened(self, run_dir: Path, records: list) -> None:
        self.settings.add_recent_run(run_dir)
        self.settings.set("last_run", str(run_dir))
        self.setWindowTitle(f"ShiftStudio – {run_dir.name}")
        self._default_config = False
        if self._reopening == run_dir:  # the settings (and corpus) are those the window was left with
            self._reopening = None
        else:
            self._reading_corpus = self._starting_up
            self.ctx.session.open_corpus(list(self.ctx.config.value("corpus")))
        self._awaiting_run = False
        self._release_start_when_ready()
        if self._resume_when_open == run_dir:
            self._resume_when_open = None
            if not self.ctx.runs.is_active:  # (a run another process trains is followed instead)
                self.ctx.runs.request_start()

    # -- the run library's requests ------------------------------------------------
    def _on_library_open_requested(self, run_dir: Path, resume: bool) -> None:
        runs = self.ctx.runs
        if runs.is_active:
            self.status_bar.showMessage("A run is on screen and active: stop it (or let it finish) to open another.", 8000)
            return
        self._resume_when_open = run_dir if resume else None
        self.open_run(run_dir)
        self.raise_pane("train")

    def _on_library_fork_requested(self, checkpoint: Path) -> None:
        """A new run from ``checkpoint``: the forked run's settings in the form, starting from that checkpoint."""
        import json

        from shiftstudio.config import ConfigError, RunConfig

        run_dir = checkpoint.parent.parent
        try:
            config = RunConfig.from_stored(json.loads((run_dir / "run.json").read_text(encoding="utf-8"))["config"])
        except (OSError, ValueError, KeyError, ConfigError) as exc:
            self.status_bar.showMessage(f"Cannot fork {run_dir.name}: {exc}", 8000)
            return
        self.ctx.config.load(config.updated({"init_from": str(checkpoint)}))
        self.raise_pane("model")
        self.status_bar.showMessage(f"Fork of {run_dir.name} from {checkpoint.name}: change what you like, then "
                                    "Start new run (Ctrl+F5)", 15000)

    def _on_library_compare_requested(self, run_dirs: list) -> None:
        self.raise_pane("compare")

    def _on_runs_open_failed(self, message: str, detail: str, expected: bool) -> None:
        if self._reopening is not None:  # the last run is unreadable now: not again at the next start
            self.settings.set("last_run", None)
        self._reopening, self._awaiting_run = None, False
        self._release_start_when_ready()

    def _on_session_device_probed(self, summary) -> None:
        if self.ctx.runs.state not in ACTIVE_STATES:
            self.status_bar.show_device(summary.text)
        if summary.kind == "cuda" and self._default_config and GPU_PRESET in preset_paths():
            self.ctx.config.load(load_preset(GPU_PRESET), keep=("corpus",), preset=GPU_PRESET)
        self._default_config = False

    def _on_session_corpus_opened(self, info) -> None:
        self.settings.set("last_corpus", list(info.paths))
        self._corpus_read()

    def _on_session_corpus_failed(self, message: str, detail: str, expected: bool) -> None:
        self._corpus_read()

    def _on_session_corpus_cancelled(self) -> None:
        self._corpus_read()

    def _corpus_read(self) -> None:
        """The corpus was read, refused or cancelled: a held Start need not wait for it any longer, nor the device
        probe."""
        self._reading_corpus = False
        if self._probe_timer.isActive():
            self._probe_timer.start(0)
        self._release_start_when_ready()

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt's name
        super().paintEvent(event)
        if not self._painted:
            self._painted = True
            # after the children have painted and the frame is out; the context object (self) cancels the
            # timer if the window is deleted first
            QTimer.singleShot(0, self, self.painted.emit)

    # -- closing -------------------------------------------------------------
    def ask_stop_launched_run(self) -> str:
        """"stop", "leave" (training in the background) or "cancel" (tests replace this method)."""
        box = QMessageBox(QMessageBox.Question, "The run is training",
                          "This window started the run with torchrun. Stop it (a checkpoint is saved), or leave it "
                          "training in the background? It can be followed again from the Runs tab.", parent=self)
        stop = box.addButton("Stop the run", QMessageBox.DestructiveRole)
        leave = box.addButton("Leave it training", QMessageBox.AcceptRole)
        box.addButton(QMessageBox.Cancel)
        box.setDefaultButton(leave)
        box.exec()
        clicked = box.clickedButton()
        return "stop" if clicked is stop else "leave" if clicked is leave else "cancel"

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
        if runs.following:  # a run another process trains goes on training: the window only lets go of it
            if runs.launched is not None and runs.launched == runs.run_dir:  # ...unless the window launched it: ask
                answer = self.ask_stop_launched_run()
                if answer == "cancel":
                    event.ignore()
                    return
                if answer == "stop":
                    runs.stop()  # a stop request through the run's control file: it saves a checkpoint and ends
            runs.stop_following()
        elif runs.is_active:
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
        if self.ctx.library is not None:
            self.ctx.library.wait()
        for pane in self.panes.values():  # panes with threads of their own (the playground's sampler)
            pane.shutdown()
        self.save_settings()
        self.ctx.session.shutdown()
        runs.shutdown()
        event.accept()

    def _on_runs_thread_finished(self) -> None:
        if self._close_after_stop:
            QTimer.singleShot(0, self, self.close)
