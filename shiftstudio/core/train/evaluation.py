"""Measuring a model during training: mean losses and the batch view (samples come from core.generate).

None of these touch the global random generators or the training sampler,
so evaluating never changes what training does next (resume stays exact).
"""

from __future__ import annotations

import contextlib
from typing import Any, ContextManager

import torch
import torch.nn.functional as F

from shiftstudio.core.train.reports import BatchViewReport
from shiftstudio.core.train.sharding import is_sharded

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
    model: torch.nn.Module, sampler: Any, iters: int, shift: int, device: torch.device,
    autocast: ContextManager | None = None, ranks: Any = None,
) -> list[float]:
    """Mean loss per head over ``iters`` batches of ``sampler`` (made with a fixed seed, so successive
    evaluations see the same batches and differ only by the model). One device sync, at the end.

    With ``ranks`` (several processes), rank r scores batches r, r + N, … of the same ``iters`` and the sums
    are added up over the ranks: the same figure as one process, each rank doing 1/N of the work."""
    totals = torch.zeros(shift, device=device)
    rank, world = (ranks.rank, ranks.world) if ranks is not None else (0, 1)
    # a sharded (FSDP) model's forward is collective: a rank with one batch fewer scores one again, unsummed
    rounds = -(-iters // world) * world if world > 1 and is_sharded(model) else iters
    b = None
    with evaluating(model):
        for i in range(rounds):
            if i % world != rank:
                if i < iters:
                    sampler.skip()
                continue
            b = sampler.next() if i < iters or b is None else b
            with autocast or contextlib.nullcontext():
                out = model(b.x, b.y, b.mask)
            if i < iters:
                totals += out.head_losses.float()
    if world > 1:
        import torch.distributed as dist

        dist.all_reduce(totals)
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


def split_losses(
    model: torch.nn.Module, store: Any, config_batch: tuple[int, int, int], iters: int,
    seed: int, device: torch.device, autocast: ContextManager | None = None, ranks: Any = None,
) -> tuple[list[float], list[float]]:
    """Per-head mean losses on the train and the validation split of ``store`` (a
    :class:`~shiftstudio.core.data.store.TokenStore`), each on its own fixed batches.

    ``config_batch`` is (batch_size, block_size, shift).
    """
    batch_size, block_size, shift = config_batch
    out = []
    for split in ("train", "val"):
        sampler = store.sampler(split, batch_size, block_size, shift, seed=seed + EVAL_SEED_OFFSETS[split], device=device)
        out.append(mean_loss(model, sampler, iters, shift, device, autocast, ranks))
    return out[0], out[1]
