"""Time to quality: which settings get the cpu-tiny shape to nanoGPT's loss soonest on a CPU.

    python benchmarks/bench_recipe.py --configs nanogpt,cpu-tiny,+muon,final --seeds 1337,1338
    python benchmarks/bench_recipe.py --configs nanogpt,+muon+s800,+muon+qk_norm+s800 --until target
    python benchmarks/bench_recipe.py --configs cpu-tiny,+muon --speed 200        # ms/step only, interleaved
    python benchmarks/bench_recipe.py --corpus /tmp/py.txt --tokenizer bpe --vocab_size 2048 \\
        --configs cpu-tiny+learned,final --target auto                             # a BPE corpus

The figure: training wall time until the validation loss is at most ``--target`` (1.886: what nanoGPT's
"baby GPT on CPU" settings reach at step 2000 on tiny shakespeare), against nanoGPT itself measured in the
same invocation (``nanogpt``: ``reference_trainer.py``'s loop, nanoGPT's settings, learned positions). And the
best validation loss within nanoGPT's whole 2000-step training time.

A config is ``nanogpt`` or ``cpu-tiny`` (the shipped preset) followed by ingredients joined with ``+``
(``+a+b`` is short for ``cpu-tiny+a+b``): a name from :data:`INGREDIENTS`, ``sN`` (max_iters = lr_decay_iters =
N), ``wN`` (warmup N), ``bN`` (batch N), ``lrX`` (learning_rate X, min_lr X/10), ``mlrX`` (muon_lr X), ``mtpK``
(K heads, halving weights fading to zero), or any ``key=value`` setting. ``final`` is :data:`FINAL`.

How it measures, the same way for every config, the baseline included:

- **training time** is the time spent inside the training loop (our ``Trainer.run()`` between its reports,
  with no batch views, log_interval 25; the reference's ``step()`` with a ``loss.item()`` every 25 steps);
  set-up and evaluation are outside it;
- **validation loss** is head 1's mean loss over every non-overlapping window of the validation split (tiny
  shakespeare: 1,742 windows of 64 tokens = 145 batches of 12×64, 111k tokens; no sampling noise), or
  ``--eval-windows`` evenly spread ones on a bigger split; every ``--eval-every`` steps, and every
  ``--eval-fine`` steps once within ``--fine-margin`` of the target;
- **steps to target** is deterministic given the seed (and the thread count); the crossing is also
  interpolated linearly between the two evaluations around it, for step and time (``*_interp``);
- **ms/step** is training time over steps; each run also records its CPU share (process CPU time over
  training time × threads) and the load average before and after: a run with a CPU share under 0.85 or a
  load average above threads + 0.5 is flagged as timed on a loaded machine. ``--speed N`` instead times N
  steps of each config in interleaved windows of 25 (median ms/step): the figure to multiply steps to
  target by when the machine is shared (``est_time``).

Results accumulate in ``benchmarks/results/recipe.json`` (``--fresh`` starts it anew). Not part of
``run.py --quick``: a comparison takes 10 minutes or more.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import platform
import re
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
OUT = ROOT / "benchmarks" / "results" / "recipe.json"
SHAKESPEARE = ROOT / "resources" / "tinyshakespeare.txt"
PRESET = ROOT / "resources" / "presets" / "cpu-tiny.toml"
TARGET = 1.886  # nanoGPT's baby GPT at step 2000 on this machine (full validation split)
WINDOW = 25  # steps between log points (ours) / loss syncs (the reference), and the finest eval step

INGREDIENTS: dict[str, dict[str, Any]] = {
    "learned": {"pos": "learned"},  # cpu-tiny+learned = nanoGPT's settings in our trainer
    "muon": {"optimizer": "muon"},
    "qk_norm": {"qk_norm": True},
    "relu2": {"activation": "relu2"},
    "zero_init": {"zero_init_proj": True},
    "softcap": {"logit_softcap": 15.0},
    "untied": {"tie_weights": False},
    "rmsnorm": {"norm": "rmsnorm"},
    "nowd": {"weight_decay": 0.0},
}
PATTERNS: list[tuple[str, Callable[[re.Match], dict[str, Any]]]] = [
    (r"s(\d+)", lambda m: {"max_iters": int(m[1]), "lr_decay_iters": int(m[1])}),
    (r"w(\d+)", lambda m: {"warmup_iters": int(m[1])}),
    (r"b(\d+)", lambda m: {"batch_size": int(m[1])}),
    (r"lr([\d.e-]+)", lambda m: {"learning_rate": float(m[1]), "min_lr": float(m[1]) / 10}),
    (r"mlr([\d.e-]+)", lambda m: {"muon_lr": float(m[1])}),
    (r"mtp(\d+)", lambda m: {"shift": int(m[1]), "shift_weights": "halving", "shift_weight_schedule": "linear_to_zero"}),
    (r"(\w+)=(.+)", lambda m: {m[1]: m[2]}),
]
FINAL = "cpu-tiny+muon+qk_norm+s400+lr2e-3"  # the proposed preset (see benchmarks/README.md)


# -- configs ----------------------------------------------------------------------------------------------------


def overrides_of(name: str) -> dict[str, Any] | None:
    """The settings a config name stands for on top of the cpu-tiny preset; None for ``nanogpt`` itself."""
    name = FINAL if name == "final" else name
    if name == "nanogpt":
        return None
    base, *parts = name.split("+")
    if base not in ("", "cpu-tiny"):
        raise SystemExit(f"a config starts with cpu-tiny, '+' or is nanogpt: {name!r}")
    out: dict[str, Any] = {}
    for part in parts:
        if part in INGREDIENTS:
            out.update(INGREDIENTS[part])
            continue
        for pattern, make in PATTERNS:
            if (m := re.fullmatch(pattern, part)) is not None:
                out.update(make(m))
                break
        else:
            raise SystemExit(f"unknown ingredient {part!r} in {name!r} (known: {', '.join(INGREDIENTS)}, sN, wN, bN, "
                             "lrX, mlrX, mtpK, key=value)")
    return out


def speed_key(name: str) -> str:
    """A config's name without what does not change the cost of a step (schedule, rates): ms/step is shared."""
    name = FINAL if name == "final" else name
    if name == "nanogpt":
        return name
    parts = [p for p in name.split("+")[1:] if not re.fullmatch(r"(s|w)\d+|m?lr[\d.e-]+", p)]
    return "+".join(["cpu-tiny", *parts])


