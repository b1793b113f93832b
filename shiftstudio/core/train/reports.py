"""Plain report objects: what the training loop tells the world.

The trainer yields these; the CLI prints them, the metrics log appends them to
``metrics.jsonl`` and the GUI worker turns them into Qt signals. They hold only
plain data (ints, floats, strings, small CPU numpy arrays) so they can cross
threads freely and never keep a GPU tensor alive.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Union

import numpy as np


def _clean(value: Any) -> Any:
    """JSON-friendly copy: NaN/inf become None, numpy scalars become Python."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, np.generic):
        return _clean(value.item())
    if isinstance(value, np.ndarray):
        return [_clean(v) for v in value.tolist()]
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    return value


@dataclass
class _Report:
    kind: str = field(init=False, default="")

    def to_json(self) -> dict[str, Any]:
        return {k: _clean(v) for k, v in dataclasses.asdict(self).items()}


@dataclass
class StartedReport(_Report):
    """The run is set up and about to take its first step."""

    run_dir: str
    step: int  # first step to run (0, or the step a resumed run continues from)
    max_iters: int
    n_params: int
    device: str  # human-readable, e.g. "CUDA: NVIDIA H100 (bf16)" or "CPU (2 threads)"
    dtype: str
    tokens_per_step: int
    resumed: bool = False
    n_trainable: int | None = None  # the weights that train, when not all do (LoRA)
    source: str = ""  # what a fine-tuning run started from ('' = scratch)
    note: str = ""  # something the person starting it should know (e.g. resumed on another number of ranks)

    def __post_init__(self) -> None:
        self.kind = "started"


@dataclass
class StepReport(_Report):
    """Training metrics at a log point (every ``log_interval`` steps)."""

    step: int  # optimizer steps done
    loss: float  # mean training loss of this step (all horizons)
    lr: float
    grad_norm: float  # global norm before clipping
    tokens_per_s: float
    tokens: int  # tokens seen so far
    time_s: float  # wall time since the run started (across resumes)
    ms_per_iter: float
    max_iters: int = 0
    mfu: float | None = None  # model FLOPs utilisation over every rank's device (None: the device's peak is unknown)

    def __post_init__(self) -> None:
        self.kind = "train"


@dataclass
class EvalReport(_Report):
    """Train and validation loss over ``eval_iters`` fixed batches.

    The headline figures (``train_loss``, ``val_loss``, perplexities, best) are head 1's: next-token
    prediction, the head generation uses, so runs of any ``shift`` compare on the same footing. With
    ``shift > 1`` the mean over all heads (what training minimises) is in ``*_all_heads`` and each head's
    loss in ``*_per_horizon``.
    """

    step: int
    tokens: int
    time_s: float
    train_loss: float
    val_loss: float
    val_ppl: float
    train_ppl: float
    best_val_loss: float
    is_best: bool
    val_loss_per_horizon: list[float] = field(default_factory=list)  # head k at index k-1
    train_loss_per_horizon: list[float] = field(default_factory=list)  # head k at index k-1
    val_loss_all_heads: float | None = None  # mean over heads
    train_loss_all_heads: float | None = None
    ema_train_loss: float | None = None  # head 1, EMA weights
    ema_val_loss: float | None = None

    def __post_init__(self) -> None:
        self.kind = "eval"


@dataclass
class BatchViewReport(_Report):
    """One row of the current batch, as the batch inspector shows it.

    ``T`` is the window length and ``K`` the number of horizons (``shift``).
    Target ``target_ids[k-1, t]`` is token ``t + k`` of the window, the one
    scored from the model's reading of input ``t``.
    """

    step: int
    row: int
    input_ids: np.ndarray  # (T,) int64
    target_ids: np.ndarray  # (K, T) int64
    loss: np.ndarray  # (K, T) float32, per-position cross-entropy
    mask: np.ndarray  # (K, T) float32, 1 = scored, 0 = not scored
    top_ids: np.ndarray  # (K, T, 5) int64, the model's top-5 guesses per position and head
    top_probs: np.ndarray  # (K, T, 5) float32

    def __post_init__(self) -> None:
        self.kind = "batch"


@dataclass
class SampleReport(_Report):
    """A short text sampled from a fixed prompt at an evaluation."""

    step: int
    prompt: str
    text: str

    def __post_init__(self) -> None:
        self.kind = "sample"


@dataclass
class CheckpointReport(_Report):
    step: int
    path: str
    is_best: bool = False

    def __post_init__(self) -> None:
        self.kind = "checkpoint"


@dataclass
class FinishedReport(_Report):
    """The loop ended normally: completed, stopped by the user or stopped early."""

    step: int
    reason: str  # "completed" | "stopped" | "early_stop"
    best_val_loss: float | None
    run_dir: str
    time_s: float = 0.0

    def __post_init__(self) -> None:
        self.kind = "finished"


@dataclass
class FailedReport(_Report):
    """The loop could not go on. ``message`` is one readable line for a person.

    Out of memory, said for programs too: ``out_of_memory``, the pieces each micro-batch was cut into then
    (``micro_splits``) and, when a training step ran out and the run kept its last completed step,
    ``suggested_micro_splits``: resuming with that many pieces (``Trainer(..., micro_splits=N)``, ``shiftstudio
    resume --micro-splits N``) goes on from the same step with the same batches and results (0: cutting the
    micro-batch further cannot help, or the run did not run out of memory in a step).
    """

    step: int
    message: str
    detail: str = ""  # traceback text, only for unexpected errors
    expected: bool = True  # NaN loss, out of memory, bad data: no traceback shown
    out_of_memory: bool = False
    micro_splits: int = 0  # pieces per micro-batch when it ran out of memory (0: not out of memory, or not known)
    suggested_micro_splits: int = 0  # resume with this many pieces to go on (0: none to suggest)

    def __post_init__(self) -> None:
        self.kind = "failed"


@dataclass
class NoteReport(_Report):
    """Something the run did by itself that its owner should know (e.g. a step out of memory redone with smaller
    micro-batches), said in the run's log at ``step``."""

    step: int
    message: str

    def __post_init__(self) -> None:
        self.kind = "note"


Report = Union[
    StartedReport,
    NoteReport,
    StepReport,
    EvalReport,
    BatchViewReport,
    SampleReport,
    CheckpointReport,
    FinishedReport,
    FailedReport,
]
