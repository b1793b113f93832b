"""Text generation: a preallocated key/value cache and a token-by-token iterator.

``Generation(model, tokenizer, prompt, settings)`` is an iterator of
:class:`Token` objects (id, decoded text piece, probability, top-5
alternatives). Nothing runs until the caller asks for the next token, so
stopping is simply not asking for more; ``finish_reason`` says why a stream
that ran out ended.

The cached path reads the model's modules directly (``wte``, ``blocks``,
``ln_f``; the same modules training uses) and writes each new token's keys and
values into per-layer buffers sized ``block_size``: one token costs one
position's work, not a re-run of the prefix. When the window is full it slides:
the cache is re-filled from the last ``keep`` tokens. ``use_cache=False`` runs
the same windows without a cache (the baseline and the test oracle: greedy
output must be identical).

Sampling filters are small pure functions on a 1-D logits tensor, applied in
the order repetition penalty → temperature → top-k → top-p.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F

from shiftstudio.core.model import GPT
from shiftstudio.core.tokenizer import TextTokenizer

TOP_ALTERNATIVES = 5
MAX_NEW_TOKENS = 100_000
HOLD_BACK_TOKENS = 4  # a UTF-8 character spans at most 4 byte-level tokens


class GenerationError(ValueError):
    """The prompt or the settings cannot be used; one readable line."""


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
    if k <= 0 or k >= logits.numel():
        return logits
    kth = torch.topk(logits, k).values[-1]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose probabilities sum to at least ``p``; ``p = 1``: all kept."""
    if p >= 1.0:
        return logits
    probs, order = torch.sort(torch.softmax(logits.float(), dim=-1), descending=True)
    before = torch.cumsum(probs, dim=-1) - probs  # mass of the tokens ranked above each one
    drop_sorted = before >= p  # a token is dropped once the ones above it already reach p (the top one never is)
    drop = torch.zeros_like(drop_sorted).scatter(0, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def pick(logits: torch.Tensor, temperature: float, generator: torch.Generator | None) -> int:
    """The next id from filtered logits: argmax when greedy, else a draw from their softmax."""
    if temperature == 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits.float(), dim=-1).cpu()
    return int(torch.multinomial(probs, 1, generator=generator))


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


def _norm_fn(norm: torch.nn.Module):
    """The functional form of one of the model's norms (saves a module call per use)."""
    if isinstance(norm, torch.nn.LayerNorm):
        return lambda x: F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)
    return lambda x: F.rms_norm(x, norm.normalized_shape, norm.weight, norm.eps)


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
            (_norm_fn(b.ln_1), b.attn.c_attn.weight.t(), b.attn.c_attn.bias, b.attn.c_proj.weight.t(), b.attn.c_proj.bias,
             _norm_fn(b.ln_2), b.mlp.c_fc.weight.t(), b.mlp.c_fc.bias, b.mlp.c_proj.weight.t(), b.mlp.c_proj.bias,
             self.cache.kv[i])  # this layer's (2, B, nh, block, hs) cache
            for i, b in enumerate(model.blocks)
        ]
        self.ln_f = _norm_fn(model.ln_f)
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
        model, cache = self.model, self.cache
        B, T = idx.shape
        start, end = cache.length, cache.length + T
        if end > cache.capacity:
            raise ValueError(f"{end} positions do not fit a cache of {cache.capacity}")
        nh, hs, C = self.n_head, self.hs, self.C
        x = F.embedding(idx.reshape(-1), model.wte.weight)  # (B*T, C)
        rope = None
        if self.rope is None:
            x = (x.view(B, T, C) + model.wpe.weight[start:end]).view(B * T, C)  # positions broadcast over B
        else:
            rope = (self.rope[0][start:end].to(x.dtype), self.rope[1][start:end].to(x.dtype))  # (T, 3, 1, hs) each
            half = hs // 2
        mask = None
        if start > 0 and T > 1:  # query i (position start + i) sees keys 0 .. start + i
            mask = torch.ones(T, end, dtype=torch.bool, device=idx.device).tril(diagonal=start)
        causal = start == 0 and T > 1
        for ln_1, w_qkv, b_qkv, w_o, b_o, ln_2, w_fc, b_fc, w_p, b_p, kv_cache in self.layers:
            h = ln_1(x)
            qkv = (torch.mm(h, w_qkv) if b_qkv is None else torch.addmm(b_qkv, h, w_qkv)).view(B, T, 3, nh, hs)
            if rope is not None:  # x1, x2 = halves: (x1 cos - x2 sin, x2 cos + x1 sin), as apply_rope
                swapped = torch.cat([qkv[..., half:], qkv[..., :half]], dim=-1)
                qkv = torch.addcmul(qkv * rope[0], swapped, rope[1])
            qkv = qkv.permute(2, 0, 3, 1, 4)  # (3, B, nh, T, hs)
            kv_cache[:, :, :, start:end] = qkv[1:]  # keys and values in one copy
            kv = kv_cache[:, :, :, :end]  # (2, B, nh, end, hs)
            y = F.scaled_dot_product_attention(qkv[0], kv[0], kv[1], attn_mask=mask, is_causal=causal)  # (B, nh, T, hs)
            x = torch.addmm(x if b_o is None else x + b_o, y.transpose(1, 2).reshape(B * T, C), w_o)
            h = torch.mm(ln_2(x), w_fc) if b_fc is None else torch.addmm(b_fc, ln_2(x), w_fc)
            x = torch.addmm(x if b_p is None else x + b_p, F.gelu(h), w_p)
        cache.length = end
        return torch.mm(self.ln_f(x.view(B, T, C)[:, -1, :]), self.unembedding_t)  # (B, V)