def run_config(overrides: dict[str, Any], args: argparse.Namespace, seed: int):
    from shiftstudio.config import RunConfig

    config = RunConfig.load(PRESET).updated({
        "corpus": [str(p) for p in args.corpus], "tokenizer": args.tokenizer, "vocab_size": args.vocab_size,
        "device": "cpu", "dtype": "float32", "compile": False, "num_threads": args.threads, "seed": seed,
        "log_interval": WINDOW, "eval_iters": 1, **overrides,
    })
    return config.updated({"eval_interval": config.train.max_iters})  # the trainer's own eval: only at the end


# -- contenders: one training loop each, driven a window of steps at a time ------------------------------------


class Ours:
    """Our engine (``Trainer.run()``), advanced one report (one log point, 25 steps) at a time."""

    def __init__(self, overrides: dict[str, Any], args: argparse.Namespace, seed: int, store: Any, folder: Path) -> None:
        from shiftstudio.core.runs.folder import create_run
        from shiftstudio.core.train.control import ViewRequest
        from shiftstudio.core.train.trainer import Trainer

        self.config = run_config(overrides, args, seed)
        self.max_iters = self.config.train.max_iters
        self.block = self.config.model.block_size
        self.trainer = Trainer(create_run(self.config, store, folder), store, views=ViewRequest(batch_views=False))
        self.reports: Iterator = self.trainer.run()
        started = next(self.reports)  # set-up: not timed
        if started.kind != "started":
            raise RuntimeError(started.message)
        self.step = 0

    def advance(self) -> int:
        """Train to the next log point; returns the step reached."""
        while True:
            report = next(self.reports)
            if report.kind == "failed":
                raise RuntimeError(report.message)
            if report.kind == "train":
                self.step = report.step
                return self.step

    def model(self) -> Any:
        return self.trainer._s.model  # the live weights, read between steps (the loop is suspended at its report)

    def loss(self, model: Any, x: Any, y: Any) -> Any:
        import torch.nn.functional as F

        logits = model(x).logits[:, 0]  # head 1: (B, T, V)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))

    def close(self) -> None:
        self.reports.close()


