"""The curves' data: growing numpy columns fed by step and eval reports.

Qt-free. Slots append report batches here (amortised O(1) per point) and bump
``version``; the plots redraw on a timer when the version moved. A run's
history is read back from its ``metrics.jsonl`` so a reopened run shows its
curves, and the whole thing exports as CSV.

Each series also has an ``epoch`` that moves whenever rows already there are
rewritten or dropped (clear, a resumed run replaying its tail, a reload), so a
reader that cached something computed from the first ``n`` rows (a smoothed
curve, min/max buckets) knows whether it may extend it or must start over.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np

if TYPE_CHECKING:
    from shiftstudio.core.train.reports import EvalReport, StepReport

STEP_COLUMNS = ("step", "tokens", "time_s", "loss", "lr", "grad_norm", "tokens_per_s", "ms_per_iter")
HEADLINE_COLUMNS = ("step", "tokens", "time_s", "train_loss", "val_loss", "val_ppl", "train_ppl")  # head 1's
MAX_HORIZONS = 16  # config.shift's largest value
VAL_HORIZON_COLUMNS = tuple(f"val_loss_h{k}" for k in range(1, MAX_HORIZONS + 1))
TRAIN_HORIZON_COLUMNS = tuple(f"train_loss_h{k}" for k in range(1, MAX_HORIZONS + 1))
EVAL_COLUMNS = HEADLINE_COLUMNS + VAL_HORIZON_COLUMNS + TRAIN_HORIZON_COLUMNS


def _step_row(r: StepReport) -> tuple[float, ...]:
    """A step report as a row of ``STEP_COLUMNS``."""
    return tuple(map(_number, (r.step, r.tokens, r.time_s, r.loss, r.lr, r.grad_norm, r.tokens_per_s, r.ms_per_iter)))


def _horizons(values: Any) -> list[float]:
    """A per-horizon list as ``MAX_HORIZONS`` numbers (NaN where missing)."""
    values = list(values) if isinstance(values, (list, tuple)) else []
    return [_number(v) for v in values[:MAX_HORIZONS]] + [math.nan] * (MAX_HORIZONS - min(len(values), MAX_HORIZONS))


def _eval_row(r: EvalReport) -> tuple[float, ...]:
    """An eval report as a row of ``EVAL_COLUMNS`` (its headline figures are head 1's)."""
    headline = (r.step, r.tokens, r.time_s, r.train_loss, r.val_loss, r.val_ppl, r.train_ppl)
    return (*map(_number, headline), *_horizons(r.val_loss_per_horizon), *_horizons(r.train_loss_per_horizon))


def _eval_record(rec: dict[str, Any]) -> dict[str, Any]:
    """A ``metrics.jsonl`` eval record flattened to ``EVAL_COLUMNS``, head 1 as the headline whatever the record's
    age (runs logged before head 1 was the headline wrote the mean over heads as ``val_loss``)."""
    from shiftstudio.core.runs.metrics import headline_val_loss

    out = dict(rec)
    val_h, train_h = rec.get("val_loss_per_horizon"), rec.get("train_loss_per_horizon")
    val = headline_val_loss(rec)
    out["val_loss"] = val
    if isinstance(val_h, list) and val_h:  # the ppl logged with a mean loss was exp(mean): recomputed for head 1
        out["val_ppl"] = _exp(val)
    if isinstance(train_h, list) and train_h and isinstance(train_h[0], (int, float)):
        out["train_loss"] = float(train_h[0])
        out["train_ppl"] = _exp(float(train_h[0]))
    out.update(zip(VAL_HORIZON_COLUMNS, _horizons(val_h)))
    out.update(zip(TRAIN_HORIZON_COLUMNS, _horizons(train_h)))
    return out


def _exp(value: Any) -> float:
    try:
        return math.exp(float(value)) if value is not None else math.nan
    except (OverflowError, TypeError, ValueError):
        return math.nan


def _number(value: Any) -> float:
    try:
        return float(value) if value is not None else math.nan
    except (TypeError, ValueError):
        return math.nan


class Series:
    """Named float64 columns that grow by doubling.

    ``epoch`` moves when rows already there change (``clear``, ``truncate``):
    while it stays, the first ``n`` rows seen earlier are still the same.
    """

    def __init__(self, columns: Iterable[str], capacity: int = 1024):
        self.columns = tuple(columns)
        self._index = {c: i for i, c in enumerate(self.columns)}
        self._data = np.full((len(self.columns), capacity), np.nan)
        self.n = 0
        self.epoch = 0

    def append(self, rows: list[tuple[float, ...]] | np.ndarray) -> None:
        """Add rows (one value per column each): a list of tuples or an (n, columns) array."""
        if len(rows) == 0:
            return
        need = self.n + len(rows)
        if need > self._data.shape[1]:
            grown = np.full((len(self.columns), max(need, 2 * self._data.shape[1])), np.nan)
            grown[:, : self.n] = self._data[:, : self.n]
            self._data = grown
        self._data[:, self.n : need] = np.asarray(rows, dtype=np.float64).T
        self.n = need

    def __getitem__(self, name: str) -> np.ndarray:
        return self._data[self._index[name], : self.n]

    def __len__(self) -> int:
        return self.n

    def truncate(self, n: int) -> None:
        """Keep the first ``n`` rows."""
        if n < self.n:
            self.n = max(0, n)
            self.epoch += 1

    def clear(self) -> None:
        self.n = 0
        self.epoch += 1


class MetricsStore:
    """Step and eval series of the run on screen."""

    def __init__(self) -> None:
        self.steps = Series(STEP_COLUMNS)
        self.evals = Series(EVAL_COLUMNS)
        self.version = 0  # moves with any change
        self.eval_version = 0  # moves when the evals change
        self.horizons = 1  # K of the run's evals: how many horizons have a loss of their own

    def clear(self) -> None:
        self.steps.clear()
        self.evals.clear()
        self.horizons = 1
        self.version += 1
        self.eval_version += 1

    def add_steps(self, reports: Iterable[StepReport]) -> None:
        rows = [_step_row(r) for r in reports]
        self._drop_after(rows[0][0] if rows else None, self.steps)
        self.steps.append(rows)
        self.version += 1

    def add_eval(self, report: EvalReport) -> None:
        row = _eval_row(report)
        self._drop_after(row[0], self.evals)
        self.evals.append([row])
        self.horizons = max(self.horizons, min(len(report.val_loss_per_horizon), MAX_HORIZONS))
        self.version += 1
        self.eval_version += 1

    @staticmethod
    def _drop_after(step: float | None, series: Series) -> None:
        """A resumed run replays from its checkpoint: forget points past that step."""
        if step is None or not len(series):
            return
        steps = series["step"]
        if steps[-1] >= step:
            series.truncate(int(np.searchsorted(steps, step, side="left")))

    # -- files ---------------------------------------------------------------
    def load_records(self, records: Iterable[dict[str, Any]]) -> int:
        """Replace the data with a run's history (``metrics.jsonl`` records); returns records read."""
        self.steps.clear()
        self.evals.clear()
        steps: list[dict[str, Any]] = []
        evals: list[dict[str, Any]] = []
        count = 0
        for rec in records:
            count += 1
            kind = rec.get("kind")
            if kind == "train":
                steps.append(rec)
            elif kind == "eval":
                evals.append(_eval_record(rec))
        self.steps.append(_rows(steps, STEP_COLUMNS))
        self.evals.append(_rows(evals, EVAL_COLUMNS))
        self._dedupe()
        self.horizons = self._horizons_seen()
        self.version += 1
        self.eval_version += 1
        return count

    def _horizons_seen(self) -> int:
        """The largest horizon with a validation loss in the evals (1 when none has any)."""
        for k in range(MAX_HORIZONS, 1, -1):
            if np.isfinite(self.evals[f"val_loss_h{k}"]).any():
                return k
        return 1

    def horizon_loss(self, k: int, split: str = "val") -> np.ndarray:
        """The ``split`` ('val' or 'train') loss of head ``k`` (1-based) at each eval (NaN where not logged)."""
        return self.evals[f"{split}_loss_h{k}"]

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
            series.clear()
            series.append(data.T)

    def to_csv(self, path: str | Path) -> None:
        """One row per step report and per eval, sorted by step. The eval columns are head 1's (the headline);
        with more than one horizon, each head's validation and training loss follow (``val_loss_h1`` …)."""
        k = self.horizons
        eval_columns = [*HEADLINE_COLUMNS[3:], *((*VAL_HORIZON_COLUMNS[:k], *TRAIN_HORIZON_COLUMNS[:k]) if k > 1 else ())]
        columns = ["kind", *STEP_COLUMNS, *eval_columns]
        rows: list[list[Any]] = []
        for i in range(len(self.steps)):
            rows.append(["train", *(self.steps[c][i] for c in STEP_COLUMNS), *([math.nan] * len(eval_columns))])
        for i in range(len(self.evals)):
            rec = {c: self.evals[c][i] for c in EVAL_COLUMNS}
            rows.append(["eval", *(rec.get(c, math.nan) for c in STEP_COLUMNS), *(rec[c] for c in eval_columns)])
        rows.sort(key=lambda r: (r[1], r[0] == "eval"))
        with open(path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(columns)
            for row in rows:
                writer.writerow(["" if isinstance(v, float) and math.isnan(v) else _csv_value(v) for v in row])


def _rows(records: list[dict[str, Any]], columns: tuple[str, ...]) -> np.ndarray:
    """The records as a (records, columns) float array: a missing or non-numeric value is NaN.

    A column at a time through numpy (a long run's history has 100,000s of
    records), one value at a time only for a column numpy cannot convert.
    """
    out = np.empty((len(records), len(columns)))
    for j, column in enumerate(columns):
        values = [rec.get(column) for rec in records]
        try:
            out[:, j] = np.array(values, dtype=np.float64)  # None -> NaN
        except (TypeError, ValueError):
            out[:, j] = [_number(v) for v in values]
    return out


def _csv_value(v: Any) -> Any:
    if isinstance(v, float) and v.is_integer() and abs(v) < 2**53:
        return int(v)
    return v


class Ema:
    """TensorBoard's debiased exponential moving average, updated incrementally.

    ``weight`` 0 = no smoothing, 0.99 = very smooth. Non-finite points are
    carried over (they do not poison the average). Called again with the same
    values plus new ones at the end, only the new ones are computed (vectorised,
    see :func:`ema_extend`); ``key`` says whether the values seen before still
    hold (pass the series' ``epoch``): when it changes, or the weight does, or
    the values got shorter, it starts over.
    """

    def __init__(self) -> None:
        self._weight = -1.0
        self._key: Any = None
        self._out = np.empty(0)
        self._n = 0
        self._last = 0.0
        self._count = 0

    def __call__(self, values: np.ndarray, weight: float, key: Any = None) -> np.ndarray:
        if weight != self._weight or key != self._key or len(values) < self._n:
            self._weight, self._key, self._n, self._last, self._count = weight, key, 0, 0.0, 0
        if weight <= 0:
            self._n = len(values)
            return values
        if len(self._out) < len(values):
            grown = np.empty(max(len(values), 2 * len(self._out), 1024))
            grown[: self._n] = self._out[: self._n]
            self._out = grown
        if len(values) > self._n:
            self._last, self._count = ema_extend(
                np.asarray(values[self._n :], dtype=np.float64), weight, self._last, self._count, self._out[self._n : len(values)]
            )
            self._n = len(values)
        return self._out[: len(values)]


def ema_extend(values: np.ndarray, weight: float, last: float, count: int, out: np.ndarray) -> tuple[float, int]:
    """Continue a debiased EMA over ``values`` from its state, writing the smoothed points to ``out``.

    The state is ``last`` (the biased average so far) and ``count`` (the finite
    points averaged so far); returns the state after ``values``. The numbers of
    the loop ``last = w * last + (1 - w) * x; out = last / (1 - w ** count)``
    over the finite ``x`` (a non-finite ``x`` repeats the previous output; NaN
    before the first finite point), up to rounding, in a few vectorised passes
    instead of a Python loop (~5 ms for 200,000 points instead of ~150 ms).
    """
    w = float(weight)
    n = len(values)
    finite = np.isfinite(values)
    all_finite = bool(finite.all())
    f = values if all_finite else values[finite]
    m = len(f)
    state = np.empty(m + 1)  # the biased average before the values, then after each finite one
    state[0] = last
    y = state[1:]
    np.multiply(f, 1.0 - w, out=y)
    _linear_scan(y, w)
    # w ** k below this many steps still counts in float64: past it, the old state has faded out
    # and the debiasing divides by exactly 1.0
    fade = int(math.ceil(math.log(1e-17) / math.log(w))) if 0 < w < 1 else n + count + 1
    if last != 0.0 and m:
        k = min(m, fade)
        y[:k] += last * w ** np.arange(1, k + 1, dtype=np.float64)
    if all_finite:
        out[:] = y
        counts = count + np.arange(1, min(n, max(0, fade - count)) + 1)
    else:
        seen = np.cumsum(finite)  # finite points among values[: i + 1]
        np.take(state, seen, out=out)
        counts = count + seen[: np.searchsorted(count + seen, fade)]
    if len(counts):
        head = out[: len(counts)]
        with np.errstate(divide="ignore", invalid="ignore"):
            head /= 1.0 - w ** counts.astype(np.float64)
        head[counts == 0] = np.nan
    return float(state[m]), int(count + m)


def _linear_scan(y: np.ndarray, w: float) -> None:
    """In place: ``y[i] += w * y[i - 1]`` in order, i.e. ``y[i] = sum_k w**k * b[i - k]`` of the ``b`` given.

    Doubling steps (Hillis-Steele): after the step of stride ``d`` every point
    holds the sum over its last ``2 d`` inputs. The steps end when ``w ** d``
    is negligible (below 1e-18), so a light smoothing needs only a few.
    """
    n = len(y)
    if n < 2:
        return
    tmp = np.empty(n - 1)
    d, p = 1, w
    with np.errstate(under="ignore"):
        while d < n and p > 1e-18:
            part = tmp[: n - d]
            np.multiply(y[: n - d], p, out=part)
            y[d:] += part
            d, p = 2 * d, p * p
