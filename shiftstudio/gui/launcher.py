"""Training a run on several processes from the window: ``torchrun`` as a detached child process.

:class:`TorchrunLauncher` starts ``python -m torch.distributed.run --standalone --nproc_per_node=N -m
shiftstudio resume RUN_DIR --max_iters M`` (an argument list, never a shell string) with its output in
``RUN_DIR/logs/torchrun-<time>.log``, in a session of its own, so the run can go on after the window closes.
(Not a ``QProcess``: one that is not detached dies with the window, and PySide's detached start gives no pid to
watch the job by.) It then waits
for the job's rank 0 to take the run's lock: ``started`` (the window opens the run and follows it, as any run
another process trains), or ``failed`` with the log's last lines when the job ends (or does not take the lock
within ``START_TIMEOUT_S``) before that.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from PySide6.QtCore import QObject, QTimer, Signal

from shiftstudio.core.runs.layout import RunLayout
from shiftstudio.core.runs.lock import lock_state
from shiftstudio.core.runs.metrics import parse_record, whole_lines
from shiftstudio.gui.run_openers import SAMPLE_PROMPT

POLL_MS = 200
START_TIMEOUT_S = 180  # data preparation on every rank, process start-up, torch import
LOG_TAIL_LINES = 12


def torchrun_arguments(run_dir: Path, processes: int, max_iters: int, sample: str | None = None,
                       on_out_of_memory: str | None = None) -> list[str]:
    """The job's command after the Python executable: the run resumed (or begun) on ``processes`` processes,
    writing a sample from ``sample`` at each evaluation as a run in the window does (with ``on_out_of_memory``:
    that policy recorded with the run from then on)."""
    return ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={int(processes)}",
            "-m", "shiftstudio", "resume", str(run_dir), "--max_iters", str(int(max_iters)),
            *(["--sample", sample] if sample is not None else []),  # ("" = from the start of a document)
            *(["--on_out_of_memory", on_out_of_memory] if on_out_of_memory else [])]


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


def job_error(path: Path) -> str:
    """What went wrong, from a job's log: a rank's own one-line error (``shiftstudio: error: ...``) rather than
    torchrun's summary of the failure around it."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    ours = [line.split("shiftstudio: error:", 1)[1].strip() for line in lines if "shiftstudio: error:" in line]
    if ours:
        return ours[0]
    return next((line.strip() for line in reversed(lines) if "Error" in line), "")


class TorchrunLauncher(QObject):
    started = Signal(object)  # the run folder, once the job's rank 0 holds its lock
    failed = Signal(str, str)  # message, the log's last lines

    def __init__(self, run_dir: Path, processes: int, max_iters: int, parent: QObject | None = None,
                 on_out_of_memory: str | None = None) -> None:
        super().__init__(parent)
        self.run_dir, self.processes, self.max_iters = Path(run_dir), processes, max_iters
        self.on_out_of_memory = on_out_of_memory
        self.pid: int | None = None
        self._process: subprocess.Popen | None = None
        self.log_file = RunLayout(run_dir).logs_dir / f"torchrun-{time.strftime('%Y%m%d-%H%M%S')}.log"
        self._timer = QTimer(self)
        self._timer.setInterval(POLL_MS)
        self._timer.timeout.connect(self._on_timer_timeout)
        self._deadline = 0.0
        self._log_offset = 0

    def start(self) -> bool:
        args = [sys.executable, *torchrun_arguments(self.run_dir, self.processes, self.max_iters, SAMPLE_PROMPT,
                                                    self.on_out_of_memory)]
        try:  # what the run's log held before: the job's "started" record comes after it
            self._log_offset = RunLayout(self.run_dir).metrics_file.stat().st_size
        except OSError:
            self._log_offset = 0
        detach = ({"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.DETACHED_PROCESS}
                  if sys.platform == "win32" else {"start_new_session": True})
        try:
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
            with open(self.log_file, "ab") as log:
                self._process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                 cwd=self.run_dir, **detach)
        except OSError as exc:
            self.failed.emit(f"could not start torchrun: {exc.strerror or exc}", "")
            return False
        self.pid = self._process.pid
        self._deadline = time.monotonic() + START_TIMEOUT_S
        self._timer.start()
        return True

    def _has_started(self) -> bool:
        """Whether the job's rank 0 holds the run and has logged its start (what the window shows of the run,
        the devices included, comes from that record)."""
        if lock_state(self.run_dir)[0] != "held":
            return False
        try:
            with open(RunLayout(self.run_dir).metrics_file, "rb") as f:
                f.seek(self._log_offset)
                lines, _ = whole_lines(f.read())
        except OSError:
            return False
        return any((parse_record(line) or {}).get("kind") == "started" for line in lines)

    def _on_timer_timeout(self) -> None:
        if self._has_started():
            self._timer.stop()
            self.started.emit(self.run_dir)
            return
        gone = self._process is not None and self._process.poll() is not None
        if gone and self._process.returncode == 0:  # it trained to the end between two looks: open what it made
            self._timer.stop()
            self.started.emit(self.run_dir)
            return
        if gone or time.monotonic() > self._deadline:
            self._timer.stop()
            tail = log_tail(self.log_file)
            last = job_error(self.log_file)
            why = "ended" if gone else f"did not start training within {START_TIMEOUT_S} s"
            self.failed.emit(f"the torchrun job {why}: {last or 'see ' + str(self.log_file)}", tail)
