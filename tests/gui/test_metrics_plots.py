"""Curves: growing buffers, TensorBoard smoothing, setData on existing items, exports."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from shiftstudio.core.reports import EvalReport, StepReport
from shiftstudio.gui.metrics_store import Ema, MetricsStore


def steps(first: int, n: int) -> list[StepReport]:
    return [
        StepReport(step=s, loss=3.0 - 0.01 * s, lr=1e-3, grad_norm=1.0, tokens_per_s=1000.0, tokens=128 * s, time_s=0.1 * s, ms_per_iter=10.0)
        for s in range(first, first + n)
    ]


def evaluation(step: int, val: float) -> EvalReport:
    return EvalReport(step=step, tokens=128 * step, time_s=0.1 * step, train_loss=val - 0.1, val_loss=val,
                      val_ppl=math.exp(val), train_ppl=math.exp(val - 0.1), best_val_loss=val, is_best=True)


def test_store_grows_and_replays_a_resumed_tail() -> None:
    store = MetricsStore()
    store.add_steps(steps(1, 1500))
    assert len(store.steps) == 1500 and store.steps["step"][-1] == 1500
    store.add_steps(steps(1001, 10))  # resumed from a checkpoint at step 1000
    assert len(store.steps) == 1010
    assert list(store.steps["step"][-3:]) == [1008, 1009, 1010]


def test_ema_matches_tensorboard_and_is_incremental() -> None:
    values = np.array([1.0, 2.0, np.nan, 3.0, 4.0])
    w = 0.6

    def reference(vals):
        last, count, out = 0.0, 0, []
        for v in vals:
            if math.isfinite(v):
                last = last * w + (1 - w) * v
                count += 1
            out.append(last / (1 - w**count))
        return out

    ema = Ema()
    first = ema(values[:3], w).copy()
    full = ema(values, w)
    assert np.allclose(full, reference(values))
    assert np.allclose(first, reference(values[:3]))
    assert ema(values, 0.0) is values


def test_store_loads_history_and_writes_csv(tmp_path) -> None:
    records = [r.to_json() for r in steps(1, 5)] + [evaluation(4, 2.5).to_json(), {"kind": "sample", "step": 4}]
    store = MetricsStore()
    assert store.load_records(records) == 7
    assert len(store.steps) == 5 and len(store.evals) == 1
    out = tmp_path / "m.csv"
    store.to_csv(out)
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 6
    assert rows[0]["kind"] == "train" and rows[0]["step"] == "1"
    eval_row = next(r for r in rows if r["kind"] == "eval")
    assert float(eval_row["val_loss"]) == 2.5 and eval_row["loss"] == ""


@pytest.fixture
def curves(qtbot):
    from shiftstudio.gui.plots import CurvesView

    view = CurvesView(MetricsStore())
    qtbot.addWidget(view)
    view.resize(900, 600)
    view.show()
    return view


def test_plot_items_are_fed_with_set_data(curves, qtbot, tmp_path) -> None:
    items_before = dict(curves.items)
    curves.store.add_steps(steps(1, 50))
    curves.store.add_eval(evaluation(25, 2.8))
    curves.store.add_eval(evaluation(50, 2.6))
    qtbot.waitUntil(lambda: curves.point_count("loss_smooth") == 50, timeout=2000)
    assert curves.items == items_before  # same items, new data
    assert curves.point_count("loss_raw") == 50
    assert curves.point_count("val_loss") == 2
    assert curves.point_count("val_ppl") == 2
    assert curves.point_count("lr") == 50
    # x axis as tokens seen
    curves.set_x_mode("tokens")
    x = curves.items["loss_raw"].xData
    assert x[-1] == 128 * 50
    curves.set_smoothing(0.0)
    y = curves.items["loss_smooth"].yData
    assert np.allclose(y, curves.store.steps["loss"])
    curves.set_log_y(True)
    assert curves.plots["loss"].getViewBox().state["logMode"][1]
    text = curves.show_readout_at(128 * 30)
    assert "step 30" in text and "val" in text
    png = tmp_path / "plots.png"
    assert curves.export_png(str(png)) and png.stat().st_size > 1000
