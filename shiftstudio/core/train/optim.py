"""The optimizer side of training: AdamW groups, the learning-rate schedule, weight EMA.

All pure or nearly so, and testable on their own.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn as nn

from shiftstudio.config import TrainConfig

NO_DECAY_NAMES = ("wte.weight", "wpe.weight")  # embeddings are looked up, not multiplied: no decay


def lr_at(step: int, train: TrainConfig) -> float:
    """Learning rate for the update that takes the model from ``step`` to ``step + 1``.

    Linear warmup from ``lr/warmup`` to ``lr`` over ``warmup_iters`` steps, then
    cosine decay to ``min_lr`` at ``lr_decay_iters``, then ``min_lr``.
    """
    lr, low, warm, end = train.learning_rate, train.min_lr, train.warmup_iters, train.lr_decay_iters
    if step < warm:
        return lr * (step + 1) / warm
    if step >= end:
        return low
    progress = (step - warm) / max(1, end - warm)  # 0 -> 1
    return low + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - low)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices only: not on embeddings, norm weights or biases."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.dim() >= 2 and name not in NO_DECAY_NAMES else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, train: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW over decay / no-decay groups; the fused kernel on CUDA and CPU (one kernel for all parameters)."""
    fused = device.type in ("cuda", "cpu")
    return torch.optim.AdamW(
        param_groups(model, train.weight_decay),
        lr=lr_at(0, train),
        betas=(train.beta1, train.beta2),
        eps=1e-8,
        fused=fused,
        foreach=None if fused else True,
    )


class WeightEMA:
    """An exponential moving average of the weights that train, kept in a separate copy of the model.

    Frozen weights (a LoRA run's base) are shared with the model, not copied, and not averaged: the EMA holds
    only what trains. The effective decay warms up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates,
    so early averages are not dominated by the random init.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        frozen = {id(p): p for p in model.parameters() if not p.requires_grad}
        self.model = copy.deepcopy(model, memo=dict(frozen)).eval()  # frozen tensors shared, not duplicated
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        own = dict(self.model.named_parameters())
        self._ema = [own[n] for n in self.names]
        self.model.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        d = min(self.decay, (1.0 + step) / (10.0 + step))
        torch._foreach_lerp_(self._ema, [p.detach() for p in model.parameters() if p.requires_grad], 1.0 - d)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(zip(self.names, self._ema))

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for name, tensor in zip(self.names, self._ema):
                tensor.copy_(state[name])
