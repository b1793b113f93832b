"""optimizer = muon: Muon on the hidden matrices, AdamW on the rest, behind one optimizer object.

Which weight goes where, that a muon run learns and resumes to the last bit, that the default (adamw) is the
very AdamW it always was, and that bad settings are one-line errors.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from shiftstudio.config import ModelConfig, RunConfig, TrainConfig
from shiftstudio.core.data.store import TokenStore, prepare
from shiftstudio.core.errors import ConfigError
from shiftstudio.core.model.gpt import GPT
from shiftstudio.core.model.lora import apply_lora_settings
from shiftstudio.core.runs import checkpoint as ckpt
from shiftstudio.core.runs.folder import create_run, load_run_config
from shiftstudio.core.runs.layout import RUN_FILE
from shiftstudio.core.runs.metrics import read_metrics
from shiftstudio.core.runs.origin import apply_source
from shiftstudio.core.train.optim import (
    NS_COEFFICIENTS, Muon, MuonAdamW, build_optimizer, lr_at, ns_dtype, orthogonalize, param_groups,
)
from shiftstudio.core.train.trainer import Trainer
from tests.core.test_trainer import losses_by_step, make_run, run_all

CPU = torch.device("cpu")
MUON = TrainConfig(optimizer="muon", muon_lr=0.02, weight_decay=0.1)


def tiny_model(**model) -> GPT:
    torch.manual_seed(0)
    return GPT(ModelConfig(**{"n_layer": 2, "n_head": 2, "n_embd": 16, "block_size": 8, **model}), 30)


def owners(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, tuple[str, float, float]]:
    """Each trained parameter's (optimizer class, weight decay, lr scale), by name; every one exactly once."""
    by_id = {id(p): n for n, p in model.named_parameters()}
    out: dict[str, tuple[str, float, float]] = {}
    for part in getattr(optimizer, "parts", (optimizer,)):
        for group in part.param_groups:
            for p in group["params"]:
                name = by_id[id(p)]
                assert name not in out, f"{name} is in two groups"
                out[name] = (type(part).__name__, group["weight_decay"], group.get("lr_scale", 1.0))
    assert set(out) == {n for n, p in model.named_parameters() if p.requires_grad}
    return out


def muon_names(table: dict[str, tuple[str, float, float]]) -> set[str]:
    return {n for n, (kind, _, _) in table.items() if kind == "Muon"}


def step_once(model: GPT, optimizer: torch.optim.Optimizer) -> None:
    x = torch.randint(0, 30, (2, 8))
    model(x, torch.randint(0, 30, (2, model.config.shift, 8))).loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


# -- which weight goes where ------------------------------------------------------------------------------------


