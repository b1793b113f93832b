"""What the user is working on: the corpus, its split, the tokenizer, the device.

:class:`Session` runs the long data work (open a corpus, split it, train a
tokenizer, probe the device) as :class:`~shiftstudio.gui.workers.Task` s and
publishes the results as signals. Panes show what it publishes and call its
methods; they never reach into each other. The core is imported inside the
task functions, so creating a session imports nothing heavy.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from PySide6.QtCore import QObject, QTimer, Signal

from shiftstudio import paths
from shiftstudio.config import DataConfig
from shiftstudio.core.errors import ConfigError
from shiftstudio.gui.config_model import ConfigModel
from shiftstudio.gui.workers import Task

log = logging.getLogger(__name__)

PREVIEW_CHARS = 20_000
COMPRESSION_SAMPLE_CHARS = 1_000_000  # val text encoded to measure chars per token
AUTO_CHAR_TOKENIZER_BYTES = 64_000_000  # build a char tokenizer by itself below this size
SPLIT_KEYS = ("val_fraction", "split_seed")
TOKENIZER_KEYS = ("tokenizer", "vocab_size", "min_frequency")


@dataclass
class CorpusInfo:
    paths: list[str]  # what the user opened ([] = the sample corpus)
    corpus: Any  # core.corpus.Corpus
    split: Any  # core.split.CorpusSplit
    preview: str
    warnings: list[str] = field(default_factory=list)
    errors: str = "strict"  # invalid UTF-8: "strict" (refused) or "replace" (read as U+FFFD)

    @property
    def is_sample(self) -> bool:
        return not self.paths


@dataclass
class TokenizerInfo:
    spec: str  # 'char', 'bpe' or a path
    tokenizer: Any  # core.tokenizer.TextTokenizer
    chars_per_token: float  # on (a sample of) the validation split
    longest: list[str]

    @property
    def vocab_size(self) -> int:
        return int(self.tokenizer.vocab_size)


@dataclass
class DeviceSummary:
    text: str  # e.g. "CPU (2 threads, float32)"
    kind: str  # cuda | mps | cpu
    threads: int
    gpus: int = 0  # CUDA devices this machine has (torchrun can train on all of them)


@dataclass
class InvalidUtf8:
    """The corpus task's answer when a file is not valid UTF-8 (the window offers to replace the bad bytes)."""

    message: str


def _open_corpus(sources: list[str], val_fraction: float, seed: int, errors: str = "strict") -> Callable:
    def work(progress, cancel) -> CorpusInfo | InvalidUtf8:
        from shiftstudio.core.data.corpus import Corpus
        from shiftstudio.core.data.split import make_split
        from shiftstudio.core.errors import NotUtf8Error

        try:
            corpus = Corpus.open(sources, errors=errors, progress=lambda d, t: progress("Reading corpus", d, t), cancel=cancel)
        except NotUtf8Error as exc:
            return InvalidUtf8(window_text_for_invalid_utf8(str(exc)))
        split = make_split(corpus, val_fraction, seed)
        return CorpusInfo([], corpus, split, corpus.preview(PREVIEW_CHARS), list(corpus.warnings), errors)

    return work


def window_text_for_invalid_utf8(message: str) -> str:
    """The core's not-UTF-8 message, with what to do about it in the window."""
    return f"{message}. Convert it to UTF-8, or read it with the invalid bytes replaced by \ufffd (Replace invalid bytes)."


def _split(corpus: Any, val_fraction: float, seed: int) -> Callable:
    def work(progress, cancel) -> Any:
        from shiftstudio.core.data.split import make_split

        return make_split(corpus, val_fraction, seed)

    return work


