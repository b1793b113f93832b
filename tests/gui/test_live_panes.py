"""The batch inspector and the playground wired into the window while a real run trains:
the inspector follows the row it is asked for, the playground samples the live weights."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from shiftstudio.gui.panes.generate import LIVE
from shiftstudio.gui.run_controller import RUNNING

LONG = {"max_iters": 100_000, "lr_decay_iters": 100_000, "eval_interval": 50, "log_interval": 2}


@pytest.fixture(autouse=True)
def _torch_imported() -> None:
    import torch  # noqa: F401


def test_inspector_and_playground_follow_a_running_training(window, qtbot) -> None:
    runs, inspector, playground = window.ctx.runs, window.panes["inspector"], window.panes["generate"]
    window.ctx.config.load_flat(LONG)
    with qtbot.waitSignal(runs.run_started, timeout=60_000):
        qtbot.mouseClick(window.panes["train"].start_button, Qt.LeftButton)
    assert runs.state == RUNNING

    # the inspector shows the batch views; picking a row makes the trainer send that row
    qtbot.waitUntil(lambda: inspector.batch is not None, timeout=30_000)
    inspector.row.setValue(3)
    qtbot.waitUntil(lambda: inspector.batch is not None and inspector.batch.row == 3, timeout=30_000)
    seen = {inspector.batch.step}
    qtbot.waitUntil(lambda: inspector.batch.step not in seen, timeout=30_000)
    assert inspector.batch.row == 3  # a later view is the same row
    inspector.row.setValue(-1)  # back to cycling

    # the playground offers the live weights while the run trains and samples from a copy of them
    sources = [playground.source.itemData(i) for i in range(playground.source.count())]
    assert LIVE in sources
    playground.source.setCurrentIndex(sources.index(LIVE))
    playground.max_tokens.setValue(40)
    playground.prompt.setPlainText("ROMEO:")
    assert playground.generate()
    qtbot.waitUntil(lambda: not playground.running, timeout=60_000)
    assert "live weights at step" in playground.title_a.text()
    # The sample: 40 tokens, or fewer ending with the end-of-document token (which writes no text). The run's
    # tokenizer is a char one: every other token is one character of the corpus.
    status = playground.status.text()
    tokens = [text for text, _, _ in playground.output_a.tokens]
    text = playground.output_text()
    assert status.startswith(f"{len(tokens)} tokens in ")
    if status.endswith("end of document"):
        assert 1 <= len(tokens) <= 40 and tokens[-1] == ""
        tokens = tokens[:-1]
    else:
        assert status.endswith("reached max new tokens") and len(tokens) == 40
    corpus_text = Path(window.ctx.session.corpus.paths[0]).read_text(encoding="utf-8")
    assert all(len(t) == 1 and t in corpus_text for t in tokens)
    assert text == "".join(tokens) and playground.output_a.toPlainText() == "ROMEO:" + text
    assert runs.state == RUNNING  # sampling did not disturb training

    # the samples written at each evaluation come from the playground's sampler: no special tokens in them
    qtbot.waitUntil(lambda: inspector.samples.count() > 0, timeout=60_000)
    samples = [inspector.samples.item(i).text() for i in range(inspector.samples.count())]
    assert all("<|endoftext|>" not in s and "<unk>" not in s for s in samples), samples

    with qtbot.waitSignal(runs.run_finished, timeout=60_000):
        runs.stop()
    qtbot.waitUntil(lambda: not runs.thread_running, timeout=30_000)
    sources = [playground.source.itemData(i) for i in range(playground.source.count())]
    assert LIVE not in sources and "latest" in sources  # the stop saved a checkpoint to sample from