def test_hidden_matrices_go_to_muon_the_rest_to_adamw_tied() -> None:
    model = tiny_model(bias=True, pos="learned")
    table = owners(model, build_optimizer(model, MUON, CPU))
    block_matrices = {f"blocks.{i}.{m}.weight" for i in range(2) for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")}
    assert muon_names(table) == block_matrices
    assert all(table[n] == ("Muon", 0.1, pytest.approx(0.02 / MUON.learning_rate)) for n in block_matrices)
    # embeddings (the tied unembedding too), norms and biases: AdamW, undecayed, at learning_rate
    for name in ("wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias", "blocks.0.ln_1.weight", "blocks.1.attn.c_attn.bias",
                 "blocks.0.mlp.c_proj.bias"):
        assert table[name] == ("AdamW", 0.0, 1.0), name


def test_untied_output_head_and_shift_heads() -> None:
    model = tiny_model(tie_weights=False, shift=3)  # residual heads 2..3: a norm and a projection each
    table = owners(model, build_optimizer(model, MUON, CPU))
    assert table["lm_head.weight"] == ("AdamW", 0.1, 1.0)  # the output head stays on AdamW, decayed as before
    for k in (0, 1):
        assert table[f"shift_heads.{k}.proj.weight"][0] == "Muon"
        assert table[f"shift_heads.{k}.norm.weight"] == ("AdamW", 0.0, 1.0)
    assert len(muon_names(table)) == 2 * 4 + 2

    block_heads = tiny_model(shift=2, head_kind="block")  # a whole block per head: its four matrices
    names = muon_names(owners(block_heads, build_optimizer(block_heads, MUON, CPU)))
    assert {n for n in names if n.startswith("shift_heads.")} == {
        f"shift_heads.0.{m}.weight" for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")}


def test_lora_adapters_stay_on_adamw_and_new_heads_get_muon() -> None:
    model = tiny_model(shift=2)
    apply_lora_settings(model, TrainConfig(lora_rank=2, lora_targets="attn_qkv,mlp_out"))
    table = owners(model, build_optimizer(model, MUON, CPU))  # (only what trains is grouped: the base is frozen)
    assert muon_names(table) == {"shift_heads.0.proj.weight"}
    adapters = {n for n in table if ".lora_" in n}
    assert len(adapters) == 2 * 2 * 2 and all(table[n] == ("AdamW", 0.1, 1.0) for n in adapters)

    alone = tiny_model(shift=1)  # adapters and nothing else train: AdamW alone, behind the same front
    apply_lora_settings(alone, TrainConfig(lora_rank=2))
    opt = build_optimizer(alone, MUON, CPU)
    assert isinstance(opt, MuonAdamW) and [type(p).__name__ for p in opt.parts] == ["AdamW"]
    step_once(alone, opt)


def test_one_optimizer_front_steps_both_and_round_trips_its_state() -> None:
    model = tiny_model(shift=2, tie_weights=False)
    opt = build_optimizer(model, MUON, CPU)
    assert isinstance(opt, torch.optim.Optimizer) and [type(p).__name__ for p in opt.parts] == ["AdamW", "Muon"]
    linked = [g for p in opt.parts for g in p.param_groups]
    assert len(linked) == len(opt.param_groups) and all(a is b for a, b in zip(linked, opt.param_groups))
    for group in opt.param_groups:  # what the trainer does each step: the parts see it
        group["lr"] = 0.5 * group.get("lr_scale", 1.0)
    assert opt.parts[1].param_groups[0]["lr"] == pytest.approx(0.5 * 0.02 / MUON.learning_rate)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    step_once(model, opt)
    assert all(not torch.equal(before[n], p) for n, p in model.named_parameters())  # every weight moved
    assert all(p.grad is None for p in model.parameters())
    tensors = {k: v.clone() for k, v in ckpt.optimizer_tensors(model, opt).items()}  # (as read from disk: no aliasing)
    assert {k.split("::")[1] for k in tensors if k.startswith("blocks.0.attn.c_attn.weight")} == {"momentum_buffer"}
    assert {k.split("::")[1] for k in tensors if k.startswith("wte.weight")} == {"exp_avg", "exp_avg_sq", "step"}
    assert len(opt.state) == len(list(model.parameters()))

    fresh = build_optimizer(model, MUON, CPU)
    ckpt.load_optimizer_tensors(model, fresh, tensors)
    again = ckpt.optimizer_tensors(model, fresh)
    assert again.keys() == tensors.keys() and all(torch.equal(again[k], tensors[k]) for k in tensors)
    linked = [g for p in fresh.parts for g in p.param_groups]  # the same dicts, still, after loading
    assert len(linked) == len(fresh.param_groups) and all(a is b for a, b in zip(linked, fresh.param_groups))
    assert fresh.param_groups[-1]["lr_scale"] == pytest.approx(0.02 / MUON.learning_rate)
    for group in fresh.param_groups:
        group["lr"] = 0.5 * group.get("lr_scale", 1.0)
    twin = {n: p.detach().clone() for n, p in model.named_parameters()}  # both step alike from the same state
    torch.manual_seed(5)
    step_once(model, opt)
    after_a = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.copy_(twin[n])
    torch.manual_seed(5)
    step_once(model, fresh)
    assert all(torch.equal(after_a[n], p) for n, p in model.named_parameters())


def test_optimizer_state_of_another_optimizer_is_refused() -> None:
    model = tiny_model()
    adamw = build_optimizer(model, TrainConfig(), CPU)
    muon = build_optimizer(model, MUON, CPU)
    step_once(model, adamw)
    step_once(model, muon)
    with pytest.raises(ckpt.IncompatibleCheckpoint, match=r"c_attn.weight::\w+ is AdamW's, but Muon trains .*fork it"):
        ckpt.load_optimizer_tensors(model, build_optimizer(model, MUON, CPU), ckpt.optimizer_tensors(model, adamw))
    with pytest.raises(ckpt.IncompatibleCheckpoint, match=r"momentum_buffer is Muon's, but AdamW trains"):
        ckpt.load_optimizer_tensors(model, build_optimizer(model, TrainConfig(), CPU), ckpt.optimizer_tensors(model, muon))


# -- our Muon step: float32 Newton–Schulz, one per shape ------------------------------------------------------


def newton_schulz_64(x: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """The reference: Keller Jordan's iteration, one matrix at a time, in float64, tall matrices transposed."""
    a, b, c = NS_COEFFICIENTS
    tall = x.shape[0] > x.shape[1]
    y = (x.T if tall else x).double()
    y = y / y.norm()
    for _ in range(steps):
        g = y @ y.T
        y = a * y + (b * g + c * g @ g) @ y
    return y.T if tall else y


def reference_muon_step(weights: list[torch.Tensor], grads: list[torch.Tensor], bufs: list[torch.Tensor], lr: float,
                        wd: float, mu: float) -> None:
    """torch.optim.Muon's arithmetic (adjust_lr_fn="original", Nesterov) in float64, in place."""
    for w, g, buf in zip(weights, grads, bufs):
        buf.lerp_(g, 1 - mu)
        update = newton_schulz_64(g.lerp(buf, mu))
        w.mul_(1 - lr * wd).add_(update, alpha=-lr * math.sqrt(max(1, w.shape[0] / w.shape[1])))


def spectrum_like_a_gradient(*shape: int) -> torch.Tensor:
    """Low rank plus noise: singular values spread over three decades, as a real gradient's are."""
    *batch, rows, cols = shape
    return torch.randn(*batch, rows, 4) @ torch.randn(*batch, 4, cols) + 0.02 * torch.randn(*shape)


@pytest.mark.parametrize(("shape", "steps"), [((3, 32, 128), 5), ((3, 32, 96), 5), ((2, 32, 32), 5), ((3, 32, 128), 3),
                                              ((1, 8, 8), 1)])
def test_orthogonalize_in_float32_matches_a_float64_reference(shape: tuple[int, ...], steps: int) -> None:
    torch.manual_seed(0)
    x = spectrum_like_a_gradient(*shape)
    ours = orthogonalize(x, steps)  # (wide stacks take the Gram-space route, square ones the direct one)
    assert ours.dtype == torch.float32 and ours.shape == x.shape
    for one, mine in zip(x, ours):
        expected = newton_schulz_64(one, steps)
        # float32 in Gram space squares the small singular values: ~4e-4 off at worst here (the direct route ~1e-5;
        # torch.optim.Muon's bfloat16 ~0.3 on such a spectrum), far inside NS's own spread of [0.7, 1.2] around 1
        assert (mine.double() - expected).norm() / expected.norm() < 1.5e-3
    if steps == 5 and shape[1] < shape[2]:  # what it is for: the singular values land near 1 (a wide random
        s = torch.linalg.svdvals(ours.double())  # matrix has none near 0 to start from; a square one may)
        assert s.min() > 0.3 and s.max() < 1.25


def test_one_stack_per_shape_is_the_same_as_one_matrix_at_a_time() -> None:
    torch.manual_seed(1)
    x = spectrum_like_a_gradient(4, 16, 64)
    stacked = orthogonalize(x)
    alone = torch.cat([orthogonalize(m[None]) for m in x])
    torch.testing.assert_close(stacked, alone, rtol=1e-5, atol=1e-6)


def test_newton_schulz_runs_in_float32_off_cuda_and_bfloat16_on_it() -> None:
    assert ns_dtype(CPU) == torch.float32 and ns_dtype(torch.device("cuda")) == torch.bfloat16
    x = spectrum_like_a_gradient(2, 8, 24)
    assert orthogonalize(x, dtype=torch.bfloat16).dtype == torch.bfloat16  # (the direct route, as on CUDA)
    low = orthogonalize(x, dtype=torch.bfloat16).float()
    assert torch.nn.functional.cosine_similarity(low.flatten(1), orthogonalize(x).flatten(1)).min() > 0.98


def muon_pair(shapes: list[tuple[int, int]], **settings) -> tuple[list[torch.nn.Parameter], list[torch.nn.Parameter]]:
    torch.manual_seed(2)
    ours = [torch.nn.Parameter(0.02 * torch.randn(*shape)) for shape in shapes]
    twins = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    return ours, twins


# the matrices of a block (qkv, projection, MLP in and out) and a shift head's: tall, square and wide, some sharing
# a stack (MLP in and out are one shape once the tall one is transposed)
BLOCK_SHAPES = [(96, 32), (32, 32), (128, 32), (32, 128), (96, 32), (32, 32)]


def test_our_step_is_torch_muons_arithmetic_with_a_float64_newton_schulz() -> None:
    """Momentum, Nesterov, decoupled decay, the per-matrix rate: three steps against the float64 reference."""
    lr, wd, mu = 0.05, 0.1, 0.9
    params, _ = muon_pair(BLOCK_SHAPES)
    start = [p.detach().double().clone() for p in params]
    weights = [w.clone() for w in start]
    bufs = [torch.zeros_like(w) for w in weights]
    opt = Muon(params, lr=lr, weight_decay=wd, momentum=mu)
    for _ in range(3):
        grads = [spectrum_like_a_gradient(*p.shape) for p in params]
        for p, g in zip(params, grads):
            p.grad = g.clone()
        opt.step()
        reference_muon_step(weights, [g.double() for g in grads], bufs, lr, wd, mu)
    for p, w, w0, buf in zip(params, weights, start, bufs):
        moved, expected = p.detach().double() - w0, w - w0
        assert (moved - expected).norm() / expected.norm() < 1.5e-3
        torch.testing.assert_close(opt.state[p]["momentum_buffer"].double(), buf, rtol=1e-5, atol=1e-7)


def test_our_step_moves_the_weights_as_torch_muon_does() -> None:
    """Against torch.optim.Muon itself (bfloat16 Newton–Schulz): the same update to bfloat16's precision."""
    lr, wd = 0.02, 0.1
    ours, theirs = muon_pair(BLOCK_SHAPES)
    mine = Muon(ours, lr=lr, weight_decay=wd)
    torchs = torch.optim.Muon(theirs, lr=lr, weight_decay=wd, momentum=0.95, nesterov=True, adjust_lr_fn="original")
    start = [p.detach().clone() for p in ours]
    for _ in range(2):
        for p, q in zip(ours, theirs):
            p.grad = torch.randn_like(p)  # full rank: bfloat16 rounds it the least
            q.grad = p.grad.clone()
        mine.step()
        torchs.step()
    for p, q, p0 in zip(ours, theirs, start):
        a, b = (p - p0).detach().flatten(), (q - p0).detach().flatten()
        assert torch.nn.functional.cosine_similarity(a, b, dim=0) > 0.99
        assert abs(a.norm() / b.norm() - 1) < 0.05
    for p, q in zip(ours, theirs):  # the momentum is the same arithmetic, to float32's last bits
        torch.testing.assert_close(mine.state[p]["momentum_buffer"], torchs.state[q]["momentum_buffer"])


def test_muon_skips_matrices_without_a_gradient_and_refuses_vectors() -> None:
    params, _ = muon_pair([(8, 24), (24, 8)])
    opt = Muon(params, lr=0.02)
    params[0].grad = torch.randn(8, 24)
    before = params[1].detach().clone()
    opt.step()
    assert torch.equal(params[1], before) and params[1] not in opt.state
    assert set(opt.state[params[0]]) == {"momentum_buffer"}
    with pytest.raises(ValueError, match="2-D matrices only"):
        Muon([torch.nn.Parameter(torch.zeros(4))], lr=0.02)


# -- the default is untouched -----------------------------------------------------------------------------------


def test_adamw_is_the_default_and_exactly_the_adamw_of_before() -> None:
    assert TrainConfig().optimizer == "adamw"
    model = tiny_model(shift=2, tie_weights=False)
    train = TrainConfig()
    opt = build_optimizer(model, train, CPU)
    assert type(opt) is torch.optim.AdamW
    before = torch.optim.AdamW(param_groups(model, train.weight_decay), lr=lr_at(0, train), betas=(train.beta1, train.beta2),
                               eps=1e-8, fused=True, foreach=None)  # what build_optimizer always built
    assert opt.state_dict() == before.state_dict() and opt.defaults == before.defaults
    assert all("lr_scale" not in g for g in opt.param_groups)


def test_a_run_recorded_before_the_setting_resumes_bit_identically(store: TokenStore, tmp_path: Path) -> None:
    """A run.json without optimizer/muon_* (written before they existed) resumes as AdamW, to the last bit."""
    settings = dict(max_iters=8, log_interval=1, eval_interval=4)
    straight = make_run(store, tmp_path / "straight", **settings)
    split = make_run(store, tmp_path / "split", **settings)
    run_all(Trainer(straight, store))
    run_all(Trainer(split, store, max_iters=4))
    record = json.loads((split / RUN_FILE).read_text())
    for key in ("optimizer", "muon_lr", "muon_momentum"):
        del record["config"]["train"][key]
    (split / RUN_FILE).write_text(json.dumps(record))
    second = run_all(Trainer(split, store, max_iters=8))
    assert second[0].resumed and second[-1].kind == "finished", second[-1]
    assert losses_by_step(straight) == losses_by_step(split)


# -- training ---------------------------------------------------------------------------------------------------


def test_a_muon_run_learns(store: TokenStore, tmp_path: Path) -> None:
    run_dir = make_run(store, tmp_path / "run", optimizer="muon", max_iters=40, eval_interval=10, lr_decay_iters=40)
    reports = run_all(Trainer(run_dir, store))
    assert reports[-1].kind == "finished", reports[-1]
    evals = [r.val_loss for r in reports if r.kind == "eval"]
    assert len(evals) == 4 and evals[-1] < evals[0] < math.log(store.vocab_size)
    saved = load_file(run_dir / "checkpoints" / "step-40" / "optimizer.safetensors")
    assert "blocks.1.mlp.c_fc.weight::momentum_buffer" in saved and "wte.weight::exp_avg" in saved
    lrs = {r["step"]: r["lr"] for r in read_metrics(run_dir, ("train",))}
    assert lrs[10] == lr_at(9, load_run_config(run_dir).train)  # the logged rate is AdamW's (the schedule's)


def test_muon_resume_is_exact(store: TokenStore, tmp_path: Path) -> None:
    """12 steps straight == 6, stop, resume, 6 more: bit-identical losses, weights and optimizer state."""
    settings = dict(optimizer="muon", max_iters=12, log_interval=1, eval_interval=4, dropout=0.1, shift=2,
                    tie_weights=False, ema_decay=0.9)
    straight = make_run(store, tmp_path / "straight", **settings)
    split = make_run(store, tmp_path / "split", **settings)
    run_all(Trainer(straight, store))
    first = run_all(Trainer(split, store, max_iters=6))
    assert first[-1].kind == "finished" and first[-1].step == 6
    second = run_all(Trainer(split, store, max_iters=12))
    assert second[0].resumed and second[0].step == 6 and second[-1].kind == "finished", second[-1]
    a, b = losses_by_step(straight), losses_by_step(split)
    assert sorted(a) == list(range(1, 13)) and a == b  # exact equality, not approx
    eval_a = {r["step"]: r["val_loss"] for r in read_metrics(straight, ("eval",))}
    eval_b = {r["step"]: r["val_loss"] for r in read_metrics(split, ("eval",))}
    assert eval_a[8] == eval_b[8] and eval_a[12] == eval_b[12]
    for name in ("model.safetensors", "ema.safetensors", "optimizer.safetensors"):
        wa = load_file(straight / "checkpoints" / "step-12" / name)
        wb = load_file(split / "checkpoints" / "step-12" / name)
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), name


def test_changing_the_optimizer_of_a_run_is_refused_on_resume(store: TokenStore, tmp_path: Path) -> None:
    run_dir = make_run(store, tmp_path / "run", max_iters=4, eval_interval=4)
    run_all(Trainer(run_dir, store))
    record = json.loads((run_dir / RUN_FILE).read_text())
    record["config"]["train"]["optimizer"] = "muon"
    (run_dir / RUN_FILE).write_text(json.dumps(record))
    reports = run_all(Trainer(run_dir, store, max_iters=8))
    assert reports[-1].kind == "failed" and "cannot change within a run" in reports[-1].message, reports[-1]


def test_float16_with_muon_trains_through_the_scaler_and_resumes(store: TokenStore, tmp_path: Path) -> None:
    run_dir = make_run(store, tmp_path / "run", optimizer="muon", dtype="float16", max_iters=4, eval_interval=2,
                       log_interval=1)
    reports = run_all(Trainer(run_dir, store))
    assert reports[0].dtype == "float16" and reports[-1].kind == "finished", reports[-1]
    steps = [r for r in reports if r.kind == "train"]
    assert len(steps) == 4 and all(math.isfinite(r.loss) and math.isfinite(r.grad_norm) for r in steps)
    state = json.loads((run_dir / "checkpoints" / "step-4" / "state.json").read_text())
    assert state["scaler"]["_growth_tracker"] == 4  # no step skipped
    resumed = run_all(Trainer(run_dir, store, max_iters=6))
    assert resumed[0].resumed and resumed[-1].kind == "finished" and resumed[-1].step == 6


def test_a_lora_run_with_muon_trains(tiny_run: Path, small_corpus: Path, tmp_path: Path) -> None:
    config = apply_source(RunConfig().updated({
        "corpus": [str(small_corpus)], "init_from": str(tiny_run), "shift": 2, "lora_rank": 4, "optimizer": "muon",
        "max_iters": 30, "eval_interval": 30, "eval_iters": 2, "log_interval": 1, "batch_size": 8, "warmup_iters": 0,
        "lr_decay_iters": 30, "learning_rate": 1e-2, "min_lr": 1e-3, "device": "cpu", "num_threads": 1,
    }))
    run_dir = create_run(config, prepare(config.data), tmp_path / "run")
    reports = run_all(Trainer(run_dir))
    assert reports[-1].kind == "finished", reports[-1]
    losses = [r.loss for r in reports if r.kind == "train"]
    assert sum(losses[-5:]) < sum(losses[:5])
    saved = load_file(run_dir / "checkpoints" / "step-30" / "optimizer.safetensors")
    assert "shift_heads.0.proj.weight::momentum_buffer" in saved
    assert "blocks.0.attn.c_attn.lora_b::exp_avg" in saved


# -- settings ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("key", "value", "message"), [
    ("optimizer", "sgd", "optimizer must be one of adamw, muon, got 'sgd'"),
    ("muon_lr", 0, "muon_lr must be above 0 and at most 1, got 0"),
    ("muon_lr", 5, "muon_lr must be above 0 and at most 1, got 5"),
    ("muon_momentum", 1.0, "muon_momentum must be between 0 and 0.999, got 1"),
    ("muon_momentum", -0.1, "muon_momentum must be between 0 and 0.999, got -0.1"),
    ("muon_lr", "fast", "muon_lr must be a number, got 'fast'"),
])
def test_bad_settings_are_one_line_errors(key: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        RunConfig().updated({key: value})
    assert str(caught.value) == message and "\n" not in str(caught.value)


def test_settings_round_trip() -> None:
    config = RunConfig().updated({"optimizer": "muon", "muon_lr": "0.05", "muon_momentum": 0.9})
    again = RunConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert (again.train.optimizer, again.train.muon_lr, again.train.muon_momentum) == ("muon", 0.05, 0.9)
