"""LoRA: low-rank adapters on the GPT's linear layers, for fine-tuning with the base weights frozen.

A :class:`LoRALinear` wraps one ``nn.Linear`` ``W`` and adds ``s · B A x``
(``A``: rank × in, ``B``: out × rank, ``s = alpha / rank``). ``B`` starts at
zero, so an adapted model computes exactly what its base does until it
trains. :func:`apply_lora` wraps the chosen layers of every block and leaves
only the adapters trainable; :func:`merge_lora` folds them back into plain
``nn.Linear`` layers (``W + s · B A``) for generation and export, so the fast
decoder and every exporter see an ordinary GPT. :func:`adapter_state_dict`
is what a LoRA checkpoint needs to hold besides the base it was made from.

Shapes: in/out features of the wrapped layer; ``r`` the rank.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from shiftstudio.config import TrainConfig
from shiftstudio.core.errors import ConfigError

# Which linear layers of a block can carry adapters, by the names the settings use.
LORA_TARGETS = {
    "attn_qkv": ("attn", "c_attn"),  # q, k, v in one matmul
    "attn_out": ("attn", "c_proj"),
    "mlp_in": ("mlp", "c_fc"),
    "mlp_out": ("mlp", "c_proj"),
}


class LoRALinear(nn.Module):
    """``base(x) + (alpha / rank) · B(A(dropout(x)))`` with ``base`` frozen."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0) -> None:
        super().__init__()
        if rank < 1:
            raise ConfigError(f"lora_rank must be at least 1 to add adapters, got {rank}")
        self.base = base
        self.base.requires_grad_(False)
        self.rank, self.scaling = rank, alpha / rank
        device, dtype = base.weight.device, base.weight.dtype
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features, device=device, dtype=dtype))  # (r, in)
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, device=device, dtype=dtype))  # (out, r)
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))  # as nn.Linear initialises its weight
        self.drop = nn.Dropout(dropout)

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.linear(self.drop(x), self.lora_a)  # (..., in) -> (..., r)
        out = self.base(x)  # (..., out)
        # s·B is (out, r): scaling it is free next to scaling the (..., out) activation, and the update is added in
        # place (the base's output is not needed for its own backward): two full-size elementwise passes fewer.
        return out.add_(F.linear(h, self.lora_b * self.scaling))

    @torch.no_grad()
    def merged_weight(self) -> torch.Tensor:
        """``W + s · B A``: the weight of the plain layer this one computes (without dropout)."""
        return self.base.weight + self.scaling * (self.lora_b @ self.lora_a)  # (out, in)

    @torch.no_grad()
    def merged(self) -> nn.Linear:
        """A plain ``nn.Linear`` with the adapter folded in (a new module; this one is unchanged)."""
        out = nn.Linear(self.in_features, self.out_features, bias=self.base.bias is not None,
                        device=self.base.weight.device, dtype=self.base.weight.dtype)
        out.weight.copy_(self.merged_weight())
        if self.base.bias is not None:
            out.bias.copy_(self.base.bias)
        return out


def _targets(names: list[str] | tuple[str, ...]) -> list[tuple[str, str]]:
    unknown = [n for n in names if n not in LORA_TARGETS]
    if unknown or not names:
        raise ConfigError(
            f"lora_targets must be one or more of {', '.join(LORA_TARGETS)}, got {', '.join(unknown) or 'none'}"
        )
    return [LORA_TARGETS[n] for n in dict.fromkeys(names)]


def apply_lora(model: nn.Module, rank: int, alpha: float, dropout: float = 0.0,
               targets: list[str] | tuple[str, ...] = ("attn_qkv",)) -> int:
    """Wrap the ``targets`` layers of every block of ``model`` (a GPT) in adapters and freeze everything else.

    Returns the number of trainable parameters (the adapters').
    """
    chosen = _targets(list(targets))
    model.requires_grad_(False)
    for block in model.blocks:
        for part, name in chosen:
            owner = getattr(block, part)
            layer = getattr(owner, name)
            if isinstance(layer, LoRALinear):
                raise ConfigError("the model already has adapters: merge them before adding new ones")
            setattr(owner, name, LoRALinear(layer, rank, alpha, dropout))
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def has_lora(model: nn.Module) -> bool:
    return any(isinstance(m, LoRALinear) for m in model.modules())


@torch.no_grad()
def merge_lora(model: nn.Module) -> nn.Module:
    """Replace every adapter of ``model`` by its merged plain layer, in place; returns ``model``."""
    for block in model.blocks:
        for part, name in LORA_TARGETS.values():
            owner = getattr(block, part)
            layer = getattr(owner, name)
            if isinstance(layer, LoRALinear):
                setattr(owner, name, layer.merged())
    return model


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the adapters' tensors (``…lora_a`` / ``…lora_b``), keyed as in the model's state dict."""
    return {k: v for k, v in model.state_dict().items() if k.endswith((".lora_a", ".lora_b"))}


def merged_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict of the plain GPT that ``model`` computes: each adapter folded into its layer's weight
    (``…c_attn.weight`` = W + s·BA), no ``base.``/``lora_`` keys. Tensors are detached copies where merged."""
    state = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    lora_modules = {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}
    for key, value in state.items():
        owner = next((n for n in lora_modules if key.startswith(n + ".")), None)
        if owner is None:
            out[key] = value
            continue
        rest = key[len(owner) + 1:]
        if rest == "base.weight":
            out[f"{owner}.weight"] = lora_modules[owner].merged_weight()
        elif rest == "base.bias":
            out[f"{owner}.bias"] = value
    return out


def trainable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the tensors that train (adapters, and whatever else requires gradients), by state-dict name."""
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    return {k: v for k, v in model.state_dict().items() if k in names}



def apply_lora_settings(model: nn.Module, train: TrainConfig, dropout: float | None = None) -> int:
    """Adapters as a run's settings ask (``lora_rank``, ``lora_alpha``, ``lora_dropout``, ``lora_targets``).
    Heads 2..K train whole beside them: on a pretrained model they are new. Returns the trainable count."""
    apply_lora(model, train.lora_rank, train.lora_alpha, train.lora_dropout if dropout is None else dropout,
               train.lora_target_list)
    for head in model.shift_heads:
        head.requires_grad_(True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
