"""The optimizer side of training: AdamW groups, Muon beside AdamW, the learning-rate schedule, weight EMA.

All pure or nearly so, and testable on their own.

``optimizer = muon`` steps the hidden matrices (the blocks' attention and MLP weights, and those of heads 2..K)
with :class:`Muon` and everything else with AdamW, through one :class:`MuonAdamW` that the trainer,
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
# Keller Jordan's quintic Newton–Schulz iteration (its coefficients maximise the slope at zero; it maps the
# singular values into roughly [0.7, 1.2] rather than exactly onto 1, which trains as well) and its length.
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
NS_STEPS = 5
NS_EPS = 1e-7  # the Frobenius norm of a zero update is clamped to this


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
        parts.append(Muon(
            [{"params": matrices, "lr_scale": scale}],
            lr=lr_at(0, train) * scale,
            weight_decay=train.weight_decay,
            momentum=train.muon_momentum,
        ))
    return MuonAdamW(parts)


def _is_sharded(p: torch.Tensor) -> bool:
    """A DTensor shard (FSDP2): Muon's Newton–Schulz iteration needs the whole matrix (never imported: none)."""
    dtensor = getattr(sys.modules.get("torch.distributed.tensor"), "DTensor", None)
    return dtensor is not None and isinstance(p, dtensor)


def ns_dtype(device: torch.device) -> torch.dtype:
    """What Newton–Schulz computes in: bfloat16 on CUDA (tensor cores; the usual choice), float32 elsewhere (on a
    CPU without native bfloat16 matmuls a bfloat16 matmul is several times slower than a float32 one: 128×512 by
    its transpose, 3.5 ms against 0.6 ms on one core of an AVX-512 Xeon)."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def orthogonalize(x: torch.Tensor, steps: int = NS_STEPS, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Newton–Schulz on a stack of wide matrices, (n, r, c) with r <= c: each ≈ its U·Vᵀ (singular values pushed
    towards 1). Transpose tall matrices first: the iteration works on the r×r Gram matrices.

    Each step is ``X ← (a + b·G + c·G²)·X`` with ``G = X·Xᵀ``, for the whole stack at once (``bmm``/``baddbmm``).
    In float32 a wide stack takes the same steps in Gram space instead (:func:`_newton_schulz_gram`: the same
    polynomial, about 40 % fewer flops for a 1:4 MLP matrix). Returns a new tensor of ``dtype`` (default: ``x``'s).
    """
    norms = torch.linalg.vector_norm(x, dim=(1, 2), keepdim=True, dtype=torch.float32).clamp_min(NS_EPS)
    x = (x / norms).to(dtype or x.dtype)  # Frobenius norm 1: every singular value at most 1, where NS converges
    rows, cols = x.shape[-2:]
    direct_flops = steps * (4 * rows * rows * cols + 2 * rows**3)
    gram_flops = 4 * rows * rows * cols + (4 * steps - 3) * 2 * rows**3
    if x.dtype == torch.float32 and steps >= 2 and gram_flops < direct_flops:  # (a square stack stays direct)
        return _newton_schulz_gram(x, steps)
    a, b, c = NS_COEFFICIENTS
    for _ in range(steps):
        gram = torch.bmm(x, x.mT)  # (n, r, r)
        poly = torch.baddbmm(gram, gram, gram, beta=b, alpha=c)  # b·G + c·G²
        x = torch.baddbmm(x, poly, x, beta=a)  # (a + b·G + c·G²)·X
    return x


def _newton_schulz_gram(x: torch.Tensor, steps: int) -> torch.Tensor:
    """:func:`orthogonalize`'s steps on r×r matrices only: ``X_k = M_k·X_0``, where every ``M_k`` is a polynomial
    in ``G_0 = X_0·X_0ᵀ`` (so symmetric, and commuting with it), hence ``G_k = M_k²·G_0``; each step makes
    ``P = a + b·G_k + c·G_k²``, ``M_(k+1) = P·M_k`` and ``G_(k+1) = G_k·P²``. Two r×r×c products (``G_0`` and the
    final ``M·X_0``) and 4·steps − 3 r×r×r ones, against steps × (two r×r×c and one r×r×r) directly. For float32:
    the small singular values are squared in ``G``, which bfloat16 would blur."""
    a, b, c = NS_COEFFICIENTS
    gram = torch.bmm(x, x.mT)  # G_0: (n, r, r)
    m = None
    for k in range(steps):
        poly = torch.baddbmm(gram, gram, gram, beta=b, alpha=c)  # b·G + c·G²
        poly.diagonal(dim1=1, dim2=2).add_(a)  # + a·I
        m = poly if m is None else torch.bmm(poly, m)
        if k < steps - 1:
            gram = torch.bmm(gram, torch.bmm(poly, poly))  # G·P² (= P·G·Pᵀ: P is a polynomial in G)
    assert m is not None
    return torch.bmm(m, x)


