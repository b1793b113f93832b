"""Out-of-memory recovery: a step that does not fit is redone with each micro-batch cut in pieces, the batch
per step (and so the run) unchanged. The device's limit is played by ``SHIFTSTUDIO_INJECT_OOM=ROWS`` (a piece
of more rows raises ``torch.OutOfMemoryError`` after its forward, as a real device does when it is full; with
``ROWS:STEP`` only from that step on); the trainer's recovery is the real one. On the GPU machine the same path
meets real CUDA OOMs.

With ``on_out_of_memory = stop`` the run ends instead, but keeps its last completed step and says how to go
on: resumed with twice the pieces (``Trainer(..., micro_splits=N)``) it trains exactly what ``split`` would have."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from shiftstudio.core.data.store import TokenStore
from shiftstudio.core.runs.layout import RunLayout
from shiftstudio.core.runs.metrics import read_metrics
from shiftstudio.core.errors import ConfigError
from shiftstudio.core.runs.checkpoint import list_checkpoints
from shiftstudio.core.runs.folder import load_run_config
from shiftstudio.core.train.reports import CheckpointReport, FailedReport, FinishedReport, NoteReport, StepReport
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
    # each note also reaches whoever drives the trainer (the CLI prints it, the window shows it), after its step
    said = [(type(r).__name__, r.step, getattr(r, "message", "")) for r in reports if isinstance(r, (NoteReport, StepReport))]
    assert said[:3] == [("NoteReport", 0, notes(squeezed)[0]), ("NoteReport", 0, notes(squeezed)[1]), ("StepReport", 1, "")]
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
    assert isinstance(last, FailedReport) and last.step == 0 and last.expected and not last.detail
    assert last.message.startswith("the device ran out of memory in step 1 (micro-batches of 8 rows); nothing was "
                                   "trained yet. To go on from there, resume with micro_splits = 2 (pieces of 4 rows")
    assert "batch_size (e.g. 4)" in last.message
    assert (last.out_of_memory, last.micro_splits, last.suggested_micro_splits) == (True, 1, 2)
    assert notes(run) == [] and list_checkpoints(run) == []  # (step 0: nothing to keep)
    failed = [r for r in read_metrics(run) if r.get("kind") == "failed"]
    assert failed[-1]["out_of_memory"] is True and failed[-1]["suggested_micro_splits"] == 2  # for programs too


def test_a_micro_batch_that_cannot_be_cut_further_fails_as_before(store: TokenStore, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    run = make_run(store, tmp_path / "tight", batch_size=2)
    monkeypatch.setenv(OOM_ENV, "0")  # not even one row fits: 2 -> 1, then nothing left to cut
    last = list(Trainer(run).run())[-1]
    assert isinstance(last, FailedReport)
    assert "ran out of memory in step 1 with micro-batches of a single row" in last.message
    assert (last.out_of_memory, last.micro_splits, last.suggested_micro_splits) == (True, 2, 0)  # nothing to offer
    assert len(notes(run)) == 1


def test_a_run_stopped_out_of_memory_keeps_its_last_step_and_goes_on_in_pieces_as_split_would(
        store: TokenStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """OOM in step 6 (the last checkpoint is step 4's): ``stop`` saves step 5, with the sampler and the RNG as
    they were before step 6 began; resumed with twice the pieces, the run trains the same batches with the same
    dropout as the ``split`` run that went on by itself, to the last bit."""
    settings = {"batch_size": 8, "max_iters": 8, "log_interval": 1, "eval_interval": 4, "dropout": 0.1}
    monkeypatch.setenv(OOM_ENV, "4:6")  # from step 6 on, pieces of more than 4 rows "do not fit"
    split = make_run(store, tmp_path / "split", **settings)
    assert isinstance(list(Trainer(split).run())[-1], FinishedReport)
    assert notes(split) == ["out of memory at step 6 with micro-batches of 8 rows: going on with 4 rows, 2 pieces "
                            "per micro-batch (the same batch per step)"]

    stop = make_run(store, tmp_path / "stop", on_out_of_memory="stop", **settings)
    reports = list(Trainer(stop).run())
    failed, saved = reports[-1], reports[-2]
    assert isinstance(failed, FailedReport) and failed.step == 5
    assert (failed.out_of_memory, failed.micro_splits, failed.suggested_micro_splits) == (True, 1, 2)
    assert "ran out of memory in step 6 (micro-batches of 8 rows); step 5 is saved" in failed.message
    assert isinstance(saved, CheckpointReport) and saved.step == 5  # the last completed step, kept
    assert [c.step for c in list_checkpoints(stop)] == [4, 5]
    state = json.loads((RunLayout(stop).checkpoint_dir(5) / "state.json").read_text())
    assert state["step"] == 5 and state["micro_splits"] == 1
    assert losses_by_step(stop) == {k: v for k, v in losses_by_step(split).items() if k <= 5}

    resumed = list(Trainer(stop, micro_splits=2).run())
    assert isinstance(resumed[-1], FinishedReport) and resumed[0].step == 5 and resumed[0].resumed
    assert notes(stop) == ["resumed with micro_splits = 2 (was 1): going on with 4 rows, 2 pieces per micro-batch "
                           "(the same batch per step)"]
    steps = [r["step"] for r in read_metrics(stop, ("train",))]
    assert steps == list(range(1, 9))  # every step logged once: step 6 went on from step 5
    assert losses_by_step(stop) == losses_by_step(split)  # bit for bit
    evals = [(r["step"], r["val_loss"]) for r in read_metrics(stop) if r.get("kind") == "eval"]
    assert evals == [(r["step"], r["val_loss"]) for r in read_metrics(split) if r.get("kind") == "eval"]
    state = json.loads((RunLayout(stop).checkpoint_dir(8) / "state.json").read_text())
    assert state["micro_splits"] == 2  # kept for the next resume, as split keeps its own


def test_a_resume_can_turn_splitting_on_for_the_rest_of_the_run(store: TokenStore, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A stopped run resumed with more pieces and ``on_out_of_memory = split`` (the window's "Always do this"):
    the policy is recorded with the run, and a later step out of memory is split by itself."""
    run = make_run(store, tmp_path / "stop", batch_size=4, max_iters=6, log_interval=1, on_out_of_memory="stop")
    monkeypatch.setenv(OOM_ENV, "1:3")  # from step 3 on only single rows fit: 4 -> 2 (asked) -> 1 (by itself)
    failed = list(Trainer(run).run())[-1]
    assert isinstance(failed, FailedReport) and failed.step == 2 and failed.suggested_micro_splits == 2
    last = list(Trainer(run, micro_splits=failed.suggested_micro_splits, on_out_of_memory="split").run())[-1]
    assert isinstance(last, FinishedReport) and last.step == 6
    assert load_run_config(run).train.on_out_of_memory == "split"
    assert notes(run) == [
        "resumed with micro_splits = 2 (was 1): going on with 2 rows, 2 pieces per micro-batch (the same batch per step)",
        "out of memory at step 3 with micro-batches of 2 rows: going on with 1 rows, 4 pieces per micro-batch (the same batch per step)",
    ]
    assert [r["step"] for r in read_metrics(run, ("train",))] == list(range(1, 7))


def test_micro_splits_must_fit_the_batch_and_only_adds_pieces(store: TokenStore, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    run = make_run(store, tmp_path / "run", batch_size=4, max_iters=2)
    for bad in (0, 5, -1, True, 2.0):
        with pytest.raises(ConfigError, match="micro_splits must be a whole number from 1 to the run's batch_size"):
            Trainer(run, micro_splits=bad)
    with pytest.raises(ConfigError, match="on_out_of_memory must be one of"):
        Trainer(run, on_out_of_memory="retry")
    monkeypatch.setenv(OOM_ENV, "2")
    assert isinstance(list(Trainer(run).run())[-1], FinishedReport)  # split: 4 rows -> 2 pieces by itself
    state = json.loads((RunLayout(run).checkpoint_dir(2) / "state.json").read_text())
    assert state["micro_splits"] == 2
    more = list(Trainer(run, max_iters=3, micro_splits=1).run())  # fewer than the run has: the run's stay
    assert isinstance(more[-1], FinishedReport) and len(notes(run)) == 1
    assert json.loads((RunLayout(run).checkpoint_dir(3) / "state.json").read_text())["micro_splits"] == 2


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


def test_a_note_in_the_log_is_a_note_to_a_window_that_follows_the_run(store: TokenStore, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A run trained by another process (torchrun, the CLI) is followed from its log: its notes come back as the
    reports the trainer yielded."""
    from shiftstudio.core.train.remote import report_from_record

    run = make_run(store, tmp_path / "run", batch_size=8, max_iters=2, log_interval=1, eval_interval=2)
    monkeypatch.setenv(OOM_ENV, "4")
    yielded = [r for r in Trainer(run).run() if isinstance(r, NoteReport)]
    logged = [report_from_record(r) for r in read_metrics(run) if r.get("kind") == "note"]
    assert len(yielded) == 1 and logged == yielded
