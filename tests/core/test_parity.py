"""One block-math truth: every combination of architecture options gives the same logits through
``GPT.forward``, the model's own KV path (``next_token_logits``) and the fast ``Decoder``, cached
(a prefill, then one token at a time) and uncached (the whole sequence in one call), batch 1 and 2.
The options: positions, norm, activation, bias, tied unembedding, heads, query/key norm, logit soft cap."""

from __future__ import annotations

import itertools

import pytest
import torch

from shiftstudio.config import ACTIVATION_CHOICES, NORM_CHOICES, POS_CHOICES, ModelConfig
from shiftstudio.core.generate.decoder import Decoder, KVCache
from shiftstudio.core.model.gpt import GPT

T, VOCAB = 12, 37
CAP = 2.0  # the soft cap when on; build() scales the unembedding so that the logits reach it, where tanh bends
COMBINATIONS = list(itertools.product(
    POS_CHOICES, NORM_CHOICES, ACTIVATION_CHOICES, (False, True), (False, True), (1, 3), (False, True), (0.0, CAP),
))


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models on a shared machine: one thread is several times faster than two fighting (conftest restores)."""
    torch.set_num_threads(1)


def test_the_grid_covers_every_architecture_switch() -> None:
    # a new choice added to the config must show up here (and so in the parity runs)
    assert len(COMBINATIONS) == len(POS_CHOICES) * len(NORM_CHOICES) * len(ACTIVATION_CHOICES) * 2 * 2 * 2 * 2 * 2 == 384


def build(pos: str, norm: str, activation: str, bias: bool, tie: bool, shift: int, qk_norm: bool = False, cap: float = 0.0) -> GPT:
    torch.manual_seed(hash((pos, norm, activation, bias, tie, shift, qk_norm, cap)) % 2**31)
    cfg = ModelConfig(
        n_layer=2, n_head=2, n_embd=32, block_size=16, dropout=0.0, pos=pos, norm=norm, activation=activation,
        bias=bias, tie_weights=tie, shift=shift, qk_norm=qk_norm, logit_softcap=cap,
    )
    model = GPT(cfg, VOCAB).eval()
    with torch.no_grad():  # biases, norm weights and q/k gains start at 0 and 1, where a term left out would go unnoticed
        for name, p in model.named_parameters():
            if name.endswith("bias") or p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.2)
        if cap:  # logits of a few units (not a few tenths): a path that left the cap out is off by far more than noise
            model.unembedding.mul_(10.0)
    return model


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("pos,norm,activation,bias,tie,shift,qk_norm,cap", COMBINATIONS)
def test_every_path_gives_the_same_logits(
    pos: str, norm: str, activation: str, bias: bool, tie: bool, shift: int, qk_norm: bool, cap: float, batch: int
) -> None:
    model = build(pos, norm, activation, bias, tie, shift, qk_norm, cap)
    idx = torch.randint(0, VOCAB, (batch, T), generator=torch.Generator().manual_seed(batch))
    with torch.no_grad():
        full = model(idx).logits  # (B, K, T, V)
        assert full.shape == (batch, shift, T, VOCAB)
        if cap:
            assert full.abs().max() < cap
        reference = full[:, 0]  # head 1 at every position

        # the fast decoder, uncached: the whole window in one call
        uncached = Decoder(model, KVCache(model, batch=batch))(idx)
        torch.testing.assert_close(uncached, reference[:, -1], rtol=1e-5, atol=1e-5)

        # the fast decoder, cached: a prefill of 5 tokens, then one token at a time
        decoder = Decoder(model, KVCache(model, batch=batch))
        steps = [decoder(idx[:, :5])] + [decoder(idx[:, t : t + 1]) for t in range(5, T)]
        torch.testing.assert_close(torch.stack(steps, dim=1), reference[:, 4:], rtol=1e-5, atol=1e-5)
        assert decoder.cache.length == T

        # the model's own KV path
        logits, past = model.next_token_logits(idx[:, :5])
        own = [logits]
        for t in range(5, T):
            logits, past = model.next_token_logits(idx[:, t : t + 1], past)
            own.append(logits)
        torch.testing.assert_close(torch.stack(own, dim=1), reference[:, 4:], rtol=1e-5, atol=1e-5)


def test_the_activation_switch_changes_the_output() -> None:
    """The switch is read, not ignored: exact and tanh GELU differ slightly on the same weights."""
    exact = build("learned", "layernorm", "gelu", False, True, 1)
    tanh = GPT(ModelConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, activation="gelu_tanh"), VOCAB).eval()
    tanh.load_state_dict(exact.state_dict())
    idx = torch.randint(0, VOCAB, (1, T))
    with torch.no_grad():
        a, b = exact(idx).logits, tanh(idx).logits
        assert not torch.allclose(a, b, atol=1e-7)
        torch.testing.assert_close(a, b, rtol=1e-2, atol=1e-2)  # but only slightly
        torch.testing.assert_close(Decoder(tanh)(idx), b[:, 0, -1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("option", [{"qk_norm": True}, {"activation": "relu2"}, {"logit_softcap": CAP}])
def test_each_new_switch_changes_the_output(option: dict) -> None:
    """Read, not ignored, by the model and the decoder alike: the same weights with the switch on give other
    logits, and the decoder agrees with the model's own."""
    shape = dict(n_layer=2, n_head=2, n_embd=32, block_size=16, pos="rope", norm="rmsnorm", bias=True)
    torch.manual_seed(0)
    off = GPT(ModelConfig(**shape), VOCAB).eval()
    on = GPT(ModelConfig(**shape, **option), VOCAB).eval()
    with torch.no_grad():  # far from the initial weights, where attention and the MLP shape the logits
        for p in off.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    state = off.state_dict()
    if option.get("qk_norm"):
        state |= {k: v for k, v in on.state_dict().items() if k.endswith("qk_gain")}
    on.load_state_dict(state)
    idx = torch.randint(0, VOCAB, (1, T), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = off(idx).logits, on(idx).logits
        assert (a - b).abs().max() > 0.05, (a - b).abs().max()
        torch.testing.assert_close(Decoder(on)(idx), b[:, 0, -1], rtol=1e-5, atol=1e-5)


def test_a_full_cache_refuses_more_tokens() -> None:
    model = build("rope", "rmsnorm", "gelu", False, True, 1)
    decoder = Decoder(model, KVCache(model))
    with torch.no_grad():
        decoder(torch.zeros(1, 16, dtype=torch.long))
        with pytest.raises(ValueError):
            decoder(torch.zeros(1, 1, dtype=torch.long))
