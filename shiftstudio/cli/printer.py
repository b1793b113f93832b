"""Driving a trainer from a terminal: signals, and its reports as lines.

:func:`drive` runs the report iterator to the end; the first Ctrl-C asks the
trainer to stop (it saves a checkpoint), a second one quits at once.
:class:`ReportPrinter` turns each report into output: a live progress line on
a terminal, plain lines when piped.
"""

from __future__ import annotations

import logging
import signal
import statistics
import sys
import threading
import time
from typing import Any, TextIO

from shiftstudio.cli.progress import ProgressLine
from shiftstudio.format import human_count, human_duration

log = logging.getLogger(__name__)

INTERRUPT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}  # exit codes of a run stopped by a signal


def drive(trainer: Any, out: TextIO | None = None) -> int:
    """Run ``trainer`` to the end, printing its reports; returns the exit code.

    The first SIGINT/SIGTERM asks the trainer to stop (it saves a checkpoint
    and finishes); a second one raises :class:`KeyboardInterrupt`.
    """
    printer = ReportPrinter(out or sys.stdout)
    received: list[int] = []

    def on_signal(signum: int, frame: Any) -> None:
        if received:
            raise KeyboardInterrupt
        received.append(signum)
        trainer.stop()
        printer.note("stopping: saving a checkpoint (press Ctrl-C again to quit at once)")

    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread only
        for sig in INTERRUPT_CODES:
            previous[sig] = signal.signal(sig, on_signal)
    try:
        code = 0
        for report in trainer.run():
            code = printer.show(report)
    except KeyboardInterrupt:
        printer.close()
        from shiftstudio.cli import error

        return error("interrupted before a checkpoint was saved: the run keeps its previous checkpoint", 130)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if code == 0 and received:
        return INTERRUPT_CODES.get(received[0], 130)
    return code


class ReportPrinter:
    """Turns reports into terminal output: a live line on a TTY, plain lines otherwise."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.line = ProgressLine(out, min_interval=0.2)
        self.live = self.line.tty
        self.max_iters = 0
        self.first_step = 0
        self.started = time.perf_counter()
        self.ms: list[float] = []
        self.tokens_per_s: list[float] = []
        self.run_dir = ""

    def print(self, text: str) -> None:
        self.line.close()
        print(text, file=self.out, flush=True)

    def note(self, text: str) -> None:
        self.print(text)

    def close(self) -> None:
        self.line.close()

    def show(self, report: Any) -> int:
        """Print one report; returns the exit code it implies (0 or 1)."""
        from shiftstudio.core.train import reports as r

        handlers = {
            r.StartedReport: self._on_started, r.StepReport: self._on_train, r.EvalReport: self._on_eval,
            r.SampleReport: self._on_sample, r.CheckpointReport: self._on_checkpoint,
            r.FinishedReport: self._on_finished, r.FailedReport: self._on_failed, r.NoteReport: self._on_note,
        }
        if type(report) not in handlers:
            raise TypeError(f"the trainer yielded a report the CLI does not print: {type(report).__name__}")
        return handlers[type(report)](report) or 0

    def _eta(self, step: int) -> str:
        done = step - self.first_step
        if done <= 0 or step >= self.max_iters:
            return "–"
        return human_duration((time.perf_counter() - self.started) / done * (self.max_iters - step))

    def _on_started(self, r: Any) -> None:

        self.max_iters, self.first_step, self.run_dir = r.max_iters, r.step, r.run_dir
        self.started = time.perf_counter()
        what = f"resuming at step {r.step:,} of {r.max_iters:,}" if r.resumed else f"training for {r.max_iters:,} steps"
        self.print(f"run {r.run_dir}: {what}")
        trains = f" ({human_count(r.n_trainable)} train)" if r.n_trainable is not None else ""
        origin = f", fine-tuned from {r.source}" if r.source else ""
        self.print(f"model: {human_count(r.n_params)} parameters{trains} on {r.device}, {r.tokens_per_step:,} tokens per step{origin}")
        if getattr(r, "note", ""):
            self.print(f"note: {r.note}")

    def _on_train(self, r: Any) -> None:

        self.ms.append(r.ms_per_iter)
        self.tokens_per_s.append(r.tokens_per_s)
        width = len(f"{self.max_iters:,}")
        text = (
            f"step {r.step:>{width},}/{self.max_iters:,}  loss {r.loss:.4f}  lr {r.lr:.2e}  grad {r.grad_norm:.3f}  "
            f"{human_count(r.tokens_per_s)} tok/s  {r.ms_per_iter:.1f} ms/it"
            + (f"  MFU {100 * r.mfu:.1f}%" if getattr(r, "mfu", None) else "") + f"  ETA {self._eta(r.step)}"
        )
        if self.live:
            self.line.text(text)
        else:
            print(text, file=self.out, flush=True)

    def _on_eval(self, r: Any) -> None:
        best = "  (best)" if r.is_best else ""
        text = f"eval step {r.step:,}: train loss {r.train_loss:.4f}, val loss {r.val_loss:.4f}, val ppl {r.val_ppl:.2f}{best}"
        if len(r.val_loss_per_horizon) > 1:
            text += "\n  val loss per horizon: " + ", ".join(
                f"t+{k} {loss:.4f}" for k, loss in enumerate(r.val_loss_per_horizon, 1)
            )
        if r.ema_val_loss is not None:
            text += f"\n  EMA weights: train loss {r.ema_train_loss:.4f}, val loss {r.ema_val_loss:.4f}"
        self.print(text)

    def _on_sample(self, r: Any) -> None:
        self.print(f"sample at step {r.step:,}:\n{r.prompt}{r.text}\n")

    def _on_note(self, r: Any) -> None:
        self.print(f"note: {r.message}")

    def _on_checkpoint(self, r: Any) -> None:
        self.print(f"saved checkpoint step-{r.step}{' (best)' if r.is_best else ''}")

    def _on_finished(self, r: Any) -> None:
        how = {"completed": "finished", "stopped": "stopped", "early_stop": "stopped early (no better val loss)"}
        parts = [f"{how.get(r.reason, r.reason)} at step {r.step:,} after {human_duration(r.time_s)} of training"]
        if self.ms:

            parts.append(f"{statistics.median(self.ms):.1f} ms/iter, {human_count(statistics.median(self.tokens_per_s))} tok/s")
        if r.best_val_loss is not None:
            parts.append(f"best val loss {r.best_val_loss:.4f}")
        self.print("; ".join(parts))
        self.print(f"run saved in {r.run_dir}")
        if r.step < self.max_iters:
            self.print(f"continue with: shiftstudio resume {r.run_dir}")

    def _on_failed(self, r: Any) -> int:
        from shiftstudio.cli import error

        self.close()
        if r.detail:
            log.debug("%s", r.detail)
        message = r.message if r.expected else f"{r.message} (set SHIFTSTUDIO_LOG=debug for the traceback)"
        if f"step {r.step}" not in message and not getattr(r, "out_of_memory", False):
            message = f"training failed at step {r.step:,}: {message}"
        pieces = getattr(r, "suggested_micro_splits", 0)
        if pieces and self.run_dir:  # out of memory in a step, the last completed one saved: the command that goes on
            message += (f". Go on with: shiftstudio resume {self.run_dir} --micro_splits {pieces}"
                        " (add --on_out_of_memory split to split by itself from then on)")
        return error(message, 1)
