"""Sampling off the GUI thread for the playground: where the weights come from, and the worker.

A :class:`GenerationWorker` lives on its own ``QThread``. It loads the weights
(a checkpoint, its EMA copy, a copy of a running training's weights handed
over by :class:`~shiftstudio.gui.run_controller.RunController`, or a local
Hugging Face folder, with no run at all) and advances one
or two :class:`~shiftstudio.core.generate.generation.Generation` iterators a token at a
time, round robin, sending tokens to the GUI in batches (at most ~30 a second).
Stop is a flag checked before every token, so it ends a stream within one.
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
    tokens = Signal(int, object)  # stream index, list of (text, prob, top) tuples
    finished = Signal(int, str, int, float)  # stream index, reason, tokens, seconds
    failed = Signal(str)
    done = Signal()

    def __init__(self, sources: list[Source], prompt: str, settings: Any, snapshot: Callable[[], Any] | None = None):
        super().__init__()
        self.sources = sources
        self.prompt = prompt
        self.settings = settings
        self.snapshot = snapshot
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
            streams.append(Generation(model, tokenizer, self.prompt, self.settings))
        iterators = [iter(g) for g in streams]
        pending: list[list[tuple]] = [[] for _ in streams]
        counts = [0] * len(streams)
        started = [time.perf_counter()] * len(streams)
        live = set(range(len(streams)))
        last_emit = 0.0
        while live and not self._stop.is_set():
            for i in sorted(live):  # round robin: compared streams grow side by side
                if self._stop.is_set():
                    break
                token = next(iterators[i], None)
                if token is None:
                    live.discard(i)
                    self._flush(i, pending)
                    self.finished.emit(i, streams[i].finish_reason or "length", counts[i], time.perf_counter() - started[i])
                    continue
                counts[i] += 1
                pending[i].append((token.text, token.prob, token.top))
            now = time.perf_counter()
            if now - last_emit >= EMIT_INTERVAL_S:
                last_emit = now
                for i in range(len(streams)):
                    self._flush(i, pending)
        for i in sorted(live):  # stopped by the user
            self._flush(i, pending)
            self.finished.emit(i, "stopped", counts[i], time.perf_counter() - started[i])

    def _flush(self, i: int, pending: list[list[tuple]]) -> None:
        if pending[i]:
            self.tokens.emit(i, pending[i][:])
            pending[i].clear()
