"""The architecture options of the "best small-model recipe": query/key norm, ReLU², zero-initialised
residual projections and the logit soft cap. Off by default, and then the model is exactly what it was
(same weights from the same seed, same random stream, same state dict); on, each does what it says in
training, evaluation and generation, and a run trained with them resumes, loads and generates."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from shiftstudio.config import ModelConfig, RunConfig
from shiftstudio.core.errors import ConfigError
from shiftstudio.core.generate.decoder import Decoder
from shiftstudio.core.model import estimate, gpt
from shiftstudio.core.model.gpt import GPT, activation_function, qk_norm, relu_squared, softcap

VOCAB = 50  # padded to 64 inside the model
NEW_KEYS = ("qk_norm", "zero_init_proj", "logit_softcap")


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest on one thread (conftest restores the count)."""
    torch.set_num_threads(1)


def tiny(**overrides) -> ModelConfig:
    return ModelConfig(**{"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 16, "dropout": 0.0, **overrides})


def batch(B: int = 4, T: int = 16, K: int = 1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    stream = torch.randint(0, VOCAB, (B, T + K), generator=gen)
    return stream[:, :T], torch.stack([stream[:, k : k + T] for k in range(1, K + 1)], dim=1)


def built(config: ModelConfig, seed: int = 0) -> tuple[GPT, torch.Tensor]:
    """A model from ``seed`` and the next numbers of the random stream after its initialisation."""
    torch.manual_seed(seed)
    model = GPT(config, VOCAB)
    return model, torch.rand(4)


# -- off: today's model, exactly ---------------------------------------------------------------------------------


def test_the_options_are_off_by_default_and_a_config_without_them_reads_as_off() -> None:
    defaults = ModelConfig()
    assert (defaults.qk_norm, defaults.zero_init_proj, defaults.logit_softcap, defaults.activation) == (False, False, 0.0, "gelu")
    old = RunConfig().to_dict()  # run.json of a run recorded before the options existed
    for key in NEW_KEYS:
        del old["model"][key]
    assert RunConfig.from_stored(old).model == ModelConfig()
    assert RunConfig.from_dict(old).model == ModelConfig()


@pytest.mark.parametrize("overrides", [
    {},
    {"pos": "rope", "norm": "rmsnorm", "bias": True, "shift": 3, "head_kind": "block"},
    {"tie_weights": False, "shift": 2, "activation": "gelu_tanh"},
])
def test_options_off_build_the_same_model_from_the_same_seed(overrides: dict) -> None:
    """Written out or left out, the options off give the same weights, consume the same random numbers and
    compute the same loss and gradients; and the state dict has nothing new."""
    legacy = {k: v for k, v in dataclasses.asdict(tiny(**overrides)).items() if k not in NEW_KEYS}
    a, after_a = built(ModelConfig(**legacy))
    b, after_b = built(tiny(**overrides, qk_norm=False, zero_init_proj=False, logit_softcap=0.0))
    assert torch.equal(after_a, after_b)
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not any("qk_gain" in k for k in sa)
    assert a.num_params() == estimate.count_params(a.config, VOCAB)
    x, y = batch(K=a.config.shift)
    out_a, out_b = a(x, y, return_logits=True), b(x, y, return_logits=True)
    assert torch.equal(out_a.logits, out_b.logits) and torch.equal(out_a.loss, out_b.loss)
    assert out_a.logits.dtype == torch.float32
    out_a.loss.backward()
    out_b.loss.backward()
    assert all(torch.equal(p.grad, q.grad) for p, q in zip(a.parameters(), b.parameters()))


# -- zero_init_proj ----------------------------------------------------------------------------------------------


def test_zero_init_proj_zeroes_every_blocks_output_projections_and_nothing_else() -> None:
    config = tiny(shift=3, head_kind="block", bias=True)
    plain, after_plain = built(config)
    zeroed, after_zeroed = built(tiny(shift=3, head_kind="block", bias=True, zero_init_proj=True))
    assert torch.equal(after_plain, after_zeroed)  # drawn, then zeroed: the random stream is the same
    projections = [n for n in zeroed.state_dict() if n.endswith("c_proj.weight")]
    assert len(projections) == 2 * (2 + 2)  # attention and MLP of 2 blocks and of 2 block heads
    for name, value in zeroed.state_dict().items():
        if name in projections:
            assert not value.any(), name
            assert plain.state_dict()[name].std() > 0
        else:
            assert torch.equal(value, plain.state_dict()[name]), name  # every other weight as without the option
    x, _ = batch()
    with torch.no_grad():  # each block starts as the identity: the logits are those of the embeddings alone
        h = zeroed.wte(x) + zeroed.wpe(torch.arange(16))
        torch.testing.assert_close(zeroed(x).logits[:, 0], zeroed._logits(zeroed.ln_f(h)))


def test_a_zero_initialised_model_trains() -> None:
    torch.manual_seed(0)
    model = GPT(tiny(zero_init_proj=True), VOCAB)
    x, y = batch(B=8)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = model(x, y).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5, losses
    for block in model.blocks:  # the projections left zero, and the layers behind them learn too
        assert block.attn.c_proj.weight.any() and block.mlp.c_proj.weight.any()
        assert block.attn.c_attn.weight.grad.any() and block.mlp.c_fc.weight.grad.any()


# -- logit_softcap -----------------------------------------------------------------------------------------------


def big_weights(model: GPT) -> GPT:
    """Logits far beyond a small cap: the unembedding scaled up."""
    with torch.no_grad():
        model.wte.weight.mul_(200.0)
    return model.eval()


def test_softcap_is_cap_tanh_of_logits_over_cap() -> None:
    x = torch.linspace(-100, 100, 201)
    torch.testing.assert_close(softcap(x, 10.0), 10.0 * torch.tanh(x / 10.0))
    assert softcap(x.bfloat16(), 10.0).dtype == torch.float32  # capped in float32


@pytest.mark.parametrize("shift", [1, 3])
def test_the_soft_cap_bounds_every_heads_logits_everywhere(shift: int) -> None:
    cap = 3.0
    capped, _ = built(tiny(shift=shift, logit_softcap=cap))
    capped = big_weights(capped)
    free = GPT(tiny(shift=shift), VOCAB).eval()
    free.load_state_dict(capped.state_dict())
    x, y = batch(K=shift)
    with torch.no_grad():
        raw = free(x).logits
        assert raw.abs().max() > 10 * cap  # the cap really bites
        logits = capped(x).logits  # (B, K, T, V): every head
        assert logits.abs().max() <= cap
        torch.testing.assert_close(logits, cap * torch.tanh(raw / cap))
        # the loss is the cross-entropy of the capped logits
        out = capped(x, y)
        ce = torch.stack([F.cross_entropy(logits[:, k].reshape(-1, VOCAB), y[:, k].reshape(-1)) for k in range(shift)])
        torch.testing.assert_close(out.head_losses, ce)
        # generation: the model's own KV path and the fast decoder
        own, _ = capped.next_token_logits(x)
        fast = Decoder(capped)(x[:1])
        assert own.abs().max() <= cap and fast.abs().max() <= cap
        torch.testing.assert_close(own, logits[:, 0, -1])
        torch.testing.assert_close(fast, logits[:1, 0, -1])


def test_the_per_head_loss_is_capped_too(monkeypatch) -> None:
    """Big batches take the loss one head at a time (under checkpointing): same capped loss and gradients."""
    model, _ = built(tiny(shift=3, logit_softcap=2.0))
    model = big_weights(model).train()
    x, y = batch(K=3)
    whole = model(x, y)
    whole.loss.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    monkeypatch.setattr(gpt, "PER_HEAD_LOSS_BYTES", 0)
    assert model._big_logits(x.shape)
    per_head = model(x, y)
    per_head.loss.backward()
    torch.testing.assert_close(per_head.head_losses, whole.head_losses)
    for p, g in zip(model.parameters(), grads):
        torch.testing.assert_close(p.grad, g)


# -- qk_norm -----------------------------------------------------------------------------------------------------


def test_qk_norm_gives_unit_rms_and_applies_the_gains() -> None:
    qk = torch.randn(2, 5, 2, 3, 8) * 7  # (B, T, 2, nh, hs)
    ones = torch.ones(2, 1, 8)
    out = qk_norm(qk, ones, 1e-5)
    torch.testing.assert_close(out.pow(2).mean(-1).sqrt(), torch.ones(2, 5, 2, 3), rtol=0, atol=1e-5)
    gain = torch.rand(2, 1, 8)
    torch.testing.assert_close(qk_norm(qk, gain, 1e-5), out * gain)
    assert qk_norm(qk.bfloat16(), gain, 1e-5).dtype == torch.bfloat16  # v is not normalised: q, k keep its dtype


@pytest.mark.parametrize("pos", ["learned", "rope"])
def test_attention_sees_unit_rms_queries_and_keys(pos: str, monkeypatch) -> None:
    model, _ = built(tiny(pos=pos, qk_norm=True, norm_eps=1e-8))  # (at 1e-5, eps shows at 1e-3: q and k start small)
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    sdpa = F.scaled_dot_product_attention

    def spy(q, k, v, **kw):
        seen.append((q, k))
        return sdpa(q, k, v, **kw)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    x, _ = batch()
    with torch.no_grad():
        model(x)
    assert len(seen) == 2  # one per block
    for q, k in seen:  # gains start at 1; rotary positions turn vectors without changing their length
        for t in (q, k):
            torch.testing.assert_close(t.pow(2).mean(-1).sqrt(), torch.ones(t.shape[:-1]), rtol=0, atol=1e-4)


def test_qk_norm_changes_the_output_and_adds_one_gain_vector_per_block() -> None:
    normed, _ = built(tiny(qk_norm=True, shift=2, head_kind="block"))
    plain = GPT(tiny(shift=2, head_kind="block"), VOCAB)
    gains = {k for k in normed.state_dict() if k.endswith("qk_gain")}
    assert gains == {"blocks.0.attn.qk_gain", "blocks.1.attn.qk_gain", "shift_heads.0.attn.qk_gain"}
    assert all(normed.state_dict()[k].shape == (2 * 16,) and normed.state_dict()[k].dim() == 1 for k in gains)  # no decay
    plain.load_state_dict({k: v for k, v in normed.state_dict().items() if k not in gains})
    x, _ = batch()
    with torch.no_grad():
        assert not torch.allclose(normed(x).logits, plain(x).logits, atol=1e-3)
    assert normed.num_params() == estimate.count_params(normed.config, VOCAB) == plain.num_params() + 3 * 32
    assert estimate.shift_head_params(normed.config, "block") == estimate.shift_head_params(plain.config, "block") + 32


def test_the_gains_learn() -> None:
    model, _ = built(tiny(qk_norm=True, pos="rope"))
    x, y = batch()
    model(x, y).loss.backward()
    assert all(b.attn.qk_gain.grad.abs().sum() > 0 for b in model.blocks)


# -- relu2 -------------------------------------------------------------------------------------------------------


def test_relu2_is_relu_squared() -> None:
    x = torch.linspace(-3, 3, 61)
    assert activation_function("relu2") is relu_squared
    torch.testing.assert_close(relu_squared(x), F.relu(x) ** 2, rtol=0, atol=0)
    model, _ = built(tiny(activation="relu2"))
    mlp = model.blocks[0].mlp
    h = torch.randn(3, 32)
    with torch.no_grad():
        torch.testing.assert_close(mlp(h), mlp.c_proj(F.relu(mlp.c_fc(h)) ** 2))
    with pytest.raises(ValueError, match="unknown activation"):
        activation_function("swish")


# -- settings ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("key", "value", "message"), [
    ("logit_softcap", -1, "logit_softcap must be between 0 and 1000, got -1"),
    ("logit_softcap", 5000, "logit_softcap must be between 0 and 1000, got 5000"),
    ("logit_softcap", 0.5, "logit_softcap must be 0 (off) or between 1 and 1000, got 0.5"),
    ("logit_softcap", "high", "logit_softcap must be a number, got 'high'"),
    ("logit_softcap", "nan", "logit_softcap must be a finite number, got nan"),
    ("activation", "swish", "activation must be one of gelu, gelu_tanh, relu2, got 'swish'"),
    ("qk_norm", "maybe", "qk_norm must be true or false, got 'maybe'"),
    ("zero_init_proj", 2, "zero_init_proj must be true or false, got 2"),
])
def test_bad_values_are_one_line_errors(key: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        RunConfig().updated({key: value})
    assert str(caught.value) == message and "\n" not in str(caught.value)


def test_good_values_round_trip_through_toml_and_json(tmp_path: Path) -> None:
    config = RunConfig().updated({"qk_norm": "yes", "zero_init_proj": "on", "logit_softcap": "30", "activation": "relu2"})
    assert (config.model.qk_norm, config.model.zero_init_proj, config.model.logit_softcap, config.model.activation) == (
        True, True, 30.0, "relu2")
    for name in ("run.toml", "run.json"):
        config.save(tmp_path / name)
        assert RunConfig.load(tmp_path / name) == config
    assert RunConfig().updated({"logit_softcap": 1}).model.logit_softcap == 1.0  # the smallest cap


def test_a_source_decides_the_options_that_change_the_model() -> None:
    """Fine-tuning keeps the source's qk_norm, activation and soft cap (its weights and logits depend on them);
    zero_init_proj only initialises, and a source's weights are loaded."""
    from shiftstudio.core.model.hf import ARCHITECTURE_KEYS

    assert {"qk_norm", "activation", "logit_softcap"} <= set(ARCHITECTURE_KEYS)
    assert "zero_init_proj" not in ARCHITECTURE_KEYS


def test_a_relu2_run_gets_a_default_name() -> None:
    from shiftstudio.core.runs.folder import run_name_tags

    assert "relu2" in run_name_tags(RunConfig().updated({"activation": "relu2"}))


# -- a whole run -------------------------------------------------------------------------------------------------


def test_a_run_with_every_option_trains_resumes_loads_and_generates(make_tiny_run) -> None:
    from shiftstudio.core.generate.filters import SamplingSettings
    from shiftstudio.core.generate.generation import Generation
    from shiftstudio.core.runs import origin
    from shiftstudio.core.runs.loading import load_model

    options = {"qk_norm": True, "activation": "relu2", "logit_softcap": 15.0, "zero_init_proj": True}
    run_dir = make_tiny_run("all-options", shift=2, pos="rope", **options)
    model, tokenizer, _ = load_model(run_dir)
    assert {k: getattr(model.config, k) for k in options} == options
    assert model.blocks[0].attn.qk_gain is not None
    x = torch.tensor([tokenizer.encode("ROMEO: what")])
    with torch.no_grad():
        assert model(x).logits.abs().max() < 15.0
    settings = SamplingSettings(max_new_tokens=12, temperature=0, stop_at_eot=False)
    plain = [t.id for t in Generation(model, tokenizer, "ROMEO:", settings, speculative=False)]
    spec = [t.id for t in Generation(model, tokenizer, "ROMEO:", settings, speculative=True)]
    assert len(plain) == 12 and spec == plain
    # fine-tuning from this run keeps what shapes its model
    source = origin.open_source(str(run_dir))
    assert {k: source.architecture[k] for k in ("qk_norm", "activation", "logit_softcap")} == {
        "qk_norm": True, "activation": "relu2", "logit_softcap": 15.0}