class Reference:
    """nanoGPT's loop (``reference_trainer.py``) with nanoGPT's settings; chars only."""

    def __init__(self, args: argparse.Namespace, seed: int, data: Any) -> None:
        from reference_trainer import RefConfig, ReferenceTrainer

        self.trainer = ReferenceTrainer(RefConfig(seed=seed), data)
        self.max_iters, self.block, self.step = self.trainer.c.max_iters, self.trainer.c.block_size, 0

    def advance(self) -> int:
        for _ in range(min(WINDOW, self.max_iters - self.step)):
            loss = self.trainer.step()
            self.step += 1
        loss.item()  # a sync per log point, as nanoGPT's train.py (and our engine) do
        return self.step

    def model(self) -> Any:
        return self.trainer.model

    def loss(self, model: Any, x: Any, y: Any) -> Any:
        return model(x, y)

    def close(self) -> None:
        pass


# -- measuring --------------------------------------------------------------------------------------------------


def val_windows(val: Any, block: int, cap: int) -> tuple[Any, Any]:
    """(x, y) of every non-overlapping window of ``val``, or of ``cap`` evenly spread ones."""
    import numpy as np
    import torch

    ids = np.asarray(val, dtype=np.int64)
    n = (len(ids) - 1) // block
    starts = np.arange(n) * block
    if n > cap:
        starts = starts[np.linspace(0, n - 1, cap).round().astype(np.int64)]
    index = starts[:, None] + np.arange(block)[None, :]
    return torch.from_numpy(ids[index]), torch.from_numpy(ids[index + 1])


def val_loss(contender: Any, windows: tuple[Any, Any], chunk: int = 128) -> float:
    import torch

    model = contender.model()
    was_training = model.training
    model.eval()
    x, y = windows
    total = 0.0
    with torch.no_grad():
        for i in range(0, len(x), chunk):
            total += float(contender.loss(model, x[i : i + chunk], y[i : i + chunk])) * len(x[i : i + chunk])
    model.train(was_training)
    return total / len(x)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def train_one(name: str, seed: int, args: argparse.Namespace, shared: dict[str, Any], target: float | None,
              budget_s: float | None) -> dict[str, Any]:
    """Train one config with one seed; evaluate as it goes; stop at the target (``--until target``) or the end."""
    overrides = overrides_of(name)
    folder = Path(tempfile.mkdtemp(prefix="run-", dir=shared["workdir"])) / "run"
    if overrides is None:
        if args.tokenizer != "char":
            raise SystemExit("nanogpt (the reference trainer) reads characters only: compare cpu-tiny+learned instead")
        contender: Any = Reference(args, seed, shared["ref_data"])
    else:
        contender = Ours(overrides, args, seed, shared["store"], folder)
    windows = shared.setdefault(("windows", contender.block), val_windows(shared["val"], contender.block, args.eval_windows))
    load_before = os.getloadavg()[0]
    train_s = cpu_s = 0.0
    evals: list[tuple[int, float, float]] = [(0, 0.0, val_loss(contender, windows))]
    windows_ms: list[float] = []
    step = 0
    try:
        while step < contender.max_iters:
            t, c = time.perf_counter(), cpu_seconds()
            before = step
            step = contender.advance()
            dt = time.perf_counter() - t
            train_s, cpu_s = train_s + dt, cpu_s + cpu_seconds() - c
            windows_ms.append(1000 * dt / (step - before))
            near = target is not None and evals[-1][2] <= target + args.fine_margin
            every = args.eval_fine if near else args.eval_every
            if step % every == 0 or step == contender.max_iters:
                evals.append((step, train_s, val_loss(contender, windows)))
                if args.until == "target" and target is not None and evals[-1][2] <= target:
                    break
    finally:
        contender.close()
    load_after = os.getloadavg()[0]
    share = cpu_s / max(train_s * args.threads, 1e-9)
    row: dict[str, Any] = {
        "config": name, "seed": seed, "overrides": overrides, "threads": args.threads, "steps": step,
        "schedule_steps": contender.max_iters, "train_s": train_s, "ms_per_step": 1000 * train_s / max(step, 1),
        "ms_per_step_median_window": statistics.median(windows_ms) if windows_ms else None,
        "cpu_share": share, "load_before": load_before, "load_after": load_after,
        "loaded": share < 0.85 or max(load_before, load_after) > args.threads + 0.5,
        "final_val": evals[-1][2], "best_val": min(v for _, _, v in evals), "evals": evals,
    }
    row.update(crossing(evals, target))
    if budget_s is not None:
        inside = [v for _, s, v in evals if s <= budget_s]
        row["budget_s"], row["best_val_in_budget"] = budget_s, min(inside) if inside else None
    return row


