"""Several runs side by side: the settings that differ, the figures each reached, the samples at a step.

Everything here reads ``run.json`` and ``metrics.jsonl`` only (no weights
are loaded): ``shiftstudio compare`` prints a :class:`Comparison` as a table or
as JSON, and the window's compare view shows the same rows beside the curves.
The validation figures are head 1's (the headline that runs of any shift are
compared on, see :func:`~shiftstudio.core.runs.metrics.headline_val_loss`).
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from shiftstudio.config import RunConfig
from shiftstudio.core.errors import RunError
from shiftstudio.core.runs.folder import load_run, load_run_config
from shiftstudio.core.runs.metrics import headline_val_loss, iter_metrics

# Settings that change how a run is kept and logged, not what it learns: never listed as a difference.
BOOKKEEPING_FIELDS = frozenset({"keep_checkpoints", "checkpoint_interval", "log_interval", "num_threads"})
FIGURE_KINDS = ("train", "eval", "finished")  # the records the figures are read from
FIGURE_ROWS = ("best val loss", "last val loss", "steps", "tokens", "wall time")  # after the differing fields


def differing_fields(configs: Sequence[RunConfig]) -> list[str]:
    """The flat config keys whose values are not all equal across ``configs``, in the config's order.

    Bookkeeping settings (:data:`BOOKKEEPING_FIELDS`: how many checkpoints are
    kept and how often, how often steps are logged, CPU threads) are left out:
    they change neither the model nor what it learns.
    """
    flats = [c.to_flat() for c in configs]
    if not flats:
        return []
    return [key for key in flats[0] if key not in BOOKKEEPING_FIELDS and any(f[key] != flats[0][key] for f in flats[1:])]


@dataclass
class RunFigures:
    """Where one run got to, as its ``metrics.jsonl`` says (``None``: never evaluated)."""

    name: str
    path: Path
    config: RunConfig
    best_val_loss: float | None
    last_val_loss: float | None
    steps: int  # the last step logged
    max_iters: int  # the steps planned
    tokens: int  # tokens seen
    time_s: float  # wall time of training


def _number(value: Any) -> float | None:
    """``value`` as a finite number, None for anything else (a hand-edited or cut-off record)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def run_figures(run_dir: str | Path, records: Iterable[dict[str, Any]] | None = None) -> RunFigures:
    """The figures of the run in ``run_dir``, from ``records`` (its metrics, already read) or from its
    ``metrics.jsonl``; raises :class:`RunError` when the folder is not a readable run."""
    record = load_run(run_dir)
    config = load_run_config(run_dir)
    steps, tokens, time_s = 0, 0, 0.0
    best: float | None = None
    last: tuple[int, float | None] | None = None  # (step, head 1's val loss) of the latest eval
    for rec in iter_metrics(run_dir, FIGURE_KINDS) if records is None else records:
        kind, step = rec.get("kind"), _number(rec.get("step"))
        if kind not in FIGURE_KINDS or step is None:  # (a record without a step is not one of the run's)
            continue
        step = int(step)
        steps = max(steps, step)
        tokens = max(tokens, int(_number(rec.get("tokens")) or 0))
        time_s = max(time_s, _number(rec.get("time_s")) or 0.0)
        if kind == "eval":
            val = _number(headline_val_loss(rec))
            if last is None or step >= last[0]:
                last = (step, val)
            if val is not None:
                best = val if best is None else min(best, val)
    path = Path(run_dir)
    return RunFigures(
        name=str(record.get("name") or path.name), path=path, config=config, best_val_loss=best,
        last_val_loss=None if last is None else last[1], steps=steps, max_iters=config.train.max_iters,
        tokens=tokens, time_s=time_s,
    )


def run_labels(paths: Sequence[Path]) -> list[str]:
    """A short, unique label per run: its folder's name, with as many parent folders as it takes to tell
    runs of the same name apart ('a/run', 'b/run')."""
    parts = [Path(p).parts or (str(p),) for p in paths]
    depth = [1] * len(parts)
    while True:
        labels = ["/".join(p[-d:]) for p, d in zip(parts, depth)]
        clashes = {label for label in labels if labels.count(label) > 1}
        grown = False
        for i, label in enumerate(labels):
            if label in clashes and depth[i] < len(parts[i]):
                depth[i] += 1
                grown = True
        if not grown:
            return labels


