"""A no-frills reference trainer: the yardstick ShiftStudio's engine is timed against.

The plainest GPT and loop that do the job, in the style of nanoGPT's
``model.py`` + ``train.py`` (written for this benchmark, not copied): a char
vocabulary of exactly the corpus alphabet, one fused qkv matmul, SDPA with
``is_causal``, AdamW with decay on matrices, warmup + cosine, clipping, and
``loss.item()`` only when asked. No checkpoints, no reports, no metrics log.

Run alone: ``python benchmarks/reference_trainer.py [--iters N]`` prints the
val loss and ms/iter; ``bench_train.py`` imports :class:`ReferenceTrainer`.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]


class RefConfig:
    def __init__(self, **kw: float) -> None:
        self.n_layer, self.n_head, self.n_embd, self.block_size = 4, 4, 128, 64
        self.batch_size, self.learning_rate, self.min_lr = 12, 1e-3, 1e-4
        self.max_iters, self.lr_decay_iters, self.warmup_iters = 2000, 2000, 100
        self.beta1, self.beta2, self.weight_decay, self.grad_clip = 0.9, 0.99, 0.1, 1.0
        self.eval_iters, self.seed = 20, 1337
        self.__dict__.update(kw)


class Attention(nn.Module):
    def __init__(self, c: RefConfig) -> None:
        super().__init__()
        self.nh = c.n_head
        self.qkv = nn.Linear(c.n_embd, 3 * c.n_embd, bias=False)
        self.out = nn.Linear(c.n_embd, c.n_embd, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = (t.view(B, T, self.nh, C // self.nh).transpose(1, 2) for t in self.qkv(x).chunk(3, dim=2))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out(y.transpose(1, 2).reshape(B, T, C))


class Layer(nn.Module):
    def __init__(self, c: RefConfig) -> None:
        super().__init__()
        self.n1 = nn.LayerNorm(c.n_embd, bias=False)
        self.att = Attention(c)
        self.n2 = nn.LayerNorm(c.n_embd, bias=False)
        self.up = nn.Linear(c.n_embd, 4 * c.n_embd, bias=False)
        self.down = nn.Linear(4 * c.n_embd, c.n_embd, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.att(self.n1(x))
        return x + self.down(F.gelu(self.up(self.n2(x))))


class TinyGPT(nn.Module):
    def __init__(self, c: RefConfig, vocab: int) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, c.n_embd)
        self.pos = nn.Embedding(c.block_size, c.n_embd)
        self.layers = nn.ModuleList(Layer(c) for _ in range(c.n_layer))
        self.norm = nn.LayerNorm(c.n_embd, bias=False)
        for name, p in self.named_parameters():
            if p.dim() == 2:
                scaled = name.endswith("out.weight") or name.endswith("down.weight")
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * c.n_layer) if scaled else 0.02)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        T = idx.shape[1]
        x = self.tok(idx) + self.pos(torch.arange(T, device=idx.device))
        for layer in self.layers:
            x = layer(x)
        logits = self.norm(x) @ self.tok.weight.t()  # tied unembedding
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))


def load_chars(path: Path = ROOT / "resources" / "tinyshakespeare.txt") -> tuple[np.ndarray, np.ndarray, int]:
    text = path.read_text(encoding="utf-8")
    chars = sorted(set(text))
    lookup = {ch: i for i, ch in enumerate(chars)}
    ids = np.array([lookup[ch] for ch in text], dtype=np.uint16)
    n = int(0.9 * len(ids))
    return ids[:n], ids[n:], len(chars)


class ReferenceTrainer:
    def __init__(self, c: RefConfig | None = None, data: tuple[np.ndarray, np.ndarray, int] | None = None) -> None:
        self.c = c or RefConfig()
        self.train_ids, self.val_ids, vocab = data or load_chars()
        torch.manual_seed(self.c.seed)
        self.gen = torch.Generator().manual_seed(self.c.seed)
        self.model = TinyGPT(self.c, vocab)
        params = list(self.model.parameters())
        groups = [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": self.c.weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
        self.opt = torch.optim.AdamW(groups, lr=self.c.learning_rate, betas=(self.c.beta1, self.c.beta2))
        self.it = 0

    def batch(self, ids: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        T = self.c.block_size
        starts = torch.randint(len(ids) - T, (self.c.batch_size,), generator=self.gen).tolist()
        x = torch.stack([torch.from_numpy(ids[i : i + T].astype(np.int64)) for i in starts])
        y = torch.stack([torch.from_numpy(ids[i + 1 : i + 1 + T].astype(np.int64)) for i in starts])
        return x, y

    def lr(self, it: int) -> float:
        c = self.c
        if it < c.warmup_iters:
            return c.learning_rate * (it + 1) / c.warmup_iters
        if it >= c.lr_decay_iters:
            return c.min_lr
        ratio = (it - c.warmup_iters) / (c.lr_decay_iters - c.warmup_iters)
        return c.min_lr + 0.5 * (1 + math.cos(math.pi * ratio)) * (c.learning_rate - c.min_lr)

    def step(self) -> torch.Tensor:
        for g in self.opt.param_groups:
            g["lr"] = self.lr(self.it)
        x, y = self.batch(self.train_ids)
        loss = self.model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.c.grad_clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.it += 1
        return loss

    @torch.no_grad()
    def val_loss(self) -> float:
        self.model.eval()
        losses = [self.model(*self.batch(self.val_ids)).item() for _ in range(self.c.eval_iters)]
        self.model.train()
        return sum(losses) / len(losses)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    trainer = ReferenceTrainer(RefConfig(max_iters=args.iters))
    t0 = time.perf_counter()
    for it in range(1, args.iters + 1):
        loss = trainer.step()
        if it % 100 == 0:
            dt = time.perf_counter() - t0
            print(f"iter {it}: loss {loss.item():.4f}, {1000 * dt / 100:.1f} ms/iter")
            t0 = time.perf_counter()
    print(f"val loss {trainer.val_loss():.4f}")


if __name__ == "__main__":
    main()
