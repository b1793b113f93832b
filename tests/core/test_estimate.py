"""Size, compute and memory estimates agree with the real model."""

from __future__ import annotations

import pytest
import torch

from shiftstudio.config import ModelConfig, TrainConfig
from shiftstudio.core.model.estimate import count_params, estimate_memory, flops_per_token, padded_vocab
from shiftstudio.core.model.gpt import GPT
from shiftstudio.format import human_count


def real_params(config: ModelConfig, vocab: int) -> tuple[int, int]:
    with torch.device("meta"):  # shapes only: no memory, no init cost
        model = GPT(config, vocab)
    return sum(p.numel() for p in model.parameters()), model.num_params(non_embedding=True)


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"pos": "rope"},
        {"bias": True},
        {"tie_weights": False},
        {"shift": 3},
        {"norm": "rmsnorm", "bias": True, "shift": 3, "tie_weights": False},
        {"pos": "rope", "bias": True, "tie_weights": False, "shift": 1},
        {"n_layer": 3, "n_head": 3, "n_embd": 48, "block_size": 40},
    ],
)
@pytest.mark.parametrize("vocab", [65, 300])
def test_count_params_matches_the_real_model(overrides: dict, vocab: int) -> None:
    config = ModelConfig(**{"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 16, **overrides})
    total, non_embedding = real_params(config, vocab)
    assert count_params(config, vocab) == total
    assert count_params(config, vocab, non_embedding=True) == non_embedding
    assert non_embedding < total


def test_gpt2_small_shape_is_124m() -> None:
    config = ModelConfig(n_layer=12, n_head=12, n_embd=768, block_size=1024, bias=True)
    n = count_params(config, 50257)
    assert n == real_params(config, 50257)[0]
    assert 123.5e6 < n < 125.0e6  # GPT-2 small: 124M (a padded vocabulary adds 36k)
    assert human_count(n) == "124M"


def test_padded_vocab() -> None:
    assert padded_vocab(65) == 128 and padded_vocab(64) == 64 and padded_vocab(50257) == 50304
    with pytest.raises(ValueError):
        padded_vocab(0)


FLOP_CONFIGS = [
    {},
    {"shift": 3},
    {"bias": True, "tie_weights": False, "pos": "rope"},
    {"norm": "rmsnorm", "bias": True, "shift": 2, "activation": "gelu_tanh"},
    {"n_layer": 3, "n_head": 3, "n_embd": 48, "block_size": 40},
]


@pytest.mark.parametrize("overrides", FLOP_CONFIGS)
def test_flops_per_token_matches_counted_matmuls_of_a_real_training_step(overrides: dict) -> None:
    """torch's FlopCounterMode counts the matrix products of one real forward + backward pass.

    Three things make the two comparable, and the one difference left is exact:
    - the math attention backend, so the attention products show up as ``bmm`` (FlopCounterMode does not
      count the fused CPU kernel); it computes the full T×T scores, as the estimate's PaLM term assumes;
    - a vocabulary that is a multiple of 64, so the CPU's unpadded unembedding (see ``GPT._logits``) is the
      padded one the estimate charges for;
    - the estimate charges 6 FLOPs for every non-embedding parameter, including norm weights and biases (the
      model's 1-D parameters), whose elementwise work FlopCounterMode does not count: exactly that is added.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    vocab = 128
    config = ModelConfig(**{"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 16, "dropout": 0.0, **overrides})
    torch.manual_seed(0)
    model = GPT(config, vocab)
    B, T = 2, config.block_size
    x = torch.randint(0, vocab, (B, T))
    y = torch.randint(0, vocab, (B, config.shift, T))
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(x, y).loss.backward()
    counted = counter.get_total_flops() / (B * T)
    counted_ops = {str(op) for op in counter.get_flop_counts()["Global"]}
    assert "aten.bmm" in counted_ops  # the attention products were seen
    elementwise = sum(p.numel() for p in model.parameters() if p.dim() == 1)
    assert flops_per_token(config, vocab) == counted + 6 * elementwise


def test_flops_per_token_of_gpt2_small() -> None:
    config = ModelConfig(n_layer=12, n_head=12, n_embd=768, block_size=1024)
    flops = flops_per_token(config, 50257)
    assert 0.8e9 < flops < 0.9e9  # the usual ~0.85 GFLOP/token of GPT-2 small at T=1024
    wider = ModelConfig(n_layer=12, n_head=12, n_embd=768, block_size=1024, shift=2)
    assert flops_per_token(wider, 50257) > flops  # an extra head costs its projection and an unembedding


def tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


@pytest.mark.parametrize("overrides", [{}, {"shift": 2, "tie_weights": False, "bias": True}])
def test_memory_estimate_of_weights_grads_and_optimizer_is_what_a_real_step_holds(overrides: dict) -> None:
    """params, grads, optimizer and EMA against the real tensors after one AdamW step of the trainer's optimizer."""
    from shiftstudio.core.train.optim import WeightEMA, build_optimizer

    torch.manual_seed(0)
    vocab = 65
    model_cfg = ModelConfig(**{"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 16, **overrides})
    model = GPT(model_cfg, vocab)
    optimizer = build_optimizer(model, TrainConfig(), torch.device("cpu"))
    model(torch.randint(0, vocab, (2, 16)), torch.randint(0, vocab, (2, model_cfg.shift, 16))).loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None for g in grads)
    optimizer.step()
    moments = [state[slot] for state in optimizer.state.values() for slot in ("exp_avg", "exp_avg_sq")]
    assert len(moments) == 2 * len(list(model.parameters()))
    ema = WeightEMA(model, 0.99)

    est = estimate_memory(model_cfg, TrainConfig(batch_size=8), vocab)
    assert est["params"] == tensor_bytes(model.parameters())
    assert est["grads"] == tensor_bytes(grads)
    assert est["optimizer"] == tensor_bytes(moments)  # AdamW's two moments (its step counters are scalars)
    assert est["ema"] == 0
    with_ema = estimate_memory(model_cfg, TrainConfig(batch_size=8, ema_decay=0.99), vocab)
    assert with_ema["ema"] == tensor_bytes(ema.model.parameters())
    # weights, gradients and moments stay float32 under mixed precision: only activations shrink
    half = estimate_memory(model_cfg, TrainConfig(batch_size=8), vocab, dtype="bfloat16")
    assert (half["params"], half["grads"], half["optimizer"]) == (est["params"], est["grads"], est["optimizer"])


def test_memory_estimate_grows_with_batch_and_precision() -> None:
    model = ModelConfig(n_layer=4, n_head=4, n_embd=128, block_size=64)
    small = estimate_memory(model, TrainConfig(batch_size=8), 65)
    big = estimate_memory(model, TrainConfig(batch_size=64), 65)
    half = estimate_memory(model, TrainConfig(batch_size=64), 65, dtype="bfloat16")
    ema = estimate_memory(model, TrainConfig(batch_size=8, ema_decay=0.99), 65)
    assert big["activations"] == pytest.approx(8 * small["activations"])  # activations are per token
    assert (big["params"], big["optimizer"]) == (small["params"], small["optimizer"])  # the weights are not
    assert half["activations"] < big["activations"]
    for est in (small, big, half, ema):
        assert est["total"] == sum(v for k, v in est.items() if k != "total")
    with pytest.raises(ValueError, match="dtype"):
        estimate_memory(model, TrainConfig(), 65, dtype="int8")


def test_memory_estimate_is_the_right_order_for_a_real_step() -> None:
    """The activation estimate is within 2x of what autograd really saves for backward."""
    torch.manual_seed(0)
    model_cfg = ModelConfig(n_layer=2, n_head=4, n_embd=64, block_size=32)
    train_cfg = TrainConfig(batch_size=8)
    model = GPT(model_cfg, 65)
    saved: list[int] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t.numel() * t.element_size())
        return t

    x = torch.randint(0, 65, (8, 32))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x, torch.randint(0, 65, (8, 1, 32)), torch.ones(8, 1, 32)).loss.backward()
    estimate = estimate_memory(model_cfg, train_cfg, 65)["activations"]
    assert 0.5 < estimate / sum(saved) < 2.0, (estimate, sum(saved))
