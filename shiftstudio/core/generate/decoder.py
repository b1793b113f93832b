"""Head-1 inference with a preallocated key/value cache.

:class:`Decoder` runs the model's own weights through the block math with as
few operations as it can (one token of a small model is bound by per-op
overhead, not arithmetic). Every architecture switch — norm, activation,
positions, bias, tied unembedding, query/key norm, logit soft cap — comes from
the functions and modules of :mod:`shiftstudio.core.model.gpt`, so the two
paths cannot drift apart; a parity test runs every combination of options
through both.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from shiftstudio.core.model.gpt import GPT, activation_function, norm_function, qk_norm, softcap


# -- the key/value cache -------------------------------------------------------


class KVCache:
    """Keys and values of every layer, preallocated for a full window: (L, 2, B, nh, block_size, hs)."""

    def __init__(self, model: GPT, batch: int = 1, device: torch.device | None = None, dtype: torch.dtype | None = None):
        c = model.config
        ref = next(model.parameters())
        shape = (c.n_layer, 2, batch, c.n_head, c.block_size, c.n_embd // c.n_head)
        self.kv = torch.empty(shape, device=device or ref.device, dtype=dtype or ref.dtype)
        self.capacity = c.block_size
        self.length = 0  # positions filled

    def reset(self) -> None:
        self.length = 0

    def keep_slots(self, first: int, slots: list[int]) -> None:
        """Move the keys and values of ``slots`` (ascending, each >= ``first``) to ``first, first + 1, ..`` and
        end the cache after them: the branch of a verified tree that was kept."""
        if slots != list(range(first, first + len(slots))):
            src = torch.tensor(slots, device=self.kv.device)
            self.kv[:, :, :, :, first : first + len(slots)] = self.kv[:, :, :, :, src]  # gathered first: no overlap
        self.length = first + len(slots)


class Decoder:
    """Head-1 inference through a :class:`KVCache`, with the model's weights called functionally.

    A batch-1 decoding step of a small model is bound by per-operation overhead,
    not arithmetic, so this path issues as few operations as it can: activations
    stay 2-D (``B*T`` rows), matrix products go straight to ``mm``/``addmm`` on
    transposed views of the weights (no ``linear`` → ``matmul`` → ``t``
    dispatch chain), residual adds ride inside ``addmm``, one copy writes a
    token's keys and values for a layer, and norms skip the module machinery.
    It reads the model's own parameters (no copy), so it must not run while they
    are being trained (generate from :func:`clone_model`). A test checks it
    against the model's ``forward``.
    """

    def __init__(self, model: GPT, cache: KVCache | None = None):
        self.model = model
        self.cache = cache or KVCache(model)
        c = model.config
        self.n_head, self.hs, self.C = c.n_head, c.n_embd // c.n_head, c.n_embd
        self.layers = [
            (norm_function(b.ln_1), b.attn.c_attn.weight.t(), b.attn.c_attn.bias, b.attn.c_proj.weight.t(), b.attn.c_proj.bias,
             norm_function(b.ln_2), b.mlp.c_fc.weight.t(), b.mlp.c_fc.bias, b.mlp.c_proj.weight.t(), b.mlp.c_proj.bias,
             None if b.attn.qk_gain is None else b.attn.qk_gain.view(2, 1, self.hs),  # qk_norm's gains (2, 1, hs)
             self.cache.kv[i])  # this layer's (2, B, nh, block, hs) cache
            for i, b in enumerate(model.blocks)
        ]
        self.eps = c.norm_eps
        self.ln_f = norm_function(model.ln_f)
        self.act = activation_function(c.activation)
        self.cap = c.logit_softcap  # 0: off
        self.unembedding_t = model.unembedding[: model.vocab_size].t()  # (C, V): padding rows never scored
        self.rope = None
        if model.wpe is None:
            # Rotary tables for q, k and v side by side, (block, 3, 1, hs): rotating the whole fused qkv output
            # as x * cos + swap_halves(x) * sin is three operations for the three, and v passes unchanged
            # (cos 1, sin 0), so keys and values still go into the cache in one copy.
            cos, sin = model.rope_cos, model.rope_sin  # (block, hs/2)
            one, zero = torch.ones_like(cos), torch.zeros_like(sin)
            self.rope = (
                torch.stack([torch.cat([cos, cos], -1), torch.cat([cos, cos], -1), torch.cat([one, one], -1)], 1)[:, :, None],
                torch.stack([torch.cat([-sin, sin], -1), torch.cat([-sin, sin], -1), torch.cat([zero, zero], -1)], 1)[:, :, None],
            )

    def __call__(self, idx: torch.Tensor) -> torch.Tensor:
        """Head-1 logits (B, V) of the token after ``idx`` (B, T), whose tokens take positions
        ``cache.length ..``; their keys and values are written into the cache."""
        B, T = idx.shape
        x = self.forward_states(idx)  # (B*T, C)
        return self.head1_logits(x.view(B, T, self.C)[:, -1, :])  # (B, V)

    def head1_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Head-1 logits (N, V) of hidden states ``x`` (N, C) from :meth:`forward_states` (soft-capped, in
        float32, when the model caps its logits): row by row what :meth:`__call__` gives for its last position."""
        logits = torch.mm(self.ln_f(x), self.unembedding_t)
        return softcap(logits, self.cap) if self.cap else logits

    def forward_states(self, idx: torch.Tensor, tree: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Hidden states (B*T, C) after the last block (before the final norm) of every position of ``idx``
        (B, T), whose tokens take cache slots ``cache.length ..``; their keys and values are written into the
        cache. Roll back with ``cache.length = ...``: slots past ``length`` are overwritten later.

        ``tree = (depths, ancestors)`` feeds a tree of tokens instead of a sequence (batch 1; speculative
        verification of several drafted continuations at once): token i sits at position
        ``cache.length + depths[i]`` (a (T,) long tensor) and attends to the cache and to the tokens j with
        ``ancestors[i, j]`` ((T, T) bool, True on the diagonal) — each one sees exactly the text of its own
        branch. Move the kept branch's slots together afterwards (:meth:`KVCache.keep_slots`)."""
        model, cache = self.model, self.cache
        B, T = idx.shape
        start, end = cache.length, cache.length + T
        if end > cache.capacity:
            raise ValueError(f"{end} positions do not fit a cache of {cache.capacity}")
        nh, hs, C = self.n_head, self.hs, self.C
        x = F.embedding(idx.reshape(-1), model.wte.weight)  # (B*T, C)
        positions = slice(start, end) if tree is None else tree[0] + start
        rope = None
        if self.rope is None:
            x = (x.view(B, T, C) + model.wpe.weight[positions]).view(B * T, C)  # positions broadcast over B
        else:
            rope = (self.rope[0][positions].to(x.dtype), self.rope[1][positions].to(x.dtype))  # (T, 3, 1, hs) each
            half = hs // 2
        mask = None
        if tree is not None:  # the cache, then each token's own branch
            mask = torch.cat([torch.ones(T, start, dtype=torch.bool, device=idx.device), tree[1]], dim=1)
        elif start > 0 and T > 1:  # query i (position start + i) sees keys 0 .. start + i
            mask = torch.ones(T, end, dtype=torch.bool, device=idx.device).tril(diagonal=start)
        causal = mask is None and T > 1
        for ln_1, w_qkv, b_qkv, w_o, b_o, ln_2, w_fc, b_fc, w_p, b_p, qk_gain, kv_cache in self.layers:
            h = ln_1(x)
            qkv = (torch.mm(h, w_qkv) if b_qkv is None else torch.addmm(b_qkv, h, w_qkv)).view(B, T, 3, nh, hs)
            if qk_gain is not None:  # q and k normalised in place: v stays beside them for the one cache copy
                qkv[:, :, :2] = qk_norm(qkv[:, :, :2], qk_gain, self.eps)
            if rope is not None:  # x1, x2 = halves: (x1 cos - x2 sin, x2 cos + x1 sin), as apply_rope
                swapped = torch.cat([qkv[..., half:], qkv[..., :half]], dim=-1)
                qkv = torch.addcmul(qkv * rope[0], swapped, rope[1])
            qkv = qkv.permute(2, 0, 3, 1, 4)  # (3, B, nh, T, hs)
            kv_cache[:, :, :, start:end] = qkv[1:]  # keys and values in one copy
            kv = kv_cache[:, :, :, :end]  # (2, B, nh, end, hs)
            y = F.scaled_dot_product_attention(qkv[0], kv[0], kv[1], attn_mask=mask, is_causal=causal)  # (B, nh, T, hs)
            x = torch.addmm(x if b_o is None else x + b_o, y.transpose(1, 2).reshape(B * T, C), w_o)
            h = torch.mm(ln_2(x), w_fc) if b_fc is None else torch.addmm(b_fc, ln_2(x), w_fc)
            x = torch.addmm(x if b_p is None else x + b_p, self.act(h), w_p)
        cache.length = end
        return x  # (B*T, C)


def uncached_forward(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    """The baseline: head-1 logits (B, V) after running the whole of ``idx`` through the model."""
    return model(idx).logits[:, 0, -1, :]
