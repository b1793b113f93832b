"""Heads 2..K: the three head kinds, their zero-start on import, drafting states, horizon loss weights, and the
one-head-at-a-time loss (same loss and gradients as the single cross-entropy over all heads)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from shiftstudio.config import HEAD_KIND_CHOICES, ModelConfig, RunConfig, TrainConfig
from shiftstudio.core.data.store import TokenStore
from shiftstudio.core.errors import ConfigError
from shiftstudio.core.model.estimate import (
    count_params, count_shift_head_params, shift_head_params, shift_head_params_by_kind,
)
from shiftstudio.core.model.gpt import GPT
from shiftstudio.core.model.hf import complete_state_dict
from shiftstudio.core.runs.folder import create_run
from shiftstudio.core.runs.loading import load_model
from shiftstudio.core.train.trainer import Trainer, loss_coefficients, shift_weights_at

VOCAB = 50
KINDS = list(HEAD_KIND_CHOICES)


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny(**overrides) -> ModelConfig:
    values = dict(n_layer=2, n_head=2, n_embd=32, block_size=16, dropout=0.0)
    values.update(overrides)
    return ModelConfig(**values)


def shifted_batch(B: int, T: int, K: int, seed: int = 0, vocab: int = VOCAB) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    stream = torch.randint(0, vocab, (B, T + K), generator=gen)
    return stream[:, :T], torch.stack([stream[:, k : k + T] for k in range(1, K + 1)], dim=1)


def text_batch(text: str, B: int, T: int, K: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Character ids of real text cut into B windows, with the K shifted targets."""
    chars = sorted(set(text))
    ids = torch.tensor([chars.index(c) for c in text[: B * (T + K) * 4]])
    starts = torch.arange(B) * (T + K) * 3
    windows = torch.stack([ids[s : s + T + K] for s in starts.tolist()])
    return windows[:, :T], torch.stack([windows[:, k : k + T] for k in range(1, K + 1)], dim=1), len(chars)


# -- head kinds ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_each_head_kind_learns(kind: str, shakespeare_text: str) -> None:
    x, y, vocab = text_batch(shakespeare_text, 4, 16, 3)
    torch.manual_seed(0)
    model = GPT(tiny(shift=3, head_kind=kind, pos="rope" if kind == "block" else "learned"), vocab)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = model(x, y).head_losses.detach()
    for _ in range(15):
        out = model(x, y)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    last = model(x, y).head_losses.detach()
    assert (last < first - 0.5).all(), (first, last)  # every head, not just head 1


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "overrides", [{}, {"bias": True}, {"norm": "rmsnorm"}, {"pos": "rope", "tie_weights": False, "bias": True}]
)
@pytest.mark.parametrize("shift", [1, 2, 4])
def test_count_params_mirrors_every_head_kind(kind: str, overrides: dict, shift: int) -> None:
    config = tiny(shift=shift, head_kind=kind, **overrides)
    with torch.device("meta"):
        model = GPT(config, 65)
    assert count_params(config, 65) == sum(p.numel() for p in model.parameters())
    assert count_params(config, 65, non_embedding=True) == model.num_params(non_embedding=True)
    heads = sum(p.numel() for p in model.shift_heads.parameters())
    assert count_shift_head_params(config) == heads == (shift - 1) * shift_head_params(config)
    assert shift_head_params_by_kind(config)[kind] == heads


def test_params_by_kind_for_the_model_pane() -> None:
    config = ModelConfig(n_layer=12, n_head=12, n_embd=768, block_size=1024, shift=4)
    by_kind = shift_head_params_by_kind(config)
    C = 768
    assert by_kind == {"residual": 3 * (C * C + C), "linear": 3 * C * C, "block": 3 * (12 * C * C + 2 * C)}  # no biases
    assert shift_head_params_by_kind(ModelConfig()) == {k: 0 for k in KINDS}


def test_residual_heads_keep_their_parameter_names(tiny_run: Path) -> None:
    """Checkpoints written before head kinds existed load unchanged: residual heads are named as they were."""
    for bias, expected in [
        (False, {"shift_heads.0.norm.weight", "shift_heads.0.proj.weight"}),
        (True, {"shift_heads.0.norm.weight", "shift_heads.0.norm.bias", "shift_heads.0.proj.weight", "shift_heads.0.proj.bias"}),
    ]:
        names = {n for n in GPT(tiny(shift=2, bias=bias), VOCAB).state_dict() if n.startswith("shift_heads.")}
        assert names == expected
    assert ModelConfig().head_kind == "residual"
    model, _, _ = load_model(tiny_run)  # an existing run (its config has no head_kind) still loads
    assert model.config.head_kind == "residual"


