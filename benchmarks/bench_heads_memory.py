"""Peak memory of a K-head training step: all heads' logits at once (before) vs one head at a time (after).

    python benchmarks/bench_heads_memory.py                 # gpt2-124m shape, K = 4, batch 4 x 256, CPU
    python benchmarks/bench_heads_memory.py --shift 2 --threads 2 [--head_kind residual|linear|block] [--steps N]

Each mode runs in a fresh process, which builds ``GPT`` (12 layers, 12 heads, 768 wide, vocabulary 50,257,
``shift`` heads), does ``--steps`` training steps (forward with targets and an all-ones mask, backward, AdamW)
on one batch of random tokens, and reads its peak RSS (``VmHWM`` from /proc/self/status) and its RSS before the
first step (weights + optimizer-free baseline):

- ``before``: the single cross-entropy over all K heads' logits (B, K, T, V) — the previous implementation,
  which ``GPT.forward`` still takes when the logits are asked for (``return_logits=True``);
- ``after``: the default path, one head's logits at a time under activation checkpointing;
- ``k1``: the same model with K = 1 (the hot path, unchanged), for scale.

Prints one line per mode: peak RSS, peak minus the baseline, and the median step time. Linux only (VmHWM).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

VOCAB = 50257


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def child(mode: str, shift: int, head_kind: str, batch: int, T: int, steps: int, threads: int) -> dict:
    import torch

    from shiftstudio.config import ModelConfig
    from shiftstudio.core.model.gpt import GPT

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    K = 1 if mode == "k1" else shift
    config = ModelConfig(n_layer=12, n_head=12, n_embd=768, block_size=T, shift=K, head_kind=head_kind)
    model = GPT(config, VOCAB)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=True)
    x = torch.randint(0, VOCAB, (batch, T))
    y = torch.randint(0, VOCAB, (batch, K, T))
    mask = torch.ones(batch, K, T)
    baseline = _status_kib("VmRSS")
    times, losses = [], []
    for _ in range(steps):
        t = time.perf_counter()
        out = model(x, y, mask, return_logits=mode == "before")
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t)
        losses.append(out.loss.item())
        del out
    return {
        "mode": mode, "shift": K, "peak_mib": _status_kib("VmHWM") / 1024, "baseline_mib": baseline / 1024,
        "step_s": statistics.median(times), "loss": losses[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shift", type=int, default=4)
    parser.add_argument("--head_kind", default="residual")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--block", type=int, default=256)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--modes", default="before,after,k1")
    parser.add_argument("--child", default="")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.shift, args.head_kind, args.batch, args.block, args.steps, args.threads)))
        return
    print(f"gpt2-124m shape, vocabulary {VOCAB:,}, K = {args.shift} ({args.head_kind} heads), "
          f"batch {args.batch} x {args.block}, {args.steps} steps, {args.threads} threads, CPU float32")
    results = {}
    for mode in args.modes.split(","):
        cmd = [sys.executable, __file__, "--child", mode] + [
            f"--{k}={getattr(args, k)}" for k in ("shift", "head_kind", "batch", "block", "steps", "threads")
        ]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        r = results[mode] = json.loads(out)
        print(f"{mode:>6} (K={r['shift']}): peak RSS {r['peak_mib']:8.0f} MiB, above the built model "
              f"{r['peak_mib'] - r['baseline_mib']:7.0f} MiB, step {r['step_s']:6.2f} s, first loss {r['loss']:.4f}")
    if "before" in results and "after" in results:
        b, a = results["before"], results["after"]
        print(f"after/before: peak {a['peak_mib'] / b['peak_mib']:.2f}x, "
              f"above the model {(a['peak_mib'] - a['baseline_mib']) / (b['peak_mib'] - b['baseline_mib']):.2f}x, "
              f"step time {a['step_s'] / b['step_s']:.2f}x; same first loss: {abs(a['loss'] - b['loss']) < 1e-4}")


if __name__ == "__main__":
    main()
