"""Self-speculative decoding: greedy tokens/s, speculative vs plain, on the same K = 4 weights.

    python benchmarks/bench_speculative.py                 # trains a small K = 4 char model first (~1 min)
    python benchmarks/bench_speculative.py --quick         # a smaller model, fewer steps (under 20 s)
    python benchmarks/bench_speculative.py --run RUN_DIR   # a trained run with shift >= 2 instead

Random weights accept almost no drafts, so the benchmark trains its own model
on tiny shakespeare (heads 2..4 must have learned something), then times
``Generation`` greedy with ``speculative=False`` and ``True`` (alternating,
best of each), reports tokens/s, the ratio, the drafts accepted per pass and
whether the two texts are identical. Results go to
``benchmarks/results/speculative.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from shiftstudio import paths  # noqa: E402
from shiftstudio.config import ModelConfig  # noqa: E402
from shiftstudio.core.data.tokenizer import char_tokenizer  # noqa: E402
from shiftstudio.core.generate.filters import SamplingSettings  # noqa: E402
from shiftstudio.core.generate.generation import Generation  # noqa: E402
from shiftstudio.core.model.gpt import GPT  # noqa: E402


def train_k4(text: str, quick: bool):
    """A small K = 4 char model trained on the sample corpus (AdamW, no frills)."""
    tok = char_tokenizer(set(text))
    if quick:
        cfg, steps, batch = ModelConfig(n_layer=2, n_head=2, n_embd=48, block_size=32, dropout=0.0, shift=4), 200, 12
    else:
        cfg, steps, batch = ModelConfig(n_layer=4, n_head=4, n_embd=128, block_size=128, dropout=0.0, shift=4), 600, 24
    torch.manual_seed(0)
    model = GPT(cfg, tok.vocab_size)
    data = torch.tensor(tok.encode(text[:400_000]))
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3 if quick else 2e-3)
    T, K = cfg.block_size, cfg.shift
    offsets = torch.arange(T)
    start = time.perf_counter()
    for _ in range(steps):
        s = torch.randint(0, len(data) - T - K, (batch, 1))
        x = data[s + offsets]  # (B, T)
        y = torch.stack([data[s + offsets + k] for k in range(1, K + 1)], dim=1)  # (B, K, T)
        loss = model(x, y).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    print(f"trained K = 4 model ({model.num_params():,} parameters) for {steps} steps in {time.perf_counter() - start:.1f}s, "
          f"last loss {loss.item():.2f}")
    return model.eval(), tok


def timed(model, tok, prompt: str, n: int, speculative: bool) -> tuple[float, Generation, list[int]]:
    g = Generation(model, tok, prompt, SamplingSettings(max_new_tokens=n, temperature=0, stop_at_eot=False),
                   speculative=speculative)
    start = time.perf_counter()
    ids = [t.id for t in g]
    return time.perf_counter() - start, g, ids


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a smaller model, fewer tokens and rounds (under 20 s)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--run", default="", help="a trained run folder with shift >= 2 to time instead")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "speculative.json"))
    args = ap.parse_args()
    rounds = 1 if args.quick else args.rounds
    torch.set_num_threads(1)  # a model this small decodes (and trains) faster on one thread than on two that contend
    if args.run:
        from shiftstudio.core.runs.loading import load_model

        model, tok, _ = load_model(args.run)
        if model.config.shift < 2:
            print(f"{args.run}: the model has 1 head; speculative decoding needs shift >= 2", file=sys.stderr)
            return 2
        name = f"run {Path(args.run).name}"
    else:
        model, tok = train_k4(paths.sample_corpus().read_text(encoding="utf-8"), args.quick)
        name = "K=4 char model " + ("(2x48, block 32)" if args.quick else "(4x128, block 128)")
    n = 150 if args.quick else 500
    prompts = ["ROMEO:\n", "First Citizen:\n"]
    rows = []
    for prompt in prompts:
        timed(model, tok, prompt, 16, False)  # warm-up of both paths
        timed(model, tok, prompt, 16, True)
        plain_runs, spec_runs = [], []
        for _ in range(rounds):
            plain_runs.append(timed(model, tok, prompt, n, False))
            spec_runs.append(timed(model, tok, prompt, n, True))
        plain = min(plain_runs, key=lambda r: r[0])
        spec = min(spec_runs, key=lambda r: r[0])
        g = spec[1]
        rows.append({
            "name": f"{name}, greedy, prompt {prompt.strip()!r}", "new_tokens": n, "heads": model.config.shift,
            "plain_tokens_per_s": n / plain[0], "speculative_tokens_per_s": n / spec[0], "ratio": plain[0] / spec[0],
            "mean_accepted_per_pass": g.mean_accepted_per_pass, "tokens_per_pass": n / g.passes,
            "accepted_histogram": g.accepted_histogram, "identical_greedy": plain[2] == spec[2],
        })
    print(f"\nthreads: {torch.get_num_threads()}, best of {rounds}\n")
    print(f"{'benchmark':<58}{'plain tok/s':>12}{'spec tok/s':>12}{'ratio':>7}{'acc/pass':>10}  histogram  same greedy")
    for r in rows:
        print(f"{r['name']:<58}{r['plain_tokens_per_s']:>12.1f}{r['speculative_tokens_per_s']:>12.1f}{r['ratio']:>7.2f}"
              f"{r['mean_accepted_per_pass']:>10.2f}  {r['accepted_histogram']}  {r['identical_greedy']}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "benchmark": "speculative", "machine": platform.platform(), "torch": torch.__version__,
        "threads": torch.get_num_threads(), "rounds": rounds, "results": rows,
    }, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
