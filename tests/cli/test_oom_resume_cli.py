"""``shiftstudio resume --micro_splits N``: a run that stopped out of memory (``on_out_of_memory = stop``) says the
command that goes on, and that command trains on from the step it kept. The device's limit is played by
``SHIFTSTUDIO_INJECT_OOM`` (see tests/core/test_oom.py); the trainer and the CLI are the real ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_helpers import assert_one_line_error, run_cli
from shiftstudio.core.runs.checkpoint import list_checkpoints
from shiftstudio.core.runs.metrics import read_metrics
from shiftstudio.core.train.trainer import OOM_ENV

TINY = [
    "--n_layer=2", "--n_head=2", "--n_embd=32", "--block_size=16", "--batch_size=4", "--max_iters=8",
    "--warmup_iters=2", "--eval_interval=6", "--eval_iters=2", "--log_interval=1", "--device=cpu", "--num_threads=1",
]


def test_a_run_out_of_memory_says_how_to_go_on_and_resume_goes_on_in_pieces(
        tmp_path: Path, small_corpus: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir = tmp_path / "run"
    monkeypatch.setenv(OOM_ENV, "2:4")  # from step 4 on, pieces of more than 2 rows "do not fit"
    code, out, err = run_cli(capsys, "train", "--corpus", small_corpus, *TINY, "--on_out_of_memory=stop", "--out", run_dir)
    assert code == 1
    assert_one_line_error(err, "the device ran out of memory in step 4 (micro-batches of 4 rows); step 3 is saved",
                          f"Go on with: shiftstudio resume {run_dir} --micro_splits 2")
    assert "training failed at step" not in err  # (the message says where it stands)
    assert [c.step for c in list_checkpoints(run_dir)] == [3]

    for bad, needle in (("0", "--micro_splits must be a whole number from 1 to the run's batch_size (4), got 0"),
                        ("5", "got 5"), ("two", "--micro_splits expects a whole number, got 'two'")):
        code, out, err = run_cli(capsys, "resume", run_dir, "--micro_splits", bad)
        assert code == 2
        assert_one_line_error(err, needle)
    code, out, err = run_cli(capsys, "resume", run_dir, "--micro_splits=2", "--on_out_of_memory=retry")
    assert code == 2
    assert_one_line_error(err, "--on_out_of_memory must be one of split, stop, got 'retry'")
    assert [c.step for c in list_checkpoints(run_dir)] == [3]  # nothing trained

    code, out, err = run_cli(capsys, "resume", run_dir, "--micro-splits", "2")  # (either spelling)
    assert code == 0, err
    assert "resuming at step 3 of 8" in out and "finished at step 8" in out
    assert [r["step"] for r in read_metrics(run_dir, ("train",))] == list(range(1, 9))  # each step once
    notes = [r["message"] for r in read_metrics(run_dir) if r.get("kind") == "note"]
    assert notes == ["resumed with micro_splits = 2 (was 1): going on with 2 rows, 2 pieces per micro-batch "
                     "(the same batch per step)"]
    assert f"note: {notes[0]}\n" in out  # said where the person running it reads
    assert json.loads((run_dir / "run.json").read_text())["config"]["train"]["on_out_of_memory"] == "stop"
