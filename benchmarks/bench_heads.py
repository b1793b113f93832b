"""Do the shift heads pay? Head-1 quality, draft acceptance and speculative speed, per K and head kind.

    python benchmarks/bench_heads.py                     # 2000 steps per model: ~15-20 minutes on 2 cores
    python benchmarks/bench_heads.py --steps 500 --configs 1:residual,4:residual
    python benchmarks/bench_heads.py --workdir /tmp/heads --reuse   # measure runs trained before

For each configuration ``K:kind`` it trains the shipped ``cpu-tiny`` shape on
tiny shakespeare through the real CLI (``shiftstudio train --preset cpu-tiny
--shift K --head_kind kind``), then on the best checkpoint measures:

- **head-1 validation loss** (next-token prediction; ``K = 1`` is the reference);
- **acceptance**: mean drafts accepted per verifying pass of self-speculative
  greedy decoding;
- **greedy tokens/s, speculative vs plain**, on the same weights, alternating
  rounds, and whether both wrote exactly the same tokens.

Then the first ``K >= 2`` model is exported to the Hugging Face layout and
``transformers``' ``model.generate`` (greedy) is timed on the same prompt
against ours: the figure a user would quote. Generation stays inside the
model's context (``block_size`` 64) there, since the two slide windows
differently beyond it; so that figure is over many short generations.

Writes ``benchmarks/results/heads.json``. Not part of ``run.py --quick``
(training is the point, and it takes minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PROMPT = "ROMEO:\n"


def parse_config(text: str) -> tuple[int, str, str, str, int | None]:
    """``K:kind[:w1/w2/..[:schedule[:seed]]]`` -> (K, head_kind, shift_weights, shift_weight_schedule, seed).
    Weights "-" (or empty) mean all 1."""
    parts = text.split(":")
    if not 2 <= len(parts) <= 5:
        raise SystemExit(f"--configs: expected K:kind[:weights[:schedule[:seed]]], got {text!r}")
    weights = parts[2].replace("/", ",") if len(parts) > 2 and parts[2] != "-" else ""
    schedule = parts[3] if len(parts) > 3 else "constant"
    seed = int(parts[4]) if len(parts) > 4 else None
    return int(parts[0]), parts[1], weights, schedule, seed


def run_name(k: int, kind: str, weights: str, schedule: str, seed: int | None = None) -> str:
    name = f"k{k}-{kind}"
    if weights:
        name += "-w" + weights.replace(",", "_")
    if schedule != "constant":
        name += "-" + schedule
    if seed is not None:
        name += f"-seed{seed}"
    return name


def train(workdir: Path, k: int, kind: str, steps: int, threads: int, reuse: bool, weights: str = "",
          schedule: str = "constant", seed: int | None = None) -> Path:
    run = workdir / run_name(k, kind, weights, schedule, seed)
    if reuse and (run / "run.json").is_file():
        from shiftstudio.core.runs.folder import run_summary

        if run_summary(run)["steps"] >= steps:
            return run
        import shutil

        shutil.rmtree(run)  # an unfinished run: train it again from the start
    args = [sys.executable, "-m", "shiftstudio", "train", "--preset", "cpu-tiny", "--shift", str(k),
            "--max_iters", str(steps), "--lr_decay_iters", str(steps), "--eval_interval", str(max(steps // 8, 1)),
            "--out", str(run), "--device", "cpu", "--num_threads", str(threads)]
    if kind != "residual":
        args += ["--head_kind", kind]
    if weights:
        args += ["--shift_weights", weights]
    if schedule != "constant":
        args += ["--shift_weight_schedule", schedule]
    if seed is not None:
        args += ["--seed", str(seed)]
    env = {**os.environ, "SHIFTSTUDIO_HOME": str(workdir / "home")}
    started = time.perf_counter()
    done = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"training {run.name} failed:\n{done.stderr[-2000:]}")
    print(f"  trained {run.name} in {time.perf_counter() - started:.0f} s", flush=True)
    return run


def greedy(model, tokenizer, n: int, speculative: bool, draft_tree: int = 16):
    from shiftstudio.core.generate.filters import SamplingSettings
    from shiftstudio.core.generate.generation import Generation

    settings = SamplingSettings(max_new_tokens=n, temperature=0, stop_at_eot=False, seed=0)
    gen = Generation(model, tokenizer, PROMPT, settings, speculative=speculative, draft_tree=draft_tree)
    start = time.perf_counter()
    ids = [t.id for t in gen]
    return time.perf_counter() - start, ids, gen


def measure(run: Path, n: int, rounds: int) -> dict:
    """Plain greedy, speculative with one chain of drafts (``draft_tree = 0``) and with the default tree, on the
    same weights, alternating rounds, best of each."""
    from shiftstudio.core.generate.speculative import DRAFT_TREE
    from shiftstudio.core.runs.folder import run_summary
    from shiftstudio.core.runs.loading import load_model

    summary = run_summary(run)
    model, tokenizer, _ = load_model(run, "best")
    K = model.config.shift
    variants = {"plain": (False, 0)} | ({"chain": (True, 0), "tree": (True, DRAFT_TREE)} if K >= 2 else {})
    seconds = {name: [] for name in variants}
    accepted, same, reference = {}, True, None
    for _ in range(rounds):
        for name, (speculative, tree) in variants.items():
            t, ids, gen = greedy(model, tokenizer, n, speculative, tree)
            seconds[name].append(t)
            reference = reference or ids
            same = same and ids == reference
            if speculative:
                accepted[name] = gen.mean_accepted_per_pass
    best = {name: min(v) for name, v in seconds.items()}
    row = {
        "K": K, "head_kind": getattr(model.config, "head_kind", "residual"), "params": model.num_params(),
        "shift_weights": model_train_field(run, "shift_weights"), "schedule": model_train_field(run, "shift_weight_schedule"),
        "head1_val_loss": summary["best_val_loss"], "head1_full_val_loss": full_val_loss(run, model),
        "plain_tokens_per_s": n / best["plain"], "same_tokens": same,
        "run": str(run), "draft_tree": DRAFT_TREE,
    }
    for name in ("chain", "tree"):
        if name in best:
            row[f"{name}_tokens_per_s"] = n / best[name]
            row[f"{name}_speedup"] = best["plain"] / best[name]
            row[f"{name}_accepted_per_pass"] = accepted[name]
    return row


def full_val_loss(run: Path, model) -> float:
    """Head 1's mean loss over every non-overlapping window of the validation split (the 20-batch estimate
    the run logs moves by about ±0.015 with the windows it happens to pick)."""
    import numpy as np
    import torch

    from shiftstudio.core.runs.folder import open_run_store

    val = np.asarray(open_run_store(run).val, dtype=np.int64)
    T, K = model.config.block_size, model.config.shift
    n = (len(val) - K) // T
    x = torch.from_numpy(val[: n * T].reshape(n, T))
    y = torch.stack([torch.from_numpy(val[k : n * T + k].reshape(n, T)) for k in range(1, K + 1)], dim=1)  # (n, K, T)
    total = 0.0
    with torch.no_grad():
        for i in range(0, n, 64):
            out = model(x[i : i + 64], y[i : i + 64])
            total += float(out.head_losses[0]) * len(x[i : i + 64])
    return total / n


def model_train_field(run: Path, key: str) -> str:
    return json.loads((run / "run.json").read_text())["config"]["train"].get(key, "")


def versus_transformers(run: Path, rounds: int, repeats: int) -> dict:
    """Ours (speculative greedy) against transformers' greedy ``generate`` on the exported weights, inside the
    context: ``repeats`` generations of (block_size - prompt) tokens each."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    from shiftstudio.core.model.hf_export import export_hf
    from shiftstudio.core.runs.loading import load_model

    hf_logging.set_verbosity_error()
    model, tokenizer, _ = load_model(run, "best")
    folder = Path(tempfile.mkdtemp(prefix="heads-export-")) / "hf"
    export_hf(model, tokenizer, folder)
    theirs = AutoModelForCausalLM.from_pretrained(folder).eval()
    # No stop at <|endoftext|>, and no suppressing it either (min_new_tokens would): plain greedy, as ours runs.
    theirs.generation_config.eos_token_id = None
    prompt_ids = tokenizer.encode(PROMPT)
    n = model.config.block_size - len(prompt_ids)
    x = torch.tensor([prompt_ids])

    def run_theirs() -> tuple[float, list[int]]:
        start = time.perf_counter()
        with torch.no_grad():
            for _ in range(repeats):
                out = theirs.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=n, do_sample=False,
                                     pad_token_id=tokenizer.eot_id)  # the prompt's ids are never padding
        return time.perf_counter() - start, out[0, len(prompt_ids):].tolist()

    def run_ours(speculative: bool) -> tuple[float, list[int]]:
        start = time.perf_counter()
        for _ in range(repeats):
            _, ids, _ = greedy(model, tokenizer, n, speculative)
        return time.perf_counter() - start, ids

    best = {"transformers": 1e9, "ours plain": 1e9, "ours speculative": 1e9}
    texts = {}
    for _ in range(rounds):
        for name, fn in (("transformers", run_theirs), ("ours plain", lambda: run_ours(False)),
                         ("ours speculative", lambda: run_ours(True))):
            t, ids = fn()
            best[name] = min(best[name], t)
            texts[name] = ids
    tokens = n * repeats
    return {
        "tokens": tokens, "tokens_per_generation": n,
        **{f"{k} tokens_per_s": tokens / v for k, v in best.items()},
        "ours speculative vs transformers": best["transformers"] / best["ours speculative"],
        "same_tokens_as_transformers": texts["transformers"] == texts["ours speculative"],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--configs", default="1:residual,2:residual,4:residual,4:linear,4:block",
                    help="comma-separated K:head_kind[:weights/separated/by/slashes[:schedule]], "
                         "e.g. 4:residual:1/0.5/0.25/0.125:linear_to_zero")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--reuse", action="store_true", help="measure runs already in --workdir instead of training")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--train-only", action="store_true", help="train (or keep) the runs, measure nothing")
    ap.add_argument("--tokens", type=int, default=500, help="greedy tokens per timed generation")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "heads.json")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-heads-"))
    workdir.mkdir(parents=True, exist_ok=True)
    configs = [parse_config(c) for c in args.configs.split(",")]
    print(f"training {len(configs)} model(s) of the cpu-tiny shape for {args.steps} steps in {workdir}", flush=True)
    runs = [train(workdir, k, kind, args.steps, args.threads, args.reuse, *rest) for k, kind, *rest in configs]
    if args.train_only:
        return 0
    rows = [measure(run, args.tokens, args.rounds) for run in runs]
    reference = next((r["head1_val_loss"] for r in rows if r["K"] == 1), None)
    full_ref = next((r["head1_full_val_loss"] for r in rows if r["K"] == 1), None)
    print(f"\n{'model':<44}{'params':>9}{'head-1 val':>12}{'vs K=1':>9}{'full val':>10}{'vs K=1':>9}{'plain tok/s':>13}"
          f"{'chain: acc/pass':>17}{'speed-up':>10}{'tree: acc/pass':>17}{'speed-up':>10}  same")
    for r in rows:
        delta = f"{r['head1_val_loss'] - reference:+.3f}" if reference is not None else "–"
        name = f"K={r['K']} {r['head_kind']}" + (f" w={r['shift_weights']}" if r["shift_weights"] else "") + (
            f" {r['schedule']}" if r["schedule"] not in ("", "constant") else "")
        cells = []
        for variant in ("chain", "tree"):
            if f"{variant}_speedup" in r:
                cells.append(f"{r[f'{variant}_accepted_per_pass']:>17.2f}{r[f'{variant}_speedup']:>9.2f}x")
            else:
                cells.append(f"{'–':>17}{'–':>10}")
        full_delta = f"{r['head1_full_val_loss'] - full_ref:+.3f}" if full_ref is not None else "–"
        print(f"{name:<44}{r['params']:>9,}{r['head1_val_loss']:>12.4f}{delta:>9}{r['head1_full_val_loss']:>10.4f}"
              f"{full_delta:>9}{r['plain_tokens_per_s']:>13.0f}"
              f"{cells[0]}{cells[1]}  {r['same_tokens']}")
    peer = None
    first_multi = next((run for run, r in zip(runs, rows) if r["K"] >= 2), None)
    if first_multi is not None:
        peer = versus_transformers(first_multi, args.rounds, repeats=8)
        print(f"\nexported {first_multi.name} to the Hugging Face layout; greedy, {peer['tokens_per_generation']} tokens a "
              f"generation inside the context, {peer['tokens']} tokens in all:")
        for key in ("transformers tokens_per_s", "ours plain tokens_per_s", "ours speculative tokens_per_s"):
            print(f"  {key.replace(' tokens_per_s', ''):<18} {peer[key]:8.0f} tokens/s")
        print(f"  ours speculative / transformers: {peer['ours speculative vs transformers']:.2f}x "
              f"(same tokens: {peer['same_tokens_as_transformers']})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"steps": args.steps, "rows": rows, "transformers": peer,
                                    "threads": args.threads}, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
