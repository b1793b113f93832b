"""A corpus of tens of megabytes in the real window: opening it and building its store can be stopped at any
point, leaves nothing behind, and never holds up the GUI thread.

(The 1 GB version, with timings, is ``benchmarks/bench_gui_load.py``.)
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from PySide6.QtCore import QObject, Qt, QTimer

from tests.gui.conftest import TINY

CORPUS_MB = 24  # big enough that each phase takes a good part of a second here, small enough for the suite
LINES = [
    "Ô déesse, où sont les neiges d'antan ? — Ça ira !",
    "春眠不觉晓，处处闻啼鸟。夜来风雨声，花落知多少。",
    "Быть или не быть, вот в чём вопрос.",
]


@pytest.fixture(scope="module")
def large_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """~24 MB of real text: the sample corpus's speeches, a block at a time in a new order, some non-ASCII."""
    import random

    text = (Path(__file__).resolve().parents[2] / "resources" / "tinyshakespeare.txt").read_text(encoding="utf-8")
    speeches = [p for p in text.split("\n\n") if p.strip()]
    rng = random.Random(0)
    path = tmp_path_factory.mktemp("large") / "large.txt"
    with path.open("w", encoding="utf-8") as fh:
        written = block = 0
        while written < CORPUS_MB * 1_000_000:
            rng.shuffle(speeches)
            piece = f"== Book {block} ==\n\n" + "\n\n".join(
                s + ("\n" + rng.choice(LINES) if rng.random() < 0.02 else "") for s in speeches) + "\n\n"
            fh.write(piece)
            written += len(piece.encode("utf-8"))
            block += 1
    return path


class Ticker(QObject):
    """A 10 ms timer in the GUI thread; the gaps between its ticks say how long the thread was held."""

    def __init__(self) -> None:
        super().__init__()
        self.ticks: list[float] = []
        self.timer = QTimer(self)
        self.timer.setInterval(10)
        self.timer.setTimerType(Qt.PreciseTimer)
        self.timer.timeout.connect(self.on_timeout)
        self.timer.start()

    def on_timeout(self) -> None:
        self.ticks.append(time.perf_counter())

    def gaps(self) -> list[float]:
        return sorted(b - a for a, b in zip(self.ticks, self.ticks[1:]))


def leftovers(home: Path) -> list[str]:
    """Store folders (finished or temporary) and run folders: a stopped build must leave none."""
    found = []
    for folder in (home / "cache" / "stores", home / "data" / "runs"):
        if folder.is_dir():
            found += [str(p.relative_to(home)) for p in folder.iterdir()]
    return found


def click_when(qtbot, signal, phase: str, fraction: float, button, seen: list) -> None:
    """Click ``button`` once ``signal`` reports ``phase`` past ``fraction`` (a real mouse click, in the GUI thread,
    as the report arrives); every report goes to ``seen`` as (phase, done/total)."""

    def slot(ph, done, total):
        seen.append((ph, done / total if total else 0.0))
        if ph == phase and total and done / total >= fraction and not getattr(slot, "fired", False):
            slot.fired = True
            qtbot.mouseClick(button, Qt.LeftButton)

    signal.connect(slot)


def test_opening_a_large_corpus_can_be_cancelled_midway_then_opens(empty_window, qtbot, large_corpus) -> None:
    session, pane = empty_window.ctx.session, empty_window.panes["corpus"]
    seen: list = []
    # (the scan reads ~300 MB/s here: Cancel at its first report, 1 MB in)
    click_when(qtbot, session.corpus_progressed, "Reading corpus", 0.0, pane.progress.cancel_button, seen)
    with qtbot.waitSignal(session.corpus_cancelled, timeout=60_000):
        empty_window.open_corpus([str(large_corpus)])
    assert session.corpus is None, "a cancelled open must not leave a half-read corpus in the window"
    scanned = [f for ph, f in seen if ph == "Reading corpus"]
    assert scanned and max(scanned) < 1.0, f"the scan was not stopped midway: {scanned[-3:]}"
    qtbot.waitUntil(lambda: not session.busy("corpus"), timeout=10_000)

    with qtbot.waitSignal(session.corpus_opened, timeout=120_000) as opened:
        empty_window.open_corpus([str(large_corpus)])
    assert opened.args[0].corpus.n_bytes == large_corpus.stat().st_size


@pytest.mark.parametrize("phase", ["tokenizer", "encoding"])
def test_stop_while_the_store_is_built_cancels_it_and_leaves_nothing(empty_window, qtbot, large_corpus, phase,
                                                                      _isolated_home) -> None:
    """Start, then Stop while the store is half built (its alphabet read, or its ids half written): the window
    answers 'cancelled' and not with a run; no store, temporary folder or run folder is left; Start works again."""
    session, runs, train = empty_window.ctx.session, empty_window.ctx.runs, empty_window.panes["train"]
    with qtbot.waitSignal(session.corpus_opened, timeout=120_000):
        empty_window.open_corpus([str(large_corpus)])
    qtbot.waitUntil(lambda: not session.busy("tokenizer"), timeout=120_000)
    empty_window.ctx.config.load_flat({**TINY, "max_iters": 100_000, "lr_decay_iters": 100_000})
    assert empty_window.ctx.config.is_valid, empty_window.ctx.config.error
    ticker = Ticker()
    seen: list = []
    started: list = []
    runs.run_started.connect(started.append)
    click_when(qtbot, runs.prepare_progressed, phase, 0.3, train.stop_button, seen)
    with qtbot.waitSignal(runs.run_cancelled, timeout=120_000):
        qtbot.mouseClick(train.start_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: not runs.thread_running, timeout=30_000)

    assert not started, "the build ran to the end and a run started: Stop did not reach it"
    in_phase = [f for ph, f in seen if ph == phase]
    assert in_phase and 0.3 <= max(in_phase) < 1.0, f"{phase} was not stopped midway: {in_phase[-3:]}"
    assert "encoding" not in [ph for ph, _ in seen] or phase == "encoding"
    assert leftovers(_isolated_home) == []
    assert runs.start_action.isEnabled() and not runs.is_active

    # and the next Start builds the whole store and trains
    with qtbot.waitSignal(runs.run_started, timeout=180_000):
        qtbot.mouseClick(train.start_button, Qt.LeftButton)
    ticker.timer.stop()
    gaps = ticker.gaps()  # the cancelled build and the whole one
    assert len(gaps) > 20  # (the cancelled build and the whole one: ~0.4 s on a quiet machine, more on a busy one)
    p95 = gaps[int(0.95 * (len(gaps) - 1))]
    # Generous bars for a shared 2-core machine (the benchmark holds the 50 ms p99 bar on a quiet one); a build
    # done in the GUI thread, or one holding the GIL for a whole batch, shows up as a second or more.
    assert p95 < 0.1, f"5% of the GUI timer ticks came {1000 * p95:.0f} ms or more apart"
    assert gaps[-1] < 0.5, f"the GUI thread stalled for {1000 * gaps[-1]:.0f} ms"
    stores = [p for p in (_isolated_home / "cache" / "stores").iterdir()]
    assert len(stores) == 1 and not stores[0].name.startswith(".prepare-")
    assert (stores[0] / "meta.json").is_file()
    with qtbot.waitSignal(runs.run_finished, timeout=60_000):
        runs.stop()
