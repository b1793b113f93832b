"""float16 training through the trainer's real gradient scaler, on the CPU.

``dtype = float16`` is accepted on the CPU: the trainer then runs the forward pass under CPU float16 autocast
and builds ``torch.amp.GradScaler("cpu", enabled=True)``, so the whole fp16 path of ``Trainer._train_step``
(scale, unscale, clip, a step skipped on overflow, update) and the scaler's trip through ``state.json`` run
here exactly as they would on an older CUDA GPU.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from shiftstudio.config import RunConfig
from shiftstudio.core.data.store import TokenStore
from shiftstudio.core.runs.checkpoint import list_checkpoints
from shiftstudio.core.runs.folder import create_run
from shiftstudio.core.train.trainer import Trainer

FP16 = {
    "n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 16, "batch_size": 2, "max_iters": 4,
    "warmup_iters": 0, "lr_decay_iters": 100, "learning_rate": 1e-3, "eval_interval": 2, "eval_iters": 1,
    "log_interval": 1, "device": "cpu", "dtype": "float16", "num_threads": 1,
}
INITIAL_SCALE = 2.0**16  # GradScaler's documented starting scale; it grows only after 2000 good steps in a row


def make_run(store: TokenStore, folder: Path, **overrides) -> Path:
    config = RunConfig().updated({"corpus": [str(store.meta["sources"][0])], **FP16, **overrides})
    return create_run(config, store, folder)


def state_of(run_dir: Path, step: int) -> dict:
    return json.loads((run_dir / "checkpoints" / f"step-{step}" / "state.json").read_text())


def tensors_of(run_dir: Path, step: int, name: str) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "checkpoints" / f"step-{step}" / name)


def same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_float16_trains_through_the_scaler_and_its_state_resumes_from_json(store: TokenStore, tmp_path: Path) -> None:
    run_dir = make_run(store, tmp_path / "run")
    reports = list(Trainer(run_dir, store).run())
    assert reports[0].kind == "started" and reports[0].dtype == "float16"
    assert reports[0].device == "CPU (1 thread, float16)"
    assert reports[-1].kind == "finished" and reports[-1].reason == "completed", reports[-1]
    steps = [r for r in reports if r.kind == "train"]
    assert [r.step for r in steps] == [1, 2, 3, 4]
    assert all(math.isfinite(r.loss) and math.isfinite(r.grad_norm) for r in steps)  # unscaled before clipping
    assert [c.step for c in list_checkpoints(run_dir)] == [2, 4]
    # the reported norm is of the unscaled gradients (unscale_ before clipping): the float32 twin's first step,
    # same weights and batch, agrees within 1 % (float16 activations carry ~3 significant digits; the two
    # agree to ~1e-4 here), where a norm of the scaled gradients would be 65536 times larger
    twin = make_run(store, tmp_path / "twin", dtype="float32", max_iters=1)
    first32 = [r for r in Trainer(twin, store).run() if r.kind == "train"][0]
    assert first32.step == 1 and steps[0].grad_norm == pytest.approx(first32.grad_norm, rel=0.01), (steps[0].grad_norm, first32.grad_norm)
    assert steps[0].loss == pytest.approx(first32.loss, rel=0.01)

    # the scaler is on (a float32 run saves None here) and every step was applied: none skipped, scale unchanged
    for step in (2, 4):
        scaler = state_of(run_dir, step)["scaler"]
        assert isinstance(scaler, dict), scaler
        assert scaler["scale"] == INITIAL_SCALE and scaler["_growth_tracker"] == step
    assert not same_tensors(tensors_of(run_dir, 2, "model.safetensors"), tensors_of(run_dir, 4, "model.safetensors"))

    # resumed, the scaler goes on from the checkpoint's JSON: six good steps in a row, not two
    resumed = list(Trainer(run_dir, store, max_iters=6).run())
    assert resumed[0].resumed and resumed[-1].kind == "finished" and resumed[-1].step == 6
    assert state_of(run_dir, 6)["scaler"]["_growth_tracker"] == 6


def test_an_overflowing_float16_step_is_skipped_and_the_scale_backs_off(store: TokenStore, tmp_path: Path) -> None:
    """A loss scale far too large for float16: every scaled gradient overflows to inf. The scaler must skip
    those steps (weights and optimizer state untouched, no NaN written anywhere) and halve its scale each time;
    the run goes on."""
    run_dir = make_run(store, tmp_path / "run", max_iters=2)
    assert list(Trainer(run_dir, store).run())[-1].kind == "finished"
    path = run_dir / "checkpoints" / "step-2" / "state.json"
    state = json.loads(path.read_text())
    assert state["scaler"]["scale"] == INITIAL_SCALE
    huge = 2.0**40  # float16's largest value is 65504: any gradient times this overflows
    state["scaler"]["scale"] = huge
    path.write_text(json.dumps(state))  # (state.json records the tensor files' sizes, not its own)

    reports = list(Trainer(run_dir, store, max_iters=4).run())
    assert reports[0].resumed and reports[-1].kind == "finished" and reports[-1].reason == "completed", reports[-1]
    steps = [r for r in reports if r.kind == "train"]
    assert [r.step for r in steps] == [3, 4]
    assert all(math.isfinite(r.loss) for r in steps)  # the loss itself is fine ...
    assert not any(math.isfinite(r.grad_norm) for r in steps)  # ... its scaled gradients are not (inf or NaN)
    assert same_tensors(tensors_of(run_dir, 2, "model.safetensors"), tensors_of(run_dir, 4, "model.safetensors"))
    assert same_tensors(tensors_of(run_dir, 2, "optimizer.safetensors"), tensors_of(run_dir, 4, "optimizer.safetensors"))
    scaler = state_of(run_dir, 4)["scaler"]
    assert scaler["scale"] == huge * scaler["backoff_factor"] ** 2 == 2.0**38  # halved once per skipped step
    assert scaler["_growth_tracker"] == 0
