"""Sampling off the GUI thread for the playground: where the weights come from, and the worker.

A :class:`GenerationWorker` lives on its own ``QThread``. It loads the weights
(a checkpoint, its EMA copy, a copy of a running training's weights handed
over by :class:`~shiftstudio.gui.run_controller.RunController`, or a local
Hugging Face folder, with no run at all) and advances one
or two :class:`~shiftstudio.core.generate.generation.Generation` iterators a token at a
time, round robin, sending tokens to the GUI in batches (at most ~30 a second).
Stop is a flag checked before every token, so it ends a stream within one.

With ``speculative`` each stream whose model has K >= 2 heads decodes
speculatively (heads 2..K draft, head 1 verifies); a 1-head model decodes
plainly. Each batch and each end carries the stream's stats as a plain dict
(:func:`stream_stats`): tokens, the seconds spent generating them, tokens/s,
passes, accepted drafts, mean accepted drafts per pass and their histogram.
Only plain data leaves the thread.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from PySide6.QtCore import QObject, Signal, Slot

log = logging.getLogger(__name__)

EMIT_INTERVAL_S = 1 / 30
LATEST, BEST, LIVE, HF = "latest", "best", "live", "hf"


@dataclass
class Source:
    """Where the weights come from: a checkpoint of a run, a live snapshot, or a Hugging Face folder (``run_dir``
    is then the folder, ``checkpoint`` :data:`HF`)."""

    run_dir: Path | None
    checkpoint: str  # "latest" | "best" | "step-N" | "live" | "hf"
    ema: bool = False

    @classmethod
    def hf_folder(cls, folder: str | Path) -> "Source":
        return cls(Path(folder), HF)

    @property
    def label(self) -> str:
        if self.checkpoint == HF:
            return f"base {self.run_dir.name if self.run_dir else ''} (Hugging Face)"
        name = {LATEST: "latest checkpoint", BEST: "best checkpoint", LIVE: "live weights"}.get(self.checkpoint, self.checkpoint)
        return name + (" (EMA)" if self.ema else "")


# -- the worker ------------------------------------------------------------------


class GenerationWorker(QObject):
    """Loads the weights and samples, off the GUI thread; only plain data leaves it."""

    loaded = Signal(int, str)  # stream index, description of the weights
    tokens = Signal(int, object, object)  # stream index, list of (text, prob, top, drafted) tuples, stats dict
    finished = Signal(int, str, int, float, object)  # stream index, reason, tokens, seconds, stats dict
    failed = Signal(str)
    done = Signal()

    def __init__(self, sources: list[Source], prompt: str, settings: Any, snapshot: Callable[[], Any] | None = None,
                 speculative: bool = True):
        super().__init__()
        self.sources = sources
        self.prompt = prompt
        self.settings = settings
        self.snapshot = snapshot
        self.speculative = speculative  # for the streams whose model has K >= 2 heads
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    @Slot()
    def run(self) -> None:
        try:
            self._run()
        except Exception as exc:  # noqa: BLE001 - becomes a message in the pane
            from shiftstudio.gui.workers import describe_error

            text, detail, expected = describe_error(exc)
            if not expected:
                log.error("generation failed:\n%s", detail)
            self.failed.emit(text)
        finally:
            self.done.emit()

    def _load(self, source: Source):
        from shiftstudio.core.runs.loading import load_any, load_model

        if source.checkpoint == HF:
            model, tokenizer, _ = load_any(source.run_dir)
            return model, tokenizer, source.label
        if source.checkpoint == LIVE:
            if self.snapshot is None:
                from shiftstudio.core.errors import RunError

                raise RunError("no training is running: pick a checkpoint instead of the live weights")
            model, tokenizer, step = self.snapshot()  # already an independent CPU copy
            return model, tokenizer, f"live weights at step {step}"
        model, tokenizer, meta = load_model(source.run_dir, source.checkpoint, ema=source.ema)
        return model, tokenizer, f"step {meta['step']}" + (" (EMA)" if source.ema else "")

    def _run(self) -> None:
        from shiftstudio.core.generate.generation import Generation

        streams = []
        for i, source in enumerate(self.sources):
            model, tokenizer, what = self._load(source)
            self.loaded.emit(i, what)
            heads = model_heads(model)
            streams.append(Generation(model, tokenizer, self.prompt, self.settings,
                                      speculative=self.speculative and heads >= 2))
        iterators = [iter(g) for g in streams]
        pending: list[list[tuple]] = [[] for _ in streams]
        self._counts = [0] * len(streams)
        self._busy = [0.0] * len(streams)  # seconds spent in each stream's own steps (compared streams take turns)
        live = set(range(len(streams)))
        last_emit = 0.0
        while live and not self._stop.is_set():
            for i in sorted(live):  # round robin: compared streams grow side by side
                if self._stop.is_set():
                    break
                t0 = time.perf_counter()
                token = next(iterators[i], None)
                self._busy[i] += time.perf_counter() - t0
                if token is None:
                    live.discard(i)
                    self._flush(i, pending, streams)
                    self._finish(i, streams[i].finish_reason or "length", streams)
                    continue
                self._counts[i] += 1
                pending[i].append((token.text, token.prob, token.top, bool(getattr(token, "drafted", False))))
            now = time.perf_counter()
            if now - last_emit >= EMIT_INTERVAL_S:
                last_emit = now
                for i in range(len(streams)):
                    self._flush(i, pending, streams)
        for i in sorted(live):  # stopped by the user
            self._flush(i, pending, streams)
            self._finish(i, "stopped", streams)

    def _stats(self, i: int, streams: list) -> dict[str, Any]:
        return stream_stats(streams[i], self._counts[i], self._busy[i])

    def _flush(self, i: int, pending: list[list[tuple]], streams: list) -> None:
        if pending[i]:
            self.tokens.emit(i, pending[i][:], self._stats(i, streams))
            pending[i].clear()

    def _finish(self, i: int, reason: str, streams: list) -> None:
        self.finished.emit(i, reason, self._counts[i], self._busy[i], self._stats(i, streams))


def model_heads(model: Any) -> int:
    """K, the number of heads of a loaded model (1 for one without a ``shift``)."""
    model = getattr(model, "_orig_mod", model)
    shift = getattr(getattr(model, "config", None), "shift", 1)
    return shift if isinstance(shift, int) and shift >= 1 else 1


def stream_stats(generation: Any, count: int, seconds: float) -> dict[str, Any]:
    """A stream's stats as plain data (what crosses from the worker's thread to the GUI)."""
    histogram = getattr(generation, "accepted_histogram", None)
    return {
        "tokens": count,
        "seconds": seconds,
        "tokens_per_s": count / seconds if seconds > 0 else 0.0,
        "speculative": bool(getattr(generation, "speculative", False)),
        "heads": model_heads(getattr(generation, "model", None)),
        "passes": int(getattr(generation, "passes", 0)),
        "accepted": int(getattr(generation, "accepted", 0)),
        "mean_accepted_per_pass": float(getattr(generation, "mean_accepted_per_pass", 0.0)),
        "histogram": [int(n) for n in histogram] if histogram is not None else [],
    }
