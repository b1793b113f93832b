"""The compare view on real run folders: a curve per run with its data, a legend, the table of differences and
figures, samples side by side at a step, the toolbar with several runs, and broken folders shown as a message."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from shiftstudio.core.runs.compare import FIGURE_ROWS, compare_runs
from shiftstudio.core.runs.layout import RunLayout
from shiftstudio.gui.compare_view import OKABE_ITO, CompareView


def records(run_dir: Path, kind: str) -> list[dict]:
    """The oracle: a run's records of one kind, parsed from metrics.jsonl line by line."""
    lines = RunLayout(run_dir).metrics_file.read_text(encoding="utf-8").splitlines()
    return [rec for rec in map(json.loads, lines) if rec["kind"] == kind]


def ema_loop(values: list[float], w: float) -> np.ndarray:
    """TensorBoard's debiased EMA, one value at a time."""
    last, count, out = 0.0, 0, []
    for v in values:
        last, count = last * w + (1 - w) * v, count + 1
        out.append(last / (1 - w**count))
    return np.array(out)


@pytest.fixture(scope="module")
def wide_run(make_tiny_run) -> Path:
    return make_tiny_run("compare-gui-wide", n_embd=32, learning_rate=3e-3)


@pytest.fixture(scope="module")
def sampled_run(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of ``tiny_run`` resumed to step 8 with a sample prompt: samples at steps 6 and 8."""
    from shiftstudio.core.train.trainer import Trainer

    run_dir = tmp_path_factory.mktemp("compare-sampled") / "run"
    shutil.copytree(tiny_run, run_dir)
    assert type(list(Trainer(run_dir, max_iters=8, sample_prompt="ROMEO:").run())[-1]).__name__ == "FinishedReport"
    return run_dir


@pytest.fixture
def view(qtbot) -> CompareView:
    widget = CompareView()
    qtbot.addWidget(widget)
    widget.resize(1200, 800)
    widget.show()
    yield widget
    widget.shutdown()


def show(qtbot, view: CompareView, runs: list[Path]) -> None:
    with qtbot.waitSignal(view.runs_loaded, timeout=30_000):
        view.set_runs(runs)


def test_a_curve_per_run_with_its_data_and_a_legend(qtbot, view, tiny_run, wide_run, tiny_k2_run) -> None:
    runs = [tiny_run, wide_run, tiny_k2_run]
    view.set_smoothing(0.0)
    show(qtbot, view, runs)
    assert view.runs == runs and not view.messages.text()
    for i, run_dir in enumerate(runs):
        train, val = records(run_dir, "train"), records(run_dir, "eval")
        curve = view.curve(i, "train")
        assert curve.isVisible()
        assert list(curve.xData) == [r["step"] for r in train] and list(curve.yData) == pytest.approx([r["loss"] for r in train])
        points = view.curve(i, "val")
        assert list(points.xData) == [r["step"] for r in val]
        assert list(points.yData) == pytest.approx([r["val_loss_per_horizon"][0] for r in val])  # head 1, also for shift 2
    labels = [f"{p.parent.name}/run" for p in runs]  # every fixture run is a folder named 'run'
    entries = view.legend_entries()
    assert [label for label, _ in entries] == labels
    colours = [colour for _, colour in entries]
    assert len(set(colours)) == 3 and all(c in OKABE_ITO for c in colours)
    for i, colour in enumerate(colours):
        assert view.curve(i, "train").opts["pen"].color().name().lower() == colour.lower()
        assert view.curve(i, "val").opts["pen"].color().name().lower() == colour.lower()
    assert all(label in view.legend.text() for label in labels)


def test_table_rows_are_the_differing_settings_then_the_figures(qtbot, view, tiny_run, wide_run, tiny_k2_run) -> None:
    runs = [tiny_run, wide_run, tiny_k2_run]
    show(qtbot, view, runs)
    table = view.table
    expected = compare_runs(runs)
    assert expected.fields == ["corpus", "n_embd", "shift", "learning_rate"]  # in the config's order
    assert [table.verticalHeaderItem(r).text() for r in range(table.rowCount())] == [*expected.fields, *FIGURE_ROWS]
    headers = [table.horizontalHeaderItem(c) for c in range(table.columnCount())]
    # each column: the run's colour and the start of its label (whole in the tooltip and the legend)
    assert all(h.toolTip().startswith(label) and label.startswith(h.text().rstrip("…"))
               for h, label in zip(headers, expected.labels))
    assert len(headers) == len(expected.labels) and all(len(h.text()) <= 16 for h in headers)
    cells = {table.verticalHeaderItem(r).text(): [table.item(r, c).text() for c in range(3)] for r in range(table.rowCount())}
    assert cells == dict(expected.rows())
    assert cells["shift"] == ["1", "1", "2"] and cells["steps"] == ["4/4"] * 3
    best = [min(r["val_loss_per_horizon"][0] for r in records(p, "eval")) for p in runs]
    assert cells["best val loss"] == [f"{b:.4f}" for b in best]


def test_x_axis_smoothing_and_log_y_with_several_runs(qtbot, view, tiny_run, wide_run) -> None:
    show(qtbot, view, [tiny_run, wide_run])
    for mode, column in (("tokens", "tokens"), ("time", "time_s"), ("step", "step")):
        view.set_x_mode(mode)
        for i, run_dir in enumerate((tiny_run, wide_run)):
            assert list(view.curve(i, "train").xData) == pytest.approx([r[column] for r in records(run_dir, "train")])
            assert list(view.curve(i, "val").xData) == pytest.approx([r[column] for r in records(run_dir, "eval")])
        longest = max(r[column] for p in (tiny_run, wide_run) for r in records(p, "train") + records(p, "eval"))
        for plot in view.plots.values():
            lo, hi = plot.getViewBox().viewRange()[0]
            assert lo <= 0 and longest <= hi <= 1.05 * longest  # both plots span the longest run
    for weight in (0.0, 0.5, 0.9):
        view.set_smoothing(weight)
        for i, run_dir in enumerate((tiny_run, wide_run)):
            losses = [r["loss"] for r in records(run_dir, "train")]
            assert list(view.curve(i, "train").yData) == pytest.approx(list(ema_loop(losses, weight)))
    view.set_log_y(True)
    assert all(plot.getViewBox().state["logMode"][1] for plot in view.plots.values())
    lo, hi = view.plots["val"].getViewBox().viewRange()[1]
    val = [r["val_loss_per_horizon"][0] for p in (tiny_run, wide_run) for r in records(p, "eval")]
    assert lo <= math.log10(min(val)) and math.log10(max(val)) <= hi


def test_samples_side_by_side_at_a_chosen_step(qtbot, view, sampled_run, tiny_run) -> None:
    show(qtbot, view, [sampled_run, tiny_run])
    texts = {r["step"]: r["prompt"] + r["text"] for r in records(sampled_run, "sample")}
    assert sorted(texts) == [6, 8]
    assert view.sample_step == 8 and view.step_label.text() == "step 8"  # the newest first
    assert view.sample_texts[0].toPlainText() == texts[8]
    assert view.sample_texts[1].toPlainText() == "(this run logged no samples)"
    view.set_step(7)  # between two evaluations: the last sample at or before it
    assert view.sample_step == 6 and view.sample_texts[0].toPlainText() == texts[6]
    assert "step 6" in view.sample_titles[0].text()
    view.step_slider.setValue(view.step_slider.maximum())
    assert view.sample_texts[0].toPlainText() == texts[8]


def test_broken_folders_show_a_message_and_the_rest_is_shown(qtbot, view, tiny_run, tmp_path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "run.json").write_text("{not json", encoding="utf-8")
    empty = tmp_path / "empty"
    empty.mkdir()
    show(qtbot, view, [tiny_run, broken, empty])
    text = view.messages.text()
    assert text.startswith("Could not read 2 of 3 runs") and "corrupt" in text and "not a run folder" in text
    assert view.messages.level() == "warning"
    assert len(view.comparison.runs) == 1 and view.curve(0, "train").isVisible()
    assert view.table.columnCount() == 1
    show(qtbot, view, [broken, empty])
    assert view.messages.level() == "error" and view.comparison is None
    assert view.table.columnCount() == 0 and not view.curve(0, "train").isVisible()
    assert view.legend.text() == "No runs to compare"


def test_another_set_of_runs_replaces_the_curves(qtbot, view, tiny_run, wide_run, tiny_k2_run) -> None:
    show(qtbot, view, [tiny_run, wide_run, tiny_k2_run])
    view.set_runs([tiny_k2_run, tiny_run])  # replaced before it is read: never shown
    show(qtbot, view, [wide_run, tiny_run])
    qtbot.wait(300)
    assert view.runs == [wide_run, tiny_run] and not view.curve(2, "train").isVisible()
    assert [figures.path for figures in view.comparison.runs] == [wide_run, tiny_run]
    assert list(view.curve(0, "val").yData) == pytest.approx([r["val_loss_per_horizon"][0] for r in records(wide_run, "eval")])
    assert view.table.columnCount() == 2 and view.comparison.fields == ["corpus", "n_embd", "learning_rate"]
    show(qtbot, view, [])
    assert view.runs == [] and view.legend_entries() == [] and view.table.rowCount() == 0


def test_a_long_run_is_clipped_and_peak_downsampled_for_the_view(qtbot, view, tiny_run, tmp_path) -> None:
    """20,000 steps with a spike: the curve gets about two points per pixel column, the spike among them; zooming
    in clips to the view (both plots share the x range)."""
    long_run = tmp_path / "long"
    long_run.mkdir()
    shutil.copy(RunLayout(tiny_run).run_file, long_run)
    n = 20_000
    loss = 3.0 + 0.1 * np.sin(np.arange(n) / 50.0)
    loss[12_345] = 9.0
    lines = [json.dumps({"kind": "train", "step": s + 1, "loss": float(loss[s]), "tokens": 32 * (s + 1), "time_s": 0.01 * s})
             for s in range(n)]
    lines += [json.dumps({"kind": "eval", "step": s, "tokens": 32 * s, "time_s": 0.01 * s, "val_loss": 3.0})
              for s in range(1000, n + 1, 1000)]
    RunLayout(long_run).metrics_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    view.set_smoothing(0.0)
    show(qtbot, view, [long_run, tiny_run])
    curve = view.curve(0, "train")
    width = view.plots["train"].getViewBox().width()
    assert len(curve.xData) < min(n / 4, 4 * width) and max(curve.yData) == 9.0
    assert view.curve(0, "val").opts["symbol"] is None or len(view.curve(0, "val").xData) * 12 <= width
    view.plots["train"].getViewBox().setXRange(12_000, 12_500, padding=0)
    assert view.plots["val"].getViewBox().viewRange()[0] == pytest.approx([12_000, 12_500])
    assert 12_000 - 10 <= curve.xData[1] and curve.xData[-2] <= 12_500 + 10 and max(curve.yData) == 9.0
    assert view.comparison.runs[0].steps == n
