"""The training loop: an iterator of plain reports.

``Trainer(run_dir).run()`` sets up (or resumes) a run and yields
:mod:`~shiftstudio.core.train.reports` objects: started, step metrics and a
batch view every ``log_interval`` steps, evals, samples, checkpoints, and
last finished or failed. It knows nothing of Qt or terminals. Requests from
other threads (pause, resume, stop, checkpoint now, a copy of the live
weights, what to show of the batch) go through :class:`TrainerControl` and
are served between steps. Set-up and the state a checkpoint records live in
:mod:`~shiftstudio.core.train.setup`; measuring in
:mod:`~shiftstudio.core.train.evaluation`.

With K >= 2 heads the loss that is minimised is the weighted mean of the heads' losses
(``shift_weights``, ``shift_weight_schedule``: see :func:`shift_weights_at`); what the step
reports (``StepReport.loss``) stays the plain mean over heads, comparable across weightings,
and evaluations report every head's loss as before.

The hot path avoids device syncs: losses stay tensors until a log point,
where one ``tolist()`` fetches them all (and finds the first non-finite one).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from shiftstudio.config import OOM_CHOICES, RunConfig, TrainConfig
from shiftstudio.core.data.store import TokenStore
from shiftstudio.core.errors import ConfigError, RunError, ShiftStudioError, one_line
from shiftstudio.core.generate.filters import SamplingSettings
from shiftstudio.core.generate.generation import Generation
from shiftstudio.core.model import estimate
from shiftstudio.core.model.gpt import clone_model
from shiftstudio.core.model.lora import has_lora
from shiftstudio.core.runs import checkpoint as ckpt
from shiftstudio.core.runs.control import ControlWatcher
from shiftstudio.core.runs.layout import RunLayout
from shiftstudio.core.runs.folder import load_run, load_run_config, update_plan
from shiftstudio.core.runs.lock import RunLock
from shiftstudio.core.runs.metrics import MetricsLog
from shiftstudio.core.runs.summary import Summary, current_summary, write_summary
from shiftstudio.core.train import device as dev
from shiftstudio.core.train import setup, sharding
from shiftstudio.core.train.control import TrainerControl, ViewRequest
from shiftstudio.core.train.evaluation import batch_view, split_losses
from shiftstudio.core.train.optim import lr_at
from shiftstudio.core.train.ranks import check_config
from shiftstudio.core.train.ranks import from_env as ranks_from_env
from shiftstudio.core.train.ranks import weights_checksum
from shiftstudio.core.train.reports import (
    BatchViewReport, CheckpointReport, EvalReport, FailedReport, FinishedReport, NoteReport, Report, SampleReport,
    StartedReport, StepReport,
)

log = logging.getLogger(__name__)

FAULT_ENV = "SHIFTSTUDIO_INJECT_FAULT"  # "RANK:STEP": that rank raises as it takes that step (fault-injection tests)
OOM_ENV = "SHIFTSTUDIO_INJECT_OOM"  # "ROWS[:STEP]": a piece of more rows raises out of memory (from step STEP on,
# 1-based; default 1), as a device that small would: the OOM-recovery tests
SUMMARY_EVERY_S = 5.0  # summary.json is rewritten at every eval, checkpoint and end, and at most this often between
SAMPLE_TOKENS = 200  # at most: a sample also ends at the end of a document
SAMPLE_TEMPERATURE = 0.8
SAMPLE_TOP_K = 40


def sample_settings(seed: int) -> SamplingSettings:
    """How the samples written at each evaluation are drawn (seeded with the run's seed + the step)."""
    return SamplingSettings(max_new_tokens=SAMPLE_TOKENS, temperature=SAMPLE_TEMPERATURE, top_k=SAMPLE_TOP_K, seed=seed)


@dataclass
class _Clock:
    """Run time across resumes, less paused time; and the throughput window between log points."""

    offset_s: float = 0.0
    paused_s: float = 0.0

    def __post_init__(self) -> None:
        self.start = time.perf_counter()
        self.window_start, self.window_steps, self.window_excluded = self.start, 0, 0.0

    def run_time(self) -> float:
        return self.offset_s + (time.perf_counter() - self.start) - self.paused_s

    def window(self) -> tuple[float, int]:
        """(seconds of training, steps) since the last call; evaluation, saving and pauses excluded."""
        dt = max(time.perf_counter() - self.window_start - self.window_excluded, 1e-9)
        steps = self.window_steps
        self.window_start, self.window_steps, self.window_excluded = time.perf_counter(), 0, 0.0
        return dt, steps


class Trainer:
    """Trains the run in ``run_dir``, resuming from its latest checkpoint if it has one.

    ``__init__`` only reads ``run.json`` (raising :class:`RunError` if it is
    unusable); everything else happens in :meth:`run`, which never raises but
    yields a :class:`FailedReport`.

    ``micro_splits``: go on with each micro-batch cut into at least that many pieces (a run that stopped out of
    memory, resumed with its report's ``suggested_micro_splits``: the same batches and results as if
    ``on_out_of_memory = split`` had cut them; said in the run's log). ``on_out_of_memory``: that policy from now
    on, recorded with the run.
    """

    def __init__(
        self, run_dir: str | Path, store: TokenStore | None = None, *, max_iters: int | None = None,
        sample_prompt: str | None = None, views: ViewRequest | None = None, purpose: str = "shiftstudio",
        micro_splits: int | None = None, on_out_of_memory: str | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.record = load_run(self.run_dir)
        self.config = load_run_config(self.run_dir)
        self.max_iters = self.config.train.max_iters if max_iters is None else int(max_iters)
        if self.max_iters < 1:
            raise ConfigError(f"max_iters must be at least 1, got {self.max_iters}")
        # micro_splits: go on with each micro-batch cut into at least this many pieces (a run that stopped out of
        # memory, resumed with twice its pieces: the same batches, the same results); on_out_of_memory: this
        # policy from now on, recorded with the run (it changes no result)
        self.micro_splits = check_micro_splits(micro_splits, self.config.train.batch_size)
        policy = None if on_out_of_memory == self.config.train.on_out_of_memory else on_out_of_memory
        if policy is not None:
            if policy not in OOM_CHOICES:
                raise ConfigError(f"on_out_of_memory must be one of {', '.join(OOM_CHOICES)}, got {policy!r}")
            self.config = self.config.updated({"on_out_of_memory": policy})
        self._oom_policy = policy  # recorded in run.json when the run starts
        self._start_notes: list[str] = []  # said in the run's log as it starts
        self._notes: list[NoteReport] = []  # logged during a step, reported once it is done
        self.sample_prompt = sample_prompt
        self.control = TrainerControl(views)
        self._store = store
        self._metrics = MetricsLog(self.run_dir)
        self._s: setup.Setup | None = None
        self._clock = _Clock()
        self._weights: tuple[tuple[float, ...], torch.Tensor] | None = None  # the last loss weights, on the device
        self.ranks = ranks_from_env()  # rank 0 of 1 unless torchrun started this process
        self._fault = _injected_fault()
        self._oom_rows = _injected_oom_rows()
        check_config(self.config, self.ranks.world)
        if self.ranks.distributed:
            purpose = f"{purpose}, {self.ranks.world} ranks (torchrun)"
        self.purpose = purpose  # who trains, as the lock file says ("shiftstudio train", "the window", ...)
        self._lock: RunLock | None = None
        self._control_file: ControlWatcher | None = None
        self._summary: Summary | None = None
        self._summary_written = 0.0
        self._logged_paused = False
        self._started_wall = time.time()  # a rank's failure log written since then belongs to this session

    # -- steering, from any thread ---------------------------------------------------------
    def pause(self) -> None:
        self.control.pause()

    def resume(self) -> None:
        self.control.resume()

    def stop(self) -> None:
        self.control.stop()

    def request_checkpoint(self) -> None:
        self.control.request_checkpoint()

    def set_views(self, views: ViewRequest) -> None:
        self.control.set_views(views)

    @property
    def paused(self) -> bool:
        return self.control.paused

    @property
    def _sharded(self) -> bool:
        """FSDP: every forward, backward and gathering is collective (all ranks take the same ones)."""
        return self._s is not None and sharding.is_sharded(self._s.model)

    @property
    def _ddp(self) -> bool:
        return self.ranks.distributed and not self._sharded

    def _finite(self, s: setup.Setup) -> bool:
        """Whether every weight that trains is finite (under FSDP: every rank's shard, agreed by all)."""
        if not self._sharded:
            return all(bool(torch.isfinite(q).all()) for q in s.params)
        return self.ranks.every(sharding.local_finite(s.params), s.device)

    @property
    def step(self) -> int:
        return self._s.progress.step if self._s is not None else 0

    def snapshot(self, timeout: float = 60.0) -> tuple[Any, Any, int]:
        """``(model, tokenizer, step)``: an independent float32 CPU copy of the weights taken at the next step
        boundary (served while paused too), for sampling from a run that is still training.

        Raises :class:`RunError` when the run is not training or does not reach a step boundary in time.
        """
        return self.control.request_snapshot(timeout)

    # -- the loop --------------------------------------------------------------------------
    def run(self) -> Iterator[Report]:
        main = self.ranks.main  # under torchrun, rank 0 alone holds the lock and writes the run's files
        try:  # one run, one writer: nothing is written (not even a failure line) without the lock
            self._lock = RunLock.acquire(self.run_dir, self.purpose) if main else None
        except (ShiftStudioError, OSError) as exc:
            self.control.stop_serving("the run did not start")
            yield FailedReport(step=0, message=one_line(exc))
            return
        try:
            s = self._s = setup.build(self.run_dir, self.config, self.record, self._store, self.ranks)
            if self.max_iters != self.config.train.max_iters and main:  # a new plan: recorded with the run
                self.config = update_plan(self.run_dir, self.max_iters)
            if self._oom_policy is not None and main:
                self.config = _record_oom_policy(self.run_dir, self._oom_policy)
            self._start_notes = self._more_pieces(s)
            self._clock = _Clock(offset_s=s.progress.time_offset_s)
            if main:
                # before opening: truncation replaces the file, an open handle would write to the old one. A run
                # resumes from its checkpoint, and one killed before its first starts again from 0: what was
                # logged after either is dropped, so every step is logged once
                self._metrics.truncate_after(s.progress.step)
                self._metrics.open()
                self._summary = current_summary(self.run_dir, write=False)[0]  # rebuilt if the log was just rewritten
                self._control_file = ControlWatcher(self.run_dir)
            self.control.start_serving()
            yield from self._loop(s)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a report
            failure = self._failure(exc)
            if main:
                if self.ranks.distributed:
                    failure = self._root_cause(failure)
                yield self._emit(failure)
            else:  # another rank failed: say so in the run's log (one appended line), then end this process
                yield self._rank_failure(failure)
        finally:
            self.control.stop_serving("the run ended before its weights could be copied: pick a checkpoint")
            self._metrics.close()
            if self._summary is not None:
                write_summary(self.run_dir, self._summary)
            setup.teardown(self._s)
            self._s = None
            if self._lock is not None:
                self._lock.release()
            self.ranks.close()

    def _ranks_note(self, s: setup.Setup) -> str:
        """Resumed on another number of processes than trained before: allowed, and said."""
        if not s.resumed or s.saved_ranks == self.ranks.world:
            return ""
        return (f"resumed on {self.ranks.world} process(es) from a checkpoint trained on {s.saved_ranks}: the same "
                "batches (one stream shared out by micro-batch), but other dropout masks and another order of "
                "summing gradients, so not bit-identical to going on with the same number")

    def _root_cause(self, failure: FailedReport) -> FailedReport:
        """Rank 0 failed under torchrun. When another rank failed before it (rank 0 then only finds its peer
        gone), the run's failure is that rank's, with rank 0's own error below it. A rank writes its log before
        it exits, and rank 0 notices only once it has exited: a log older than now is the cause, not an echo."""
        now = time.time()
        logs = RunLayout(self.run_dir).logs_dir
        causes = []
        for path in sorted(logs.glob("rank-*.log")) if logs.is_dir() else []:
            try:
                if self._started_wall <= path.stat().st_mtime <= now:
                    causes.append(path.read_text(encoding="utf-8", errors="replace"))
            except OSError:
                continue
        if not causes:
            return failure
        message, _, detail = causes[0].partition("\n")
        return FailedReport(step=failure.step, message=message, expected=failure.expected,
                            detail=f"{detail}\nrank 0 then: {failure.message}\n{failure.detail}".strip())

    def _rank_failure(self, failure: FailedReport) -> FailedReport:
        """A rank other than 0 failed: its message (naming the rank) and detail go to ``logs/rank-R.log`` and one
        ``failed`` line to the run's log, so the run reads as failed however torchrun ends the others."""
        failure.message = f"rank {self.ranks.rank} of {self.ranks.world}: {failure.message}"
        try:
            logs = RunLayout(self.run_dir).logs_dir
            logs.mkdir(exist_ok=True)
            with open(logs / f"rank-{self.ranks.rank}.log", "w", encoding="utf-8") as f:  # its latest failure
                f.write(failure.message + "\n" + failure.detail)
            log = MetricsLog(self.run_dir)  # (rank 0's own log is not open on this rank)
            log.append({**failure.to_json(), "time_s": self._clock.run_time(), "tokens": 0})
            log.close()
        except OSError:
            pass
        return failure

    def _loop(self, s: setup.Setup) -> Iterator[Report]:
        tc, p = self.config.train, s.progress
        tokens_per_step = tc.batch_size * tc.gradient_accumulation_steps * self.config.model.block_size
        yield self._emit(StartedReport(
            run_dir=str(self.run_dir), step=p.step, max_iters=self.max_iters, n_params=s.model.num_params(),
            device=s.info.describe() + (f" × {self.ranks.world} ranks (torchrun)" if self.ranks.distributed else ""), dtype=dev.dtype_name(s.info.dtype), tokens_per_step=tokens_per_step,
            resumed=s.resumed, n_trainable=_trainable_if_partial(s.model), source=(s.origin or {}).get("label", ""),
            note=self._ranks_note(s),
        ))
        for note in self._start_notes:
            log.info(note)
            yield self._emit(NoteReport(step=p.step, message=note))
        pending: list[torch.Tensor] = []  # per-step losses since the last sync, the first of step p.step + 1
        flops_per_token = estimate.flops_per_token(self.config.model, s.model.vocab_size)
        peak = dev.peak_flops(s.device, s.info.dtype)
        peak = peak * self.ranks.world if peak else None  # every rank's device
        while p.step < self.max_iters:
            # -- step boundary: requests from other threads (served while paused too) -------------
            boundary = time.perf_counter()
            while True:
                served = self._serve_requests(s, pending)
                yield from served
                if _ends(served):
                    return
                if not self.control.paused:
                    break
                self._clock.paused_s += self.control.wait_for_resume()
            self._clock.window_excluded += time.perf_counter() - boundary
            if self.control.stop_requested:
                yield from self._finish(s, pending, "stopped")
                return
            # -- the step ---------------------------------------------------------------------
            lr = lr_at(p.step, tc)
            oom: _StepOutOfMemory | None = None
            try:
                loss, norm, batch = self._train_step(s, lr)
            except _StepOutOfMemory as exc:  # the run stops here (on_out_of_memory = stop, or nothing left to cut)
                oom = exc.with_traceback(None)  # (the step's frame and its batches need not outlive it)
            while self._notes:  # said in the log during the step (a step out of memory redone in smaller pieces)
                yield self._notes.pop(0)
            if oom is not None:
                yield from self._stop_out_of_memory(s, pending, oom)
                return
            p.step += 1
            p.tokens += tokens_per_step
            self._clock.window_steps += 1
            pending.append(loss)
            # -- log point ---------------------------------------------------------------------
            if p.step % tc.log_interval == 0 or p.step == self.max_iters:
                losses, failed = self._sync(s, pending)
                if failed is not None:
                    yield self._emit(failed)
                    return
                dt, steps = self._clock.window()
                tokens_per_s = steps * tokens_per_step / dt  # every rank's tokens: the step is the whole job's
                yield self._emit(StepReport(
                    step=p.step, loss=losses[-1], lr=lr, grad_norm=float(norm.item()),
                    tokens_per_s=tokens_per_s, tokens=p.tokens, time_s=self._clock.run_time(),
                    ms_per_iter=1000.0 * dt / steps, max_iters=self.max_iters,
                    mfu=tokens_per_s * flops_per_token / peak if peak else None,
                ))
                views = self.control.views
                if views.batch_views:  # the raw model: a compiled one would recompile for a single row
                    row = (p.step // tc.log_interval) % len(batch.x) if views.row is None else views.row % len(batch.x)
                    yield batch_view(s.model, batch.x, batch.y, batch.mask, row, p.step, s.autocast)
            # -- evaluation and checkpoints ------------------------------------------------------
            t = time.perf_counter()
            reports: list[Report] = []
            if p.step % tc.eval_interval == 0 or p.step == self.max_iters:
                reports += self._evaluate(s, pending)
            if tc.checkpoint_interval > 0 and p.step % tc.checkpoint_interval == 0 and p.last_saved != p.step \
                    and not _ends(reports):
                reports += self._save(s, pending)
            self._clock.window_excluded += time.perf_counter() - t
            yield from reports
            if _ends(reports):
                return
            if _early_stop(reports, tc.early_stop_patience, p):
                yield from self._finish(s, pending, "early_stop")
                return
        yield from self._finish(s, pending, "completed")

    # -- one optimizer step ----------------------------------------------------------------
    def _train_step(self, s: setup.Setup, lr: float) -> tuple[torch.Tensor, torch.Tensor, Any]:
        tc = self.config.train
        for group in s.optimizer.param_groups:  # a group's lr_scale (Muon's, optimizer = muon) rides on the schedule
            group["lr"] = lr * group.get("lr_scale", 1.0)
        accum = tc.gradient_accumulation_steps // self.ranks.world  # this rank's share of the step's micro-batches
        weights = self._loss_weights(s, s.progress.step)  # None: the plain mean over heads (always for K = 1)
        if self.ranks.distributed:  # dropout: each rank its own stream, a function of (seed, step, rank) alone, so
            # a run resumed on the same number of ranks draws the same masks without saving every rank's RNG state
            torch.manual_seed(int(np.random.SeedSequence([tc.seed, s.progress.step, self.ranks.rank]).generate_state(1)[0]))
        if self._fault == (self.ranks.rank, s.progress.step + 1):
            raise RuntimeError(f"a fault injected at step {s.progress.step + 1} on rank {self.ranks.rank} ({FAULT_ENV})")
        # one process: where the sampler and the RNG stood, so that a step out of memory can be undone exactly
        start = None if self.ranks.distributed else _StepStart.take(s)
        batches = [s.sampler.next() for _ in range(accum)]  # drawn once: a step redone after OOM redoes them
        while True:
            try:
                total = self._accumulate(s, batches, weights, accum)
                break
            except Exception as exc:  # noqa: BLE001 - out of memory is recovered from; anything else goes on up
                if not dev.is_out_of_memory(exc) or start is None:  # (several ranks: one cannot redo a step alone)
                    raise
            # out of the except block: the failed attempt's tensors, which its traceback held, are gone now
            rows = batches[0].x.shape[0] // s.micro_splits
            s.optimizer.zero_grad(set_to_none=True)  # the failed attempt's gradients: no part of any step
            if s.device.type == "cuda":
                torch.cuda.empty_cache()
            start.rewind_rng()  # the step redone (now, or when resumed) draws what its first attempt drew
            if not self._split_after_oom(s, rows):
                raise _StepOutOfMemory("CUDA" if s.device.type == "cuda" else "the device", rows, s.micro_splits, start)
        assert total is not None  # accum >= 1 (the config's minimum)
        if s.scaler.is_enabled():
            s.scaler.unscale_(s.optimizer)
        if tc.grad_clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(s.params, tc.grad_clip, foreach=True)
        else:
            norm = torch.nn.utils.get_total_norm([q.grad for q in s.params if q.grad is not None], foreach=True)
        norm = sharding.plain(norm)  # FSDP: the norm over every rank's shards
        s.scaler.step(s.optimizer)  # skips the step on inf/NaN gradients when scaling; a plain step otherwise
        s.scaler.update()
        s.optimizer.zero_grad(set_to_none=True)
        if s.ema is not None:
            s.ema.update(s.model, s.progress.step)
        return total, norm, batches[-1]

    def _accumulate(self, s: setup.Setup, batches: list[Any], weights: torch.Tensor | None, accum: int) -> torch.Tensor:
        """Forward and backward over this step's micro-batches, each cut into ``s.micro_splits`` pieces when a step
        ran out of memory before (the same rows, the same loss: each piece weighs its share of the batch's
        scored targets, per head). Returns the step's mean training loss (plain mean over heads)."""
        total: torch.Tensor | None = None  # no zero tensor to start from: one op less per step
        splits = s.micro_splits
        for micro, batch in enumerate(batches):
            pieces = [(batch, None)] if splits == 1 else _pieces(batch, splits)
            for piece, (part, share) in enumerate(pieces):
                # several ranks: gradients are all-reduced once, after the last micro-batch (DDP's no_sync before it;
                # FSDP keeps unreduced gradients until then)
                last = micro == accum - 1 and piece == len(pieces) - 1
                if self._sharded:
                    s.model.set_requires_gradient_sync(last)
                sync = contextlib.nullcontext() if last or not self._ddp else s.train_model.no_sync()
                with sync, s.autocast:
                    out = s.train_model(part.x, part.y, part.mask)
                if self._oom_rows is not None and part.x.shape[0] > self._oom_rows[0] \
                        and s.progress.step + 1 >= self._oom_rows[1]:  # (after the forward, as most real ones: its
                    # activations are held, its dropout masks drawn)
                    raise torch.OutOfMemoryError(f"{part.x.shape[0]} rows do not fit ({OOM_ENV}={self._oom_rows[0]})")
                if share is None:
                    loss = objective = out.loss
                    if weights is not None:  # coefficients sum to 1: the weighted mean of the head losses
                        objective = (out.head_losses.float() * weights).sum()
                else:  # this piece's part of each head's mean over the whole micro-batch
                    heads = out.head_losses.float() * share
                    loss = heads.mean()
                    objective = loss if weights is None else (heads * weights).sum()
                if accum > 1:
                    loss, objective = loss / accum, objective / accum
                with sync:
                    s.scaler.scale(objective).backward()  # scale() is the identity when the scaler is off
                total = loss.detach() if total is None else total + loss.detach()
        assert total is not None  # accum >= 1 (the config's minimum)
        return total

    def _split_after_oom(self, s: setup.Setup, rows: int) -> bool:
        """A step of one process ran out of memory with pieces of ``rows`` rows (the caller freed what it held):
        with ``on_out_of_memory = split``, cut each micro-batch into twice as many pieces (the step's batch, and
        so the run's results, stay the same) and say so in the run's log; the caller redoes the step. False: the
        run stops (``stop``, or a piece of one row)."""
        if self.config.train.on_out_of_memory != "split" or rows < 2:
            return False
        s.micro_splits *= 2
        note = (f"out of memory at step {s.progress.step + 1} with micro-batches of {rows} rows: going on with "
                f"{rows // 2} rows, {s.micro_splits} pieces per micro-batch (the same batch per step)")
        log.info(note)
        report = NoteReport(step=s.progress.step, message=note)
        self._log(report.to_json())  # now: the log has it whatever becomes of the step
        self._notes.append(report)  # reported once the step is done
        return True

    def _stop_out_of_memory(self, s: setup.Setup, pending: list[torch.Tensor], oom: _StepOutOfMemory) -> Iterator[Report]:
        """A step ran out of memory and the run stops. Nothing of the failed step reached the weights, the
        optimizer or the EMA (it failed before the optimizer step; its gradients were dropped), so the sampler and
        the RNG are put back to where the step began and the last completed step is saved: a resume, with each
        micro-batch in more pieces (:attr:`FailedReport.suggested_micro_splits`), goes on from the same step and
        trains what this run would have."""
        p = s.progress
        oom.start.rewind(s)
        if p.step > 0 and p.last_saved != p.step:
            saved = self._save(s, pending)
            yield from saved
            if _ends(saved):  # (a loss that became NaN before: that is the run's failure)
                return
        step, rows, splits = p.step, oom.rows, oom.micro_splits
        more = splits * 2 if rows >= 2 else 0
        tc = self.config.train
        kept = f"step {step:,} is saved" if step > 0 else "nothing was trained yet"
        advice = (f"use a smaller batch_size (e.g. {max(1, tc.batch_size // 2)}) with more gradient_accumulation_steps "
                  f"(e.g. {tc.gradient_accumulation_steps * 2}) to keep the effective batch, or a smaller model or block_size")
        if more:
            message = (f"{oom.where} ran out of memory in step {step + 1:,} (micro-batches of {rows} rows); {kept}. "
                       f"To go on from there, resume with micro_splits = {more} (pieces of {_piece_rows(tc.batch_size, more)} "
                       f"rows: the same batch per step and the same results, only slower), or set on_out_of_memory = "
                       f"split to do that by itself; or {advice}")
        else:
            message = (f"{oom.where} ran out of memory in step {step + 1:,} with micro-batches of a single row; {kept}. "
                       f"Use a smaller model or block_size")
        yield self._emit(FailedReport(step=step, message=message, out_of_memory=True, micro_splits=splits,
                                      suggested_micro_splits=more))

    def _more_pieces(self, s: setup.Setup) -> list[str]:
        """``Trainer(micro_splits=N)`` with more pieces than the run had: from now on, and said in its log."""
        if self.micro_splits is None or self.micro_splits <= s.micro_splits:
            return []
        before, s.micro_splits = s.micro_splits, self.micro_splits
        rows = _piece_rows(self.config.train.batch_size, s.micro_splits)
        return [f"resumed with micro_splits = {s.micro_splits} (was {before}): going on with {rows} rows, "
                f"{s.micro_splits} pieces per micro-batch (the same batch per step)"]

    def _loss_weights(self, s: setup.Setup, step: int) -> torch.Tensor | None:
        """(K,) coefficients of the head losses at ``step`` (normalised to sum to 1), on the device; None when
        the heads weigh the same (the model's own mean: the same loss, no extra op)."""
        weights = shift_weights_at(self.config.train, self.config.model.shift, step)
        if weights is None:
            return None
        key = loss_coefficients(weights)
        if self._weights is None or self._weights[0] != key:  # a constant weighting copies once per run
            self._weights = (key, torch.tensor(key, dtype=torch.float32, device=s.device))
        return self._weights[1]

    # -- between steps -------------------------------------------------------------------------
    def _serve_requests(self, s: setup.Setup, pending: list[torch.Tensor]) -> list[Report]:
        """Requests from another process (the run's control file), checkpoint-now and snapshot requests
        (served while paused too); a pause or resume is written to the log, for whoever follows the run."""
        request = self._control_file.poll() if self._control_file is not None else None
        if request is not None:
            {"pause": self.control.pause, "resume": self.control.resume, "stop": self.control.stop,
             "checkpoint": self.control.request_checkpoint}[request]()
        if self.ranks.distributed:  # rank 0 decides for every rank
            c = self.control
            checkpoint = c.take_checkpoint_request() if self.ranks.main else False
            paused, stop, checkpoint = self.ranks.flags([c.paused, c.stop_requested, checkpoint], s.device)
            c.pause() if paused else c.resume()
            if stop:
                c.stop()
            if checkpoint:
                c.request_checkpoint()
        if self.control.paused != self._logged_paused:
            self._logged_paused = self.control.paused
            self._log({"kind": "control", "request": "pause" if self._logged_paused else "resume",
                       "step": s.progress.step})
        out: list[Report] = []
        if self.control.take_checkpoint_request() and s.progress.last_saved != s.progress.step:
            out += self._save(s, pending)
        if self.control.has_snapshot_requests():
            self.control.serve_snapshots(lambda: (clone_model(s.model), s.tokenizer, s.progress.step))
        return out

    def _sync(self, s: setup.Setup, pending: list[torch.Tensor]) -> tuple[list[float], FailedReport | None]:
        """Fetch the pending losses (one device sync); a failure names the first non-finite one."""
        if not pending:
            return [], None
        losses = self.ranks.mean(torch.stack(pending).tolist(), s.device)  # every rank logs the same figures
        first = s.progress.step - len(pending) + 1
        pending.clear()
        for i, value in enumerate(losses):
            if not math.isfinite(value):
                return losses, FailedReport(
                    step=first + i,
                    message=f"the loss became {value} at step {first + i}: lower learning_rate or check the data"
                    + self._kept(s),
                )
        return losses, None

    def _evaluate(self, s: setup.Setup, pending: list[torch.Tensor]) -> list[Report]:
        """The eval report, a sample and (per policy) a checkpoint; or a failure."""
        tc, mc, p = self.config.train, self.config.model, s.progress
        _, failed = self._sync(s, pending)
        if failed is not None:
            return [self._emit(failed)]
        shape = (tc.batch_size, mc.block_size, mc.shift)
        model = s.model if self.ranks.distributed else s.train_model  # (the same weights; no DDP hooks to evaluate)
        train_h, val_h = split_losses(model, s.store, shape, tc.eval_iters, tc.seed, s.device, s.autocast, self.ranks)
        train_loss, val_loss = train_h[0], val_h[0]  # head 1: the headline, and what "best" means
        if not all(math.isfinite(v) for v in val_h):
            return [self._emit(FailedReport(
                step=p.step, message=f"the validation loss became {_first_bad(val_h)} at step {p.step}{self._kept(s)}",
            ))]
        ema_train = ema_val = None
        if s.ema is not None:
            et, ev = split_losses(s.ema.model, s.store, shape, tc.eval_iters, tc.seed, s.device, s.autocast)
            ema_train, ema_val = et[0], ev[0]
        is_best = val_loss < p.best_val
        if is_best:
            p.best_val, p.best_step, p.evals_since_best = val_loss, p.step, 0
        else:
            p.evals_since_best += 1
        p.last_val = (p.step, val_loss)
        out: list[Report] = [self._emit(EvalReport(
            step=p.step, tokens=p.tokens, time_s=self._clock.run_time(), train_loss=train_loss, val_loss=val_loss,
            val_ppl=_exp(val_loss), train_ppl=_exp(train_loss), best_val_loss=p.best_val, is_best=is_best,
            val_loss_per_horizon=val_h, train_loss_per_horizon=train_h, val_loss_all_heads=sum(val_h) / len(val_h),
            train_loss_all_heads=sum(train_h) / len(train_h), ema_train_loss=ema_train, ema_val_loss=ema_val,
        ))]
        if self.sample_prompt is not None and (self.ranks.main or self._sharded):  # (FSDP: all gather the weights)
            sample = self._sample(s)
            if sample is not None:
                out.append(self._emit(sample))
        if tc.checkpoint_interval == 0 or is_best:
            out += self._save(s, pending)
        return out

    def _sample(self, s: setup.Setup) -> SampleReport | None:
        """A short text from the prompt, through the playground's own sampler (special tokens are never
        written; the sample ends at the end of a document), from the EMA weights when there are some."""
        model = s.ema.model if s.ema is not None else s.model
        if self._sharded:
            model = sharding.gathered_copy(model, s.device)
            if model is None:  # not rank 0: it only helped gather
                return None
        if has_lora(model):  # the decoder reads plain weights: sample from a merged copy
            model = clone_model(model, s.device)
        settings = sample_settings(self.config.train.seed + s.progress.step)
        try:
            text = "".join(t.text for t in Generation(model, s.tokenizer, self.sample_prompt or "", settings))
        except ShiftStudioError:  # a prompt the tokenizer cannot read: no sample, training goes on
            return None
        return SampleReport(step=s.progress.step, prompt=self.sample_prompt or "", text=text)

    def _save(self, s: setup.Setup, pending: list[torch.Tensor]) -> list[Report]:
        """A checkpoint of the current step (never of weights that went bad), or a failure."""
        p = s.progress
        _, failed = self._sync(s, pending)
        if failed is None and not self._finite(s):
            failed = FailedReport(
                step=p.step, message=f"the weights became NaN or infinite by step {p.step}: lower learning_rate{self._kept(s)}",
            )
        if failed is not None:
            return [self._emit(failed)]
        if self._ddp and not self.ranks.same_on_all(weights_checksum(s.model), s.device):
            return [self._emit(FailedReport(step=p.step, message=(
                f"the ranks' weights differ at step {p.step}: the processes have diverged (this is a bug; the last "
                f"good checkpoint is step {p.last_saved})")))]
        is_best = p.best_step == p.step
        if self._sharded:  # every rank takes part in gathering the full tensors; rank 0 gets them
            weights, optimizer = sharding.full_weights(s.model), sharding.full_optimizer_tensors(s.model, s.optimizer)
        elif self.ranks.main:
            weights, optimizer = setup.saved_weights(s.model), ckpt.optimizer_tensors(s.model, s.optimizer)
        if not self.ranks.main:  # rank 0 writes the checkpoint
            p.last_saved = p.step
            return []
        path = ckpt.save_checkpoint(
            self.run_dir, p.step, setup.checkpoint_state(s, self._clock.run_time(), self.max_iters, self.ranks.world),
            weights, optimizer, s.ema.state_dict() if s.ema is not None else None,
        )
        if is_best:
            ckpt.set_best(self.run_dir, p.step)
        ckpt.prune_checkpoints(self.run_dir, self.config.train.keep_checkpoints)
        p.last_saved = p.step
        return [self._emit(CheckpointReport(step=p.step, path=str(path), is_best=is_best))]

    def _finish(self, s: setup.Setup, pending: list[torch.Tensor], reason: str) -> Iterator[Report]:
        p = s.progress
        if p.last_saved != p.step:
            saved = self._save(s, pending)
            yield from saved
            if _ends(saved):
                return
        yield self._emit(FinishedReport(
            step=p.step, reason=reason, best_val_loss=p.best_val_or_none, run_dir=str(self.run_dir),
            time_s=self._clock.run_time(),
        ))

    # -- reporting -------------------------------------------------------------------------------
    def _emit(self, report: Report) -> Report:
        """Log ``report`` to metrics.jsonl (all but batch views, which are large and only matter live)."""
        if not isinstance(report, BatchViewReport):
            self._log(report.to_json())
        return report

    def _log(self, record: dict[str, Any]) -> None:
        """Append a record to the log and fold it into the run's summary (written at the moments that matter
        to the library, and every few seconds between them)."""
        if not self.ranks.main:
            return
        record.setdefault("time_s", self._clock.run_time())
        record.setdefault("tokens", self._s.progress.tokens if self._s is not None else 0)
        size = self._metrics.append(record)
        if self._summary is None:
            return
        self._summary.fold(record)
        self._summary.log_bytes = size
        now = time.monotonic()
        if record["kind"] != "train" or now - self._summary_written > SUMMARY_EVERY_S:
            write_summary(self.run_dir, self._summary)
            self._summary_written = now

    @staticmethod
    def _kept(s: setup.Setup) -> str:
        last = s.progress.last_saved
        return f"; the last good checkpoint is step {last}" if last >= 0 else ""

    def _failure(self, exc: Exception) -> FailedReport:
        step = self.step
        if dev.is_out_of_memory(exc):
            where = "CUDA" if isinstance(exc, torch.cuda.OutOfMemoryError) else "the device"
            tc = self.config.train
            return FailedReport(
                step=step,
                message=(
                    f"{where} ran out of memory at step {step}: use a smaller batch_size (e.g. {max(1, tc.batch_size // 2)}) "
                    f"with more gradient_accumulation_steps (e.g. {tc.gradient_accumulation_steps * 2}) to keep the "
                    "effective batch, or a smaller model or block_size"
                ),
                out_of_memory=True, micro_splits=self._s.micro_splits if self._s is not None else 0,
            )
        from shiftstudio.core import io

        if io.is_disk_full(exc):  # a checkpoint, the log, run.json …: say which, and what is safe
            where = getattr(exc, "filename", None) or self.run_dir
            reason = getattr(exc, "strerror", None) or "no space left"
            kept = self._kept(self._s) if self._s is not None else ""
            return FailedReport(step=step, message=f"disk full while writing {where} ({reason}): free some space{kept}")
        if isinstance(exc, ShiftStudioError):
            return FailedReport(step=step, message=one_line(exc))
        return FailedReport(
            step=step, message=f"{type(exc).__name__}: {one_line(exc)}", detail=traceback.format_exc(), expected=False,
        )


def _injected_fault() -> tuple[int, int] | None:
    """(rank, step) from ``SHIFTSTUDIO_INJECT_FAULT=RANK:STEP``, the fault-injection tests' switch (None: off)."""
    import os

    text = os.environ.get(FAULT_ENV, "")
    try:
        rank, step = (int(v) for v in text.split(":"))
    except ValueError:
        return None
    return rank, step


def _injected_oom_rows() -> tuple[int, int] | None:
    """``SHIFTSTUDIO_INJECT_OOM=ROWS[:STEP]``: ``(rows, step)``, pieces of more rows raise out of memory from step
    ``step`` on (1-based; 1 when not given), as a device that small would (None: off)."""
    import os

    rows, _, step = os.environ.get(OOM_ENV, "").partition(":")
    try:
        return max(0, int(rows)), int(step) if step else 1
    except ValueError:
        return None


def check_micro_splits(micro_splits: int | None, batch_size: int) -> int | None:
    """``micro_splits`` as a resume takes it: 1 to ``batch_size`` pieces (a piece has a row at least); raises
    :class:`ConfigError`."""
    if micro_splits is None:
        return None
    if isinstance(micro_splits, bool) or not isinstance(micro_splits, int) or not 1 <= micro_splits <= batch_size:
        raise ConfigError(f"micro_splits must be a whole number from 1 to the run's batch_size ({batch_size}), "
                          f"got {micro_splits!r}")
    return micro_splits


def _piece_rows(batch_size: int, splits: int) -> int:
    """Rows in a micro-batch's first (largest) piece when cut into ``splits``."""
    return -(-batch_size // splits)


def _record_oom_policy(run_dir: Path, policy: str) -> RunConfig:
    """Record ``on_out_of_memory = policy`` in ``run.json`` (as a new plan is): a policy, it changes no result."""
    from shiftstudio.core.runs.folder import save_run_record

    record = load_run(run_dir)
    record["config"].setdefault("train", {})["on_out_of_memory"] = policy
    save_run_record(run_dir, record)
    return load_run_config(run_dir)


@dataclass
class _StepStart:
    """Where a step began (one process): the sampler's position and the RNG states (CPU, and the CUDA device's).
    Taking it costs a few microseconds; it lets a step out of memory be undone exactly."""

    sampler: dict[str, Any]
    cpu_rng: torch.Tensor
    cuda_rng: torch.Tensor | None
    device: torch.device

    @classmethod
    def take(cls, s: setup.Setup) -> "_StepStart":
        cuda = torch.cuda.get_rng_state(s.device) if s.device.type == "cuda" else None
        return cls(s.sampler.state_dict(), torch.get_rng_state(), cuda, s.device)

    def rewind_rng(self) -> None:
        torch.set_rng_state(self.cpu_rng)
        if self.cuda_rng is not None:
            torch.cuda.set_rng_state(self.cuda_rng, self.device)

    def rewind(self, s: setup.Setup) -> None:
        """The sampler and the RNG as they were: as if the step had not begun."""
        s.sampler.load_state_dict(self.sampler)
        self.rewind_rng()


class _StepOutOfMemory(Exception):
    """A step of one process ran out of memory and the run stops there (``on_out_of_memory = stop``, or micro-batch
    pieces of a single row): :meth:`Trainer._stop_out_of_memory` keeps the last completed step and reports it."""

    def __init__(self, where: str, rows: int, micro_splits: int, start: _StepStart) -> None:
        super().__init__(f"{where} ran out of memory with micro-batch pieces of {rows} rows")
        self.where, self.rows, self.micro_splits, self.start = where, rows, micro_splits, start


def _pieces(batch: Any, splits: int) -> list[tuple[Any, torch.Tensor]]:
    """``batch`` cut into ``splits`` runs of rows, each with its (K,) share of the batch's scored targets per
    head: summing share × piece head losses gives the whole batch's masked mean per head."""
    counts = batch.mask.sum(dim=(0, 2)).clamp_min(1.0)  # (K,) scored targets per head in the whole batch
    out = []
    for x, y, m in zip(batch.x.chunk(splits), batch.y.chunk(splits), batch.mask.chunk(splits)):
        out.append((type(batch)(x, y, m), m.sum(dim=(0, 2)) / counts))
    return out


def shift_weights_at(train: TrainConfig, shift: int, step: int) -> list[float] | None:
    """The heads' loss weights (head 1 first, not normalised) for training step ``step`` (0-based: the step
    about to be taken); None when all heads weigh the same (then the loss is the plain mean).

    ``shift_weights`` gives the weights at step 0 ('halving', the default: 1, 0.5, 0.25, …; empty: all 1).
    ``shift_weight_schedule = 'linear_to_zero'`` (the default) scales heads 2..K by ``1 - step / lr_decay_iters``
    (0 where the learning rate reaches its floor, and after; head 1 keeps its weight), e.g. the speedrun recipe
    ``1,0.5,0.25`` fading to next-token prediction alone. It follows the learning-rate schedule rather than
    ``max_iters`` so that a run continued further trains exactly as one planned that long from the start
    (``max_iters`` is accepted for callers that pass it and otherwise unused). The trainer divides by the weights'
    sum: the loss is the weighted *mean* of the head losses, so equal weights give exactly the unweighted loss."""
    if shift <= 1:
        return None
    weights = train.shift_weight_list(shift) or [1.0] * shift
    if train.shift_weight_schedule == "linear_to_zero":
        factor = max(0.0, 1.0 - step / max(1, train.lr_decay_iters))
        return [weights[0]] + [w * factor for w in weights[1:]]
    return None if all(w == weights[0] for w in weights) else weights


def loss_coefficients(weights: list[float]) -> tuple[float, ...]:
    """The weights divided by their sum: ``Σ c_k · L_k`` is the weighted mean of the head losses."""
    total = sum(weights)
    return tuple(w / total for w in weights)


def _ends(reports: list[Report]) -> bool:
    return any(isinstance(r, FailedReport) for r in reports)


def _early_stop(reports: list[Report], patience: int, p: setup.Progress) -> bool:
    evaluated = any(isinstance(r, EvalReport) for r in reports)
    return evaluated and patience > 0 and p.evals_since_best >= patience


def _first_bad(values: list[float]) -> float:
    return next(v for v in values if not math.isfinite(v))


def _exp(x: float) -> float:
    return math.exp(x) if x < 700 else math.inf


__all__ = ["Trainer", "TrainerControl", "ViewRequest", "RunError"]


def _trainable_if_partial(model: torch.nn.Module) -> int | None:
    """How many weights train when not all of them do (a LoRA run); None when every weight trains."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return None if trainable == sum(p.numel() for p in model.parameters()) else trainable