def clock(seconds: float) -> str:
    """Wall time as h:mm:ss, hours included even when zero."""
    h, rest = divmod(int(round(max(seconds, 0.0))), 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}"


def _setting_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "–"
    return str(value)


def _loss_text(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


@dataclass
class Comparison:
    """Runs side by side: each run's figures in the order given, ``fields`` (the settings that differ) and a
    unique ``label`` per run (made by :meth:`of`)."""

    runs: list[RunFigures]
    fields: list[str]
    labels: list[str]

    @classmethod
    def of(cls, runs: list[RunFigures]) -> "Comparison":
        """The comparison of runs already read (any number of them, the window shows one alone too)."""
        return cls(runs, differing_fields([r.config for r in runs]), run_labels([r.path for r in runs]))

    def values(self, index: int) -> dict[str, Any]:
        """Run ``index``'s value of each differing setting."""
        flat = self.runs[index].config.to_flat()
        return {key: flat[key] for key in self.fields}

    def rows(self) -> list[tuple[str, list[str]]]:
        """The table as people read it: (row name, one cell per run), the differing settings then
        :data:`FIGURE_ROWS`. The CLI prints these, the window's table shows them."""
        values = [self.values(i) for i in range(len(self.runs))]
        rows = [(key, [_setting_text(v[key]) for v in values]) for key in self.fields]
        figures = {
            "best val loss": [_loss_text(r.best_val_loss) for r in self.runs],
            "last val loss": [_loss_text(r.last_val_loss) for r in self.runs],
            "steps": [f"{r.steps:,}/{r.max_iters:,}" for r in self.runs],
            "tokens": [f"{r.tokens:,}" for r in self.runs],
            "wall time": [clock(r.time_s) for r in self.runs],
        }
        return rows + [(name, figures[name]) for name in FIGURE_ROWS]

    def to_json(self) -> dict[str, Any]:
        """JSON-ready: ``fields`` and, per run, its name, label, path, differing settings and figures."""
        return {
            "fields": list(self.fields),
            "runs": [
                {
                    "name": r.name, "label": label, "path": str(r.path), "config": self.values(i),
                    "best_val_loss": r.best_val_loss, "last_val_loss": r.last_val_loss, "steps": r.steps,
                    "max_iters": r.max_iters, "tokens": r.tokens, "time_s": r.time_s,
                }
                for i, (r, label) in enumerate(zip(self.runs, self.labels))
            ],
        }


def compare_runs(run_dirs: Sequence[str | Path]) -> Comparison:
    """Compare two runs or more; raises :class:`RunError` (one line) for fewer, for a run given twice, and
    for a folder that is not a readable run."""
    if len(run_dirs) < 2:
        raise RunError(f"comparing needs two runs or more, got {len(run_dirs)}")
    seen: set[Path] = set()
    for run_dir in run_dirs:
        resolved = Path(run_dir).resolve()
        if resolved in seen:
            raise RunError(f"{run_dir} is given twice")
        seen.add(resolved)
    return Comparison.of([run_figures(d) for d in run_dirs])


# -- samples ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SampleRecord:
    """A text sampled from the run's prompt at an evaluation."""

    step: int
    prompt: str
    text: str


def samples_of(records: Iterable[dict[str, Any]]) -> list[SampleRecord]:
    """The sample records among ``records``, by step (a step logged twice keeps its last sample)."""
    by_step: dict[int, SampleRecord] = {}
    for rec in records:
        step = _number(rec.get("step"))
        if rec.get("kind") == "sample" and step is not None:
            by_step[int(step)] = SampleRecord(int(step), str(rec.get("prompt") or ""), str(rec.get("text") or ""))
    return [by_step[s] for s in sorted(by_step)]


def sample_at(samples: Sequence[SampleRecord], step: int) -> SampleRecord | None:
    """The last of ``samples`` (sorted by step) logged at or before ``step``; None when there is none."""
    i = bisect.bisect_right([s.step for s in samples], step)
    return samples[i - 1] if i else None


def samples_at(run_dir: str | Path, step: int) -> SampleRecord | None:
    """The sample the run logged at the evaluation nearest to ``step``, at or before it (None: none yet);
    raises :class:`RunError` when the folder is not a readable run."""
    load_run(run_dir)
    return sample_at(samples_of(iter_metrics(run_dir, ("sample",))), step)
