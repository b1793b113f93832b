"""Generation speed: the KV-cache decoder against no cache and against a plain cached loop.

    python benchmarks/bench_generate.py            # about a minute on 2 cores
    python benchmarks/bench_generate.py --quick

1. **cpu-tiny, 500 new tokens, greedy**: ``Generation`` with its preallocated
   cache against the same windows re-run from scratch for every token (the
   no-cache loop), checking that both write the same tokens.
2. **cpu-tiny shape with a 512-token context**: the same at a context where
   attention over the prefix, not per-step overhead, is the cost.
3. **GPT-2-124M shape, random weights**: our decoder against a no-frills cached
   loop (``GPT.next_token_logits``, which grows its cache with ``torch.cat``).

Random weights: speed does not depend on what the weights say. Each figure
alternates baseline and ours and keeps the best of each run; results go to
``benchmarks/results/generate.json``.
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
from shiftstudio.presets import load_preset  # noqa: E402
from shiftstudio.core.model.gpt import GPT  # noqa: E402
from shiftstudio.core.generate.generation import Generation
from shiftstudio.core.generate.filters import SamplingSettings  # noqa: E402
from shiftstudio.core.data.tokenizer import char_tokenizer, train_bpe  # noqa: E402


def timed_generation(model, tok, prompt, n, use_cache) -> tuple[float, float, list[int]]:
    settings = SamplingSettings(max_new_tokens=n, temperature=0, stop_at_eot=False)
    start = time.perf_counter()
    first = None
    ids = []
    for token in Generation(model, tok, prompt, settings, use_cache=use_cache):
        if first is None:
            first = time.perf_counter() - start
        ids.append(token.id)
    return time.perf_counter() - start, first or 0.0, ids


@torch.inference_mode()
def plain_cached_loop(model: GPT, prompt: list[int], n: int) -> tuple[float, float, list[int]]:
    """The no-frills reference: cache grown by concatenation, greedy pick, no extras."""
    start = time.perf_counter()
    first = None
    logits, past = model.next_token_logits(torch.tensor([prompt]))
    out = []
    for _ in range(n):
        nxt = int(torch.argmax(logits[0]))
        if first is None:
            first = time.perf_counter() - start
        out.append(nxt)
        logits, past = model.next_token_logits(torch.tensor([[nxt]]), past)
    return time.perf_counter() - start, first or 0.0, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="fewer tokens and rounds")
    args = ap.parse_args()
    rounds = 1 if args.quick else args.rounds
    torch.manual_seed(0)
    text = paths.sample_corpus().read_text(encoding="utf-8")
    char = char_tokenizer(set(text))
    rows = []

    def compare(name: str, model: GPT, tok, prompt: str, n: int) -> None:
        model.eval()
        timed_generation(model, tok, prompt, 8, True)  # warm-up of both paths
        timed_generation(model, tok, prompt, 8, False)
        base_runs, our_runs = [], []
        for _ in range(rounds):
            base_runs.append(timed_generation(model, tok, prompt, n, False))
            our_runs.append(timed_generation(model, tok, prompt, n, True))
        base, ours = min(base_runs), min(our_runs)
        rows.append({
            "name": name, "new_tokens": n, "baseline_tokens_per_s": n / base[0], "tokens_per_s": n / ours[0],
            "ratio": base[0] / ours[0], "first_token_ms": 1000 * ours[1], "identical_greedy": base[2] == ours[2],
        })

    tiny = load_preset("cpu-tiny").model
    n_tiny = 200 if args.quick else 500
    compare(f"cpu-tiny (block {tiny.block_size}), no cache -> cache", GPT(tiny, char.vocab_size), char, "ROMEO:", n_tiny)
    wide = ModelConfig(**{**vars(tiny), "block_size": 512})
    compare("cpu-tiny shape, block 512, no cache -> cache", GPT(wide, char.vocab_size), char, "ROMEO:", n_tiny)

    gpt2 = ModelConfig(n_layer=12, n_head=12, n_embd=768, block_size=1024, dropout=0.0, bias=True)
    bpe = train_bpe([text[:200_000]], vocab_size=1024)
    model = GPT(gpt2, 50257).eval()
    prompt = bpe.encode("ROMEO: What say you, my lord?")
    n = 32 if args.quick else 100
    plain_cached_loop(model, prompt, 4)
    base_runs, our_runs = [], []
    for _ in range(rounds):
        base_runs.append(plain_cached_loop(model, prompt, n))
        our_runs.append(timed_generation(model, bpe, prompt, n, True))
    base, ours = min(base_runs), min(our_runs)
    rows.append({
        "name": "GPT-2-124M shape, plain cached loop -> ours", "new_tokens": n, "baseline_tokens_per_s": n / base[0],
        "tokens_per_s": n / ours[0], "ratio": base[0] / ours[0], "first_token_ms": 1000 * ours[1],
        "identical_greedy": base[2] == ours[2],
    })

    print(f"threads: {torch.get_num_threads()}, best of {rounds}\n")
    print(f"{'benchmark':<46}{'baseline tok/s':>15}{'ours tok/s':>12}{'ratio':>8}{'1st tok':>10}  same greedy")
    for r in rows:
        print(f"{r['name']:<46}{r['baseline_tokens_per_s']:>15.1f}{r['tokens_per_s']:>12.1f}{r['ratio']:>8.2f}"
              f"{r['first_token_ms']:>8.1f}ms  {r['identical_greedy']}")
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "generate.json").write_text(json.dumps({
        "benchmark": "generate", "machine": platform.platform(), "torch": torch.__version__,
        "threads": torch.get_num_threads(), "rounds": rounds, "results": rows,
    }, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
