"""Out-of-memory recovery: a step that does not fit is redone with each micro-batch cut in pieces, the batch
per step (and so the run) unchanged. The device's limit is played by ``SHIFTSTUDIO_INJECT_OOM=ROWS`` (a piece
of more rows raises ``torch.OutOfMemoryError``, as a real device does when it is full); the trainer's
recovery is the real one. On the GPU machine the same path meets real CUDA OOMs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from shiftstudio.core.data.store import TokenStore
from shiftstudio.core.runs.layout import RunLayout
from shiftstudio.core.runs.metrics import read_metrics
from shiftstudio.core.train.reports import FailedReport, FinishedReport
from shiftstudio.core.train.trainer import OOM_ENV, Trainer, _pieces

from test_trainer import losses_by_step, make_run


def notes(run: Path) -> list[str]:
    return [r["message"] for r in read_metrics(run) if r.get("kind") == "note"]


def test_a_step_out_of_memory_is_redone_in_pieces_with_the_same_results(store: TokenStore, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    settings = {"batch_size": 8, "max_iters": 6, "log_interval": 1, "eval_interval": 3, "dropout": 0.0}
    plain = make_run(store, tmp_path / "plain", **settings)
    assert isinstance(list(Trainer(plain).run())[-1], FinishedReport)
    squeezed = make_run(store, tmp_path / "squeezed", **settings)
    monkeypatch.setenv(OOM_ENV, "2")  # pieces of more than 2 rows "do not fit"
    reports = list(Trainer(squeezed).run())
    assert isinstance(reports[-1], FinishedReport), reports[-1]
    # 8 rows -> 4 -> 2: two notes at the first step, then it goes on
    assert notes(squeezed) == [
        "out of memory at step 1 with micro-batches of 8 rows: going on with 4 rows, 2 pieces per micro-batch (the same batch per step)",
        "out of memory at step 1 with micro-batches of 4 rows: going on with 2 rows, 4 pieces per micro-batch (the same batch per step)",
    ]
    a, b = losses_by_step(plain), losses_by_step(squeezed)
    assert sorted(b) == list(range(1, 7)) and b == pytest.approx(a, abs=1e-5)  # the same run, to float rounding
    evals = [r["val_loss"] for r in read_metrics(squeezed) if r.get("kind") == "eval"]
    assert evals == pytest.approx([r["val_loss"] for r in read_metrics(plain) if r.get("kind") == "eval"], abs=1e-5)
    state = json.loads((RunLayout(squeezed).checkpoint_dir(6) / "state.json").read_text())
    assert state["micro_splits"] == 4  # a resumed run starts in pieces, not with another OOM
    more = list(Trainer(squeezed, max_iters=8).run())
    assert isinstance(more[-1], FinishedReport) and len(notes(squeezed)) == 2


def test_with_stop_a_step_out_of_memory_ends_the_run_with_advice(store: TokenStore, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    run = make_run(store, tmp_path / "stop", batch_size=8, on_out_of_memory="stop")
    monkeypatch.setenv(OOM_ENV, "2")
    last = list(Trainer(run).run())[-1]
    assert isinstance(last, FailedReport)
    assert "ran out of memory at step 0" in last.message and "batch_size (e.g. 4)" in last.message
    assert notes(run) == []


def test_a_micro_batch_that_cannot_be_cut_further_fails_as_before(store: TokenStore, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    run = make_run(store, tmp_path / "tight", batch_size=2)
    monkeypatch.setenv(OOM_ENV, "0")  # not even one row fits: 2 -> 1, then nothing left to cut
    last = list(Trainer(run).run())[-1]
    assert isinstance(last, FailedReport) and "ran out of memory at step 0" in last.message
    assert len(notes(run)) == 1


def test_pieces_weigh_their_share_of_the_scored_targets() -> None:
    """With a loss mask (fine-tuning data), the pieces' head losses weighted by their shares give the whole
    batch's masked means exactly as one forward does."""
    from shiftstudio.config import ModelConfig
    from shiftstudio.core.data.batches import Batch
    from shiftstudio.core.model.gpt import GPT

    torch.manual_seed(0)
    model = GPT(ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, shift=2), 30).eval()
    x = torch.randint(0, 30, (6, 8))
    y = torch.randint(0, 30, (6, 2, 8))
    mask = (torch.rand(6, 2, 8) > 0.6).float()
    mask[0] = 0.0  # a row with nothing scored
    with torch.no_grad():
        whole = model(x, y, mask).head_losses
        pieces = _pieces(Batch(x, y, mask), 3)
        assert torch.stack([share for _, share in pieces]).sum(0).tolist() == pytest.approx([1.0, 1.0])
        summed = sum(model(p.x, p.y, p.mask).head_losses * share for p, share in pieces)
    assert summed.tolist() == pytest.approx(whole.tolist(), abs=1e-6)