# -- import: new heads start as head 1 ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("overrides", [{}, {"bias": True, "pos": "rope", "norm": "rmsnorm"}])
def test_zero_start_on_import_makes_every_head_predict_head_1(kind: str, overrides: dict) -> None:
    torch.manual_seed(0)
    source = GPT(tiny(shift=1, **overrides), VOCAB)
    for p in source.parameters():  # no unit norm or zero bias may hide a mistake
        p.data.add_(0.05 * torch.randn_like(p))
    config = tiny(shift=3, head_kind=kind, **overrides)
    with torch.device("meta"):
        shell = GPT(config, VOCAB)
    model = GPT(config, VOCAB)
    model.load_state_dict(complete_state_dict(shell, source.state_dict()))
    x, y = shifted_batch(2, 16, 3)
    logits = model(x).logits  # (B, K, T, V)
    assert torch.equal(logits[:, 0], source(x).logits[:, 0])  # head 1 is the source's
    for k in (1, 2):
        assert torch.equal(logits[:, k], logits[:, 0]), kind
    # and the new heads can learn: every head parameter gets a gradient within two steps
    optimizer = torch.optim.SGD(model.shift_heads.parameters(), lr=0.1)
    for _ in range(2):
        optimizer.zero_grad()
        model(x, y).loss.backward()
        optimizer.step()
    for name, p in model.shift_heads.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    # the same numbers on every import
    again = complete_state_dict(shell, source.state_dict())
    assert all(torch.equal(again[n], t) for n, t in complete_state_dict(shell, source.state_dict()).items())


@pytest.mark.parametrize("source_kind,kind", [("residual", "linear"), ("linear", "block"), ("block", "residual")])
def test_heads_of_another_kind_in_the_source_start_fresh(source_kind: str, kind: str) -> None:
    torch.manual_seed(0)
    source = GPT(tiny(shift=3, head_kind=source_kind), VOCAB)
    config = tiny(shift=3, head_kind=kind)
    with torch.device("meta"):
        shell = GPT(config, VOCAB)
    model = GPT(config, VOCAB)
    model.load_state_dict(complete_state_dict(shell, source.state_dict()))
    logits = model(shifted_batch(2, 16, 3)[0]).logits
    assert torch.equal(logits[:, 2], logits[:, 0])
    # the same kind keeps the source's heads
    same = GPT(tiny(shift=3, head_kind=source_kind), VOCAB)
    with torch.device("meta"):
        shell = GPT(same.config, VOCAB)
    same.load_state_dict(complete_state_dict(shell, source.state_dict()))
    assert all(torch.equal(a, b) for a, b in zip(same.state_dict().values(), source.state_dict().values()))


# -- drafting ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_draft_states_are_what_training_computes_at_the_last_position(kind: str) -> None:
    torch.manual_seed(0)
    model = GPT(tiny(shift=3, head_kind=kind, pos="rope"), VOCAB).eval()
    x, _ = shifted_batch(2, 12, 3)
    with torch.no_grad():
        h, _ = model.trunk(x)
        full = model.head_states(h)  # (B, K, T, C)
        draft = model.draft_states(h)  # (B, K, C)
        assert draft.shape == (2, 3, 32)
        torch.testing.assert_close(draft, full[:, :, -1], rtol=0, atol=1e-6)
        torch.testing.assert_close(model.draft_states(h, 2), full[:, :2, -1], rtol=0, atol=1e-6)
        assert torch.equal(model.draft_states(h, last_only=False), full)
        logits = F.linear(draft, model.unembedding)[..., : model.vocab_size]
        torch.testing.assert_close(logits, model(x).logits[:, :, -1], rtol=1e-5, atol=1e-5)
        last_only = model.head_states(h[:, -1:])[:, :, 0]  # the last position alone
        if kind == "block":  # a block head then attends to itself only: not what it computes in context
            assert not torch.allclose(last_only[:, 1:], full[:, 1:, -1], atol=1e-4)
        else:
            torch.testing.assert_close(last_only, full[:, :, -1], rtol=0, atol=1e-6)


