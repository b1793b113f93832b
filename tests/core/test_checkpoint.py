"""Checkpoints on disk: atomic writes, pruning, and clear errors for anything damaged — with nothing overwritten."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from shiftstudio.config import ModelConfig, RunConfig, TrainConfig
from shiftstudio.core.runs import checkpoint as ckpt
from shiftstudio.core.errors import RunError
from shiftstudio.core.runs.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from shiftstudio.core.model.gpt import GPT
from shiftstudio.core.train.optim import build_optimizer
from shiftstudio.core.runs.layout import RUN_FILE
from shiftstudio.core.runs.folder import create_run, load_run
from shiftstudio.core.data.store import TokenStore
from shiftstudio.core.train.trainer import Trainer

TINY = {
    "n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 16, "batch_size": 4, "max_iters": 6,
    "eval_interval": 3, "eval_iters": 2, "log_interval": 3, "device": "cpu", "num_threads": 1,
}




@pytest.fixture
def trained_run(store: TokenStore, tmp_path: Path) -> Path:
    """A run with checkpoints at steps 3 and 6."""
    config = RunConfig().updated({"corpus": [str(store.meta["sources"][0])], **TINY})
    run_dir = create_run(config, store, tmp_path / "run")
    reports = list(Trainer(run_dir, store).run())
    assert reports[-1].kind == "finished"
    return run_dir


def snapshot(run_dir: Path) -> dict[str, str]:
    """Hash of every file of the run except the append-only metrics log."""
    return {
        str(p.relative_to(run_dir)): hashlib.blake2b(p.read_bytes(), digest_size=16).hexdigest()
        for p in sorted(run_dir.rglob("*")) if p.is_file() and p.name != "metrics.jsonl"
    }


def resume_fails(run_dir: Path, store: TokenStore, *needles: str) -> str:
    before = snapshot(run_dir)
    metrics_before = (run_dir / "metrics.jsonl").read_text()
    reports = list(Trainer(run_dir, store, max_iters=12).run())
    assert [r.kind for r in reports] == ["failed"], reports
    message = reports[0].message
    assert reports[0].expected and "\n" not in message
    for needle in needles:
        assert needle in message, message
    assert snapshot(run_dir) == before  # nothing overwritten
    assert (run_dir / "metrics.jsonl").read_text().startswith(metrics_before)  # history kept
    return message


def test_saved_checkpoint_round_trips(trained_run: Path) -> None:
    found = list_checkpoints(trained_run)
    assert [c.step for c in found] == [3, 6]
    c = load_checkpoint(found[-1].path)
    assert c.step == 6 and c.state["tokens"] == 6 * 4 * 16
    assert set(c.state["files"]) == {"model.safetensors", "optimizer.safetensors"} and c.ema is None
    assert {"python", "numpy", "torch"} <= c.state["rng"].keys() and "bit_generator" in c.state["sampler"]
    assert c.state["scaler"] is None  # float32 on the CPU: no gradient scaler (float16's is in test_grad_scaler)
    assert "wte.weight" in c.model and any(k.endswith("::exp_avg_sq") for k in c.optimizer)
    names = {p.name for p in found[-1].path.iterdir()}
    assert names == {"model.safetensors", "optimizer.safetensors", "state.json"}  # no pickle anywhere


def test_a_crash_mid_save_leaves_the_previous_checkpoints_intact(trained_run: Path, monkeypatch) -> None:
    before = snapshot(trained_run)
    real_save = ckpt.save_file

    def dies_halfway(tensors, path, metadata=None):
        real_save(tensors, path, metadata=metadata)
        Path(path).write_bytes(Path(path).read_bytes()[:100])  # the disk filled up mid-write
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt, "save_file", dies_halfway)
    c = load_checkpoint(list_checkpoints(trained_run)[-1].path)
    with pytest.raises(OSError, match="No space"):
        save_checkpoint(trained_run, 9, c.state, c.model, c.optimizer)
    with pytest.raises(OSError):  # the same step again: the existing step-6 must survive the failed swap
        save_checkpoint(trained_run, 6, c.state, c.model, c.optimizer)
    assert sorted(p.name for p in (trained_run / "checkpoints").iterdir()) == ["step-3", "step-6"]  # no debris
    assert snapshot(trained_run) == before
    assert load_checkpoint(trained_run / "checkpoints" / "step-6").step == 6


def test_saving_a_step_again_replaces_it_whole(trained_run: Path) -> None:
    c = load_checkpoint(list_checkpoints(trained_run)[-1].path)
    state = {**c.state, "tokens": 12345}
    save_checkpoint(trained_run, 6, state, c.model, c.optimizer)
    assert load_checkpoint(trained_run / "checkpoints" / "step-6").state["tokens"] == 12345
    assert sorted(p.name for p in (trained_run / "checkpoints").iterdir()) == ["step-3", "step-6"]


def test_prune_keeps_the_newest_and_the_best_and_cleans_leftovers(trained_run: Path) -> None:
    c = load_checkpoint(list_checkpoints(trained_run)[-1].path)
    for step in (9, 12):
        save_checkpoint(trained_run, step, {**c.state, "best": False}, c.model, c.optimizer)
    ckpt.set_best(trained_run, 3)
    (trained_run / "checkpoints" / ".tmp-step-15-999").mkdir()  # a crash mid-save
    deleted = ckpt.prune_checkpoints(trained_run, keep=1)
    assert sorted(deleted) == [6, 9]
    found = list_checkpoints(trained_run)
    assert [(c.step, c.is_best) for c in found] == [(3, True), (12, False)]
    assert not list((trained_run / "checkpoints").glob(".*"))


def test_truncated_weights_are_a_clear_error(trained_run: Path, store: TokenStore) -> None:
    path = trained_run / "checkpoints" / "step-6" / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-1000])
    resume_fails(trained_run, store, "truncated", "step-6", "model.safetensors", "nothing was changed")


def test_corrupt_weights_are_a_clear_error(trained_run: Path, store: TokenStore) -> None:
    path = trained_run / "checkpoints" / "step-6" / "optimizer.safetensors"
    data = bytearray(path.read_bytes())
    data[:64] = b"\xff" * 64  # same size, garbage header
    path.write_bytes(bytes(data))
    resume_fails(trained_run, store, "corrupt", "optimizer.safetensors")


def test_corrupt_state_json_is_a_clear_error(trained_run: Path, store: TokenStore) -> None:
    (trained_run / "checkpoints" / "step-6" / "state.json").write_text('{"step": 6, "schema_')
    resume_fails(trained_run, store, "corrupt", "state.json")


def test_checkpoint_from_a_newer_schema_is_refused(trained_run: Path, store: TokenStore) -> None:
    path = trained_run / "checkpoints" / "step-6" / "state.json"
    state = json.loads(path.read_text())
    path.write_text(json.dumps({**state, "schema_version": 99}))
    resume_fails(trained_run, store, "schema version 99", "update ShiftStudio")


def test_run_folder_from_a_newer_schema_is_refused(trained_run: Path) -> None:
    record = json.loads((trained_run / RUN_FILE).read_text())
    (trained_run / RUN_FILE).write_text(json.dumps({**record, "schema_version": 7}))
    before = snapshot(trained_run)
    with pytest.raises(RunError, match="newer ShiftStudio"):
        Trainer(trained_run)
    with pytest.raises(RunError, match="newer"):
        load_run(trained_run)
    assert snapshot(trained_run) == before


def test_checkpoint_that_does_not_fit_the_config_is_refused(trained_run: Path, store: TokenStore) -> None:
    record = json.loads((trained_run / RUN_FILE).read_text())
    record["config"]["model"]["n_embd"] = 64  # the run.json was edited after training
    (trained_run / RUN_FILE).write_text(json.dumps(record))
    resume_fails(trained_run, store, "does not match", "shape")


def test_optimizer_state_round_trips_through_safetensors() -> None:
    torch.manual_seed(0)
    model = GPT(ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, shift=2), 30)
    opt = build_optimizer(model, TrainConfig(), torch.device("cpu"))
    model(torch.randint(0, 30, (2, 8)), torch.randint(0, 30, (2, 2, 8))).loss.backward()
    opt.step()
    tensors = ckpt.optimizer_tensors(model, opt)
    fresh = build_optimizer(model, TrainConfig(), torch.device("cpu"))
    ckpt.load_optimizer_tensors(model, fresh, tensors)
    a, b = opt.state_dict()["state"], fresh.state_dict()["state"]
    assert a.keys() == b.keys() and len(a) == len(list(model.parameters()))
    for i in a:
        for slot in a[i]:
            assert torch.equal(torch.as_tensor(a[i][slot]), torch.as_tensor(b[i][slot]))
    bad = {k: (v[:1] if v.dim() else v) for k, v in tensors.items()}
    with pytest.raises(RunError, match="does not match"):
        ckpt.load_optimizer_tensors(model, fresh, bad)


def test_rng_state_survives_json() -> None:
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    state = json.loads(json.dumps(ckpt.rng_state()))
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    ckpt.set_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
    with pytest.raises(RunError, match="RNG"):
        ckpt.set_rng_state({"python": "nonsense"})
