"""Size, compute and memory of a model before it exists.

Pure Python on purpose: the GUI calls these on every keystroke of the model
form, before torch is imported. :func:`count_params` mirrors
:class:`shiftstudio.core.model.gpt.GPT` exactly (a test holds them together);
FLOPs and memory are the usual back-of-the-envelope estimates.
"""

from __future__ import annotations

from shiftstudio.config import HEAD_KIND_CHOICES, ModelConfig, TrainConfig

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "auto": 4}


def padded_vocab(n: int, multiple: int = 64) -> int:
    """The vocabulary rounded up to a multiple of ``multiple`` (aligned matmuls)."""
    if n < 1 or multiple < 1:
        raise ValueError(f"vocabulary size and multiple must be positive, got {n} and {multiple}")
    return -(-n // multiple) * multiple


def _norm_params(model: ModelConfig) -> int:
    C = model.n_embd
    if model.norm == "rmsnorm":
        return C  # weight only
    return 2 * C if model.bias else C


def _linear(n_in: int, n_out: int, bias: bool) -> int:
    return n_in * n_out + (n_out if bias else 0)


def _block_params(model: ModelConfig) -> int:
    C, b = model.n_embd, model.bias
    return (
        2 * _norm_params(model)
        + (2 * model.head_size if model.qk_norm else 0)  # the query/key norm's gains
        + _linear(C, 3 * C, b)  # q, k, v
        + _linear(C, C, b)  # attention output
        + _linear(C, 4 * C, b)  # MLP up
        + _linear(4 * C, C, b)  # MLP down
    )


def shift_head_params(model: ModelConfig, kind: str | None = None) -> int:
    """Parameters of ONE extra head (2..K) of ``kind`` (default: the model's ``head_kind``) at this width:
    residual = norm + C×C, linear = C×C, block = a whole transformer block."""
    kind = model.head_kind if kind is None else kind
    C, b = model.n_embd, model.bias
    if kind == "residual":
        return _norm_params(model) + _linear(C, C, b)
    if kind == "linear":
        return _linear(C, C, b)
    if kind == "block":
        return _block_params(model)
    raise ValueError(f"unknown head kind {kind!r}")


def shift_head_params_by_kind(model: ModelConfig) -> dict[str, int]:
    """Parameters of heads 2..K (all K-1 of them) for each head kind at this shape, for the model pane:
    ``{'residual': …, 'linear': …, 'block': …}`` (all 0 when shift = 1)."""
    return {kind: (model.shift - 1) * shift_head_params(model, kind) for kind in HEAD_KIND_CHOICES}


def _parts(model: ModelConfig, vocab_size: int) -> dict[str, int]:
    C = model.n_embd
    V = padded_vocab(vocab_size)
    block = _block_params(model)
    return {
        "wte": V * C,
        "wpe": model.block_size * C if model.pos == "learned" else 0,
        "blocks": model.n_layer * block,
        "ln_f": _norm_params(model),
        "shift_heads": (model.shift - 1) * shift_head_params(model),
        "lm_head": 0 if model.tie_weights else V * C,
    }


def count_params(model: ModelConfig, vocab_size: int, non_embedding: bool = False) -> int:
    """Trainable parameters; ``non_embedding`` leaves out token/position embeddings and an untied unembedding."""
    parts = _parts(model, vocab_size)
    if non_embedding:
        parts["wte"] = parts["wpe"] = parts["lm_head"] = 0
    return sum(parts.values())


def count_shift_head_params(model: ModelConfig) -> int:
    """Parameters of heads 2..K."""
    return _parts(model, 1)["shift_heads"]


def count_lora_params(n_layer: int, n_embd: int, rank: int, targets: list[str] | tuple[str, ...]) -> int:
    """Adapter parameters that LoRA adds to a GPT of this shape (``r · (in + out)`` per wrapped layer)."""
    C = n_embd
    sizes = {"attn_qkv": (C, 3 * C), "attn_out": (C, C), "mlp_in": (C, 4 * C), "mlp_out": (4 * C, C)}
    return n_layer * sum(rank * sum(sizes[t]) for t in dict.fromkeys(targets))


def count_trainable(model: ModelConfig, train: TrainConfig, vocab_size: int) -> tuple[int, int]:
    """(trainable, total) parameters for this mode: every weight for full training; with LoRA, the adapters and
    heads 2..K train and the total is the model's plus the adapters."""
    n = count_params(model, vocab_size)
    if train.lora_rank <= 0:
        return n, n
    adapters = count_lora_params(model.n_layer, model.n_embd, train.lora_rank, train.lora_target_list)
    return adapters + count_shift_head_params(model), n + adapters


def flops_per_token(model: ModelConfig, vocab_size: int) -> float:
    """Training FLOPs per token: 6 per matmul weight (forward + backward) plus causal attention.

    The matmul weights are the non-embedding parameters plus the unembedding,
    applied once per head; the attention term is PaLM's ``12·L·H·Q·T`` (block heads are layers too). The
    model's work, as MFU counts it: when all heads' logits are too big to hold and the loss goes one head at
    a time (``GPT._big_logits``), backward recomputes each head's logits — 2 FLOPs per unembedding weight and
    head that are not counted here.
    """
    V = padded_vocab(vocab_size)
    matmul_params = count_params(model, vocab_size, non_embedding=True) + model.shift * V * model.n_embd
    layers = model.n_layer + (model.shift - 1 if model.head_kind == "block" else 0)
    attention = 12 * layers * model.n_head * model.head_size * model.block_size
    return float(6 * matmul_params + attention)


def estimate_memory(model: ModelConfig, train: TrainConfig, vocab_size: int, dtype: str = "float32") -> dict[str, int]:
    """Bytes needed to train at ``train.batch_size`` with activations in ``dtype``.

    Weights, gradients and AdamW's two moments stay float32 (mixed precision
    keeps float32 master weights); an EMA copy adds one more set. Activations
    count what autograd keeps per token and layer with fused attention (no
    T×T score matrix): about 16·C values, plus dropout masks (block heads count
    as layers), plus the extra heads' states, plus the logits and float32
    log-softmax over the vocabulary of ONE head (and the soft cap's float32
    tanh, when ``logit_softcap`` is on): with K >= 2 the heads' losses are
    computed one at a time under activation checkpointing. Allocator slack
    and the framework's own workspace come on top.
    """
    if dtype not in DTYPE_BYTES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPE_BYTES)}, got {dtype!r}")
    d = DTYPE_BYTES[dtype]
    trainable, n = count_trainable(model, train, vocab_size)  # frozen weights need no gradient or AdamW state
    C, L, K, V = model.n_embd, model.n_layer, model.shift, padded_vocab(vocab_size)
    tokens = train.batch_size * model.block_size
    per_layer = 16 * C * d + (3 * C if model.dropout > 0 else 0)  # saved activations + 1-byte dropout masks
    softcap = 4 if model.logit_softcap else 0  # the float32 tanh the soft cap keeps for backward
    head = V * (d + 4 + softcap) + (K - 1) * 4 * C * d  # one head's logits + float32 log-softmax; extra heads' states
    if model.head_kind == "block":
        L += K - 1  # each extra head is a whole block
    trunk_io = 2 * C * 4  # embeddings and the final hidden state (float32 residual stream)
    out = {
        "params": 4 * n,
        "grads": 4 * trainable,
        "optimizer": 8 * trainable,
        "ema": 4 * trainable if train.ema_decay > 0 else 0,
        "activations": tokens * (L * per_layer + head + trunk_io),
    }
    out["total"] = sum(out.values())
    return out