# -- the loss, one head at a time ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("tie", [True, False])
def test_per_head_loss_path_gives_the_reference_loss_and_gradients(kind: str, masked: bool, tie: bool, monkeypatch) -> None:
    """The memory path (one head's logits at a time, checkpointed; taken when all heads' logits would be big,
    here forced) against the single cross-entropy over all heads (taken when the logits are asked for)."""
    import shiftstudio.core.model.gpt as gpt

    monkeypatch.setattr(gpt, "PER_HEAD_LOSS_BYTES", 0)
    torch.manual_seed(0)
    model = GPT(tiny(shift=3, head_kind=kind, tie_weights=tie), VOCAB)
    assert model._big_logits((3, 16))
    x, y = shifted_batch(3, 16, 3)
    mask = (torch.rand(3, 3, 16, generator=torch.Generator().manual_seed(1)) > 0.3).float() if masked else None

    def run(return_logits: bool):
        model.zero_grad(set_to_none=True)
        out = model(x, y, mask, return_logits=return_logits)
        out.loss.backward()
        return out, {n: p.grad.clone() for n, p in model.named_parameters()}

    new, new_grads = run(False)
    ref, ref_grads = run(True)
    assert new.logits is None and ref.logits is not None
    torch.testing.assert_close(new.head_losses, ref.head_losses, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(new.loss, ref.loss, rtol=1e-6, atol=1e-6)
    for name, grad in ref_grads.items():
        torch.testing.assert_close(new_grads[name], grad, rtol=1e-5, atol=1e-7, msg=name)
    with torch.no_grad():  # evaluation takes the same path, without checkpointing
        torch.testing.assert_close(model(x, y, mask).head_losses, ref.head_losses, rtol=1e-6, atol=1e-6)


def test_the_loss_goes_one_head_at_a_time_only_when_all_heads_logits_are_big() -> None:
    from shiftstudio.config import ModelConfig

    with torch.device("meta"):
        gpt2_k4 = GPT(ModelConfig(n_layer=1, n_head=12, n_embd=768, block_size=1024, shift=4), 50257)
        small_k4 = GPT(ModelConfig(n_layer=1, n_head=4, n_embd=128, block_size=64, shift=4), 65)
    assert gpt2_k4._big_logits((4, 256))  # 4 heads × 4 × 256 × 50,304 float32 = 824 MB
    assert not small_k4._big_logits((12, 64))  # the cpu-tiny run: 0.8 MB, the faster single cross-entropy


# -- horizon loss weights --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"shift": 3, "shift_weights": "1,0.5"}, "shift_weights must have one weight per head (shift = 3), got 2 in '1,0.5'"),
        ({"shift": 2, "shift_weights": "1,x"}, "shift_weights must be numbers of at least 0 separated by commas, got 'x' in '1,x'"),
        ({"shift": 2, "shift_weights": "1,-0.5"}, "shift_weights must be numbers of at least 0 separated by commas, got '-0.5'"),
        ({"shift": 2, "shift_weights": "1,,1"}, "got '' in '1,,1'"),
        ({"shift": 2, "shift_weights": "1,inf"}, "got 'inf'"),
        ({"shift": 2, "shift_weights": "0,1"}, "shift_weights: head 1's weight (the first) must be above 0, got '0,1'"),
        ({"shift_weight_schedule": "cosine"}, "shift_weight_schedule must be one of constant, linear_to_zero, got 'cosine'"),
        ({"head_kind": "mlp"}, "head_kind must be one of residual, linear, block, got 'mlp'"),
    ],
)
def test_bad_weights_and_kinds_are_refused_in_one_line(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        RunConfig().updated(overrides)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_good_weights_are_accepted() -> None:
    config = RunConfig().updated({"shift": 3, "shift_weights": " 1, 0.5 ,0.25 ", "shift_weight_schedule": "linear_to_zero"})
    assert config.train.shift_weight_list(3) == [1.0, 0.5, 0.25]
    assert TrainConfig(shift_weights="").shift_weight_list(3) is None  # empty: all equal
    # the default: halving weights fading to next-token prediction
    assert TrainConfig().shift_weight_list(4) == [1.0, 0.5, 0.25, 0.125] and TrainConfig().shift_weight_list() is None
    assert TrainConfig(shift_weights=" Halving ").shift_weight_list(2) == [1.0, 0.5]
    assert TrainConfig().shift_weight_schedule == "linear_to_zero"


def test_a_run_recorded_before_the_weights_existed_keeps_equal_constant_weights(tiny_k2_run) -> None:
    """Old runs resume exactly as they were trained: their run.json has no shift_weights (all 1, constant)."""
    import json

    from shiftstudio.core.runs.folder import load_run_config

    record = json.loads((tiny_k2_run / "run.json").read_text())
    stored = record["config"]["train"]
    old = {**record["config"], "train": {k: v for k, v in stored.items() if not k.startswith("shift_weight")}}
    config = RunConfig.from_stored(old)
    assert config.train.shift_weights == "" and config.train.shift_weight_schedule == "constant"
    assert shift_weights_at(config.train, 2, 0) is None
    assert RunConfig.from_dict(old).train.shift_weights == "halving"  # a preset or a new config: the new default
    assert load_run_config(tiny_k2_run).train.shift_weights == stored["shift_weights"]  # recorded: kept as it was


def test_schedule_values_at_steps() -> None:
    constant = TrainConfig(shift_weights="1,0.5,0.25", shift_weight_schedule="constant", lr_decay_iters=10)
    assert shift_weights_at(constant, 3, 0) == shift_weights_at(constant, 3, 9) == [1.0, 0.5, 0.25]
    fading = TrainConfig(shift_weights="1,0.5,0.25", shift_weight_schedule="linear_to_zero", lr_decay_iters=10)
    assert shift_weights_at(fading, 3, 0) == [1.0, 0.5, 0.25]
    assert shift_weights_at(fading, 3, 5) == [1.0, 0.25, 0.125]
    assert shift_weights_at(fading, 3, 10) == shift_weights_at(fading, 3, 15) == [1.0, 0.0, 0.0]  # after: still 0
    assert shift_weights_at(TrainConfig(shift_weights="", shift_weight_schedule="linear_to_zero", lr_decay_iters=8), 2, 4) == [1.0, 0.5]
    # equal and constant: None, the model's own mean over heads; one head: never weighted
    assert shift_weights_at(TrainConfig(shift_weights="", shift_weight_schedule="constant"), 3, 0) is None
    assert shift_weights_at(TrainConfig(lr_decay_iters=10), 3, 5) == [1.0, 0.25, 0.125]  # the default: halving, fading
    assert shift_weights_at(TrainConfig(shift_weights="2,2,2", shift_weight_schedule="constant"), 3, 0) is None
    assert shift_weights_at(TrainConfig(shift_weights="1", shift_weight_schedule="linear_to_zero"), 1, 5) is None


def test_weighted_loss_is_the_hand_computed_weighted_mean() -> None:
    torch.manual_seed(0)
    model = GPT(tiny(shift=3), VOCAB)
    x, y = shifted_batch(2, 16, 3)
    L = model(x, y).head_losses
    coefficients = torch.tensor(loss_coefficients([1.0, 0.5, 0.25]))
    objective = (L * coefficients).sum()
    expected = (1.0 * L[0] + 0.5 * L[1] + 0.25 * L[2]) / 1.75
    torch.testing.assert_close(objective, expected)
    assert loss_coefficients([2.0, 2.0]) == (0.5, 0.5)  # equal weights: the plain mean


def test_trainer_weights_the_heads(store: TokenStore, tmp_path: Path) -> None:
    """Weight 0 on head 2 (and no weight decay): training leaves head 2 exactly as it started; with the fading
    schedule and block heads, a run completes, reports the plain mean and its checkpoint loads."""
    settings = {
        "n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 16, "batch_size": 2, "max_iters": 4,
        "eval_interval": 4, "eval_iters": 1, "log_interval": 2, "warmup_iters": 0, "lr_decay_iters": 4,
        "device": "cpu", "num_threads": 1, "weight_decay": 0.0, "shift": 2,
    }
    corpus = [str(store.meta["sources"][0])]
    run_dir = create_run(RunConfig().updated({"corpus": corpus, **settings, "shift_weights": "1,0"}), store, tmp_path / "a")
    reports = list(Trainer(run_dir, store).run())
    assert reports[-1].kind == "finished", reports[-1]
    trained, _, _ = load_model(run_dir)
    torch.manual_seed(RunConfig().train.seed)  # the run's initial weights: same seed, same init (setup.build)
    start = GPT(trained.config, trained.vocab_size)
    for name, p in trained.shift_heads.named_parameters():
        assert torch.equal(p, dict(start.shift_heads.named_parameters())[name]), name
    assert not torch.equal(trained.blocks[0].attn.c_attn.weight, start.blocks[0].attn.c_attn.weight)

    faded = create_run(RunConfig().updated({
        "corpus": corpus, **settings, "head_kind": "block", "shift_weights": "1,0.5", "shift_weight_schedule": "linear_to_zero",
    }), store, tmp_path / "b")
    reports = list(Trainer(faded, store).run())
    assert reports[-1].kind == "finished", reports[-1]
    step = [r for r in reports if r.kind == "train"][-1]
    ev = [r for r in reports if r.kind == "eval"][-1]
    assert len(ev.val_loss_per_horizon) == 2 and step.loss > 0
    model, _, _ = load_model(faded)
    assert model.config.head_kind == "block" and "shift_heads.0.attn.c_attn.weight" in model.state_dict()
