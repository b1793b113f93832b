"""Fine-tuning: our training step against a plain ``transformers`` GPT-2 step, and LoRA against full fine-tuning.

    python benchmarks/bench_finetune.py            # the GPT-2 124M shape: several minutes on 2 cores
    python benchmarks/bench_finetune.py --quick    # a scaled-down GPT-2 shape: 40 s on 2 busy cores, mostly imports
    python benchmarks/bench_finetune.py [--rounds N] [--steps N] [--threads N] [--shape gpt2-124m|quick]

1. **Step speed, ours vs transformers.** ``GPT2LMHeadModel(GPT2Config(...))``
   (random weights, no download; 12 layers, 12 heads, 768 wide, vocabulary
   50,257, learned positions, biases, ``gelu_new``, tied head, no dropout) and
   our ``GPT`` holding *the same weights*, converted by the importer's own
   functions (``hf.gpt2_state_dict`` + ``hf.complete_state_dict``: what
   ``load_hf_model`` does after reading the files, without the file round
   trip). One batch of 4 × 256 random tokens for both. Theirs: ``model(input_ids=x,
   labels=x).loss``, backward, ``clip_grad_norm_(…, 1.0)``, ``torch.optim.AdamW``
   with ``fused=True`` (what transformers' own ``Trainer`` uses by default with
   torch >= 2.8), ``zero_grad``. Ours: the body of ``Trainer._train_step`` (the
   GPT's forward with targets and an all-ones mask, backward, foreach clipping
   at 1.0, the engine's fused AdamW from ``build_optimizer`` with its decay
   groups). Before timing, both models score the same tokens and must give the
   same loss (a fact, not a timing). A third contender, our GPT with LoRA r=8
   on all four targets (``apply_lora_settings``, as ``--lora_rank 8`` does),
   takes the same turns. Turns rotate; the figure is the median step time.
2. **Memory and checkpoints, LoRA vs full.** Each mode runs in a fresh
   process (the parent writes the converted weights as ``base.safetensors``
   first), which does what ``setup.build`` does — a ``GPT``, the base weights
   loaded from the file, adapters for LoRA, the engine's optimizer — then a
   few training steps, then reads its peak RSS (``VmHWM``), and writes a real
   checkpoint with ``save_checkpoint`` holding what the trainer saves
   (``setup.saved_weights`` + ``optimizer_tensors``: every weight and its AdamW
   state for full fine-tuning; the adapters and theirs for LoRA).

``--quick`` uses a GPT-2-like shape scaled down (2 layers, 4 heads, 128 wide,
vocabulary 8,192, 4 × 64 tokens) and fewer steps. Results go to
``benchmarks/results/finetune.json``.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHAPES = {
    "gpt2-124m": {"n_layer": 12, "n_head": 12, "n_embd": 768, "vocab_size": 50257, "batch_size": 4, "block_size": 256},
    "quick": {"n_layer": 2, "n_head": 4, "n_embd": 128, "vocab_size": 8192, "batch_size": 4, "block_size": 64},
}
LORA = {"lora_rank": 8, "lora_targets": "attn_qkv,attn_out,mlp_in,mlp_out"}  # alpha 16, dropout 0: the defaults
LR = 1e-4


def proc_status_mb(key: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def train_config(lora: bool):
    from shiftstudio.config import TrainConfig

    return TrainConfig(learning_rate=LR, min_lr=LR / 10, grad_clip=1.0, device="cpu", dtype="float32",
                       **(LORA if lora else {"lora_rank": 0}))


def model_config(shape: dict):
    """Our ModelConfig for the GPT-2 config of ``shape``, read by the importer's own GPT-2 config reader."""
    from shiftstudio.config import ModelConfig
    from shiftstudio.core.model import hf

    cfg = {"model_type": "gpt2", "n_layer": shape["n_layer"], "n_head": shape["n_head"], "n_embd": shape["n_embd"],
           "n_positions": 1024, "vocab_size": shape["vocab_size"], "activation_function": "gelu_new"}
    architecture, _, _ = hf._gpt2_architecture(cfg, Path("config.json"))
    return ModelConfig(**architecture, block_size=shape["block_size"], dropout=0.0)


