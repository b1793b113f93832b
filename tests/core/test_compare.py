"""Comparing runs: the settings that differ, the figures each run's metrics.jsonl gives, samples at a step."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from shiftstudio.config import RunConfig
from shiftstudio.core.errors import RunError
from shiftstudio.core.runs.compare import (
    FIGURE_ROWS,
    clock,
    compare_runs,
    differing_fields,
    run_labels,
    samples_at,
)
from shiftstudio.core.runs.layout import RunLayout
from shiftstudio.core.train.trainer import Trainer


def metrics_lines(run_dir: Path) -> list[dict]:
    """The oracle: metrics.jsonl parsed line by line, nothing of the code under test."""
    return [json.loads(line) for line in RunLayout(run_dir).metrics_file.read_text(encoding="utf-8").splitlines()]


def expected_figures(run_dir: Path) -> dict:
    lines = metrics_lines(run_dir)
    evals = [r for r in lines if r["kind"] == "eval"]
    head1 = [r["val_loss_per_horizon"][0] for r in evals]
    counted = [r for r in lines if r["kind"] in ("train", "eval", "finished")]
    return {
        "best_val_loss": min(head1), "last_val_loss": head1[-1], "steps": max(r["step"] for r in counted),
        "tokens": max(r["tokens"] for r in counted), "time_s": max(r["time_s"] for r in counted),
    }


@pytest.fixture(scope="module")
def wide_run(make_tiny_run) -> Path:
    """A second run that differs from ``tiny_run`` in width and learning rate (and keeps more checkpoints)."""
    return make_tiny_run("compare-wide", n_embd=32, learning_rate=3e-3, keep_checkpoints=5)


@pytest.fixture(scope="module")
def sampled_run(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of ``tiny_run`` resumed to step 8 with a sample prompt: samples at the evaluations of steps 6 and 8
    (none at 2 and 4)."""
    run_dir = tmp_path_factory.mktemp("sampled") / "run"
    shutil.copytree(tiny_run, run_dir)
    reports = list(Trainer(run_dir, max_iters=8, sample_prompt="ROMEO:").run())
    assert type(reports[-1]).__name__ == "FinishedReport", reports[-1]
    return run_dir


def test_differing_fields_in_config_order_without_bookkeeping() -> None:
    base = RunConfig()
    other = base.updated({"learning_rate": 3e-3, "n_layer": 6, "keep_checkpoints": 9, "log_interval": 1, "num_threads": 2})
    third = base.updated({"vocab_size": 512})
    assert differing_fields([base, base]) == []
    assert differing_fields([base, other]) == ["n_layer", "learning_rate"]  # model section before train
    assert differing_fields([base, other, third]) == ["vocab_size", "n_layer", "learning_rate"]
    assert differing_fields([base, base.updated({"checkpoint_interval": 100})]) == []


def test_compare_runs_lists_what_differs_and_what_metrics_jsonl_says(tiny_run: Path, wide_run: Path) -> None:
    comparison = compare_runs([tiny_run, wide_run])
    # each fixture run has its own copy of the corpus, so its path differs too; keep_checkpoints is bookkeeping
    assert comparison.fields == ["corpus", "n_embd", "learning_rate"]
    assert comparison.values(0)["n_embd"] == 16 and comparison.values(1)["n_embd"] == 32
    assert comparison.values(1)["learning_rate"] == 3e-3
    for run_dir, figures in zip((tiny_run, wide_run), comparison.runs):
        expected = expected_figures(run_dir)
        assert figures.path == run_dir and figures.name == "run"
        assert figures.best_val_loss == pytest.approx(expected["best_val_loss"])
        assert figures.last_val_loss == pytest.approx(expected["last_val_loss"])
        assert (figures.steps, figures.max_iters, figures.tokens) == (expected["steps"], 4, expected["tokens"])
        assert figures.time_s == pytest.approx(expected["time_s"])
    # both folders are named 'run': the labels add the parent folder to tell them apart
    assert comparison.labels == [f"{tiny_run.parent.name}/run", f"{wide_run.parent.name}/run"]


