"""The GPT decoder: shapes, the masked multi-horizon loss, the KV cache, learning at all."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from shiftstudio.config import ModelConfig
from shiftstudio.core.model.gpt import GPT

VOCAB = 50  # padded to 64 inside the model: the padding must never matter


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest on one thread, and a busy machine cannot stall a second one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny(**overrides) -> ModelConfig:
    values = dict(n_layer=2, n_head=2, n_embd=32, block_size=16, dropout=0.0)
    values.update(overrides)
    return ModelConfig(**values)


def shifted_batch(B: int, T: int, K: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """x (B, T) and y (B, K, T) with y[:, k-1] = the tokens k places after x, from one random stream."""
    gen = torch.Generator().manual_seed(seed)
    stream = torch.randint(0, VOCAB, (B, T + K), generator=gen)
    y = torch.stack([stream[:, k : k + T] for k in range(1, K + 1)], dim=1)
    return stream[:, :T], y


@pytest.mark.parametrize("shift", [1, 2])
def test_shapes_and_initial_loss(shift: int) -> None:
    torch.manual_seed(0)
    model = GPT(tiny(shift=shift), VOCAB)
    x, y = shifted_batch(3, 16, shift)
    out = model(x, y, return_logits=True)
    assert out.logits.shape == (3, shift, 16, VOCAB)  # the padding is cut off
    assert out.head_losses.shape == (shift,)
    assert out.loss.shape == ()
    assert torch.allclose(out.loss, out.head_losses.mean())
    # a fresh model is close to uniform over the real vocabulary (not the padded one)
    assert abs(out.loss.item() - math.log(VOCAB)) < 0.1
    plain = model(x)
    assert plain.loss is None and plain.logits.shape == (3, shift, 16, VOCAB)
    assert torch.allclose(plain.logits, out.logits)


@pytest.mark.parametrize("shift", [1, 2])
def test_masked_loss_is_the_mean_over_heads_of_each_heads_masked_mean(shift: int) -> None:
    torch.manual_seed(1)
    model = GPT(tiny(shift=shift), VOCAB)
    x, y = shifted_batch(4, 16, shift, seed=3)
    mask = torch.ones(4, shift, 16)
    mask[:, :, :5] = 0.0  # e.g. prompt tokens in fine-tuning
    mask[0, -1, :] = 0.0  # a whole row of the last head unscored
    out = model(x, y, mask, return_logits=True)
    ce = F.cross_entropy(out.logits.reshape(-1, VOCAB), y.reshape(-1), reduction="none").view(4, shift, 16)
    per_head = torch.stack([(ce[:, k] * mask[:, k]).sum() / mask[:, k].sum() for k in range(shift)])
    assert torch.allclose(out.head_losses, per_head, atol=1e-5)
    assert torch.allclose(out.loss, per_head.mean(), atol=1e-5)
    unmasked = model(x, y)
    assert not torch.allclose(unmasked.head_losses, out.head_losses)  # the mask changed what is scored
    # masked targets get no gradient: changing them changes neither loss nor gradients
    def loss_and_grads(targets: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        model.zero_grad(set_to_none=True)
        loss = model(x, targets, mask).loss
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    base_loss, base_grads = loss_and_grads(y)
    y2 = y.clone()
    y2[:, :, :5] = (y2[:, :, :5] + 1) % VOCAB  # only masked positions change
    loss2, grads2 = loss_and_grads(y2)
    assert torch.equal(loss2, base_loss)
    assert base_grads.keys() == grads2.keys() and all(base_grads[n].abs().sum() > 0 for n in base_grads)
    for name in base_grads:
        assert torch.equal(grads2[name], base_grads[name]), name
    # the comparison can fail: changing one scored target does change the gradients
    y3 = y.clone()
    y3[:, :, 5] = (y3[:, :, 5] + 1) % VOCAB
    _, grads3 = loss_and_grads(y3)
    assert not torch.equal(grads3["wte.weight"], base_grads["wte.weight"])


def test_head_k_predicts_token_t_plus_k() -> None:
    """Head 2 trained alone on 'the token after next' learns it; head 1's loss is untouched by head 2's targets."""
    torch.manual_seed(0)
    model = GPT(tiny(shift=2), VOCAB)
    x, y = shifted_batch(2, 16, 2)
    base = model(x, y).head_losses
    y_wrong = y.clone()
    y_wrong[:, 1] = (y_wrong[:, 1] + 7) % VOCAB
    moved = model(x, y_wrong).head_losses
    assert torch.equal(base[0], moved[0]) and not torch.equal(base[1], moved[1])


def test_causality_no_position_sees_the_future() -> None:
    torch.manual_seed(0)
    model = GPT(tiny(pos="rope"), VOCAB).eval()
    x, _ = shifted_batch(1, 16, 1)
    x2 = x.clone()
    x2[0, 10:] = (x2[0, 10:] + 1) % VOCAB
    a, b = model(x).logits, model(x2).logits
    assert torch.allclose(a[..., :10, :], b[..., :10, :], atol=1e-6)
    assert not torch.allclose(a[..., 10:, :], b[..., 10:, :])


@pytest.mark.parametrize("pos,norm", [("learned", "layernorm"), ("rope", "rmsnorm")])
def test_kv_cache_gives_the_same_logits_as_a_full_forward(pos: str, norm: str) -> None:
    torch.manual_seed(2)
    model = GPT(tiny(pos=pos, norm=norm, shift=2), VOCAB).eval()
    x, _ = shifted_batch(2, 12, 1, seed=5)
    full = model(x).logits[:, 0]  # head 1, (B, T, V)
    logits, past = model.next_token_logits(x[:, :7])
    assert torch.allclose(logits, full[:, 6], atol=1e-5)
    for t in range(7, 12):  # one token at a time
        logits, past = model.next_token_logits(x[:, t : t + 1], past)
        assert torch.allclose(logits, full[:, t], atol=1e-5)
    logits, _ = model.next_token_logits(x[:, 10:12], model.next_token_logits(x[:, :10])[1])  # a chunk after a prefix
    assert torch.allclose(logits, full[:, 11], atol=1e-5)
    with pytest.raises(ValueError, match="block_size"):
        model.next_token_logits(torch.zeros(1, 17, dtype=torch.long))


def test_tied_weights_share_one_tensor_and_init_scales_residual_projections() -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(n_layer=8, n_head=4, n_embd=256, block_size=16)
    tied, untied = GPT(cfg, VOCAB), GPT(ModelConfig(**{**cfg.__dict__, "tie_weights": False}), VOCAB)
    assert tied.unembedding is tied.wte.weight
    assert untied.unembedding is not untied.wte.weight and untied.lm_head is not None
    assert "lm_head.weight" not in tied.state_dict()
    std_residual = tied.blocks[0].attn.c_proj.weight.std().item()
    std_plain = tied.blocks[0].attn.c_attn.weight.std().item()
    assert abs(std_plain - 0.02) < 0.002
    assert abs(std_residual - 0.02 / math.sqrt(2 * 8)) < 0.001


def test_overfits_a_single_batch_to_near_zero_loss() -> None:
    torch.manual_seed(0)
    model = GPT(tiny(shift=2), VOCAB)
    x, y = shifted_batch(4, 16, 2, seed=11)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    first = None
    for _ in range(150):
        loss = model(x, y).loss
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    final = model(x, y).loss.item()
    assert first > 3.5 and final < 0.05, (first, final)


def test_dropout_only_in_training_mode() -> None:
    torch.manual_seed(0)
    model = GPT(tiny(dropout=0.5), VOCAB)
    x, y = shifted_batch(2, 16, 1)
    model.train()
    assert not torch.equal(model(x, y).loss, model(x, y).loss)
    model.eval()
    assert torch.equal(model(x, y).loss, model(x, y).loss)


def test_bad_vocab_is_refused() -> None:
    with pytest.raises(ValueError, match="vocab_size"):
        GPT(tiny(), 0)
