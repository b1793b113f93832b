"""What Start (F5) will do now, in words: continue the open run, start a new one, or nothing and why.

:func:`start_plan` is a pure function of the settings being edited and the run
that is open, so the Train pane, the menus, the status bar and the tests all
read the same answer. A run can be resumed when it has a checkpoint, the
settings are the run's own apart from ``max_iters`` (and the fields linked to
it, which a resume keeps at the run's values) and the settings a resume may
change (:data:`ON_RESUME`: how the run reacts, not what it trains), and
``max_iters`` lies beyond the checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shiftstudio.config import RunConfig

NEW, RESUME = "new", "resume"
ON_RESUME = ("on_out_of_memory",)  # settings a resume takes from the form (recorded with the run from then on)


@dataclass(frozen=True)
class OpenRun:
    """The run on screen: its folder, the config it trains with, its newest checkpoint."""

    run_dir: Path
    config: RunConfig
    checkpoint_step: int | None

    @property
    def name(self) -> str:
        return self.run_dir.name

    @property
    def planned(self) -> int:
        return self.config.train.max_iters

    @property
    def resumable(self) -> bool:
        """It stopped before its plan and can continue from its checkpoint as it is."""
        return self.checkpoint_step is not None and self.checkpoint_step < self.planned

    def where(self) -> str:
        return f"step {self.checkpoint_step:,} of {self.planned:,}"


@dataclass(frozen=True)
class StartPlan:
    ok: bool  # Start is enabled
    mode: str  # NEW | RESUME | '' (nothing)
    why: str  # a sentence for the tooltip
    short: str  # a few words for the status bar
    label: str  # the Start button's text
    question: str = ""  # non-empty: ask this before starting (a new run would leave a resumable one behind)
    kept: dict[str, Any] = field(default_factory=dict)  # linked settings a resume keeps at the run's values
    applied: dict[str, Any] = field(default_factory=dict)  # ON_RESUME settings a resume changes to the form's


def differences(config: RunConfig, run: RunConfig) -> list[str]:
    """The settings (flat keys) in which ``config`` differs from ``run``'s, ``max_iters`` aside."""
    ours, theirs = config.to_flat(), run.to_flat()
    return [k for k in ours if k != "max_iters" and ours[k] != theirs.get(k)]


def start_plan(active: bool, error: str, config: RunConfig, linked: set[str], run: OpenRun | None) -> StartPlan:
    if active:
        return StartPlan(False, "", "A run is in progress.", "", "Start training")
    if error:
        return StartPlan(False, "", f"Fix the settings first: {error}", "F5: fix the settings first", "Start training")
    target = config.train.max_iters
    if run is not None and run.checkpoint_step is not None:
        differ = differences(config, run.config)
        ours, theirs = config.to_flat(), run.config.to_flat()
        applied = {k: ours[k] for k in differ if k in ON_RESUME}
        # a linked field only followed max_iters: the run keeps its own
        own = [k for k in differ if k not in linked and k not in applied]
        if not own and run.checkpoint_step < target:
            kept = {k: theirs[k] for k in differ if k not in applied}
            why = f"Resume {run.name} from step {run.checkpoint_step:,} to {target:,} (F5)."
            if kept:  # (linked fields are step counts)
                why += " It keeps its own " + ", ".join(f"{k} ({v:,})" for k, v in kept.items()) + "."
            if applied:
                why += " From then on: " + ", ".join(f"{k} = {v}" for k, v in applied.items()) + "."
            return StartPlan(True, RESUME, why, f"F5 resumes {run.name} at step {run.checkpoint_step:,}", "Resume run",
                             kept=kept, applied=applied)
        if run.resumable:
            if own:
                shown = ", ".join(own[:4]) + (f" and {len(own) - 4} more" if len(own) > 4 else "")
                instead = f"set {shown} back to the run's"
            else:
                instead = f"raise max_iters above {run.checkpoint_step:,}"
            why = (f"Start a new training run with these settings (F5). The open run {run.name} ({run.where()}) "
                   f"can be resumed instead: {instead}.")
            question = (f"Start a new run? The open run ({run.where()}) can be resumed instead: {instead}, "
                        "then press Resume run.")
            return StartPlan(True, NEW, why, "F5 starts a new run (the open one can be resumed)", "Start new run",
                             question=question)
    return StartPlan(True, NEW, "Start a new training run with these settings (F5).", "F5 starts a new run", "Start training")