def crossing(evals: list[tuple[int, float, float]], target: float | None) -> dict[str, Any]:
    """The first evaluation at or under the target, and the crossing interpolated from the one before it."""
    if target is None:
        return {}
    for (s0, t0, v0), (s1, t1, v1) in zip(evals, evals[1:]):
        if v1 <= target:
            f = (v0 - target) / (v0 - v1) if v0 > v1 else 1.0
            return {"target": target, "steps_to_target": s1, "time_to_target_s": t1,
                    "steps_to_target_interp": s0 + f * (s1 - s0), "time_to_target_s_interp": t0 + f * (t1 - t0)}
    return {"target": target, "steps_to_target": None, "time_to_target_s": None}


def speed(names: list[str], args: argparse.Namespace, shared: dict[str, Any]) -> dict[str, float]:
    """Median ms/step of each config over ``args.speed`` steps, in interleaved windows (after one untimed)."""
    contenders = {}
    for name in names:
        overrides = overrides_of(name)
        folder = Path(tempfile.mkdtemp(prefix="speed-", dir=shared["workdir"])) / "run"
        contenders[name] = (Reference(args, 1337, shared["ref_data"]) if overrides is None
                            else Ours({**overrides, "max_iters": 100_000, "lr_decay_iters": 100_000}, args, 1337,
                                      shared["store"], folder))
    times: dict[str, list[float]] = {n: [] for n in names}
    try:
        for c in contenders.values():
            c.advance()
        for _ in range(max(1, args.speed // WINDOW)):
            for name, c in contenders.items():
                t, before = time.perf_counter(), c.step
                c.advance()
                times[name].append(1000 * (time.perf_counter() - t) / (c.step - before))
    finally:
        for c in contenders.values():
            c.close()
    return {speed_key(n): statistics.median(v) for n, v in times.items()}


# -- the table --------------------------------------------------------------------------------------------------


def summarise(rows: list[dict[str, Any]], speeds: dict[str, float], threads: int) -> list[dict[str, Any]]:
    """Per config (at ``threads``): seeds, mean steps and time to target, ratios to nanogpt's, best val in budget."""
    def mean(values: list[Any]) -> float | None:
        values = [v for v in values if v is not None]
        return statistics.fmean(values) if values else None

    by: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if r["threads"] == threads:
            by.setdefault(r["config"], []).append(r)
    # nanoGPT's time to target: when it gets there; when its 2000 steps end above it (the target is its step-2000
    # loss, and its full-split loss at 2000 lands within ±0.01 of it), its whole training time: which flatters it
    base = by.get("nanogpt", [])
    base_time = mean([r.get("time_to_target_s_interp") or r["train_s"] for r in base])
    base_steps = mean([r.get("steps_to_target_interp") or r["steps"] for r in base])
    out = []
    for name, group in by.items():
        steps = mean([r.get("steps_to_target_interp") for r in group])
        t = mean([r.get("time_to_target_s_interp") for r in group])
        ms = speeds.get(speed_key(name))
        est = steps * ms / 1000 if steps is not None and ms is not None else None
        base_est = base_steps * speeds["nanogpt"] / 1000 if base_steps and "nanogpt" in speeds else None
        out.append({
            "config": name, "seeds": [r["seed"] for r in group],
            "steps_to_target": [r.get("steps_to_target") for r in group], "steps_to_target_interp": steps,
            "ms_per_step": mean([r["ms_per_step"] for r in group]), "time_to_target_s": t,
            "ratio": t / base_time if t is not None and base_time else None,
            "interleaved_ms_per_step": ms, "est_time_s": est,
            "est_ratio": est / base_est if est is not None and base_est else None,
            "best_val_in_budget": mean([r.get("best_val_in_budget") for r in group]),
            "final_val": mean([r["final_val"] for r in group]), "loaded": any(r["loaded"] for r in group),
        })
    return out


def show(summary: list[dict[str, Any]], target: float | None, threads: int) -> None:
    def f(v: Any, fmt: str) -> str:
        return "–" if v is None else format(v, fmt)

    print(f"\nto val <= {target} ({threads} thread(s)); ratio = time to target / nanogpt's, from this file's runs "
          "(nanogpt's whole 2000-step time where it ends above the target); est = steps x interleaved ms/step")
    print(f"{'config':<40}{'seeds':>6}{'steps':>14}{'ms/step':>9}{'time s':>8}{'ratio':>7}{'est s':>7}{'est ratio':>10}"
          f"{'best@budget':>12}{'final':>8}  loaded")
    for s in summary:
        steps = "/".join(f(v, "d") for v in s["steps_to_target"])
        print(f"{s['config']:<40}{len(s['seeds']):>6}{steps:>14}{f(s['ms_per_step'], '.1f'):>9}"
              f"{f(s['time_to_target_s'], '.1f'):>8}{f(s['ratio'], '.2f'):>7}{f(s['est_time_s'], '.1f'):>7}"
              f"{f(s['est_ratio'], '.2f'):>10}{f(s['best_val_in_budget'], '.4f'):>12}{f(s['final_val'], '.4f'):>8}"
              f"  {'LOADED' if s['loaded'] else ''}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--configs", default="nanogpt,cpu-tiny,+muon,final", help="comma-separated config names")
    ap.add_argument("--seeds", default="1337", help="comma-separated seeds; configs run interleaved per seed")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads, for every config alike")
    ap.add_argument("--until", choices=("target", "end"), default="end",
                    help="stop a run at the target, or train its whole schedule (needed for best val in budget)")
    ap.add_argument("--target", default=str(TARGET), help="validation loss to reach, or 'auto': the final val loss "
                    "of the first config (run to its end)")
    ap.add_argument("--eval-every", type=int, default=100, help="steps between evaluations (a multiple of 25)")
    ap.add_argument("--eval-fine", type=int, default=WINDOW, help="steps between evaluations near the target")
    ap.add_argument("--fine-margin", type=float, default=0.08, help="'near': the last val within this of the target")
    ap.add_argument("--eval-windows", type=int, default=1800, help="at most this many validation windows")
    ap.add_argument("--speed", type=int, default=0, help="only time N steps of each config (interleaved)")
    ap.add_argument("--corpus", type=Path, nargs="+", default=[SHAKESPEARE])
    ap.add_argument("--tokenizer", default="char")
    ap.add_argument("--vocab_size", type=int, default=4096)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--fresh", action="store_true", help="start the results file anew")
    ap.add_argument("--report", action="store_true", help="only print the table of every run in the file at --threads")
    ap.add_argument("--speed-threads", type=int, default=0,
                    help="with --report: the ms/step measured at this many threads for est (default --threads)")
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    if args.eval_every % WINDOW or args.eval_fine % WINDOW:
        ap.error(f"--eval-every and --eval-fine must be multiples of {WINDOW}")
    if args.report:
        results = json.loads(args.out.read_text())
        target = float(args.target) if args.target != "auto" else None
        speeds = results["speed"].get(str(args.speed_threads or args.threads), {})
        show(summarise(results["runs"], speeds, args.threads), target, args.threads)
        return 0
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-recipe-"))
    if args.workdir is None:  # its own scratch folder (runs, store, home): gone when it ends
        atexit.register(shutil.rmtree, workdir, True)
    os.environ.setdefault("SHIFTSTUDIO_HOME", str(workdir / "home"))
    import torch

    from shiftstudio.core.data.store import prepare

    torch.set_num_threads(args.threads)
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    for n in names:
        overrides_of(n)  # unknown ingredients fail before anything trains
    store = prepare(run_config({}, args, 0).data, out_dir=workdir / "store")
    shared: dict[str, Any] = {"workdir": workdir, "store": store, "val": store.val}
    if args.tokenizer == "char":
        from reference_trainer import load_chars

        shared["ref_data"] = load_chars(args.corpus[0])
    results = {"runs": [], "speed": {}} if args.fresh or not args.out.is_file() else json.loads(args.out.read_text())
    results["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
                          "processor": platform.processor()}
    key = f"{args.threads}"
    if args.speed:
        measured = speed(names, args, shared)
        results["speed"].setdefault(key, {}).update(measured)
        for n, ms in measured.items():
            print(f"{n:<40}{ms:8.1f} ms/step ({args.threads} thread(s), load {os.getloadavg()[0]:.1f})")
    else:
        target = None if args.target == "auto" else float(args.target)
        invocation = {"when": time.strftime("%Y-%m-%d %H:%M:%S"), "argv": sys.argv[1:], "target": target}
        results.setdefault("invocations", []).append(invocation)
        rows: list[dict[str, Any]] = []
        for seed in [int(s) for s in args.seeds.split(",")]:
            budget = None
            for i, name in enumerate(names):
                row = train_one(name, seed, args, shared, target, budget)
                if target is None and i == 0:  # --target auto: the first config's end sets it for the others
                    target = row["final_val"]
                    row.update(crossing(row["evals"], target))
                if name == "nanogpt":  # the budget: nanoGPT's whole training time, this seed
                    budget = row["train_s"]
                    for other in rows:
                        if other["seed"] == seed and "budget_s" not in other:
                            inside = [v for _, s, v in other["evals"] if s <= budget]
                            other["budget_s"], other["best_val_in_budget"] = budget, min(inside) if inside else None
                rows.append(row)
                row["invocation"] = invocation["when"]
                results["runs"].append(row)
                write(args.out, results)  # after every run: a long invocation cut short keeps what it measured
                print(f"{name:<40} seed {seed}: {row['steps']} steps, {row['ms_per_step']:.1f} ms/step, "
                      f"to target {row.get('steps_to_target')} steps / {row.get('time_to_target_s') or float('nan'):.1f} s,"
                      f" best {row['best_val']:.4f}, cpu share {row['cpu_share']:.2f}, load {row['load_before']:.1f}"
                      f"->{row['load_after']:.1f}{' LOADED' if row['loaded'] else ''}", flush=True)
        invocation["target"] = target
        summary = summarise(rows, results["speed"].get(key, {}), args.threads)
        show(summary, target, args.threads)
        if any(r["loaded"] for r in rows):
            print("\nNOTE: runs marked LOADED were timed while other work shared the CPU: trust steps to target, and "
                  "take times from --speed (interleaved) over absolute seconds.")
        results.setdefault("summaries", []).append({**invocation, "threads": args.threads, "rows": summary})
    write(args.out, results)
    print(f"wrote {args.out}")
    return 0


def write(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    raise SystemExit(main())
