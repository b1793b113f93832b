"""A GPT-style decoder with K prediction heads (the shifted objective).

The trunk is the usual pre-norm transformer: token embedding (+ learned
absolute positions, or rotary positions inside attention), ``n_layer`` blocks
of causal self-attention and a GELU (or ReLU²) MLP, each wrapped as
``x + f(norm(x))``. The architecture switches (activation, norm, positions,
bias, tied unembedding, query/key norm, logit soft cap, heads) are read from
:class:`ModelConfig` here and only here: the fast decoder in ``core.generate``
calls the same functions (:func:`norm_function`, :func:`activation_function`,
:func:`qk_norm`, :func:`softcap`, :func:`rope_tables`) on the same weights,
and a parity test runs every combination through both.
Its last hidden state feeds ``K = shift`` heads: head ``k`` predicts token
``t + k`` from the reading of tokens ``0..t``. Head 1 is the plain next-token
head (the only one plain generation uses; speculative decoding drafts with
heads 2..K through :meth:`GPT.draft_states`). Heads 2..K are of one kind
(``ModelConfig.head_kind``): ``residual`` — light, ``h + W·norm(h)`` —,
``linear`` — ``W·h`` — or ``block`` — one whole transformer block per head
on top of the shared trunk (Gloeckle et al., 2024). All heads share the final
norm and the unembedding. The loss the model returns is the mean over heads
of the (masked) cross-entropy; the trainer may weight the heads
(``TrainConfig.shift_weights``) from the per-head losses. With K >= 2 the
heads' losses are computed one head at a time, each under activation
checkpointing, so that neither the forward nor the backward pass holds more
than one head's (B, T, V) logits (see :meth:`GPT._head_loss`).

Shapes in comments: B batch, T time, C width (n_embd), nh heads, hs head size,
K horizons, V vocabulary. The unembedding has Vp = V rounded up to a multiple
of 64 rows, so that GPU matmuls stay aligned; the padded ids are never targets
and never sampled (see :meth:`GPT._logits`).

Attention takes optional past keys/values and returns its own, so a KV cache
for generation is a matter of threading them through (see
:meth:`GPT.next_token_logits`).
"""

from __future__ import annotations

import math
from functools import partial
from typing import Callable, NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from shiftstudio.config import ModelConfig
from shiftstudio.core.model.estimate import padded_vocab

KV = tuple[torch.Tensor, torch.Tensor]  # (keys, values), each (B, nh, T_total, hs)


class ModelOutput(NamedTuple):
    loss: torch.Tensor | None  # () mean over heads of the masked mean cross-entropy
    head_losses: torch.Tensor | None  # (K,) one masked mean cross-entropy per head
    logits: torch.Tensor | None  # (B, K, T, V) over the real vocabulary, only when asked for


PER_HEAD_LOSS_BYTES = 256 * 2**20  # all heads' logits above this: the loss goes one head at a time (see GPT._big_logits)


def make_norm(config: ModelConfig) -> nn.Module:
    if config.norm == "rmsnorm":
        return nn.RMSNorm(config.n_embd, eps=config.norm_eps)
    return nn.LayerNorm(config.n_embd, eps=config.norm_eps, bias=config.bias)


def norm_function(norm: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The functional form of one of the model's norm modules (same weights, no module call)."""
    if isinstance(norm, nn.LayerNorm):
        return lambda x: F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)
    if isinstance(norm, nn.RMSNorm):
        return lambda x: F.rms_norm(x, norm.normalized_shape, norm.weight, norm.eps)
    raise TypeError(f"not a norm of this model: {type(norm).__name__}")


def relu_squared(x: torch.Tensor) -> torch.Tensor:
    """ReLU², relu(x)² (So et al., 2021, "Primer")."""
    return torch.square(F.relu(x))


