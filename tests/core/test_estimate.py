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


def test_flops_per_token_is_six_n_plus_attention() -> None:
    config = ModelConfig(n_layer=12, n_head=12, n_embd=768, block_size=1024)
    flops = flops_per_token(config, 50257)
    n = count_params(config, 50257, non_embedding=True) + 50304 * 768  # the unembedding is a matmul too
    assert flops == 6 * n + 12 * 12 * 768 * 1024
    assert 0.8e9 < flops < 0.9e9  # the usual ~0.85 GFLOP/token of GPT-2 small at T=1024
    wider = ModelConfig(n_layer=12, n_head=12, n_embd=768, block_size=1024, shift=2)
    assert flops_per_token(wider, 50257) > flops  # an extra head costs its projection and an unembedding


def test_memory_estimate_grows_with_batch_and_precision() -> None:
    model = ModelConfig(n_layer=4, n_head=4, n_embd=128, block_size=64)
    small = estimate_memory(model, TrainConfig(batch_size=8), 65)
    big = estimate_memory(model, TrainConfig(batch_size=64), 65)
    half = estimate_memory(model, TrainConfig(batch_size=64), 65, dtype="bfloat16")
    ema = estimate_memory(model, TrainConfig(batch_size=8, ema_decay=0.99), 65)
    n = count_params(model, 65)
    assert small["params"] == 4 * n and small["optimizer"] == 8 * n and small["ema"] == 0
    assert ema["ema"] == 4 * n
    assert big["activations"] == pytest.approx(8 * small["activations"])
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
