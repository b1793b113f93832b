"""The curves' data: growing numpy columns fed by step and eval reports.

Qt-free. Slots append report batches here (amortised O(1) per point) and bump
``version``; the plots redraw on a timer when the version moved. A run's
history is read back from its ``metrics.jsonl`` so a reopened run shows its
curves, and the whole thing exports as CSV.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Iterable

import numpy as np

STEP_COLUMNS = ("step", "tokens", "time_s", "loss", "lr", "grad_norm", "tokens_per_s", "ms_per_iter")
EVAL_COLUMNS = ("step", "tokens", "time_s", "train_loss", "val_loss", "val_ppl", "train_ppl")


def _number(value: Any) -> float:
    try:
        return float(value) if value is not None else math.nan
    except (TypeError, ValueError):
        return math.nan


class Series:
    """Named float64 columns that grow by doubling."""

    def __init__(self, columns: Iterable[str], capacity: int = 1024):
        self.columns = tuple(columns)
        self._data = np.full((len(self.columns), capacity), np.nan)
        self.n = 0

    def append(self, rows: list[tuple[float, ...]]) -> None:
        if not rows:
            return
        need = self.n + len(rows)
        if need > self._data.shape[1]:
            grown = np.full((len(self.columns), max(need, 2 * self._data.shape[1])), np.nan)
            grown[:, : self.n] = self._data[:, : self.n]
            self._data = grown
        self._data[:, self.n : need] = np.asarray(rows, dtype=np.float64).T
        self.n = need

    def __getitem__(self, name: str) -> np.ndarray:
        return self._data[self.columns.index(name), : self.n]

    def __len__(self) -> int:
        return self.n

    def clear(self) -> None:
        self.n = 0


class MetricsStore:
    """Step and eval series of the run on screen."""

    def __init__(self) -> None:
        self.steps = Series(STEP_COLUMNS)
        self.evals = Series(EVAL_COLUMNS)
        self.version = 0  # moves with any change
        self.eval_version = 0  # moves when the evals change

    def clear(self) -> None:
        self.steps.clear()
        self.evals.clear()
        self.version += 1
        self.eval_version += 1

    def add_steps(self, reports: Iterable[Any]) -> None:
        rows = [tuple(_number(getattr(r, c, None)) for c in STEP_COLUMNS) for r in reports]
        self._drop_after(rows[0][0] if rows else None, self.steps)
        self.steps.append(rows)
        self.version += 1

    def add_eval(self, report: Any) -> None:
        row = tuple(_number(getattr(report, c, None)) for c in EVAL_COLUMNS)
        self._drop_after(row[0], self.evals)
        self.evals.append([row])
        self.version += 1
        self.eval_version += 1

    @staticmethod
    def _drop_after(step: float | None, series: Series) -> None:
        """A resumed run replays from its checkpoint: forget points past that step."""
        if step is None or not len(series):
            return
        steps = series["step"]
        if steps[-1] >= step:
            series.n = int(np.searchsorted(steps, step, side="left"))

    # -- files ---------------------------------------------------------------
    def load_records(self, records: Iterable[dict[str, Any]]) -> int:
        """Replace the data with a run's history (``metrics.jsonl`` records); returns records read."""
        self.steps.clear()
        self.evals.clear()
        steps: list[tuple[float, ...]] = []
        evals: list[tuple[float, ...]] = []
        count = 0
        for rec in records:
            count += 1
            kind = rec.get("kind")
            if kind == "train":
                steps.append(tuple(_number(rec.get(c)) for c in STEP_COLUMNS))
            elif kind == "eval":
                evals.append(tuple(_number(rec.get(c)) for c in EVAL_COLUMNS))
        self.steps.append(steps)
        self.evals.append(evals)
        self._dedupe()
        self.version += 1
        self.eval_version += 1
        return count

    def _dedupe(self) -> None:
        """Sort by step, keeping the last record of a step logged twice."""
        for series in (self.steps, self.evals):
            if len(series) < 2:
                continue
            steps = series["step"]
            if np.all(np.diff(steps) > 0):
                continue
            _, last = np.unique(steps[::-1], return_index=True)
            keep = len(steps) - 1 - last  # last record of each step, in step order
            data = np.stack([series[c][keep] for c in series.columns])
            series.n = 0
            series.append([tuple(col) for col in data.T])

    def to_csv(self, path: str | Path) -> None:
        """One row per step report and per eval, sorted by step."""
        columns = ["kind", *STEP_COLUMNS, *EVAL_COLUMNS[3:]]
        rows: list[list[Any]] = []
        for i in range(len(self.steps)):
            rows.append(["train", *(self.steps[c][i] for c in STEP_COLUMNS), *([math.nan] * (len(EVAL_COLUMNS) - 3))])
        for i in range(len(self.evals)):
            rec = {c: self.evals[c][i] for c in EVAL_COLUMNS}
            rows.append(["eval", *(rec.get(c, math.nan) for c in STEP_COLUMNS), *(rec[c] for c in EVAL_COLUMNS[3:])])
        rows.sort(key=lambda r: (r[1], r[0] == "eval"))
        with open(path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(columns)
            for row in rows:
                writer.writerow(["" if isinstance(v, float) and math.isnan(v) else _csv_value(v) for v in row])


def _csv_value(v: Any) -> Any:
    if isinstance(v, float) and v.is_integer() and abs(v) < 2**53:
        return int(v)
    return v


class Ema:
    """TensorBoard's debiased exponential moving average, updated incrementally.

    ``weight`` 0 = no smoothing, 0.99 = very smooth. Non-finite points are
    carried over (they do not poison the average).
    """

    def __init__(self) -> None:
        self._weight = -1.0
        self._out = np.empty(0)
        self._n = 0
        self._last = 0.0
        self._count = 0

    def __call__(self, values: np.ndarray, weight: float) -> np.ndarray:
        if weight != self._weight or len(values) < self._n:
            self._weight, self._n, self._last, self._count = weight, 0, 0.0, 0
        if weight <= 0:
            self._n = len(values)
            return values
        if len(self._out) < len(values):
            grown = np.empty(max(len(values), 2 * len(self._out), 1024))
            grown[: self._n] = self._out[: self._n]
            self._out = grown
        last, count, w = self._last, self._count, weight
        out = self._out
        for i in range(self._n, len(values)):
            x = float(values[i])
            if math.isfinite(x):
                last = last * w + (1 - w) * x
                count += 1
            out[i] = last / (1 - w**count) if count else math.nan
        self._last, self._count, self._n = last, count, len(values)
        return out[: len(values)]
