"""Training speed: ShiftStudio's engine against the minimal reference trainer, interleaved.

Both train nanoGPT's "baby GPT" (char-level tiny shakespeare, n_layer=4
n_head=4 n_embd=128 block_size=64 batch_size=12, AdamW lr 1e-3 warmup 100
cosine to 1e-4, beta2 0.99, clip 1.0) in this one process. They take turns:
a window of steps for the reference, a window for ours, and so on, so that
load from other processes on the machine hits both alike; the figure is the
median over windows. Ours is the full engine (``Trainer.run()`` with its
reports, batch views and metrics log at ``log_interval=10``); evaluation is
kept out of the timed windows, as the reference has none there either.

    python benchmarks/bench_train.py [--steps 600] [--window 50] [--threads N] [--pos rope] [--views] [--quick]

With ``--views`` a third contender joins the turns: our engine with its batch
views (the inspector's per-row loss and top-5 at every log point) switched
off, to show what they cost.

Prints ms/iter and tokens/s of each and the ratios, and writes the numbers
to ``benchmarks/results/train-<time>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402

from reference_trainer import RefConfig, ReferenceTrainer, load_chars  # noqa: E402

BABY = {
    "n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 64, "batch_size": 12, "dropout": 0.0,
    "learning_rate": 1e-3, "lr_decay_iters": 2000, "min_lr": 1e-4, "beta2": 0.99, "warmup_iters": 100,
    "eval_iters": 20, "log_interval": 10, "device": "cpu", "dtype": "float32", "compile": False,
}
LOG_INTERVAL = BABY["log_interval"]


class Ours:
    """Our engine, driven one window at a time; only the time spent inside the engine is counted."""

    def __init__(self, workdir: Path, max_iters: int, threads: int, pos: str = "learned", batch_views: bool = True) -> None:
        from shiftstudio.config import RunConfig
        from shiftstudio.core.runs.folder import create_run
        from shiftstudio.core.data.store import prepare
        from shiftstudio.core.train.control import ViewRequest
        from shiftstudio.core.train.trainer import Trainer

        corpus = ROOT / "resources" / "tinyshakespeare.txt"
        config = RunConfig().updated({
            **BABY, "corpus": [str(corpus)], "tokenizer": "char", "val_fraction": 0.1,
            "max_iters": max_iters, "eval_interval": 10 * max_iters, "num_threads": threads, "pos": pos,
        })
        store = prepare(config.data, out_dir=workdir / "store")
        self.run_dir = create_run(config, store, workdir / "run")
        self.reports = Trainer(self.run_dir, store, views=ViewRequest(batch_views=batch_views)).run()
        self.tokens_per_step = BABY["batch_size"] * BABY["block_size"]
        self.losses: list[float] = []

    def window(self, steps: int) -> float:
        """Run ``steps`` steps (a multiple of log_interval); returns seconds spent in the engine."""
        want, spent = steps // LOG_INTERVAL, 0.0
        while want:
            t = time.perf_counter()
            report = next(self.reports)
            spent += time.perf_counter() - t
            if report.kind == "failed":
                raise RuntimeError(report.message)
            if report.kind == "train":
                self.losses.append(report.loss)
                want -= 1
        return spent

    def close(self) -> None:
        self.reports.close()


class Reference:
    def __init__(self) -> None:
        self.trainer = ReferenceTrainer(RefConfig(), load_chars())
        self.losses: list[float] = []

    def window(self, steps: int) -> float:
        t = time.perf_counter()
        for i in range(1, steps + 1):
            loss = self.trainer.step()
            if i % LOG_INTERVAL == 0:  # the usual log point: one sync, as nanoGPT's train.py does
                self.losses.append(loss.item())
        return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=600, help="timed steps for each trainer (default 600)")
    ap.add_argument("--window", type=int, default=50, help="steps per turn (a multiple of 10)")
    ap.add_argument("--warmup", type=int, default=50, help="untimed steps for each before measuring")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads for both (0 = torch's default)")
    ap.add_argument("--pos", choices=["learned", "rope"], default="learned",
                    help="our positions (the reference always uses learned ones, as nanoGPT)")
    ap.add_argument("--views", action="store_true",
                    help="also time our engine without batch views, to measure what the inspector's data costs")
    ap.add_argument("--quick", action="store_true", help="200 steps in windows of 20: a fast sanity check")
    ap.add_argument("--out", type=Path, default=None, help="where to write the JSON (default benchmarks/results/)")
    args = ap.parse_args()
    if args.quick:
        args.steps, args.window, args.warmup = 200, 20, 20
    if args.window % LOG_INTERVAL or args.warmup % LOG_INTERVAL:
        ap.error(f"--window and --warmup must be multiples of {LOG_INTERVAL}")
    windows = max(1, args.steps // args.window)
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()

    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        os.environ.setdefault("SHIFTSTUDIO_HOME", str(Path(tmp) / "home"))
        iters = args.warmup + windows * args.window + LOG_INTERVAL
        ours = Ours(Path(tmp) / "a", iters, threads, args.pos)
        bare = Ours(Path(tmp) / "b", iters, threads, args.pos, batch_views=False) if args.views else None
        ref = Reference()
        contenders = [("reference", ref, []), ("ours", ours, [])] + ([("no views", bare, [])] if bare else [])
        for _, trainer, _ in contenders:
            trainer.window(args.warmup)
        for i in range(windows):
            # rotate who goes first, so none always follows another's cache state
            k = i % len(contenders)
            for _, trainer, sink in contenders[k:] + contenders[:k]:
                sink.append(1000 * trainer.window(args.window) / args.window)
            line = "   ".join(f"{name} {sink[-1]:6.1f}" for name, _, sink in contenders)
            print(f"window {i + 1:>3}/{windows} (ms/iter): {line}", flush=True)
        for _, trainer, _ in contenders[1:]:
            trainer.close()
        ref_ms, our_ms = contenders[0][2], contenders[1][2]

    tokens = BABY["batch_size"] * BABY["block_size"]
    ref_med, our_med = statistics.median(ref_ms), statistics.median(our_ms)
    ref_best, our_best = min(ref_ms), min(our_ms)  # the least disturbed window of each, on a shared machine
    result = {
        "benchmark": "train-baby-gpt-cpu",
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "threads": threads, "torch": torch.__version__},
        "settings": {**BABY, "window": args.window, "windows": windows, "warmup": args.warmup},
        "reference": {"ms_per_iter": ref_med, "tokens_per_s": 1000 * tokens / ref_med, "windows_ms": ref_ms,
                      "last_loss": ref.losses[-1]},
        "ours": {"ms_per_iter": our_med, "tokens_per_s": 1000 * tokens / our_med, "windows_ms": our_ms,
                 "last_loss": ours.losses[-1]},
        "speedup": ref_med / our_med,  # > 1: ours is faster
        "speedup_best_window": ref_best / our_best,
    }
    result["reference"]["best_ms_per_iter"], result["ours"]["best_ms_per_iter"] = ref_best, our_best
    names = ["reference", "ours"]
    if bare is not None:
        bare_ms = contenders[2][2]
        bare_med = statistics.median(bare_ms)
        result["ours_without_batch_views"] = {
            "ms_per_iter": bare_med, "tokens_per_s": 1000 * tokens / bare_med, "windows_ms": bare_ms,
            "best_ms_per_iter": min(bare_ms), "last_loss": bare.losses[-1],
        }
        result["batch_views_cost"] = our_med / bare_med - 1  # share of step time the views add
        names.append("ours_without_batch_views")
    print()
    print(f"{'':25} {'ms/iter':>9} {'tokens/s':>10} {'best ms/iter':>13} {'loss@end':>9}")
    for name in names:
        r = result[name]
        print(f"{name:25} {r['ms_per_iter']:9.1f} {r['tokens_per_s']:10,.0f} {r['best_ms_per_iter']:13.1f} {r['last_loss']:9.4f}")
    print(f"ours / reference speed: {result['speedup']:.3f}x median, {result['speedup_best_window']:.3f}x best window "
          f"({threads} thread(s), {windows} windows of {args.window} steps each)")
    if bare is not None:
        print(f"batch views cost {100 * result['batch_views_cost']:+.1f}% of step time "
              f"(with {result['ours']['tokens_per_s']:,.0f} vs without {result['ours_without_batch_views']['tokens_per_s']:,.0f} tokens/s)")
    out = args.out or ROOT / "benchmarks" / "results" / f"train-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