def batch(shape: dict, seed: int = 1234):
    """One batch: inputs (B, T); our targets (B, 1, T) = the next tokens and an all-ones mask, as the text sampler gives."""
    import torch

    g = torch.Generator().manual_seed(seed)
    seq = torch.randint(0, shape["vocab_size"], (shape["batch_size"], shape["block_size"] + 1), generator=g)
    x, y = seq[:, :-1].contiguous(), seq[:, 1:].unsqueeze(1).contiguous()
    return x, y, torch.ones(y.shape, dtype=torch.float32)


class OurStep:
    """``Trainer._train_step`` for one micro-batch, fp32 on the CPU (no scaler, no EMA), on a fixed batch."""

    def __init__(self, model, lora: bool, x, y, mask) -> None:
        import torch

        from shiftstudio.core.model.lora import apply_lora_settings
        from shiftstudio.core.train.optim import build_optimizer

        tc = train_config(lora)
        if lora:
            apply_lora_settings(model, tc)
        self.model = model.train()
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = build_optimizer(model, tc, torch.device("cpu"))
        self.x, self.y, self.mask = x, y, mask
        self.clip = torch.nn.utils.clip_grad_norm_

    def __call__(self):
        for group in self.optimizer.param_groups:
            group["lr"] = LR
        loss = self.model(self.x, self.y, self.mask).loss
        loss.backward()
        self.clip(self.params, 1.0, foreach=True)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.detach()


class HFStep:
    """A plain transformers step: labels=input_ids, backward, clip at 1.0, torch's fused AdamW."""

    def __init__(self, model, x) -> None:
        import torch

        self.model = model.train()
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=LR, betas=(0.9, 0.99), weight_decay=0.1, fused=True)
        self.x = x
        self.clip = torch.nn.utils.clip_grad_norm_

    def __call__(self):
        loss = self.model(input_ids=self.x, labels=self.x).loss
        loss.backward()
        self.clip(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.detach()


# -- one mode in its own process: peak memory and checkpoint size ---------------------------------------


def child(mode: str, shape_name: str, base_path: Path, steps: int, threads: int) -> None:
    """What ``setup.build`` does for a fine-tuning run (GPT, base weights from the file, adapters, the
    engine's optimizer), ``steps`` steps, then VmHWM, then a real checkpoint. Prints one JSON line."""
    import torch

    torch.set_num_threads(threads)
    from safetensors.torch import load_file

    from shiftstudio.core.model.gpt import GPT
    from shiftstudio.core.runs import checkpoint as ckpt
    from shiftstudio.core.train import setup

    rss_import = proc_status_mb("VmRSS")
    shape = SHAPES[shape_name]
    parent = os.getppid()
    while not base_path.is_file():  # started with the parent, so that its imports overlap the parent's
        if os.getppid() != parent:
            raise SystemExit("the benchmark's parent process is gone")
        time.sleep(0.05)
    torch.manual_seed(0)
    model = GPT(model_config(shape), shape["vocab_size"])
    base = load_file(str(base_path), device="cpu")
    model.load_state_dict(base)
    del base
    step = OurStep(model, mode == "lora", *batch(shape))
    trainable = sum(p.numel() for p in step.params)
    rss_built = proc_status_mb("VmRSS")
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        loss = step()
        times.append(time.perf_counter() - t)
    peak, after = proc_status_mb("VmHWM"), proc_status_mb("VmRSS")
    adam = sum(t.numel() * t.element_size() for slots in step.optimizer.state.values() for t in slots.values()
               if torch.is_tensor(t))
    with tempfile.TemporaryDirectory(prefix="bench-ft-ckpt-") as tmp:
        state = {"step": steps, "tokens": steps * shape["batch_size"] * shape["block_size"]}
        if mode == "lora":
            state["lora"] = {"base_sha256": None, "base_file": "base.safetensors"}
        path = ckpt.save_checkpoint(tmp, steps, state, setup.saved_weights(step.model),
                                    ckpt.optimizer_tensors(step.model, step.optimizer))
        files = {p.name: p.stat().st_size for p in sorted(path.iterdir())}
    print(json.dumps({
        "mode": mode, "trainable_params": trainable, "total_params": sum(p.numel() for p in step.model.parameters()),
        "rss_after_import_mb": rss_import, "rss_built_mb": rss_built, "peak_rss_mb": peak, "rss_after_steps_mb": after,
        "optimizer_state_mb": adam / 2**20, "trainable_mb": 4 * trainable / 2**20,
        "step_s": times, "last_loss": float(loss), "checkpoint_files": files, "checkpoint_bytes": sum(files.values()),
    }), flush=True)


def spawn_child(mode: str, shape_name: str, base_path: Path, steps: int, threads: int) -> subprocess.Popen:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", mode, "--shape", shape_name,
           "--base", str(base_path), "--steps", str(steps), "--threads", str(threads)]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)


