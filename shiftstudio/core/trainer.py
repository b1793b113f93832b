"""The training loop: an iterator of plain reports.

``Trainer(run_dir).run()`` sets up (or resumes) a run and yields
:mod:`~shiftstudio.core.reports` objects: started, step metrics and a batch
view every ``log_interval`` steps, evals, checkpoints, and last finished or
failed. It knows nothing of Qt or terminals; pause, resume, stop and
"checkpoint now" are thread-safe flags checked between steps.

The hot path avoids device syncs: losses stay tensors until a log point,
where one ``tolist()`` fetches them all (and finds the first non-finite one).
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from shiftstudio.config import ConfigError
from shiftstudio.core import checkpoint as ckpt
from shiftstudio.core import device as dev
from shiftstudio.core.evaluation import batch_view, mean_loss, sample_ids
from shiftstudio.core.metrics import MetricsLog
from shiftstudio.core.model import GPT
from shiftstudio.core.optim import WeightEMA, build_optimizer, lr_at
from shiftstudio.core.reports import (
    CheckpointReport, EvalReport, FailedReport, FinishedReport, Report, SampleReport, StartedReport, StepReport,
)
from shiftstudio.core.run import load_run, load_run_config, open_run_store
from shiftstudio.core.tokens import BatchSampler

log = logging.getLogger(__name__)

EVAL_SEED_OFFSETS = {"train": 1_000_003, "val": 2_000_003}  # fixed eval batches, distinct from training's
SAMPLE_TOKENS = 200


class _Stop(Exception):
    """Internal: end the loop with a report already built."""

    def __init__(self, report: Report) -> None:
        self.report = report


def _expected_errors() -> tuple[type[BaseException], ...]:
    from shiftstudio.core.corpus import CorpusError
    from shiftstudio.core.tokenizer import TokenizerError
    from shiftstudio.core.tokens import DataError

    return (ckpt.RunError, ConfigError, DataError, TokenizerError, CorpusError, OSError)


class Trainer:
    """Trains the run in ``run_dir``, resuming from its latest checkpoint if it has one.

    ``__init__`` only reads ``run.json`` (raising :class:`RunError` if it is
    unusable); everything else happens in :meth:`run`, which never raises for
    expected problems but yields a :class:`FailedReport`.
    """

    def __init__(
        self, run_dir: str | Path, store: Any | None = None, *, max_iters: int | None = None, sample_prompt: str | None = None,
        batch_views: bool = True,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.record = load_run(self.run_dir)
        self.config = load_run_config(self.run_dir)
        self.store = store
        self.max_iters = self.config.train.max_iters if max_iters is None else int(max_iters)
        if self.max_iters < 1:
            raise ConfigError(f"max_iters must be at least 1, got {self.max_iters}")
        self.sample_prompt = sample_prompt
        self.batch_views = batch_views  # a BatchViewReport at every log point (for the inspector)
        self.step = 0
        self.tokens = 0
        self._stop_flag = threading.Event()
        self._unpaused = threading.Event()
        self._unpaused.set()
        self._checkpoint_flag = threading.Event()
        self._metrics = MetricsLog(self.run_dir)
        self.view_row: int | None = None  # the batch row the inspector shows; None = a different one each time
        self._snapshot_lock = threading.Lock()
        self._snapshot_waiters: list[tuple[threading.Event, list]] = []
        self._running = False

    # -- control (any thread) ------------------------------------------------------
    def pause(self) -> None:
        self._unpaused.clear()

    def resume(self) -> None:
        self._unpaused.set()

    def stop(self) -> None:
        """Save a checkpoint at the next step boundary and finish with reason 'stopped'."""
        self._stop_flag.set()
        self._unpaused.set()

    def request_checkpoint(self) -> None:
        self._checkpoint_flag.set()

    @property
    def paused(self) -> bool:
        return not self._unpaused.is_set()

    def set_view_row(self, row: int | None) -> None:
        """Which row of the batch the batch views show (taken modulo the batch size); None cycles through them."""
        self.view_row = None if row is None else max(0, int(row))

    def snapshot(self, timeout: float = 60.0) -> tuple[Any, Any, int]:
        """From another thread: ``(model, tokenizer, step)``, an independent float32 CPU copy of the weights taken
        at the next step boundary (served while paused too), for sampling from a run that is still training.

        Raises :class:`~shiftstudio.core.checkpoint.RunError` when the run is not training or does not reach a
        step boundary within ``timeout`` seconds.
        """
        done, box = threading.Event(), []
        with self._snapshot_lock:
            if not self._running:
                raise ckpt.RunError("the run is not training: pick one of its checkpoints instead of the live weights")
            self._snapshot_waiters.append((done, box))
        if not done.wait(timeout):
            with self._snapshot_lock:
                if (done, box) in self._snapshot_waiters:
                    self._snapshot_waiters.remove((done, box))
            raise ckpt.RunError(f"training did not reach a step boundary within {timeout:g} s to copy its weights")
        if isinstance(box[0], BaseException):
            raise box[0]
        return box[0]

    def _serve_snapshots(self, error: BaseException | None = None) -> None:
        with self._snapshot_lock:
            waiters, self._snapshot_waiters = self._snapshot_waiters, []
            if error is not None:
                self._running = False
        if not waiters:
            return
        if error is None:
            from shiftstudio.core.sampler import clone_model

            try:
                result: Any = (clone_model(self.model), self.store.tokenizer, self.step)
            except (RuntimeError, MemoryError) as exc:  # out of memory: the sampler fails, training goes on
                result = ckpt.RunError(f"could not copy the weights: {str(exc).splitlines()[0]}")
        else:
            result = error
        for done, box in waiters:
            box.append(result)
            done.set()

    # -- the loop --------------------------------------------------------------------
    def run(self) -> Iterator[Report]:
        self._session_start = time.perf_counter()
        self._time_offset = 0.0
        self._paused_s = 0.0
        try:
            self._setup()
            with self._snapshot_lock:
                self._running = True
            yield from self._loop()
        except _Stop as stop:
            yield self._emit(stop.report)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a report
            yield self._emit(self._failure(exc))
        finally:
            self._serve_snapshots(ckpt.RunError("the run ended before its weights could be copied: pick a checkpoint"))
            self._teardown()

    def _failure(self, exc: Exception) -> FailedReport:
        if dev.is_out_of_memory(exc):
            where = "CUDA" if isinstance(exc, torch.cuda.OutOfMemoryError) else "the device"
            tc = self.config.train
            smaller = max(1, tc.batch_size // 2)
            return FailedReport(
                step=self.step,
                message=(
                    f"{where} ran out of memory at step {self.step}: use a smaller batch_size (e.g. {smaller}) with more "
                    f"gradient_accumulation_steps (e.g. {tc.gradient_accumulation_steps * 2}) to keep the effective batch, "
                    "or a smaller model or block_size"
                ),
            )
        if isinstance(exc, _expected_errors()):
            return FailedReport(step=self.step, message=str(exc).split("\n")[0])
        first = str(exc).split("\n")[0]
        return FailedReport(step=self.step, message=f"{type(exc).__name__}: {first}", detail=traceback.format_exc(), expected=False)

    def _time_s(self) -> float:
        return self._time_offset + (time.perf_counter() - self._session_start) - self._paused_s

    def _emit(self, report: Report) -> Report:
        self._metrics.append(report, time_s=self._time_s(), tokens=self.tokens)
        return report

    # -- set-up --------------------------------------------------------------------
    def _setup(self) -> None:
        tc, mc = self.config.train, self.config.model
        self.info = dev.setup(tc.device, tc.dtype, tc.num_threads)
        self.device = self.info.device
        self.autocast = dev.autocast(self.device, self.info.dtype)
        if self.store is None:
            self.store = open_run_store(self.run_dir)
        vocab = int(self.record["data"]["vocab_size"])
        if int(self.store.vocab_size) != vocab:
            raise ckpt.RunError(f"the token data has vocabulary {self.store.vocab_size}, the run was made for {vocab}")
        random.seed(tc.seed)
        np.random.seed(tc.seed)
        torch.manual_seed(tc.seed)
        self.model = GPT(mc, vocab).to(self.device)
        self.optimizer = build_optimizer(self.model, tc, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.info.dtype == torch.float16)
        self.ema = WeightEMA(self.model, tc.ema_decay) if tc.ema_decay > 0 else None
        self.sampler = BatchSampler(self.store.train, tc.batch_size, mc.block_size, mc.shift, seed=tc.seed, device=self.device)
        BatchSampler(self.store.val, 1, mc.block_size, mc.shift, device="cpu", split="val")  # fails early if val is too short
        self.best_val = math.inf
        self.best_step: int | None = None
        self.evals_since_best = 0
        self.last_val: tuple[int, float] | None = None
        self.resumed = False
        latest = ckpt.latest_checkpoint(self.run_dir)
        if latest is not None:
            try:
                self._restore(ckpt.load_checkpoint(latest.path))
            except ckpt.CorruptCheckpoint as exc:
                raise ckpt.RunError(
                    f"{exc}; nothing was changed (to resume from an earlier checkpoint, delete {latest.path})"
                ) from None
        self.last_saved = self.step if latest is not None else -1
        self.train_model = torch.compile(self.model) if tc.compile else self.model
        self.params = [p for p in self.model.parameters()]
        if self.resumed:  # before opening: truncation replaces the file, an open handle would write to the old one
            self._metrics.truncate_after(self.step)
        self._metrics.open()

    def _restore(self, c: ckpt.Checkpoint) -> None:
        ckpt.check_shapes(f"checkpoint {c.path.name}", c.model, self.model.state_dict())
        self.model.load_state_dict(c.model)
        ckpt.load_optimizer_tensors(self.model, self.optimizer, c.optimizer)
        if self.ema is not None:
            if c.ema is not None:
                ckpt.check_shapes(f"EMA weights of {c.path.name}", c.ema, self.ema.state_dict())
                self.ema.load_state_dict(c.ema)
            else:
                self.ema.load_state_dict(self.model.state_dict())
        s = c.state
        try:
            self.sampler.load_state_dict(s["sampler"])
            if self.scaler.is_enabled() and s.get("scaler"):
                self.scaler.load_state_dict(s["scaler"])
            self.step, self.tokens = int(s["step"]), int(s["tokens"])
            self.best_val = float(s["best_val_loss"]) if s.get("best_val_loss") is not None else math.inf
            self.best_step = s.get("best_step")
            self.evals_since_best = int(s.get("evals_since_best", 0))
            self._time_offset = float(s.get("time_s", 0.0))
        except (KeyError, TypeError, ValueError) as exc:
            raise ckpt.CorruptCheckpoint(f"checkpoint {c.path.name}: {ckpt.STATE_FILE} is corrupt ({exc})") from None
        ckpt.set_rng_state(s.get("rng", {}))
        self.resumed = True

    def _teardown(self) -> None:
        self._metrics.close()
        for name in ("model", "train_model", "optimizer", "ema", "params", "sampler", "_last_batch", "_pending"):
            if hasattr(self, name):
                setattr(self, name, None)
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.empty_cache()

    # -- one optimizer step ----------------------------------------------------------
    def _train_step(self, lr: float) -> tuple[torch.Tensor, torch.Tensor]:
        tc = self.config.train
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        accum = tc.gradient_accumulation_steps
        total = None
        for _ in range(accum):
            batch = self.sampler.next()
            with self.autocast:
                loss = self.train_model(batch.x, batch.y, batch.mask).loss
            if accum > 1:
                loss = loss / accum
            self.scaler.scale(loss).backward() if self.scaler.is_enabled() else loss.backward()
            total = loss.detach() if total is None else total + loss.detach()
        self._last_batch = batch
        if self.scaler.is_enabled():
            self.scaler.unscale_(self.optimizer)
        if tc.grad_clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(self.params, tc.grad_clip, foreach=True)
        else:
            norm = torch.nn.utils.get_total_norm([p.grad for p in self.params if p.grad is not None], foreach=True)
        if self.scaler.is_enabled():
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.model, self.step)
        assert total is not None
        return total, norm

    def _loop(self) -> Iterator[Report]:
        tc = self.config.train
        tokens_per_step = tc.batch_size * tc.gradient_accumulation_steps * self.config.model.block_size
        yield self._emit(StartedReport(
            run_dir=str(self.run_dir), step=self.step, max_iters=self.max_iters, n_params=self.model.num_params(),
            device=self.info.describe(), dtype=dev.dtype_name(self.info.dtype), tokens_per_step=tokens_per_step,
            resumed=self.resumed,
        ))
        self._pending: list[torch.Tensor] = []  # per-step losses since the last sync
        self._pending_from = self.step + 1  # step number of _pending[0]
        clock, interval_steps, excluded = time.perf_counter(), 0, 0.0
        norm = torch.zeros(())
        while self.step < self.max_iters:
            # -- step boundary: requests from other threads --------------------------------
            t = time.perf_counter()
            while True:
                if self._checkpoint_flag.is_set():  # served while paused too
                    self._checkpoint_flag.clear()
                    if self.last_saved != self.step:
                        yield from self._save()
                if self._snapshot_waiters:  # served while paused too
                    self._serve_snapshots()
                if self._unpaused.is_set():
                    break
                waited = time.perf_counter()
                self._unpaused.wait(0.2)
                self._paused_s += time.perf_counter() - waited  # paused time is not run time
            excluded += time.perf_counter() - t
            if self._stop_flag.is_set():
                yield from self._finish("stopped")
                return
            # -- the step --------------------------------------------------------------------
            lr = lr_at(self.step, tc)
            loss, norm = self._train_step(lr)
            self.step += 1
            self.tokens += tokens_per_step
            interval_steps += 1
            self._pending.append(loss)
            # -- log point -------------------------------------------------------------------
            if self.step % tc.log_interval == 0 or self.step == self.max_iters:
                losses = self._check_finite()
                dt = max(time.perf_counter() - clock - excluded, 1e-9)
                yield self._emit(StepReport(
                    step=self.step, loss=losses[-1], lr=lr, grad_norm=float(norm.item()),
                    tokens_per_s=interval_steps * tokens_per_step / dt, tokens=self.tokens, time_s=self._time_s(),
                    ms_per_iter=1000.0 * dt / interval_steps, max_iters=self.max_iters,
                ))
                clock, interval_steps, excluded = time.perf_counter(), 0, 0.0
                b = self._last_batch  # the raw model: a compiled one would recompile for a single row
                if self.batch_views:
                    yield batch_view(self.model, b.x, b.y, b.mask, self._view_row(b.x.shape[0]), self.step, self.autocast)
            # -- evaluation and checkpoints -----------------------------------------------------
            t = time.perf_counter()
            early_stop = False
            if self.step % tc.eval_interval == 0 or self.step == self.max_iters:
                early_stop = yield from self._evaluate()
            if tc.checkpoint_interval > 0 and self.step % tc.checkpoint_interval == 0 and self.last_saved != self.step:
                yield from self._save()
            excluded += time.perf_counter() - t
            if early_stop:
                yield from self._finish("early_stop")
                return
        yield from self._finish("completed")

    def _view_row(self, rows: int) -> int:
        row = self.view_row
        return (self.step // self.config.train.log_interval) % rows if row is None else row % rows

    def _check_finite(self) -> list[float]:
        """Fetch the pending losses (one sync); end the run if one is NaN or infinite."""
        if not self._pending:
            return []
        losses = torch.stack(self._pending).tolist()
        first = self._pending_from
        self._pending, self._pending_from = [], self.step + 1
        for i, value in enumerate(losses):
            if not math.isfinite(value):
                kept = f"; the last good checkpoint is step {self.last_saved}" if self.last_saved >= 0 else ""
                raise _Stop(FailedReport(
                    step=first + i,
                    message=f"the loss became {value} at step {first + i}: lower learning_rate or check the data{kept}",
                ))
        return losses

    def _evaluate(self) -> Iterator[Report]:
        """Yields the eval report (and a sample); returns True when early stopping says stop."""
        tc, mc = self.config.train, self.config.model
        self._check_finite()
        shape = (tc.batch_size, mc.block_size, mc.shift)

        def losses(model: torch.nn.Module) -> tuple[list[float], list[float]]:
            tr = mean_loss(model, self.store.train, shape, tc.eval_iters, tc.seed + EVAL_SEED_OFFSETS["train"], self.device, self.autocast, "train")
            va = mean_loss(model, self.store.val, shape, tc.eval_iters, tc.seed + EVAL_SEED_OFFSETS["val"], self.device, self.autocast, "val")
            return tr, va

        train_h, val_h = losses(self.train_model)
        train_loss, val_loss = sum(train_h) / len(train_h), sum(val_h) / len(val_h)
        if not math.isfinite(val_loss):
            kept = f"; the last good checkpoint is step {self.last_saved}" if self.last_saved >= 0 else ""
            raise _Stop(FailedReport(step=self.step, message=f"the validation loss became {val_loss} at step {self.step}{kept}"))
        ema_train = ema_val = None
        if self.ema is not None:
            et, ev = losses(self.ema.model)
            ema_train, ema_val = sum(et) / len(et), sum(ev) / len(ev)
        is_best = val_loss < self.best_val
        if is_best:
            self.best_val, self.best_step, self.evals_since_best = val_loss, self.step, 0
        else:
            self.evals_since_best += 1
        self.last_val = (self.step, val_loss)
        yield self._emit(EvalReport(
            step=self.step, tokens=self.tokens, time_s=self._time_s(), train_loss=train_loss, val_loss=val_loss,
            val_ppl=_exp(val_loss), train_ppl=_exp(train_loss), best_val_loss=self.best_val, is_best=is_best,
            val_loss_per_horizon=val_h, train_loss_per_horizon=train_h, ema_train_loss=ema_train, ema_val_loss=ema_val,
        ))
        if self.sample_prompt is not None:
            sample = self._sample()
            if sample is not None:
                yield self._emit(sample)
        if tc.checkpoint_interval == 0 or is_best:
            yield from self._save()
        return tc.early_stop_patience > 0 and self.evals_since_best >= tc.early_stop_patience

    def _sample(self) -> SampleReport | None:
        from shiftstudio.core.tokenizer import TokenizerError

        tok = self.store.tokenizer
        try:
            prompt = tok.encode(self.sample_prompt) if self.sample_prompt else []
        except TokenizerError:
            return None
        if not prompt:
            prompt = [tok.eot_id if tok.eot_id is not None else 0]
        model = self.ema.model if self.ema is not None else self.model
        ids = sample_ids(model, prompt, SAMPLE_TOKENS, seed=self.config.train.seed + self.step, autocast=self.autocast)
        return SampleReport(step=self.step, prompt=self.sample_prompt or "", text=tok.decode(ids))

    # -- saving and finishing ----------------------------------------------------------
    def _save(self) -> Iterator[Report]:
        self._check_finite()  # never save weights that went bad since the last log point
        if not all(bool(torch.isfinite(p).all()) for p in self.params):
            kept = f"; the last good checkpoint is step {self.last_saved}" if self.last_saved >= 0 else ""
            raise _Stop(FailedReport(
                step=self.step, message=f"the weights became NaN or infinite by step {self.step}: lower learning_rate{kept}",
            ))
        tc = self.config.train
        is_best = self.best_step == self.step
        state = {
            "step": self.step,
            "tokens": self.tokens,
            "time_s": self._time_s(),
            "best": is_best,
            "val_loss": self.last_val[1] if self.last_val and self.last_val[0] == self.step else None,
            "best_val_loss": self.best_val if math.isfinite(self.best_val) else None,
            "best_step": self.best_step,
            "evals_since_best": self.evals_since_best,
            "sampler": self.sampler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "rng": ckpt.rng_state(),
            "max_iters": self.max_iters,
        }
        path = ckpt.save_checkpoint(
            self.run_dir, self.step, state, self.model.state_dict(), ckpt.optimizer_tensors(self.model, self.optimizer),
            self.ema.state_dict() if self.ema is not None else None,
        )
        if is_best:
            ckpt.set_best(self.run_dir, self.step)
        ckpt.prune_checkpoints(self.run_dir, tc.keep_checkpoints)
        self.last_saved = self.step
        yield self._emit(CheckpointReport(step=self.step, path=str(path), is_best=is_best))

    def _finish(self, reason: str) -> Iterator[Report]:
        if self.last_saved != self.step:
            yield from self._save()
        yield self._emit(FinishedReport(
            step=self.step, reason=reason, best_val_loss=self.best_val if math.isfinite(self.best_val) else None,
            run_dir=str(self.run_dir), time_s=self._time_s(),
        ))


def _exp(x: float) -> float:
    return math.exp(x) if x < 700 else math.inf
