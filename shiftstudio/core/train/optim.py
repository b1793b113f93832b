"""The optimizer side of training: AdamW groups, Muon beside AdamW, the learning-rate schedule, weight EMA.

All pure or nearly so, and testable on their own.

``optimizer = muon`` steps the hidden matrices (the blocks' attention and MLP weights, and those of heads 2..K)
with :class:`torch.optim.Muon` and everything else with AdamW, through one :class:`MuonAdamW` that the trainer,
the gradient scaler and the checkpoint code use as they use AdamW alone. Each parameter group may carry an
``lr_scale``: the trainer sets a group's rate to the schedule's rate times it, so Muon's groups follow
``learning_rate``'s warmup and decay at ``muon_lr``'s height.
"""

from __future__ import annotations

import copy
import logging
import math
import sys
from collections import ChainMap
from typing import Any

import torch
import torch.nn as nn

from shiftstudio.config import TrainConfig
from shiftstudio.core.errors import ConfigError

log = logging.getLogger(__name__)

NO_DECAY_NAMES = ("wte.weight", "wpe.weight")  # embeddings are looked up, not multiplied: no decay
MUON_OWNERS = ("blocks.", "shift_heads.")  # hidden layers: what Muon is for (not embeddings, not the output head)
LORA_NAMES = (".lora_a", ".lora_b")  # adapters stay on AdamW: their product, not each factor, is the update
MUON_ADJUST_LR = "original"  # torch's name for Keller Jordan's per-matrix rate: muon_lr · sqrt(max(1, rows/cols))


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
    return _decay_groups([(n, p) for n, p in model.named_parameters() if p.requires_grad], weight_decay)


def _decay_groups(named: list[tuple[str, nn.Parameter]], weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, p in named:
        (decay if p.dim() >= 2 and name not in NO_DECAY_NAMES else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def is_muon_matrix(name: str, p: torch.Tensor) -> bool:
    """Whether ``optimizer = muon`` steps this parameter with Muon: a 2-D weight of a block or of heads 2..K
    (attention qkv and projection, MLP in and out, a head's projection), not a LoRA adapter."""
    return p.dim() == 2 and name.startswith(MUON_OWNERS) and not name.endswith(LORA_NAMES)


def _adamw(groups: list[dict], train: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    fused = device.type in ("cuda", "cpu")
    return torch.optim.AdamW(
        groups,
        lr=lr_at(0, train),
        betas=(train.beta1, train.beta2),
        eps=1e-8,
        fused=fused,
        foreach=None if fused else True,
    )


def build_optimizer(model: nn.Module, train: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW over decay / no-decay groups, the fused kernel on CUDA and CPU (one kernel for all parameters); with
    ``optimizer = muon``, a :class:`MuonAdamW` (Muon on :func:`is_muon_matrix` weights, that AdamW on the rest)."""
    if train.optimizer != "muon":
        return _adamw(param_groups(model, train.weight_decay), train, device)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    matrices = [p for n, p in named if is_muon_matrix(n, p)]
    if any(_is_sharded(p) for p in matrices):
        raise ConfigError("optimizer = muon needs whole matrices: use parallel = ddp with it, not fsdp")
    if not matrices:
        log.info("optimizer = muon: no hidden matrix trains here (LoRA adapters stay on AdamW), so AdamW alone")
    chosen = {id(p) for p in matrices}
    parts: list[torch.optim.Optimizer] = []
    if len(chosen) < len(named):  # (a LoRA run with one head has adapters alone: then AdamW only)
        rest = [(n, p) for n, p in named if id(p) not in chosen]
        parts.append(_adamw(_decay_groups(rest, train.weight_decay), train, device))
    if matrices:
        scale = train.muon_lr / train.learning_rate
        parts.append(torch.optim.Muon(
            [{"params": matrices, "lr_scale": scale}],
            lr=lr_at(0, train) * scale,
            weight_decay=train.weight_decay,
            momentum=train.muon_momentum,
            nesterov=True,
            adjust_lr_fn=MUON_ADJUST_LR,
        ))
    return MuonAdamW(parts)


def _is_sharded(p: torch.Tensor) -> bool:
    """A DTensor shard (FSDP2): Muon's Newton–Schulz iteration needs the whole matrix (never imported: none)."""
    dtensor = getattr(sys.modules.get("torch.distributed.tensor"), "DTensor", None)
    return dtensor is not None and isinstance(p, dtensor)


class MuonAdamW(torch.optim.Optimizer):
    """Several optimizers over disjoint parameters (AdamW's groups first, then Muon's) presented as one.

    ``param_groups`` are the parts' own group dicts, in that order, so a learning rate set on a group is the one
    its optimizer uses, and a gradient scaler unscales every gradient through them; ``state`` reads through to
    the parts' states. :meth:`state_dict` numbers the parameters through all parts in ``param_groups`` order, as
    one torch optimizer numbers its own, so a checkpoint keys the state by parameter name exactly as for AdamW
    alone (Muon's slot is ``momentum_buffer``). There is no ``_step_supports_amp_scaling``: a scaler unscales the
    gradients, checks them for inf/NaN and then calls :meth:`step` (or skips it), which steps every part.
    """

    def __init__(self, parts: list[torch.optim.Optimizer]) -> None:
        if not parts:
            raise ValueError("MuonAdamW needs at least one optimizer")
        self.parts = tuple(parts)
        super().__init__([g for part in self.parts for g in part.param_groups], {})
        self._link()

    def _link(self) -> None:
        """Share the parts' groups and states (after a part's ``load_state_dict`` replaced them)."""
        self.param_groups = [g for part in self.parts for g in part.param_groups]
        self.state = ChainMap(*(part.state for part in self.parts))  # type: ignore[assignment]

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for part in self.parts:
            part.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        for part in self.parts:
            part.zero_grad(set_to_none=set_to_none)

    def _spans(self) -> list[tuple[torch.optim.Optimizer, int, int, int]]:
        """(part, first group, first parameter, parameter count) of each part, in ``param_groups`` order."""
        spans, group, first = [], 0, 0
        for part in self.parts:
            count = sum(len(g["params"]) for g in part.param_groups)
            spans.append((part, group, first, count))
            group, first = group + len(part.param_groups), first + count
        return spans

    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        state: dict[int, Any] = {}
        groups: list[dict[str, Any]] = []
        for part, _, first, _ in self._spans():
            own = part.state_dict()
            state.update({first + i: slots for i, slots in own["state"].items()})
            groups += [{**g, "params": [first + i for i in g["params"]]} for g in own["param_groups"]]
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:  # type: ignore[override]
        groups, state = state_dict["param_groups"], state_dict["state"]
        if len(groups) != len(self.param_groups):
            raise ValueError("loaded state dict has a different number of parameter groups")
        for part, group, first, count in self._spans():
            mine = groups[group:group + len(part.param_groups)]
            part.load_state_dict({
                "state": {int(i) - first: slots for i, slots in state.items() if first <= int(i) < first + count},
                "param_groups": [{**g, "params": [int(i) - first for i in g["params"]]} for g in mine],
            })
        self._link()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(type(p).__name__ for p in self.parts)})"


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
