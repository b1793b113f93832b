"""Measuring a model during training: mean losses, the batch view, a short sample.

None of these touch the global random generators or the training sampler,
so evaluating never changes what training does next (resume stays exact).
"""

from __future__ import annotations

import contextlib
from typing import ContextManager

import numpy as np
import torch
import torch.nn.functional as F

from shiftstudio.core.data.batches import BatchSampler
from shiftstudio.core.model.gpt import GPT
from shiftstudio.core.train.reports import BatchViewReport

TOP_K_VIEW = 5
EVAL_SEED_OFFSETS = {"train": 1_000_003, "val": 2_000_003}  # fixed eval batches, distinct from training's


@contextlib.contextmanager
def evaluating(model: torch.nn.Module):
    """Eval mode (no dropout) and no autograd, restoring the previous mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def mean_loss(
    model: torch.nn.Module, ids: np.ndarray, config_batch: tuple[int, int, int], iters: int, seed: int,
    device: torch.device, autocast: ContextManager | None = None, split: str = "val",
) -> list[float]:
    """Mean loss per head over ``iters`` batches drawn with a fixed ``seed`` (the same batches every time,
    so successive evaluations differ only by the model).

    ``config_batch`` is (batch_size, block_size, shift). One device sync, at the end.
    """
    batch_size, block_size, shift = config_batch
    sampler = BatchSampler(ids, batch_size, block_size, shift, seed=seed, device=device, split=split)
    totals = torch.zeros(shift, device=device)
    with evaluating(model):
        for _ in range(iters):
            b = sampler.next()
            with autocast or contextlib.nullcontext():
                out = model(b.x, b.y, b.mask)
            totals += out.head_losses.float()
    return (totals / iters).tolist()


def batch_view(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, row: int, step: int,
    autocast: ContextManager | None = None,
) -> BatchViewReport:
    """What the model makes of one row of a batch: per-position loss and its top-5 guesses per head."""
    with evaluating(model), autocast or contextlib.nullcontext():
        logits = model(x[row : row + 1]).logits[0].float()  # (K, T, V)
    K, T, V = logits.shape
    targets = y[row]  # (K, T)
    loss = F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1), reduction="none").view(K, T)
    probs = torch.softmax(logits, dim=-1)
    k = min(TOP_K_VIEW, V)
    top_probs, top_ids = probs.topk(k, dim=-1)  # (K, T, k)
    if k < TOP_K_VIEW:  # a vocabulary under 5 tokens: pad with id -1, probability 0
        pad = TOP_K_VIEW - k
        top_probs = F.pad(top_probs, (0, pad), value=0.0)
        top_ids = F.pad(top_ids, (0, pad), value=-1)
    return BatchViewReport(
        step=step,
        row=row,
        input_ids=x[row].to("cpu", torch.int64).numpy(),
        target_ids=targets.to("cpu", torch.int64).numpy(),
        loss=loss.to("cpu", torch.float32).numpy(),
        mask=mask[row].to("cpu", torch.float32).numpy(),
        top_ids=top_ids.to("cpu", torch.int64).numpy(),
        top_probs=top_probs.to("cpu", torch.float32).numpy(),
    )


@torch.no_grad()
def sample_ids(
    model: GPT, prompt: list[int], max_new_tokens: int, *, temperature: float = 0.8, top_k: int | None = 40,
    seed: int = 0, autocast: ContextManager | None = None,
) -> list[int]:
    """Head-1 sampling with a KV cache and a private generator (the global RNG is left alone)."""
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    block = model.config.block_size
    ids = list(prompt)[-block:]
    past = None
    fresh = ids
    out: list[int] = []
    with evaluating(model), autocast or contextlib.nullcontext():
        for _ in range(max_new_tokens):
            if past is not None and past[0][0].shape[2] + len(fresh) > block:
                past, fresh = None, ids[-block:]  # context full: restart on the last block of tokens
            logits, past = model.next_token_logits(torch.tensor([fresh], dtype=torch.long, device=device), past)
            logits = logits[0].float() / max(temperature, 1e-5)  # (V,)
            if top_k is not None and top_k < logits.numel():
                kth = torch.topk(logits, top_k).values[-1]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            nxt = int(torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=gen))
            out.append(nxt)
            ids.append(nxt)
            fresh = [nxt]
    return out


def split_losses(
    model: torch.nn.Module, train_ids: np.ndarray, val_ids: np.ndarray, config_batch: tuple[int, int, int], iters: int,
    seed: int, device: torch.device, autocast: ContextManager | None = None,
) -> tuple[list[float], list[float]]:
    """Per-head mean losses on the train and the validation split, each on its own fixed batches."""
    train = mean_loss(model, train_ids, config_batch, iters, seed + EVAL_SEED_OFFSETS["train"], device, autocast, "train")
    val = mean_loss(model, val_ids, config_batch, iters, seed + EVAL_SEED_OFFSETS["val"], device, autocast, "val")
    return train, val