class Muon(torch.optim.Optimizer):
    """Muon (momentum, orthogonalised) for 2-D hidden matrices: Keller Jordan's algorithm, batched for small models.

    Per step and parameter: ``B ← μ·B + (1 - μ)·G`` (the state's ``momentum_buffer``), the Nesterov direction
    ``(1 - μ)·G + μ·B``, its orthogonalisation ``O`` by :func:`orthogonalize`, then decoupled weight decay
    ``W ← (1 - lr·wd)·W`` and ``W ← W - lr·sqrt(max(1, rows/cols))·O``: the same arithmetic and the same rate
    convention as :class:`torch.optim.Muon` with ``adjust_lr_fn="original"``, so ``muon_lr`` means what it means
    there and in Keller Jordan's code. Unlike torch's, Newton–Schulz runs once per shape (tall matrices
    transposed, so an MLP's in and out weights share a stack), not once per matrix, and in float32 off CUDA
    (:func:`ns_dtype`, in Gram space: :func:`orthogonalize`); torch's runs in bfloat16 everywhere, one matrix at a
    time. On the cpu-tiny shape (16 matrices) that is about 5× faster a step on a CPU.
    """

    def __init__(self, params: Any, lr: float, weight_decay: float = 0.0, momentum: float = 0.95,
                 nesterov: bool = True, ns_steps: int = NS_STEPS) -> None:
        if lr < 0 or weight_decay < 0 or not 0 <= momentum < 1 or ns_steps < 1:
            raise ValueError(f"Muon: bad settings lr={lr}, weight_decay={weight_decay}, momentum={momentum}, "
                             f"ns_steps={ns_steps}")
        defaults = {"lr": lr, "weight_decay": weight_decay, "momentum": momentum, "nesterov": nesterov,
                    "ns_steps": ns_steps}
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                if p.dim() != 2:
                    raise ValueError(f"Muon steps 2-D matrices only, got a parameter of shape {tuple(p.shape)}")

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if params:
                self._step_group(group, params)
        return loss

    def _step_group(self, group: dict[str, Any], params: list[torch.Tensor]) -> None:
        lr, mu = float(group["lr"]), group["momentum"]
        grads = [p.grad for p in params]
        bufs = []
        for p in params:
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            bufs.append(state["momentum_buffer"])
        torch._foreach_lerp_(bufs, grads, 1.0 - mu)
        updates = torch._foreach_lerp(grads, bufs, mu) if group["nesterov"] else bufs
        stacks: dict[tuple, list[int]] = {}  # one Newton–Schulz per (wide shape, dtype, device)
        for i, p in enumerate(params):
            rows, cols = p.shape
            stacks.setdefault((min(rows, cols), max(rows, cols), p.dtype, p.device), []).append(i)
        if group["weight_decay"]:
            torch._foreach_mul_(params, 1.0 - lr * group["weight_decay"])
        for members in stacks.values():
            tall = [params[i].shape[0] > params[i].shape[1] for i in members]
            x = torch.stack([updates[i].mT if t else updates[i] for i, t in zip(members, tall)])
            o = orthogonalize(x, group["ns_steps"], ns_dtype(x.device))
            rates = [-lr * math.sqrt(max(1.0, params[i].shape[0] / params[i].shape[1])) for i in members]
            o = o.to(x.dtype) * torch.tensor(rates, dtype=x.dtype, device=x.device).view(-1, 1, 1)
            torch._foreach_add_([params[i] for i in members], [m.mT if t else m for m, t in zip(o.unbind(0), tall)])


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