def child_result(proc: subprocess.Popen) -> dict:
    out, _ = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"a memory child failed with status {proc.returncode}")
    return json.loads(out.strip().splitlines()[-1])


# -- the parent ------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a scaled-down GPT-2 shape and fewer steps")
    ap.add_argument("--shape", choices=sorted(SHAPES), default=None, help="model shape (default gpt2-124m; quick with --quick)")
    ap.add_argument("--rounds", type=int, default=None, help="turns of each contender (default 3; quick 4)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per turn (default 1; quick 3); in a child: steps run")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads for all contenders (0 = torch's default)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "finetune.json")
    ap.add_argument("--child", choices=["full", "lora"], help=argparse.SUPPRESS)
    ap.add_argument("--base", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    shape_name = args.shape or ("quick" if args.quick else "gpt2-124m")
    if args.child:
        child(args.child, shape_name, args.base, args.steps or 2, args.threads or 1)
        return 0
    rounds = args.rounds or (4 if args.quick else 3)
    per_turn = args.steps or (3 if args.quick else 1)
    warmup = 2 if args.quick else 1
    child_steps = 2

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    shape = SHAPES[shape_name]
    tokens = shape["batch_size"] * shape["block_size"]
    started = time.perf_counter()
    tmp = tempfile.TemporaryDirectory(prefix="bench-ft-")
    base_path = Path(tmp.name) / "base.safetensors"
    # The memory children start now: their imports overlap ours, then they wait for the base weights. Their own
    # step times are not the figure (the parent builds its models meanwhile); the parent times nothing until
    # both have finished.
    procs = {mode: spawn_child(mode, shape_name, base_path, child_steps, threads) for mode in ("full", "lora")}
    atexit.register(lambda: [p.kill() for p in procs.values() if p.poll() is None])  # should the parent fail

    from safetensors.torch import save_file
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging as hf_logging

    from shiftstudio.core.model import hf
    from shiftstudio.core.model.gpt import GPT

    hf_logging.set_verbosity_error()
    torch.manual_seed(0)
    hf_config = GPT2Config(n_layer=shape["n_layer"], n_head=shape["n_head"], n_embd=shape["n_embd"], n_positions=1024,
                           vocab_size=shape["vocab_size"], activation_function="gelu_new", resid_pdrop=0.0,
                           embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=True)
    theirs = GPT2LMHeadModel(hf_config)
    mc = model_config(shape)
    with torch.device("meta"):
        shell = GPT(mc, shape["vocab_size"])
    state = hf.complete_state_dict(shell, hf.gpt2_state_dict(theirs.state_dict(), mc, shape["vocab_size"]))
    del shell

    with tmp:
        partial = base_path.with_name("base.partial")
        save_file(state, str(partial))  # what write_base leaves in a fine-tuning run folder
        os.replace(partial, base_path)

        def ours_model(weights: dict) -> GPT:
            with torch.device("meta"):
                m = GPT(mc, shape["vocab_size"])
            m = m.to_empty(device="cpu")
            m.load_state_dict(weights)
            return m

        x, y, mask = batch(shape)
        full_model, lora_model = ours_model(state), ours_model(state)
        with torch.no_grad():  # the same function: the same loss on the same tokens (our last target masked: HF scores T-1)
            last_off = mask.clone()
            last_off[..., -1] = 0.0
            our_loss = float(full_model(x, y, last_off).loss)
            their_loss = float(theirs(input_ids=x, labels=x).loss)
        same_loss = abs(our_loss - their_loss) <= 1e-4 * max(1.0, abs(their_loss))
        print(f"same weights, same tokens: ours {our_loss:.6f}, transformers {their_loss:.6f} "
              f"({'same' if same_loss else 'DIFFERENT'})", flush=True)
        contenders = [("transformers", HFStep(theirs, x), []), ("ours", OurStep(full_model, False, x, y, mask), []),
                      ("ours LoRA r=8", OurStep(lora_model, True, x, y, mask), [])]
        memory = {mode: child_result(p) for mode, p in procs.items()}  # wait: nothing else runs while we time
    del state
    print(f"set-up (imports, models, memory children) {time.perf_counter() - started:.1f} s", flush=True)

    for _, step, _ in contenders:
        for _ in range(warmup):
            step()
    for r in range(rounds):
        k = r % len(contenders)
        for _, step, sink in contenders[k:] + contenders[:k]:
            for _ in range(per_turn):
                t = time.perf_counter()
                step()
                sink.append(time.perf_counter() - t)
        print(f"round {r + 1}/{rounds} (ms/step): "
              + "   ".join(f"{name} {1000 * statistics.median(sink[-per_turn:]):8.1f}" for name, _, sink in contenders),
              flush=True)

    med = {name: statistics.median(sink) for name, _, sink in contenders}
    speed = {name: {"ms_per_step": 1000 * m, "tokens_per_s": tokens / m, "best_ms_per_step": 1000 * min(sink),
                    "steps_ms": [1000 * s for s in sink]} for (name, _, sink), m in zip(contenders, med.values())}
    full, lora = memory["full"], memory["lora"]
    result = {
        "benchmark": "finetune",
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "threads": threads, "torch": torch.__version__},
        "shape": shape_name, "settings": {**shape, "rounds": rounds, "steps_per_turn": per_turn, "warmup": warmup,
                                         "child_steps": child_steps, "weights": "GPT2LMHeadModel(GPT2Config(...)) random, "
                                         "converted by hf.gpt2_state_dict + hf.complete_state_dict", **LORA},
        "same_loss": same_loss, "loss_ours": our_loss, "loss_transformers": their_loss,
        "speed": speed,
        "ratio_ours_vs_transformers": med["transformers"] / med["ours"],  # > 1: ours is faster
        "ratio_lora_vs_full": med["ours"] / med["ours LoRA r=8"],  # > 1: a LoRA step is faster
        "memory": memory,
        "lora_checkpoint_smaller": lora["checkpoint_bytes"] < full["checkpoint_bytes"],
    }
    print()
    print(f"{shape_name}: {shape['n_layer']} layers × {shape['n_embd']} wide, vocab {shape['vocab_size']:,}, "
          f"batch {shape['batch_size']} × {shape['block_size']}, {threads} thread(s), {rounds} rounds of {per_turn} step(s)")
    print(f"{'':16} {'ms/step':>9} {'tokens/s':>9} {'best ms':>9}")
    for name, s in speed.items():
        print(f"{name:16} {s['ms_per_step']:9.1f} {s['tokens_per_s']:9,.0f} {s['best_ms_per_step']:9.1f}")
    print(f"ours / transformers speed: {result['ratio_ours_vs_transformers']:.3f}x (median step); "
          f"LoRA / full speed: {result['ratio_lora_vs_full']:.3f}x")
    print(f"{'':16} {'trainable':>12} {'RSS built':>10} {'peak RSS':>10} {'RSS after':>10} {'AdamW state':>12} {'checkpoint':>12}")
    for mode, m in memory.items():
        print(f"{mode:16} {m['trainable_params']:12,} {m['rss_built_mb']:7.0f} MB {m['peak_rss_mb']:7.0f} MB "
              f"{m['rss_after_steps_mb']:7.0f} MB {m['optimizer_state_mb']:9.1f} MB {m['checkpoint_bytes'] / 1e6:9.2f} MB")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")
    return 0  # facts (same loss, LoRA checkpoint smaller) are judged by run.py from the JSON


if __name__ == "__main__":
    sys.exit(main())