def activation_function(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The MLP's activation: exact GELU, GPT-2's tanh approximation, or ReLU squared."""
    if name == "gelu":
        return F.gelu
    if name == "gelu_tanh":
        return partial(F.gelu, approximate="tanh")
    if name == "relu2":
        return relu_squared
    raise ValueError(f"unknown activation {name!r}")


def qk_norm(qk: torch.Tensor, gain: torch.Tensor, eps: float) -> torch.Tensor:
    """``ModelConfig.qk_norm``: queries and keys side by side, (..., 2, nh, hs), each head's vector scaled to unit
    RMS over hs (a plain RMS norm, whatever ``norm`` is), then by a gain per channel, ``gain`` (2, 1, hs): q's
    row, then k's. In the input's dtype (under autocast too: v, which is not normalised, must match)."""
    return F.rms_norm(qk, qk.shape[-1:], eps=eps).to(qk.dtype) * gain.to(qk.dtype)


def softcap(logits: torch.Tensor, cap: float) -> torch.Tensor:
    """``ModelConfig.logit_softcap``: ``cap · tanh(logits / cap)``, smooth and within (-cap, cap). In float32
    whatever the logits' dtype: near the cap a bfloat16 tanh would leave the gradient (1 - tanh²) mostly noise."""
    return torch.tanh(logits.float() / cap) * cap


def rope_tables(head_size: int, length: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the rotary angles, each (length, hs/2), float32."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_size, 2, dtype=torch.float32) / head_size))  # (hs/2,)
    angles = torch.outer(torch.arange(length, dtype=torch.float32), inv_freq)  # (length, hs/2)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x[..., i], x[..., i + hs/2]) of ``x`` by the angles in ``cos``/``sin``, which broadcast
    against ``x[..., :hs/2]`` (e.g. x (B, nh, T, hs) with tables (T, hs/2))."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.dropout = config.dropout
        self.norm_eps = config.norm_eps
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v in one matmul
        # qk_norm: the gains of q's channels, then of k's, (2·hs,) — one vector, so no weight decay (see qk_norm)
        self.qk_gain = nn.Parameter(torch.ones(2 * config.head_size)) if config.qk_norm else None
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)  # residual projection
        self.resid_drop = nn.Dropout(config.dropout)

    def forward(
        self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None, past: KV | None = None
    ) -> tuple[torch.Tensor, KV]:
        B, T, C = x.shape
        hs = C // self.n_head
        qkv = self.c_attn(x).view(B, T, 3, self.n_head, hs)  # q, k, v side by side: (B, T, 3, nh, hs)
        qk, v = qkv[:, :, :2], qkv[:, :, 2]  # (B, T, 2, nh, hs), (B, T, nh, hs): views, no copy
        if self.qk_gain is not None:  # normalise q and k in one go
            qk = qk_norm(qk, self.qk_gain.view(2, 1, hs), self.norm_eps)
        if rope is not None:  # rotate q and k in one go (half the small ops of rotating each); tables (T, hs/2) -> (T, 1, 1, hs/2)
            cos, sin = rope
            qk = apply_rope(qk, cos[:, None, None, :], sin[:, None, None, :])
        q, k = qk.unbind(dim=2)  # 2 × (B, T, nh, hs)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # 3 × (B, nh, T, hs)
        mask = None
        if past is not None:
            past_len = past[0].shape[2]
            k = torch.cat((past[0], k), dim=2)  # (B, nh, past + T, hs)
            v = torch.cat((past[1], v), dim=2)
            if T > 1:  # query i sits at position past_len + i: it sees keys 0..past_len + i
                mask = torch.ones(T, past_len + T, dtype=torch.bool, device=x.device).tril(diagonal=past_len)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0, is_causal=past is None and T > 1
        )  # (B, nh, T, hs); flash / memory-efficient kernels where the device has them
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # re-assemble the heads side by side
        return self.resid_drop(self.c_proj(y)), (k, v)


class MLP(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.act = activation_function(config.activation)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)  # residual projection
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.c_proj(self.act(self.c_fc(x))))  # (B, T, C) -> (B, T, 4C) -> (B, T, C)


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.ln_1 = make_norm(config)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = make_norm(config)
        self.mlp = MLP(config)

    def forward(
        self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None, past: KV | None = None
    ) -> tuple[torch.Tensor, KV]:
        a, kv = self.attn(self.ln_1(x), rope, past)
        x = x + a
        x = x + self.mlp(self.ln_2(x))
        return x, kv


Rope = tuple[torch.Tensor, torch.Tensor]  # cos, sin tables (T, hs/2)


class ShiftHead(nn.Module):
    """``head_kind = 'residual'``, the light extra head for horizon k >= 2: h + W·norm(h), before the shared
    final norm. Per position; ``rope`` is ignored."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.norm = make_norm(config)
        self.proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)

    def forward(self, h: torch.Tensor, rope: Rope | None = None) -> torch.Tensor:
        return h + self.proj(self.norm(h))  # (B, T, C)


class LinearShiftHead(nn.Module):
    """``head_kind = 'linear'``: W·h, a plain C×C projection (no residual). Initialised near the identity (so
    a new head starts as head 1). Per position; ``rope`` is ignored."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)

    def forward(self, h: torch.Tensor, rope: Rope | None = None) -> torch.Tensor:
        return self.proj(h)  # (B, T, C)


