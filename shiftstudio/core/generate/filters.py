"""How the next token is picked: sampling settings and the filters, as small pure functions.

Filters act on a 1-D logits tensor, in the order repetition penalty →
temperature → top-k → top-p; :func:`pick` then takes the argmax (greedy,
temperature 0) or draws from the softmax with the caller's generator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch

from shiftstudio.core.errors import GenerationError

MAX_NEW_TOKENS = 100_000


# -- settings ------------------------------------------------------------------


@dataclass
class SamplingSettings:
    """How to pick each next token. ``temperature = 0`` is greedy; 0 turns top-k off; 1.0 turns top-p off."""

    max_new_tokens: int = 200
    temperature: float = 0.8
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    seed: int | None = None  # None: a fresh random seed (reported back in Generation.seed)
    stop: Sequence[str] = field(default_factory=tuple)
    stop_at_eot: bool = True

    def __post_init__(self) -> None:
        if not 1 <= int(self.max_new_tokens) <= MAX_NEW_TOKENS:
            raise GenerationError(f"max_new_tokens must be between 1 and {MAX_NEW_TOKENS:,}, got {self.max_new_tokens}")
        if not (math.isfinite(self.temperature) and 0 <= self.temperature <= 100):
            raise GenerationError(f"temperature must be between 0 and 100, got {self.temperature}")
        if self.top_k < 0:
            raise GenerationError(f"top_k must be 0 (off) or positive, got {self.top_k}")
        if not (0 < self.top_p <= 1):
            raise GenerationError(f"top_p must be in (0, 1], got {self.top_p}")
        if not (math.isfinite(self.repetition_penalty) and 0 < self.repetition_penalty <= 10):
            raise GenerationError(f"repetition_penalty must be in (0, 10], got {self.repetition_penalty}")
        self.stop = tuple(s for s in self.stop if s)


# -- the filters (pure functions) ----------------------------------------------


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """Make tokens in ``seen`` (1-D ids) less likely: positive logits divided by ``penalty``, negative ones multiplied."""
    if penalty == 1.0 or seen.numel() == 0:
        return logits
    out = logits.clone()
    picked = out[seen]
    out[seen] = torch.where(picked > 0, picked / penalty, picked * penalty)
    return out


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Divide by ``temperature`` (> 0); greedy decoding (0) never calls this."""
    return logits / temperature


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the ``k`` largest logits (and any tied with the k-th); the rest become -inf. ``k = 0``: all kept."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # rows of a 2-D tensor are filtered each on its own
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose probabilities sum to at least ``p``; ``p = 1``: all kept."""
    if p >= 1.0:
        return logits
    probs, order = torch.sort(torch.softmax(logits.float(), dim=-1), dim=-1, descending=True)
    before = torch.cumsum(probs, dim=-1) - probs  # mass of the tokens ranked above each one
    drop_sorted = before >= p  # a token is dropped once the ones above it already reach p (the top one never is)
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def pick(logits: torch.Tensor, temperature: float, generator: torch.Generator | None) -> int:
    """The next id from filtered logits: argmax when greedy, else a draw from their softmax."""
    if temperature == 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits.float(), dim=-1).cpu()
    return int(torch.multinomial(probs, 1, generator=generator))


def filter_rows(
    logits: torch.Tensor, settings: SamplingSettings, seen: torch.Tensor | None = None, unk: torch.Tensor | None = None
) -> torch.Tensor:
    """The whole filter chain on each row of ``logits`` (N, V) at once: repetition penalty over ``seen`` (N, V)
    bool (row i: the tokens before that row's prediction), ``<unk>`` (1-element id tensor) never picked, then
    temperature, top-k and top-p when sampling. Per element the same operations as the 1-D filters."""
    filtered = logits
    penalty = settings.repetition_penalty
    if penalty != 1.0 and seen is not None:
        filtered = torch.where(seen, torch.where(logits > 0, logits / penalty, logits * penalty), logits)
    if unk is not None:
        filtered = filtered.index_fill(-1, unk, float("-inf"))
    if settings.temperature > 0:
        filtered = top_p_filter(top_k_filter(apply_temperature(filtered, settings.temperature), settings.top_k), settings.top_p)
    return filtered