def cached_forward(model: GPT, idx: torch.Tensor, cache: KVCache) -> torch.Tensor:
    """One :class:`Decoder` call (convenience for a single use)."""
    return Decoder(model, cache)(idx)


def uncached_forward(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    """The baseline: head-1 logits (B, V) after running the whole of ``idx`` through the model."""
    return model(idx).logits[:, 0, -1, :]


# -- tokens out ----------------------------------------------------------------


@dataclass
class Token:
    index: int  # 0 for the first generated token
    id: int
    text: str  # the text this token releases ("" while a split UTF-8 character or a possible stop string is held back)
    prob: float  # the model's probability of this token (temperature 1, no filters)
    top: list[tuple[int, str, float]]  # the model's top-5 (id, token text, probability) at this position


class TextStream:
    """Turns generated ids into text pieces: holds back byte-level pieces until a UTF-8
    character is whole, and text that might be the start of a stop string."""

    def __init__(self, tokenizer: TextTokenizer, stop: Sequence[str] = ()):
        self.tokenizer = tokenizer
        self.stop = tuple(stop)
        self.pending_ids: list[int] = []
        self.held = ""  # decoded text not yet released
        self.text = ""  # text released so far
        self.stopped = False

    def push(self, token_id: int) -> str:
        """Add one id; returns the text released by it (maybe ""; always "" once stopped)."""
        if self.stopped:
            return ""
        self.pending_ids.append(token_id)
        piece = self.tokenizer.decode(self.pending_ids)
        if piece.endswith("\ufffd") and len(self.pending_ids) < HOLD_BACK_TOKENS:
            return ""  # the last bytes start a character the next token(s) finish
        self.pending_ids.clear()
        self.held += piece
        return self._release()

    def _release(self) -> str:
        for s in self.stop:
            cut = self.held.find(s)
            if cut != -1:
                out, self.held, self.stopped = self.held[:cut], "", True
                self.text += out
                return out
        keep = 0  # longest tail of held text that could still grow into a stop string
        for s in self.stop:
            for n in range(min(len(s) - 1, len(self.held)), 0, -1):
                if self.held.endswith(s[:n]):
                    keep = max(keep, n)
                    break
        out = self.held[: len(self.held) - keep]
        self.held = self.held[len(self.held) - keep :]
        self.text += out
        return out

    def flush(self) -> str:
        """Release whatever is held (at the end of a stream that did not stop on a stop string)."""
        if self.stopped:
            return ""
        rest = (self.tokenizer.decode(self.pending_ids) if self.pending_ids else "")
        out = self.held + rest
        self.pending_ids.clear()
        self.held = ""
        self.text += out
        return out


# -- the generation iterator -----------------------------------------------------


def encode_prompt(tokenizer: TextTokenizer, prompt: str | Sequence[int]) -> list[int]:
    """Prompt ids; a character tokenizer rejects characters it has never seen, and an
    empty prompt starts from ``<|endoftext|>`` (a document start)."""
    if not isinstance(prompt, str):
        ids = [int(i) for i in prompt]
        bad = [i for i in ids if not 0 <= i < tokenizer.vocab_size]
        if bad or not ids:
            raise GenerationError(f"prompt ids must be 1 or more in 0..{tokenizer.vocab_size - 1}, got {bad[:5] or 'none'}")
        return ids
    if prompt == "":
        start = tokenizer.eot_id if tokenizer.eot_id is not None else tokenizer.tk.token_to_id("\n")
        if start is None:
            raise GenerationError("the prompt is empty and the tokenizer has no <|endoftext|> to start from; type a prompt")
        return [start]
    ids = tokenizer.encode(prompt)
    if tokenizer.kind == "char" and tokenizer.unk_id is not None and tokenizer.unk_id in ids:
        table = tokenizer.char_table()
        unknown = sorted({c for c in prompt if table is None or ord(c) >= len(table) - 1 or table[ord(c)] == tokenizer.unk_id})
        shown = ", ".join(repr(c) for c in unknown[:8]) + (" …" if len(unknown) > 8 else "")
        raise GenerationError(f"the prompt has characters this model's tokenizer never saw: {shown}")
    return ids


class Generation:
    """An iterator of :class:`Token`; see the module docstring."""

    def __init__(
        self,
        model: GPT,
        tokenizer: TextTokenizer,
        prompt: str | Sequence[int],
        settings: SamplingSettings | None = None,
        *,
        use_cache: bool = True,
        keep: int | None = None,
    ) -> None:
        self.model = getattr(model, "_orig_mod", model)  # a torch.compile wrapper shares its module's weights
        self.tokenizer = tokenizer
        self.settings = settings or SamplingSettings()
        self.use_cache = use_cache
        block = self.model.config.block_size
        # After a slide the window holds `keep` tokens, so the cache has room for block - keep more.
        self.keep = max(1, min(block - 1, keep if keep is not None else block - max(1, block // 4)))
        self.prompt_ids = encode_prompt(tokenizer, prompt)
        self.seed = self.settings.seed if self.settings.seed is not None else int.from_bytes(os.urandom(8), "little") >> 1
        self.finish_reason: str | None = None  # "length" | "eot" | "stop" once the stream ends by itself
        self.n_generated = 0
        self.stream = TextStream(tokenizer, self.settings.stop)

    def __iter__(self) -> Iterator[Token]:
        return self._run()

    @torch.inference_mode()
    def _run(self) -> Iterator[Token]:
        model, s = self.model, self.settings
        was_training = model.training
        model.eval()
        try:
            device = next(model.parameters()).device
            generator = torch.Generator(device="cpu").manual_seed(self.seed)
            block = model.config.block_size
            ids = list(self.prompt_ids)
            seen = torch.zeros(model.vocab_size, dtype=torch.bool, device=device)
            seen[torch.tensor(ids, device=device)] = True
            decoder = Decoder(model) if self.use_cache else None
            cache = decoder.cache if decoder is not None else None
            unk_id = self.tokenizer.unk_id
            unk = torch.tensor([unk_id], device=device) if unk_id is not None and unk_id < model.vocab_size else None
            window_start = max(0, len(ids) - block)  # the window is ids[window_start:]
            fresh = ids[window_start:]  # ids not yet in the cache
            for index in range(s.max_new_tokens):
                if len(ids) - window_start > block:
                    window_start = len(ids) - self.keep  # slide: keep the last `keep` tokens
                    if cache is not None:
                        cache.reset()
                        fresh = ids[window_start:]
                if cache is not None:
                    logits = decoder(torch.tensor([fresh], device=device))[0]
                else:
                    logits = uncached_forward(model, torch.tensor([ids[window_start:]], device=device))[0]
                logits = logits.float()  # (V,)
                probs = torch.softmax(logits, dim=-1)
                top_p, top_i = torch.topk(probs, min(TOP_ALTERNATIVES, probs.numel()))
                filtered = logits
                if s.repetition_penalty != 1.0:
                    filtered = apply_repetition_penalty(logits, seen.nonzero().squeeze(1), s.repetition_penalty)
                if unk is not None:
                    filtered = filtered.index_fill(0, unk, float("-inf"))  # <unk> stands for no text: never write it
                if s.temperature > 0:
                    filtered = top_p_filter(top_k_filter(apply_temperature(filtered, s.temperature), s.top_k), s.top_p)
                token_id = pick(filtered, s.temperature, generator)
                self.n_generated = index + 1
                top = [(int(i), self.tokenizer.token_text(int(i)), float(p)) for p, i in zip(top_p.tolist(), top_i.tolist())]
                if s.stop_at_eot and token_id == self.tokenizer.eot_id:
                    # The end of the document: the token carries only text that was held back.
                    self.finish_reason = "eot"
                    yield Token(index, token_id, self.stream.flush(), float(probs[token_id]), top)
                    return
                ids.append(token_id)
                fresh = [token_id]
                seen[token_id] = True
                text = self.stream.push(token_id)
                if index == s.max_new_tokens - 1 and not self.stream.stopped:
                    text += self.stream.flush()
                yield Token(index, token_id, text, float(probs[token_id]), top)
                if self.stream.stopped:
                    self.finish_reason = "stop"
                    return
            else:
                self.finish_reason = "length"
                return
        finally:
            model.train(was_training)

    @property
    def text(self) -> str:
        """The text released so far."""
        return self.stream.text


# -- loading a model to generate from -------------------------------------------------


def clone_model(model: GPT, device: str | torch.device = "cpu") -> GPT:
    """An independent copy of ``model``'s weights (call it between training steps):
    generation on the copy never reads tensors the training thread is changing."""
    model = getattr(model, "_orig_mod", model)
    # built on the meta device: no random initialisation, so the training's RNG stream is left exactly as it was
    # (a snapshot must not change the run) and a big model is not initialised only to be overwritten
    with torch.device("meta"):
        copy = GPT(model.config, model.vocab_size)
    copy = copy.to_empty(device=device)
    with torch.no_grad():
        source = dict(model.named_buffers())
        for name, buffer in copy.named_buffers():  # derived tables (rotary angles), not in the state dict
            buffer.copy_(source[name])
        copy.load_state_dict({k: v.detach().float() for k, v in model.state_dict().items()})
    return copy.eval()


def load_model(
    run_dir: str | Path, checkpoint: str | None = None, *, ema: bool = False, device: str | torch.device = "cpu"
) -> tuple[GPT, TextTokenizer, dict]:
    """A run's model (latest checkpoint, ``best``, or ``step-N``; raw or EMA weights) and tokenizer.

    Raises :class:`~shiftstudio.core.checkpoint.RunError` with a readable line for
    a missing, corrupt or mismatched checkpoint.
    """
    from shiftstudio.core import checkpoint as ckpt
    from shiftstudio.core.run import load_run_config

    run_dir = Path(run_dir)
    config = load_run_config(run_dir)
    infos = ckpt.list_checkpoints(run_dir)
    if not infos:
        raise ckpt.RunError(f"{run_dir} has no checkpoints yet: train it first")
    if checkpoint in (None, "", "latest"):
        info = infos[-1]
    elif checkpoint == "best":
        best = [i for i in infos if i.is_best]
        if not best:
            raise ckpt.RunError(f"{run_dir} has no checkpoint marked best yet")
        info = best[-1]
    else:
        wanted = checkpoint.removeprefix("step-")
        found = [i for i in infos if str(i.step) == wanted]
        if not found:
            steps = ", ".join(f"step-{i.step}" for i in infos)
            raise ckpt.RunError(f"{run_dir} has no checkpoint {checkpoint!r} (it has {steps})")
        info = found[0]
    saved = ckpt.load_checkpoint(info.path)
    weights = saved.model
    if ema:
        if saved.ema is None:
            raise ckpt.RunError(f"checkpoint step-{info.step} has no EMA weights (the run trained with ema_decay = 0)")
        weights = saved.ema
    tokenizer = TextTokenizer.load(run_dir / "tokenizer.json")
    model = GPT(config.model, tokenizer.vocab_size)
    ckpt.check_shapes("model", weights, model.state_dict())
    model.load_state_dict(weights)
    model.to(device).eval()
    meta = {"step": info.step, "path": str(info.path), "ema": ema, "is_best": info.is_best, "val_loss": info.val_loss}
    return model, tokenizer, meta
