"""What the run controller hands its training thread and its open-run task: functions that set up a trainer
(prepare the data and create a run folder, or reopen one) or read a run folder back.

Each is called in a worker thread with ``(progress, cancel)``; the core (torch) is imported there, never in
the GUI thread. :func:`latest_checkpoint_step` only lists folder names, so the GUI thread may call it.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from shiftstudio.config import RunConfig
from shiftstudio.core.errors import Cancelled, ConfigError
from shiftstudio.core.runs.layout import RunLayout, step_of

log = logging.getLogger(__name__)

SAMPLE_PROMPT = ""  # samples at each evaluation start from the end-of-text token (or id 0)


TRAINING_NICE = 5  # the training thread's niceness above the window's (Linux): the GUI thread wins a core at once


def _use_cpu_threads(config: RunConfig) -> None:
    """In the training thread, before the engine sets up: 'automatic' threads are every core, as in
    ``shiftstudio train``, so the window trains at the CLI's speed (``benchmarks/bench_gui.py``). The thread
    lowered its priority before any torch work (:func:`lower_thread_priority`), so the OpenMP workers it starts
    inherit that: when the GUI thread wakes it gets a core at once instead of waiting for a time slice."""
    if config.train.num_threads == 0:
        import torch

        from shiftstudio.gui.session import default_cpu_threads

        wanted = default_cpu_threads()  # set each time: a run with explicit threads changed the process's count
        if torch.get_num_threads() != wanted:
            torch.set_num_threads(wanted)


def lower_thread_priority(steps: int) -> bool:
    """Raise the calling thread's niceness by ``steps`` (Linux, where niceness is per thread and threads started
    from it inherit it). False where that is not possible (other systems: the QThread's priority does it there)."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + steps))
        return True
    except (AttributeError, OSError) as exc:  # no setpriority (Windows), or a tid is not a pid here (macOS)
        log.debug("training thread priority unchanged: %s", exc)
        return False


def preset_base(name: str) -> RunConfig | None:
    """The preset a run was started from (run names tag what differs from it); None when it is unknown."""
    if not name:
        return None
    from shiftstudio.presets import load_preset

    try:
        return load_preset(name)
    except (ConfigError, OSError) as exc:  # a preset deleted or broken since: the name is only a label
        log.info("preset %s unusable as the run name's base: %s", name, exc)
        return None


def new_run(config: RunConfig, preset: str = "") -> Callable:
    """Prepare the data, create a run folder named for what differs from ``preset``, and set up its trainer."""

    def open_trainer(progress, cancel):
        lower_thread_priority(TRAINING_NICE)
        _use_cpu_threads(config)
        from shiftstudio.core.data.store import prepare
        from shiftstudio.core.runs.folder import create_run
        from shiftstudio.core.train.trainer import Trainer

        from shiftstudio.core.runs.origin import apply_source

        source_config = apply_source(config)  # a fine-tuning run: the source's architecture and tokenizer
        store = prepare(source_config.data, progress=progress, cancel=cancel)
        if cancel():
            raise Cancelled()
        run_dir = create_run(source_config, store, base=preset_base(preset))
        return Trainer(run_dir, store, sample_prompt=SAMPLE_PROMPT, purpose="the ShiftStudio window")

    return open_trainer


def create_only(config: RunConfig, preset: str = "") -> Callable:
    """Prepare the data and create the run folder, for a run that another process (torchrun) will train."""

    def work(progress, cancel) -> Path:
        from shiftstudio.core.data.store import prepare
        from shiftstudio.core.runs.folder import create_run
        from shiftstudio.core.runs.origin import apply_source

        source_config = apply_source(config)
        store = prepare(source_config.data, progress=progress, cancel=cancel)
        if cancel():
            raise Cancelled()
        return create_run(source_config, store, base=preset_base(preset))

    return work


def resume_run(run_dir: Path, max_iters: int, micro_splits: int | None = None,
               on_out_of_memory: str | None = None) -> Callable:
    """Reopen ``run_dir`` from its latest checkpoint, training to ``max_iters`` (recorded with the run); with
    ``micro_splits``, each micro-batch cut into at least that many pieces (a run that stopped out of memory);
    with ``on_out_of_memory``, that policy from now on (recorded with the run)."""

    def open_trainer(progress, cancel):
        lower_thread_priority(TRAINING_NICE)
        from shiftstudio.core.train.trainer import Trainer

        trainer = Trainer(run_dir, max_iters=max_iters, sample_prompt=SAMPLE_PROMPT, purpose="the ShiftStudio window",
                          micro_splits=micro_splits, on_out_of_memory=on_out_of_memory)
        _use_cpu_threads(trainer.config)
        return trainer

    return open_trainer


@dataclass
class OpenedRun:
    """A run folder read back: its config (with the recorded plan), its metrics, where a resume starts."""

    run_dir: Path
    config: RunConfig
    records: list[dict[str, Any]]
    checkpoint_step: int | None  # the newest checkpoint: where a resume starts (None: there is none)
    held_by: str = ""  # another process trains it now (who, as its lock says): the window follows it
    follower: Any = None  # a MetricsFollower positioned after ``records``: following continues from there
    started: dict[str, Any] | None = None  # the log's last start record


def read_run(run_dir: Path) -> Callable:
    def work(progress, cancel) -> OpenedRun:
        from shiftstudio.core.runs.folder import load_run_config
        from shiftstudio.core.runs.follow import MetricsFollower
        from shiftstudio.core.runs.lock import lock_state

        config = load_run_config(run_dir)
        state, holder = lock_state(run_dir)
        follower = MetricsFollower(run_dir)
        everything = follower.poll().records
        records = [r for r in everything if r.get("kind") in ("train", "eval", "sample")]
        started = next((r for r in reversed(everything) if r.get("kind") == "started"), None)
        held_by = (holder.describe() if holder else "another process") if state == "held" else ""
        return OpenedRun(run_dir, config, records, latest_checkpoint_step(run_dir), held_by, follower, started)

    return work


def follow_run(opened: OpenedRun, step: int, max_iters: int) -> Callable:
    """Follow ``opened``, a run another process trains, from where its records end (see core.train.remote)."""

    def open_trainer(progress, cancel):
        from shiftstudio.core.train.remote import FollowedRun

        return FollowedRun(opened.run_dir, opened.follower, opened.started, step, max_iters)

    return open_trainer


def latest_checkpoint_step(run_dir: Path | None) -> int | None:
    """The step of the newest checkpoint folder of ``run_dir`` (None when it has none): names only, no torch."""
    folder = None if run_dir is None else RunLayout(run_dir).checkpoints_dir
    if folder is None or not folder.is_dir():
        return None
    steps = [step for step in (step_of(p.name) for p in folder.iterdir() if p.is_dir()) if step is not None]
    return max(steps, default=None)


def has_checkpoint(run_dir: Path | None) -> bool:
    return latest_checkpoint_step(run_dir) is not None