def _build_tokenizer(data: DataConfig, split: Any) -> Callable:
    def work(progress, cancel) -> TokenizerInfo:
        from shiftstudio.core.data.tokenizer import build_tokenizer

        phase = "Reading alphabet" if data.tokenizer == "char" else "Training BPE"
        tokenizer = build_tokenizer(data, split, progress=lambda d, t: progress(phase, d, t), cancel=cancel)
        sample: list[str] = []
        chars = 0
        for _, piece in split.iter_val():
            sample.append(piece)
            chars += len(piece)
            if chars >= COMPRESSION_SAMPLE_CHARS or cancel():
                break
        # encode_many, not encode: a plain BPE encode holds the GIL (~45 ms for a 64K-character piece), which stalls
        # the GUI thread; encode_many is a table lookup (char) or encode_batch_fast, which releases it
        tokens = sum(len(ids) for ids in tokenizer.encode_many(sample)) if sample and not cancel() else 0
        ratio = chars / tokens if tokens else float("nan")
        return TokenizerInfo(data.tokenizer, tokenizer, ratio, list(tokenizer.longest_tokens(24)))

    return work


def default_cpu_threads() -> int:
    """PyTorch CPU threads when the config says 0 (automatic): every core this process may use, as the CLI.

    The window trains at the CLI's speed with them (``benchmarks/bench_gui.py``: 1.01x on 2 cores, GUI-thread
    timer gaps p99 12 ms) on two conditions. The training thread runs below the window's priority
    (:func:`~shiftstudio.gui.run_openers.lower_thread_priority`). And no thread that outlives its work — the
    GUI thread above all — runs parallel torch work: OpenMP keeps a pool of workers for each thread that has,
    and with more pooled threads than cores libgomp stops spin-waiting between operations, which halved a
    small model's speed when the GUI thread had trained once (measured). Torch work goes to worker threads
    that end with it.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    return max(1, cores)


def _probe_device(progress, cancel) -> DeviceSummary:
    import torch

    from shiftstudio.core.train.device import DeviceInfo, resolve_device, resolve_dtype

    device = resolve_device("auto")
    threads = min(torch.get_num_threads(), default_cpu_threads())
    info = DeviceInfo(device, resolve_dtype("auto", device), threads)
    return DeviceSummary(info.describe(), device.type, info.threads, torch.cuda.device_count() if device.type == "cuda" else 0)


class Session(QObject):
    """The corpus, split, tokenizer and device the panes show."""

    corpus_loading = Signal(object)  # list[str]: paths being opened ([] = sample)
    corpus_progressed = Signal(str, object, object)
    corpus_opened = Signal(object)  # CorpusInfo
    corpus_failed = Signal(str, str, bool)  # message, detail, expected
    corpus_cancelled = Signal()
    split_changed = Signal(object)  # CorpusSplit
    tokenizer_loading = Signal(str)  # spec
    tokenizer_progressed = Signal(str, object, object)
    tokenizer_changed = Signal(object)  # TokenizerInfo | None (None = out of date)
    tokenizer_failed = Signal(str, str, bool)
    tokenizer_cancelled = Signal()
    device_probed = Signal(object)  # DeviceSummary

    def __init__(self, config: ConfigModel, parent: QObject | None = None):
        super().__init__(parent)
        self.config = config
        self.corpus: CorpusInfo | None = None
        self.tokenizer: TokenizerInfo | None = None
        self.device: DeviceSummary | None = None
        self.invalid_utf8_sources: list[str] | None = None  # what the last open refused for invalid UTF-8
        self._tasks: dict[str, Task] = {}
        self._split_timer = QTimer(self)
        self._split_timer.setSingleShot(True)
        self._split_timer.setInterval(300)
        self._split_timer.timeout.connect(self._on_split_timer_timeout)
        config.values_changed.connect(self._on_config_values_changed)

    # -- tasks ---------------------------------------------------------------
    def _start(self, name: str, task: Task) -> Task:
        old = self._tasks.get(name)
        if old is not None and old.is_running():
            old.cancel()  # a new task replaces the old one (its results are ignored)
        self._tasks[name] = task
        task.finished.connect(self._on_task_finished)
        return task.start()

    def _on_task_finished(self) -> None:
        task = self.sender()
        for name, current in list(self._tasks.items()):
            if current is task:
                del self._tasks[name]
        del task

    def busy(self, name: str) -> bool:
        task = self._tasks.get(name)
        return task is not None and task.is_running()

    def _current(self, name: str) -> bool:
        """Is the sender still the current task of that name (not a replaced one)?"""
        return self._tasks.get(name) is self.sender()

    def shutdown(self, ms: int | None = None) -> None:
        for task in list(self._tasks.values()):
            task.wait(ms)

    # -- corpus --------------------------------------------------------------
    def open_corpus(self, sources: list[str] | None = None, errors: str | None = None) -> None:
        """Open files/folders in a worker; ``None`` or ``[]`` opens the sample corpus. ``errors="replace"``
        reads invalid UTF-8 as U+FFFD instead of refusing the file; by default the corpus already in the
        settings (a reopened run's) is read the way it was, any other strictly. The choice goes into the
        settings (``encoding_errors``), so the run trained on it reads the corpus the same way."""
        sources = [str(s) for s in (sources or [])]
        if errors is None:
            errors = self.config.value("encoding_errors") if sources == list(self.config.value("corpus")) else "strict"
        self.config.set_value("encoding_errors", errors)
        real = sources or [str(paths.sample_corpus())]
        self.invalid_utf8_sources = None
        task = Task(_open_corpus(real, self.config.value("val_fraction"), self.config.value("split_seed"), errors), "Reading corpus")
        task.progressed.connect(self._on_corpus_task_progressed)
        task.succeeded.connect(self._on_corpus_task_succeeded)
        task.failed.connect(self._on_corpus_task_failed)
        task.cancelled.connect(self._on_corpus_task_cancelled)
        task.setProperty("sources", sources)
        self._start("corpus", task)
        self.corpus_loading.emit(sources)

    def reopen_replacing_invalid_bytes(self) -> bool:
        """Open again what was refused for invalid UTF-8, with those bytes replaced; False if nothing was."""
        if self.invalid_utf8_sources is None:
            return False
        self.open_corpus(self.invalid_utf8_sources, errors="replace")
        return True

    def cancel_corpus(self) -> None:
        for name in ("corpus", "split"):
            task = self._tasks.get(name)
            if task is not None and task.is_running():
                task.cancel()

    def _on_corpus_task_progressed(self, phase: str, done: object, total: object) -> None:
        if self._current("corpus"):
            self.corpus_progressed.emit(phase, done, total)

    def _on_corpus_task_succeeded(self, info: CorpusInfo | InvalidUtf8) -> None:
        if not self._current("corpus"):
            return
        if isinstance(info, InvalidUtf8):  # the window has its own way to read it (not the CLI's flag)
            self.invalid_utf8_sources = list(self.sender().property("sources") or [])
            self.corpus_failed.emit(info.message, "", True)
            return
        info.paths = list(self.sender().property("sources") or [])
        self.corpus = info
        self.config.set_value("corpus", info.paths)
        self.corpus_opened.emit(info)
        self._set_tokenizer(None)
        self.maybe_build_char_tokenizer()

    def _on_corpus_task_failed(self, message: str, detail: str, expected: bool) -> None:
        if not self._current("corpus"):
            return
        self.corpus_failed.emit(message, detail, expected)

    def _on_corpus_task_cancelled(self) -> None:
        if self._current("corpus"):
            self.corpus_cancelled.emit()

    # -- split ---------------------------------------------------------------
    def _on_config_values_changed(self, keys: set[str]) -> None:
        if self.corpus is not None and keys & set(SPLIT_KEYS):
            self._split_timer.start()
        if self.tokenizer is not None and keys & set(TOKENIZER_KEYS):
            if self.config.value("tokenizer") != self.tokenizer.spec or self.tokenizer.spec == "bpe":
                self._set_tokenizer(None)
            self.maybe_build_char_tokenizer()

    def _on_split_timer_timeout(self) -> None:
        if self.corpus is None or (self.config.error_keys & set(SPLIT_KEYS)):
            return
        fraction, seed = self.config.value("val_fraction"), self.config.value("split_seed")
        task = Task(_split(self.corpus.corpus, fraction, seed), "Splitting")
        task.succeeded.connect(self._on_split_task_succeeded)
        task.failed.connect(self._on_corpus_task_failed_split)
        self._start("split", task)

    def _on_split_task_succeeded(self, split: Any) -> None:
        if not self._current("split") or self.corpus is None:
            return
        self.corpus.split = split
        self.split_changed.emit(split)
        self._set_tokenizer(None)
        self.maybe_build_char_tokenizer()

    def _on_corpus_task_failed_split(self, message: str, detail: str, expected: bool) -> None:
        if self._current("split"):
            self.corpus_failed.emit(message, detail, expected)

    # -- tokenizer -----------------------------------------------------------
    def maybe_build_char_tokenizer(self) -> None:
        """A char tokenizer is cheap: build it by itself for a corpus of moderate size."""
        if (
            self.tokenizer is None
            and self.corpus is not None
            and self.config.value("tokenizer") == "char"
            and self.corpus.corpus.n_bytes <= AUTO_CHAR_TOKENIZER_BYTES
        ):
            self.train_tokenizer()

    def train_tokenizer(self) -> bool:
        """Build the tokenizer the config asks for on the current split; False without a corpus."""
        if self.corpus is None:
            self.tokenizer_failed.emit("Open a corpus first: the tokenizer is built from its text.", "", True)
            return False
        values = self.config.values()
        try:
            data = DataConfig(**{k: values[k] for k in DataConfig.__dataclass_fields__})
        except ConfigError as exc:
            self.tokenizer_failed.emit(str(exc), "", True)
            return False
        task = Task(_build_tokenizer(data, self.corpus.split), "Tokenizer")
        task.progressed.connect(self._on_tokenizer_task_progressed)
        task.succeeded.connect(self._on_tokenizer_task_succeeded)
        task.failed.connect(self._on_tokenizer_task_failed)
        task.cancelled.connect(self._on_tokenizer_task_cancelled)
        self._start("tokenizer", task)
        self.tokenizer_loading.emit(data.tokenizer)
        return True

    def cancel_tokenizer(self) -> None:
        task = self._tasks.get("tokenizer")
        if task is not None and task.is_running():
            task.cancel()

    def _set_tokenizer(self, info: TokenizerInfo | None) -> None:
        if info is None and self.tokenizer is None:
            return
        self.tokenizer = info
        self.tokenizer_changed.emit(info)

    def _on_tokenizer_task_progressed(self, phase: str, done: object, total: object) -> None:
        if self._current("tokenizer"):
            self.tokenizer_progressed.emit(phase, done, total)

    def _on_tokenizer_task_succeeded(self, info: TokenizerInfo) -> None:
        if self._current("tokenizer"):
            self._set_tokenizer(info)

    def _on_tokenizer_task_failed(self, message: str, detail: str, expected: bool) -> None:
        if self._current("tokenizer"):
            self.tokenizer_failed.emit(message, detail, expected)

    def _on_tokenizer_task_cancelled(self) -> None:
        if self._current("tokenizer"):
            self.tokenizer_cancelled.emit()

    # -- device --------------------------------------------------------------
    def probe_device(self) -> None:
        """Import torch in a worker and find the training device (never before the window shows)."""
        task = Task(_probe_device, "Device")
        task.succeeded.connect(self._on_device_task_succeeded)
        task.failed.connect(self._on_device_task_failed)
        self._start("device", task)

    def _on_device_task_succeeded(self, summary: DeviceSummary) -> None:
        self.device = summary
        self.device_probed.emit(summary)

    def _on_device_task_failed(self, message: str, detail: str, expected: bool) -> None:
        log.warning("device probe failed: %s", message)
        self.device = DeviceSummary(f"device unknown ({message})", "cpu", 0)
        self.device_probed.emit(self.device)


def corpus_label(info: CorpusInfo | None) -> str:
    if info is None:
        return "no corpus"
    if info.is_sample:
        return "sample corpus (tiny shakespeare)"
    if len(info.paths) == 1:
        return Path(info.paths[0]).name
    return f"{len(info.paths)} sources"