def test_json_and_rows(tiny_run: Path, wide_run: Path) -> None:
    comparison = compare_runs([tiny_run, wide_run])
    data = json.loads(json.dumps(comparison.to_json()))
    assert data["fields"] == comparison.fields
    first = data["runs"][0]
    assert first["path"] == str(tiny_run) and first["config"]["n_embd"] == 16 and set(first["config"]) == set(data["fields"])
    assert first["best_val_loss"] == pytest.approx(expected_figures(tiny_run)["best_val_loss"])
    rows = dict(comparison.rows())
    assert list(rows) == [*comparison.fields, *FIGURE_ROWS]
    assert rows["n_embd"] == ["16", "32"] and rows["learning_rate"] == ["0.001", "0.003"]
    assert rows["steps"] == ["4/4", "4/4"] and rows["tokens"] == ["128", "128"]
    assert rows["best val loss"][0] == f"{expected_figures(tiny_run)['best_val_loss']:.4f}"
    assert all(re.fullmatch(r"\d+:\d\d:\d\d", cell) for cell in rows["wall time"])


def test_head_one_is_the_figure_of_a_shifted_run(tiny_k2_run: Path, tiny_run: Path) -> None:
    figures = compare_runs([tiny_k2_run, tiny_run]).runs[0]
    evals = [r for r in metrics_lines(tiny_k2_run) if r["kind"] == "eval"]
    assert figures.best_val_loss == pytest.approx(min(r["val_loss_per_horizon"][0] for r in evals))
    assert figures.best_val_loss != pytest.approx(min(r["val_loss_all_heads"] for r in evals))


def test_a_resumed_run_counts_every_step_and_its_new_plan(sampled_run: Path, tiny_run: Path) -> None:
    figures = compare_runs([sampled_run, tiny_run]).runs[0]
    expected = expected_figures(sampled_run)
    assert (figures.steps, figures.max_iters) == (8, 8)
    assert figures.last_val_loss == pytest.approx(expected["last_val_loss"])
    assert figures.best_val_loss == pytest.approx(expected["best_val_loss"])


def test_samples_at_a_step_are_the_last_at_or_before_it(sampled_run: Path, tiny_run: Path) -> None:
    logged = {r["step"]: r for r in metrics_lines(sampled_run) if r["kind"] == "sample"}
    assert sorted(logged) == [6, 8]
    assert samples_at(sampled_run, 5) is None  # nothing sampled yet
    for step, at in ((6, 6), (7, 6), (8, 8), (1000, 8)):
        sample = samples_at(sampled_run, step)
        assert (sample.step, sample.prompt, sample.text) == (at, "ROMEO:", logged[at]["text"])
    assert samples_at(tiny_run, 4) is None  # a run trained without a sample prompt


def test_errors_are_one_line_run_errors(tiny_run: Path, wide_run: Path, tmp_path: Path) -> None:
    with pytest.raises(RunError, match="two runs or more, got 1"):
        compare_runs([tiny_run])
    with pytest.raises(RunError, match="given twice"):
        compare_runs([tiny_run, tiny_run.parent / ".." / tiny_run.parent.name / "run"])
    with pytest.raises(RunError, match="not a run folder"):
        compare_runs([tiny_run, tmp_path])
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "run.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(RunError, match="corrupt") as caught:
        compare_runs([tiny_run, wide_run, broken])
    assert "\n" not in str(caught.value)
    with pytest.raises(RunError, match="not a run folder"):
        samples_at(tmp_path, 4)


def test_junk_records_are_skipped(tiny_run: Path, wide_run: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    with RunLayout(run_dir).metrics_file.open("a", encoding="utf-8") as fh:
        fh.write('{"kind": "train", "step": "many", "tokens": 1e9}\n{"kind": "eval", "step": 3, "val_loss": NaN}\n')
        fh.write('{"kind": "sample", "step": null, "text": "?"}\n{"kind": "eval", "step": 4, "tok\n')
    figures = compare_runs([run_dir, wide_run]).runs[0]
    expected = expected_figures(tiny_run)
    assert (figures.steps, figures.tokens) == (expected["steps"], expected["tokens"])
    assert figures.best_val_loss == pytest.approx(expected["best_val_loss"])
    assert samples_at(run_dir, 100) is None


def test_labels_and_clock() -> None:
    assert run_labels([Path("/x/a"), Path("/x/b")]) == ["a", "b"]
    assert run_labels([Path("/x/a/run"), Path("/y/b/run"), Path("/z/c")]) == ["a/run", "b/run", "c"]
    assert run_labels([Path("/p/a/run"), Path("/q/a/run")]) == ["p/a/run", "q/a/run"]
    assert clock(0.4) == "0:00:00" and clock(61) == "0:01:01" and clock(3 * 3600 + 5) == "3:00:05"
