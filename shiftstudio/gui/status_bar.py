"""The main window's status bar: what F5 would do, what the run is doing, its step and ETA, the memory in
use, the device.

Qt-only (no torch at import): the GPU's memory is read from torch only once
something else has imported it.
"""

from __future__ import annotations

import math
import os
import sys

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QLabel, QStatusBar, QWidget

from shiftstudio.format import human_bytes, human_duration
from shiftstudio.gui.run_controller import STATE_TEXT
from shiftstudio.gui.run_plan import StartPlan
from shiftstudio.gui.session import Session

MEMORY_INTERVAL_MS = 1000


def process_memory() -> int:
    """Resident memory of this process in bytes (0 where unknown)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return rss if sys.platform == "darwin" else rss * 1024


class StatusBar(QStatusBar):
    """Five permanent labels (what F5 does, state, step, memory, device); the memory label refreshes every
    second."""

    def __init__(self, session: Session, parent: QWidget | None = None):
        super().__init__(parent)
        self.session = session
        self.setObjectName("status_bar")
        self.device_label = QLabel("Device: probing…", self)
        self.device_label.setObjectName("status_device_label")
        self.device_label.setToolTip("Where training runs (CUDA GPU, Apple MPS or the CPU with its threads)")
        self.memory_label = QLabel("", self)
        self.memory_label.setObjectName("status_memory_label")
        self.memory_label.setToolTip("Memory in use by ShiftStudio (and on the GPU, when training there)")
        self.state_label = QLabel(STATE_TEXT["idle"], self)
        self.state_label.setObjectName("status_state_label")
        self.state_label.setToolTip("What the training run is doing")
        self.plan_label = QLabel("", self)  # what F5 does now (empty while a run is active)
        self.plan_label.setObjectName("status_plan_label")
        self.plan_label.setProperty("role", "hint")
        self.step_label = QLabel("", self)
        self.step_label.setObjectName("status_step_label")
        self.step_label.setToolTip("Optimizer step and estimated time left")
        self.step_label.setMinimumWidth(self.step_label.fontMetrics().horizontalAdvance("Step 100,000 / 100,000 · ETA 0:00:00"))
        self.memory_label.setMinimumWidth(self.memory_label.fontMetrics().horizontalAdvance("Memory: 000.0 MB · GPU 00.0 GB"))
        for w in (self.plan_label, self.state_label, self.step_label, self.memory_label, self.device_label):
            self.addPermanentWidget(w)
        self._memory_timer = QTimer(self)
        self._memory_timer.setInterval(MEMORY_INTERVAL_MS)
        self._memory_timer.timeout.connect(self._on_memory_timer_timeout)
        self._memory_timer.start()
        self._on_memory_timer_timeout()

    def show_state(self, state: str) -> None:
        """A run controller state ('running' …) in words."""
        self.state_label.setText(STATE_TEXT.get(state, state))

    def show_plan(self, plan: StartPlan) -> None:
        """What Start (F5) would do now, in a few words (the whole sentence in the tooltip)."""
        self.plan_label.setText(plan.short)
        self.plan_label.setToolTip(plan.why)

    def show_progress(self, step: int, max_iters: int, eta: float) -> None:
        """Step of max_iters, with the time left when it is known (``eta`` in seconds, nan = unknown)."""
        eta_text = f" · ETA {human_duration(eta)}" if not math.isnan(eta) and eta > 0 else ""
        self.step_label.setText(f"Step {step:,} / {max_iters:,}{eta_text}")

    def show_device(self, text: str) -> None:
        self.device_label.setText(text)

    def _on_memory_timer_timeout(self) -> None:
        text = f"Memory: {human_bytes(process_memory())}"
        device = self.session.device
        if device is not None and device.kind == "cuda":
            torch = sys.modules.get("torch")
            if torch is not None:
                text += f" · GPU {human_bytes(torch.cuda.memory_allocated())}"
        self.memory_label.setText(text)
