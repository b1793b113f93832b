"""What the torchrun wrappers cost on one process: DDP (and FSDP2) at world size 1 against the bare model.

The training step is the trainer's (forward with the shifted loss, backward, clipping, fused AdamW) on the
``cpu-tiny`` preset's model, on the same batches; the three variants take turns in windows of
``--window`` steps (interleaved, so a machine that is busy for a while slows them alike) and the median
ms/step of each is compared with the bare model's. The process group is gloo with one rank (no traffic:
what is measured is the wrappers' own hooks and bookkeeping). Goal: DDP within 3 % of the bare model.

    python benchmarks/bench_ddp.py [--windows 8] [--window 40] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--windows", type=int, default=8, help="turns per variant (default 8)")
    ap.add_argument("--window", type=int, default=40, help="steps per turn (default 40)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = every core)")
    ap.add_argument("--no-fsdp", action="store_true", help="leave FSDP2 out")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "ddp.json")
    args = ap.parse_args()

    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from shiftstudio.core.model.gpt import GPT
    from shiftstudio.core.train.optim import build_optimizer
    from shiftstudio.core.train.sharding import shard
    from shiftstudio.presets import load_preset

    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(29500 + os.getpid() % 1000))
    dist.init_process_group("gloo", rank=0, world_size=1)
    config = load_preset("cpu-tiny")
    mc, tc = config.model, config.train
    vocab = 65
    device = torch.device("cpu")

    def variant(kind: str):
        torch.manual_seed(1337)
        model = GPT(mc, vocab)
        if kind == "fsdp":
            shard(model, torch.float32)
        optimizer = build_optimizer(model, tc, device)
        step_model = model
        if kind == "ddp":
            step_model = DistributedDataParallel(model, broadcast_buffers=False) if "forward_sync_buffers" not in \
                DistributedDataParallel.__init__.__code__.co_varnames else DistributedDataParallel(model, forward_sync_buffers=False)
        params = [p for p in model.parameters() if p.requires_grad]
        return step_model, optimizer, params

    g = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, vocab, (tc.batch_size, mc.block_size + 1), generator=g) for _ in range(args.window)]

    def run_window(step_model, optimizer, params) -> float:
        start = time.perf_counter()
        for b in batches:
            out = step_model(b[:, :-1], b[:, 1:].unsqueeze(1))
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(params, tc.grad_clip, foreach=True)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return 1000.0 * (time.perf_counter() - start) / len(batches)

    kinds = ["bare", "ddp"] + ([] if args.no_fsdp else ["fsdp"])
    models = {k: variant(k) for k in kinds}
    for k in kinds:  # warm-up turn, untimed
        run_window(*models[k])
    times: dict[str, list[float]] = {k: [] for k in kinds}
    for _ in range(args.windows):
        for k in kinds:
            times[k].append(run_window(*models[k]))
    dist.destroy_process_group()

    bare = statistics.median(times["bare"])
    print(f"cpu-tiny, {torch.get_num_threads()} thread(s), {args.windows} turns of {args.window} steps, gloo world size 1")
    result = {"threads": torch.get_num_threads(), "windows": args.windows, "window": args.window, "variants": {}}
    for k in kinds:
        med = statistics.median(times[k])
        spread = (min(times[k]), max(times[k]))
        print(f"  {k:5s} {med:7.2f} ms/step (range {spread[0]:.2f}-{spread[1]:.2f})   {med / bare:.3f}x bare")
        result["variants"][k] = {"ms_per_step": med, "ratio": med / bare, "all": times[k]}
    overhead = statistics.median(times["ddp"]) / bare - 1.0
    print(f"DDP overhead at world size 1: {100 * overhead:+.1f}% (goal: at most +3%)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