class BlockShiftHead(Block):
    """``head_kind = 'block'``: one whole transformer block per head on the shared trunk's last hidden state
    (Gloeckle et al.). Causal over the T positions it is given: a position sees the ones before it."""

    def forward(self, h: torch.Tensor, rope: Rope | None = None) -> torch.Tensor:  # type: ignore[override]
        return super().forward(h, rope)[0]  # (B, T, C)


SHIFT_HEAD_KINDS: dict[str, type[nn.Module]] = {"residual": ShiftHead, "linear": LinearShiftHead, "block": BlockShiftHead}


class GPT(nn.Module):
    def __init__(self, config: ModelConfig, vocab_size: int) -> None:
        super().__init__()
        if vocab_size < 1:
            raise ValueError(f"vocab_size must be positive, got {vocab_size}")
        self.config = config
        self.vocab_size = vocab_size
        self.padded_vocab_size = padded_vocab(vocab_size)
        C = config.n_embd
        self.wte = nn.Embedding(self.padded_vocab_size, C)
        self.wpe = nn.Embedding(config.block_size, C) if config.pos == "learned" else None
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = make_norm(config)
        head = SHIFT_HEAD_KINDS[config.head_kind]
        self.shift_heads = nn.ModuleList(head(config) for _ in range(config.shift - 1))
        # Tied: the unembedding *is* wte.weight (no separate module, so no duplicate in the state dict).
        self.lm_head = None if config.tie_weights else nn.Linear(C, self.padded_vocab_size, bias=False)
        if config.pos == "rope":
            cos, sin = rope_tables(config.head_size, config.block_size)
            self.register_buffer("rope_cos", cos, persistent=False)  # (block_size, hs/2)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.reset_parameters()

    # -- set-up --------------------------------------------------------------
    def reset_parameters(self) -> None:
        """GPT-2 init: N(0, 0.02) everywhere, residual projections scaled by 1/sqrt(2·n_layer); linear heads
        get the identity on top (they start near head 1, as residual heads do); query/key gains start at 1.

        ``zero_init_proj``: the blocks' residual projections (``attn.c_proj``, ``mlp.c_proj``; block heads' too)
        are zeroed after they were drawn, so the random stream, and every other weight, is what it is without
        the option: two runs that differ only in it start from the same weights elsewhere."""
        residual_std = 0.02 / math.sqrt(2 * self.config.n_layer)
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                std = residual_std if name.endswith("c_proj") or name.endswith(".proj") else 0.02
                nn.init.normal_(module.weight, mean=0.0, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
            elif isinstance(module, (nn.LayerNorm, nn.RMSNorm)):
                nn.init.ones_(module.weight)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, CausalSelfAttention) and module.qk_gain is not None:
                nn.init.ones_(module.qk_gain)
        with torch.no_grad():
            for head in self.shift_heads:
                if isinstance(head, LinearShiftHead):
                    head.proj.weight.add_(torch.eye(self.config.n_embd, device=head.proj.weight.device))
            if self.config.zero_init_proj:
                for name, module in self.named_modules():
                    if isinstance(module, nn.Linear) and name.endswith("c_proj"):
                        module.weight.zero_()

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameters; ``non_embedding`` leaves out the token/position embeddings and an untied unembedding."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.wte.weight.numel()
            if self.wpe is not None:
                n -= self.wpe.weight.numel()
            if self.lm_head is not None:
                n -= self.lm_head.weight.numel()
        return n

    @property
    def unembedding(self) -> torch.Tensor:
        return self.wte.weight if self.lm_head is None else self.lm_head.weight  # (V, C)

    # -- the trunk -----------------------------------------------------------
    def trunk(self, idx: torch.Tensor, past: list[KV] | None = None) -> tuple[torch.Tensor, list[KV]]:
        """Last hidden state (B, T, C) of tokens ``idx`` (B, T), and every block's keys/values."""
        B, T = idx.shape
        start = past[0][0].shape[2] if past else 0  # position of idx[:, 0]
        if start + T > self.config.block_size:
            raise ValueError(f"sequence of {start + T} tokens is longer than block_size {self.config.block_size}")
        x = self.wte(idx)  # (B, T, C)
        rope = None
        if self.wpe is not None:
            x = x + self.wpe(torch.arange(start, start + T, device=idx.device))  # (T, C) broadcast over B
        else:
            rope = (self.rope_cos[start : start + T], self.rope_sin[start : start + T])  # (T, hs/2) each
        x = self.drop(x)
        presents: list[KV] = []
        for i, block in enumerate(self.blocks):
            x, kv = block(x, rope, past[i] if past else None)
            presents.append(kv)
        return x, presents

    def _head_rope(self, T: int) -> Rope | None:
        """Rotary tables for block heads over T positions (None for the other kinds or learned positions).
        Rotary attention depends only on relative positions, so the window given may start anywhere."""
        if self.config.head_kind != "block" or self.wpe is not None:
            return None
        if T > self.config.block_size:
            raise ValueError(f"sequence of {T} tokens is longer than block_size {self.config.block_size}")
        return self.rope_cos[:T], self.rope_sin[:T]

    def head_state(self, h: torch.Tensor, k: int, rope: Rope | None = None) -> torch.Tensor:
        """Head ``k``'s state before the shared final norm: (B, T, C) -> (B, T, C); head 1's is ``h``."""
        return h if k == 1 else self.shift_heads[k - 2](h, rope)

    def head_states(self, h: torch.Tensor, horizons: int | None = None) -> torch.Tensor:
        """Normalised inputs of the first ``horizons`` heads (all K by default): (B, T, C) -> (B, K, T, C).

        Residual and linear heads work per position. Block heads attend causally over the T positions of ``h``:
        position t of a block head is exact (what training computes) only when ``h`` holds the trunk's states of
        every position from the start of the context up to t. To draft, use :meth:`draft_states`."""
        K = self.config.shift if horizons is None else horizons
        if K == 1:
            return self.ln_f(h).unsqueeze(1)  # (B, 1, T, C), no copy
        rope = self._head_rope(h.shape[1])
        states = [self.head_state(h, k, rope) for k in range(1, K + 1)]
        return self.ln_f(torch.stack(states, dim=1))  # (B, K, T, C)

    def draft_states(self, h_all: torch.Tensor, horizons: int | None = None, last_only: bool = True) -> torch.Tensor:
        """The heads' normalised states for drafting, exact for every head kind.

        ``h_all`` (B, T, C): the trunk's last hidden states of the whole context (every position from the first
        one the model reads). ``last_only``: the states at the last position only, (B, K, C) — unembed them
        (``F.linear(z, model.unembedding)[..., :vocab_size]``) for head k's guess of token T-1+k. Otherwise
        (B, K, T, C), as :meth:`head_states`.

        Residual and linear heads read only the last position (O(1) in T). Block heads recompute their block
        causally over all T positions (O(T) per draft; no KV cache of their own): passing only the last
        position would make a block head attend to that position alone, which is not what it was trained on
        (an approximation of unknown quality)."""
        if last_only and self.config.head_kind != "block":
            h_all = h_all[:, -1:]  # per-position heads: the last position is all they need
        z = self.head_states(h_all, horizons)  # (B, K, T', C)
        return z[:, :, -1] if last_only else z

    # -- training and evaluation ---------------------------------------------
    def _logits(self, z: torch.Tensor) -> torch.Tensor:
        """Unembedding of head states (..., C), soft-capped when ``logit_softcap`` is on.

        On CUDA the matmul keeps the padded, aligned width (much faster there) and the
        padding ids get -inf: they are never targets and receive no probability. Elsewhere
        the padding buys nothing, so only the real vocabulary is computed. Same loss either way.
        """
        if z.is_cuda and self.padded_vocab_size > self.vocab_size:
            logits = self._capped(F.linear(z, self.unembedding))  # (..., Vp)
            logits[..., self.vocab_size :] = float("-inf")
            return logits
        return self._capped(F.linear(z, self.unembedding[: self.vocab_size]))  # (..., V)

    def _capped(self, logits: torch.Tensor) -> torch.Tensor:
        """``logits`` through the soft cap (float32) when ``logit_softcap`` is on, else as they are."""
        cap = self.config.logit_softcap
        return softcap(logits, cap) if cap else logits

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        *,
        return_logits: bool = False,
    ) -> ModelOutput:
        """Inputs ``idx`` (B, T); ``targets`` and ``mask`` (B, K, T) with targets[:, k-1, t] = token t + k.

        Without targets, returns the logits of every head over the real vocabulary.
        """
        h, _ = self.trunk(idx)  # (B, T, C)
        if targets is not None and not return_logits and self.config.shift > 1 and self._big_logits(idx.shape):
            head_losses = self._per_head_losses(h, targets, mask)  # one head's logits at a time
            return ModelOutput(head_losses.mean(), head_losses, None)
        z = self.head_states(h)  # (B, K, T, C)
        logits = self._logits(z)  # (B, K, T, Vp) or (B, K, T, V)
        if targets is None:
            return ModelOutput(None, None, logits[..., : self.vocab_size])
        B, K, T, Vl = logits.shape
        # One cross-entropy over all heads and positions: (B·K·T, Vl) against (B·K·T,).
        ce = F.cross_entropy(logits.view(-1, Vl).float(), targets.reshape(-1), reduction="none").view(B, K, T)
        if mask is None:
            head_losses = ce.mean(dim=(0, 2))  # (K,)
        else:
            mask = mask.to(ce.dtype)
            head_losses = (ce * mask).sum(dim=(0, 2)) / mask.sum(dim=(0, 2)).clamp_min(1.0)  # (K,)
        loss = head_losses.mean()
        return ModelOutput(loss, head_losses, logits[..., : self.vocab_size] if return_logits else None)

    def _big_logits(self, shape: torch.Size) -> bool:
        """Whether all heads' float32 logits for inputs of ``shape`` (B, T) would exceed
        :data:`PER_HEAD_LOSS_BYTES`: then the loss is computed one head at a time, trading a recompute of each
        head's logits in backward for holding one head's instead of K (at the gpt2-124m shape, K = 4, batch 4 × 256:
        peak 5.7 → 3.3 GB). Below it (small vocabularies, short batches) memory is no issue and the single
        cross-entropy over all heads is faster."""
        B, T = shape
        return B * T * self.config.shift * self.padded_vocab_size * 4 > PER_HEAD_LOSS_BYTES

    def _per_head_losses(self, h: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """(K,) masked mean cross-entropy of each head, the heads one after the other. While gradients are on,
        each head's norm + unembedding + cross-entropy runs under activation checkpointing: only its (B, T, C)
        input is kept, and the backward pass recomputes its logits, so at most one head's (B, T, V) logits
        (and their log-softmax) live at any time. Same values as the single cross-entropy over all heads."""
        rope = self._head_rope(h.shape[1])
        losses = []
        for k in range(1, self.config.shift + 1):
            state = self.head_state(h, k, rope)  # (B, T, C)
            m = None if mask is None else mask[:, k - 1]
            if torch.is_grad_enabled():
                losses.append(checkpoint(self._head_loss, state, targets[:, k - 1], m, use_reentrant=False))
            else:
                losses.append(self._head_loss(state, targets[:, k - 1], m))
        return torch.stack(losses)  # (K,)

    def _head_loss(self, state: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """One head's masked mean cross-entropy: state (B, T, C), targets and mask (B, T) -> ()."""
        logits = self._logits(self.ln_f(state))  # (B, T, Vl)
        ce = F.cross_entropy(logits.view(-1, logits.shape[-1]).float(), targets.reshape(-1), reduction="none")
        if mask is None:
            return ce.mean()
        m = mask.reshape(-1).to(ce.dtype)
        return (ce * m).sum() / m.sum().clamp_min(1.0)

    # -- generation ----------------------------------------------------------
    @torch.no_grad()
    def next_token_logits(self, idx: torch.Tensor, past: list[KV] | None = None) -> tuple[torch.Tensor, list[KV]]:
        """Head-1 logits (B, V) of the token after ``idx`` (B, T), plus keys/values to pass back as ``past``."""
        h, presents = self.trunk(idx, past)  # (B, T, C)
        z = self.ln_f(h[:, -1, :])  # (B, C): only the last position is needed
        logits = self._capped(F.linear(z, self.unembedding)[:, : self.vocab_size])  # (B, V)
        return logits, presents


def clone_model(model: GPT, device: str | torch.device = "cpu") -> GPT:
    """An independent float32 copy of ``model``'s weights (call it between training steps):
    generation on the copy never reads tensors the training thread is changing. LoRA adapters come merged:
    the copy is a plain GPT."""
    model = getattr(model, "_orig_mod", model)  # a torch.compile wrapper shares its module's weights
    # Built on the meta device: no random initialisation, so the training's RNG stream is left exactly as it
    # was (a snapshot must not change the run) and a big model is not initialised only to be overwritten.
    with torch.device("meta"):
        copy = GPT(model.config, model.vocab_size)
    copy = copy.to_empty(device=device)
    with torch.no_grad():
        source = dict(model.named_buffers())
        for name, buffer in copy.named_buffers():  # derived tables (rotary angles), not in the state dict
            buffer.copy_(source[name])
        from shiftstudio.core.model.lora import has_lora, merged_state_dict

        state = merged_state_dict(model) if has_lora(model) else model.state_dict()  # adapters folded in
        copy.load_state_dict({k: v.detach().float() for k, v in state.items()})
    return copy.eval()
