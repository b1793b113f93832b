"""The run folder's layout: the one place that names its files.

A run is a folder::

    run.json          schema version, full config, versions, created time, data location and shape
    tokenizer.json    the run's own copy of its tokenizer
    metrics.jsonl     every report, one JSON object a line
    summary.json      the library's digest of metrics.jsonl (figures, state, bytes of the log folded in)
    lock.json         who trains the run now (pid, host, start); locked by that process while it lives
    control.json      pause / resume / stop / checkpoint requests from another process
    notes.json        the user's notes and tags
    logs/             stdout and stderr of runs launched as child processes
    checkpoints/      step-N/ folders:
        model.safetensors, optimizer.safetensors, ema.safetensors (with EMA), state.json

The CLI, the window, the run controller, the sampler and the inspector ask
:class:`RunLayout` for paths instead of spelling file names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

RUN_FILE = "run.json"
TOKENIZER_FILE = "tokenizer.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINTS_DIR = "checkpoints"
CHECKPOINT_PREFIX = "step-"
STATE_FILE = "state.json"
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
EMA_FILE = "ema.safetensors"
SUMMARY_FILE = "summary.json"
LOCK_FILE = "lock.json"
CONTROL_FILE = "control.json"
NOTES_FILE = "notes.json"
LOGS_DIR = "logs"


def checkpoint_name(step: int) -> str:
    return f"{CHECKPOINT_PREFIX}{int(step)}"


def step_of(name: str) -> int | None:
    """The step of a checkpoint folder name ('step-250' -> 250), None for any other name."""
    digits = name[len(CHECKPOINT_PREFIX):] if name.startswith(CHECKPOINT_PREFIX) else ""
    return int(digits) if digits.isdigit() else None


@dataclass(frozen=True)
class RunLayout:
    """Paths inside one run folder."""

    root: Path

    def __init__(self, root: str | Path) -> None:
        object.__setattr__(self, "root", Path(root))

    @property
    def run_file(self) -> Path:
        return self.root / RUN_FILE

    @property
    def tokenizer_file(self) -> Path:
        return self.root / TOKENIZER_FILE

    @property
    def metrics_file(self) -> Path:
        return self.root / METRICS_FILE

    @property
    def checkpoints_dir(self) -> Path:
        return self.root / CHECKPOINTS_DIR

    @property
    def summary_file(self) -> Path:
        return self.root / SUMMARY_FILE

    @property
    def lock_file(self) -> Path:
        return self.root / LOCK_FILE

    @property
    def control_file(self) -> Path:
        return self.root / CONTROL_FILE

    @property
    def notes_file(self) -> Path:
        return self.root / NOTES_FILE

    @property
    def logs_dir(self) -> Path:
        return self.root / LOGS_DIR

    def checkpoint_dir(self, step: int) -> Path:
        return self.checkpoints_dir / checkpoint_name(step)

    def is_run(self) -> bool:
        """A complete run folder: ``run.json`` is written last when a run is created."""
        return self.run_file.is_file()


def is_run_dir(path: str | Path) -> bool:
    return RunLayout(path).is_run()
