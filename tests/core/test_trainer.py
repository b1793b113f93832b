"""The training loop end to end on a tiny model: reports, metrics, exact resume, control, failures."""

from __future__ import annotations

import json
import math
import queue
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from shiftstudio.config import RunConfig
from shiftstudio.core.errors import ConfigError
from shiftstudio.core.runs.checkpoint import list_checkpoints
from shiftstudio.core.model.estimate import count_params
from shiftstudio.core.runs.metrics import read_metrics
from shiftstudio.core.runs.folder import create_run, load_run_config, run_summary
from shiftstudio.core.data.store import TokenStore
from shiftstudio.core.runs.loading import load_model
from shiftstudio.core.train.control import ViewRequest
from shiftstudio.core.generate.generation import Generation
from shiftstudio.core.train.evaluation import split_losses
from shiftstudio.core.train.trainer import SAMPLE_TOKENS, Trainer, sample_settings

TINY = {
    "n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 16, "batch_size": 4,
    "max_iters": 20, "warmup_iters": 5, "lr_decay_iters": 100, "learning_rate": 3e-3, "min_lr": 3e-4,
    "eval_interval": 10, "eval_iters": 2, "log_interval": 5, "device": "cpu", "num_threads": 1,
}




def make_run(store: TokenStore, folder: Path, **overrides) -> Path:
    config = RunConfig().updated({"corpus": [str(store.meta["sources"][0])], **TINY, **overrides})
    return create_run(config, store, folder)


def run_all(trainer: Trainer) -> list:
    return list(trainer.run())


def kinds(reports: list) -> list[str]:
    return [r.kind for r in reports]


def losses_by_step(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(run_dir, ("train",))}


def weights_at(run_dir: Path, step: int, ema: bool = False):
    """The model saved in checkpoint ``step`` (raw or EMA weights), and the run's tokenizer."""
    model, tokenizer, meta = load_model(run_dir, f"step-{step}", ema=ema)
    assert meta["step"] == step
    return model, tokenizer


def expected_sample(run_dir: Path, step: int, prompt: str, ema: bool = False) -> str:
    """What the trainer's sample at ``step`` must be: the playground's sampler on the weights saved at that
    step, seeded with the run's seed + step (the trainer's rule, so successive samples differ)."""
    model, tokenizer = weights_at(run_dir, step, ema)
    seed = load_run_config(run_dir).train.seed
    tokens = list(Generation(model, tokenizer, prompt, sample_settings(seed + step)))
    assert len(tokens) == SAMPLE_TOKENS or tokens[-1].id == tokenizer.eot_id  # full length, or a document's end
    assert tokenizer.unk_id not in [t.id for t in tokens]
    return "".join(t.text for t in tokens)


def test_a_run_yields_reports_and_logs_metrics(store: TokenStore, tmp_path: Path) -> None:
    run_dir = make_run(store, tmp_path / "run")
    reports = run_all(Trainer(run_dir, store))
    assert reports[0].kind == "started" and not reports[0].resumed
    assert reports[0].n_params == count_params(RunConfig().updated(TINY).model, store.vocab_size)
    assert reports[0].tokens_per_step == 4 * 16
    assert reports[-1].kind == "finished" and reports[-1].reason == "completed" and reports[-1].step == 20
    steps = [r for r in reports if r.kind == "train"]
    assert [r.step for r in steps] == [5, 10, 15, 20]
    assert all(r.tokens == r.step * 64 and r.tokens_per_s > 0 and r.grad_norm > 0 for r in steps)
    assert steps[0].lr == pytest.approx(3e-3)  # warmup over 5 steps ends at the peak
    evals = [r for r in reports if r.kind == "eval"]
    assert [r.step for r in evals] == [10, 20]
    assert evals[-1].val_loss < math.log(store.vocab_size) - 0.3  # it learned something
    assert evals[-1].val_ppl == pytest.approx(math.exp(evals[-1].val_loss))
    assert evals[-1].ema_val_loss is None and evals[-1].val_loss_per_horizon == [pytest.approx(evals[-1].val_loss)]
    views = [r for r in reports if r.kind == "batch"]
    assert len(views) == 4
    v = views[-1]
    assert v.input_ids.shape == (16,) and v.target_ids.shape == (1, 16) and v.loss.shape == (1, 16)
    assert v.top_ids.shape == (1, 16, 5) and v.top_probs.shape == (1, 16, 5) and v.mask.shape == (1, 16)
    assert (v.top_probs[..., :-1] >= v.top_probs[..., 1:]).all() and (v.top_probs.sum(-1) <= 1.0 + 1e-5).all()
    assert v.target_ids[0, :-1].tolist() == v.input_ids[1:].tolist()  # targets are the inputs shifted by one

    records = read_metrics(run_dir)
    assert {r["kind"] for r in records} == {"started", "train", "eval", "checkpoint", "finished"}  # no batch views
    for r in records:
        assert {"kind", "step", "time_s", "tokens"} <= r.keys()
    train = [r for r in records if r["kind"] == "train"]
    assert all({"loss", "lr", "grad_norm", "tokens_per_s"} <= r.keys() for r in train)
    assert [r["step"] for r in train] == [5, 10, 15, 20]
    ev = [r for r in records if r["kind"] == "eval"]
    assert all({"train_loss", "val_loss", "val_ppl"} <= r.keys() for r in ev)
    assert ev[-1]["val_loss"] == pytest.approx(evals[-1].val_loss)
    times = [r["time_s"] for r in records]
    assert times == sorted(times)
    assert [c.step for c in list_checkpoints(run_dir)] == [10, 20]
    summary = run_summary(run_dir)
    assert summary["steps"] == 20 and summary["best_val_loss"] == pytest.approx(min(e.val_loss for e in evals))


def test_resume_is_exact(store: TokenStore, tmp_path: Path) -> None:
    """2·M steps straight == M steps, stop, resume, M more: bit-identical losses and weights."""
    settings = dict(max_iters=12, log_interval=1, eval_interval=4, dropout=0.1, shift=2, ema_decay=0.9)
    straight = make_run(store, tmp_path / "straight", **settings)
    split = make_run(store, tmp_path / "split", **settings)
    run_all(Trainer(straight, store))
    first = run_all(Trainer(split, store, max_iters=6))
    assert first[-1].kind == "finished" and first[-1].step == 6
    assert load_run_config(split).train.max_iters == 6  # the plan it was trained to is recorded with the run
    second = run_all(Trainer(split, store, max_iters=12))  # continued further: the new plan is recorded too
    assert second[0].kind == "started" and second[0].resumed and second[0].step == 6 and second[0].max_iters == 12
    assert second[-1].kind == "finished" and second[-1].step == 12
    assert load_run_config(split).train.max_iters == 12 and run_summary(split)["max_iters"] == 12

    a, b = losses_by_step(straight), losses_by_step(split)
    assert sorted(a) == list(range(1, 13)) and sorted(b) == list(range(1, 13))  # every step once
    assert a == b  # exact equality, not approx
    eval_a = {r["step"]: (r["val_loss"], r["ema_val_loss"]) for r in read_metrics(straight, ("eval",))}
    eval_b = {r["step"]: (r["val_loss"], r["ema_val_loss"]) for r in read_metrics(split, ("eval",))}
    assert eval_a[8] == eval_b[8] and eval_a[12] == eval_b[12]
    for name in ("model.safetensors", "ema.safetensors", "optimizer.safetensors"):
        wa = load_file(straight / "checkpoints" / "step-12" / name)
        wb = load_file(split / "checkpoints" / "step-12" / name)
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), name


def test_resume_drops_metrics_logged_after_the_checkpoint(store: TokenStore, tmp_path: Path) -> None:
    """A crash after logging step 12 but before a checkpoint: the resumed run logs 11.. again, once."""
    run_dir = make_run(store, tmp_path / "run", max_iters=10, log_interval=1)
    run_all(Trainer(run_dir, store))
    with open(run_dir / "metrics.jsonl", "a") as f:  # what a crash at step 12 leaves behind
        for step in (11, 12):
            f.write(json.dumps({"kind": "train", "step": step, "loss": 99.0, "time_s": 1.0, "tokens": 0}) + "\n")
        f.write('{"kind": "train", "st')  # a line cut short
    run_all(Trainer(run_dir, store, max_iters=14))
    steps = [r["step"] for r in read_metrics(run_dir, ("train",))]
    assert steps == list(range(1, 15))
    assert all(r["loss"] != 99.0 for r in read_metrics(run_dir, ("train",)))


def test_pause_resume_and_stop_from_another_thread(store: TokenStore, tmp_path: Path) -> None:
    run_dir = make_run(store, tmp_path / "run", max_iters=100_000, log_interval=1, eval_interval=100_000)
    trainer = Trainer(run_dir, store)
    reports: queue.Queue = queue.Queue()
    thread = threading.Thread(target=lambda: [reports.put(r) for r in trainer.run()], daemon=True)
    thread.start()

    def wait_for_step(timeout: float = 30.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = reports.get(timeout=timeout)
            if r.kind == "train":
                return r
            assert r.kind in ("started", "batch"), r
        raise AssertionError("no step report")

    wait_for_step()
    trainer.pause()
    assert trainer.paused
    time.sleep(0.3)  # the step in flight finishes
    while not reports.empty():
        reports.get()
    time.sleep(0.5)
    assert reports.empty(), "steps went on while paused"
    trainer.request_checkpoint()  # served while paused
    saved = reports.get(timeout=10)
    assert saved.kind == "checkpoint"
    paused_at = saved.step
    trainer.resume()
    assert not trainer.paused
    assert wait_for_step().step > paused_at
    trainer.stop()
    thread.join(timeout=30)
    assert not thread.is_alive()
    rest = []
    while not reports.empty():
        rest.append(reports.get())
    assert rest[-1].kind == "finished" and rest[-1].reason == "stopped"
    assert rest[-2].kind == "checkpoint" and rest[-2].step == rest[-1].step  # stop saves first
    assert list_checkpoints(run_dir)[-1].step == rest[-1].step < 100_000


def test_ema_evaluation_reports_raw_and_averaged_weights(store: TokenStore, tmp_path: Path) -> None:
    run_dir = make_run(store, tmp_path / "run", ema_decay=0.9, max_iters=10)
    reports = run_all(Trainer(run_dir, store, sample_prompt="ROMEO:"))
    ev = [r for r in reports if r.kind == "eval"][-1]
    assert ev.step == 10 and (run_dir / "checkpoints" / "step-10" / "ema.safetensors").is_file()
    # each reported loss is the loss of the weights saved beside it, on the evaluation's fixed batches
    raw, _ = weights_at(run_dir, 10)
    averaged, _ = weights_at(run_dir, 10, ema=True)
    shape, seed = (TINY["batch_size"], TINY["block_size"], 1), RunConfig().train.seed
    raw_train, raw_val = split_losses(raw, store, shape, TINY["eval_iters"], seed, torch.device("cpu"))
    ema_train, ema_val = split_losses(averaged, store, shape, TINY["eval_iters"], seed, torch.device("cpu"))
    assert (ev.train_loss, ev.val_loss) == (pytest.approx(raw_train[0], abs=1e-6), pytest.approx(raw_val[0], abs=1e-6))
    assert ev.ema_train_loss == pytest.approx(ema_train[0], abs=1e-6)
    assert ev.ema_val_loss == pytest.approx(ema_val[0], abs=1e-6)
    assert abs(ev.ema_val_loss - ev.val_loss) > 1e-4  # two different sets of weights were measured
    record = read_metrics(run_dir, ("eval",))[-1]
    assert record["ema_val_loss"] == pytest.approx(ev.ema_val_loss)
    # with EMA on, the sample comes from the averaged weights, not the raw ones
    sample = [r for r in reports if r.kind == "sample"][-1]
    assert sample.step == 10 and sample.text == expected_sample(run_dir, 10, "ROMEO:", ema=True)
    assert sample.text != expected_sample(run_dir, 10, "ROMEO:", ema=False)


def test_shift_two_reports_each_horizon(store: TokenStore, tmp_path: Path) -> None:
    run_dir = make_run(store, tmp_path / "run", shift=2, max_iters=10)
    reports = run_all(Trainer(run_dir, store, sample_prompt="ROMEO:"))
    ev = [r for r in reports if r.kind == "eval"][-1]
    assert len(ev.val_loss_per_horizon) == 2 and len(ev.train_loss_per_horizon) == 2
    assert ev.val_loss == ev.val_loss_per_horizon[0]  # the headline is head 1, the one generation uses
    assert ev.val_loss_all_heads == pytest.approx(sum(ev.val_loss_per_horizon) / 2)  # what the loss optimises
    assert ev.train_loss == ev.train_loss_per_horizon[0]
    assert ev.val_ppl == pytest.approx(math.exp(ev.val_loss))
    view = [r for r in reports if r.kind == "batch"][-1]
    assert view.target_ids.shape == (2, 16)
    assert view.target_ids[1, :-2].tolist() == view.input_ids[2:].tolist()  # head 2 is scored on t + 2
    samples = [r for r in reports if r.kind == "sample"]
    assert [r.step for r in samples] == [10]
    sample = samples[0]
    assert sample.prompt == "ROMEO:" and sample.text == expected_sample(run_dir, 10, "ROMEO:")
    tokenizer = store.tokenizer
    assert tokenizer.kind == "char" and "<unk>" not in sample.text and "<|endoftext|>" not in sample.text
    assert expected_sample(run_dir, 10, "the ") != sample.text  # the prompt matters


def test_early_stopping_keeps_and_marks_the_best_checkpoint(store: TokenStore, tmp_path: Path) -> None:
    # a learning rate too small to move float32 weights: the val loss never improves after the first eval
    run_dir = make_run(
        store, tmp_path / "run", learning_rate=1e-12, min_lr=0.0, warmup_iters=0, eval_interval=1,
        early_stop_patience=2, keep_checkpoints=1, max_iters=50,
    )
    reports = run_all(Trainer(run_dir, store))
    assert reports[-1].kind == "finished" and reports[-1].reason == "early_stop" and reports[-1].step == 3
    found = list_checkpoints(run_dir)
    assert [c.step for c in found] == [1, 3]  # keep 1, plus the best
    states = {c.step: json.loads((c.path / "state.json").read_text()) for c in found}
    assert states[1]["best"] is True and states[3]["best"] is False
    assert [c.step for c in found if c.is_best] == [1]


def test_keeps_the_last_n_checkpoints_and_the_best(store: TokenStore, tmp_path: Path) -> None:
    run_dir = make_run(store, tmp_path / "run", eval_interval=2, keep_checkpoints=2, max_iters=16)
    reports = run_all(Trainer(run_dir, store))
    evals = [r for r in reports if r.kind == "eval"]
    best_step = min(evals, key=lambda r: r.val_loss).step
    found = list_checkpoints(run_dir)
    assert {c.step for c in found} == {14, 16} | {best_step}
    assert [c.step for c in found if c.is_best] == [best_step]
    assert not list((run_dir / "checkpoints").glob(".*"))  # no temporary folders left


def test_nan_loss_fails_naming_the_step_and_keeps_the_last_good_checkpoint(store: TokenStore, tmp_path: Path, poison_checkpoint) -> None:
    # step 1 is trained and saved; a NaN is then planted in its weights, so the resumed step 2 diverges
    run_dir = make_run(store, tmp_path / "run", log_interval=1, checkpoint_interval=1, max_iters=20)
    assert kinds(run_all(Trainer(run_dir, store, max_iters=1)))[-1] == "finished"
    poison_checkpoint(run_dir, 1)
    reports = run_all(Trainer(run_dir, store, max_iters=20))
    failed = reports[-1]
    assert failed.kind == "failed" and failed.expected
    assert failed.step == 2 and "step 2" in failed.message and "nan" in failed.message.lower()
    assert "checkpoint is step 1" in failed.message
    assert [c.step for c in list_checkpoints(run_dir)] == [1]
    assert "finished" not in kinds(reports)
    assert read_metrics(run_dir)[-1]["kind"] == "failed"


def test_an_absurd_learning_rate_is_refused_before_anything_runs(store: TokenStore, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="learning_rate must be above 0 and at most 10"):
        make_run(store, tmp_path / "run", learning_rate=1e30)
    assert not (tmp_path / "run" / "run.json").exists()


def test_cuda_without_cuda_is_a_clear_failure(store: TokenStore, tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    run_dir = make_run(store, tmp_path / "run", device="cuda")
    reports = run_all(Trainer(run_dir, store))
    assert kinds(reports) == ["failed"]
    assert "cuda" in reports[0].message.lower() and reports[0].expected
    assert not (run_dir / "checkpoints").exists()


def test_gradient_accumulation_counts_tokens_per_optimizer_step(store: TokenStore, tmp_path: Path) -> None:
    run_dir = make_run(store, tmp_path / "run", gradient_accumulation_steps=3, max_iters=10)
    reports = run_all(Trainer(run_dir, store))
    assert reports[0].tokens_per_step == 3 * 4 * 16
    assert reports[-1].kind == "finished"
    assert [r.tokens for r in reports if r.kind == "train"][-1] == 10 * 3 * 4 * 16


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_bf16_autocast_and_compile(store: TokenStore, tmp_path: Path) -> None:
    run_dir = make_run(store, tmp_path / "run", device="cuda", dtype="bfloat16", compile=True, max_iters=30, eval_interval=15)
    reports = run_all(Trainer(run_dir, store))
    assert reports[0].dtype == "bfloat16" and "CUDA" in reports[0].device
    assert reports[-1].kind == "finished", reports[-1]
    evals = [r for r in reports if r.kind == "eval"]
    assert math.isfinite(evals[-1].val_loss) and evals[-1].val_loss < math.log(store.vocab_size)
    resumed = run_all(Trainer(run_dir, store, max_iters=40))  # resume onto the GPU from safetensors
    assert resumed[0].resumed and resumed[-1].kind == "finished" and resumed[-1].step == 40


def test_view_row_follows_the_request_and_cycles_without_one(store: TokenStore, tmp_path: Path) -> None:
    run_dir = make_run(store, tmp_path / "run", max_iters=20, log_interval=1, eval_interval=1000)
    trainer = Trainer(run_dir, store)
    rows = []
    for r in trainer.run():
        if r.kind == "batch":
            rows.append(r.row)
            if r.step == 8:
                trainer.set_views(ViewRequest(row=6))  # beyond the batch of 4: taken modulo
            if r.step == 14:
                trainer.set_views(ViewRequest(row=None))
    # without a request the row cycles with the log point: step s (log_interval 1) shows row s % 4
    assert len(rows) == 20
    assert rows[:8] == [step % 4 for step in range(1, 9)]
    assert rows[8:14] == [2] * 6  # requested row 6, taken modulo the batch of 4, from step 9 on
    assert rows[14:] == [step % 4 for step in range(15, 21)]


def test_snapshot_copies_the_live_weights_between_steps(store: TokenStore, tmp_path: Path) -> None:
    from shiftstudio.core.errors import RunError
    from shiftstudio.core.generate.generation import Generation
    from shiftstudio.core.generate.filters import SamplingSettings

    run_dir = make_run(store, tmp_path / "run", max_iters=100_000, log_interval=1, eval_interval=100_000)
    trainer = Trainer(run_dir, store)
    with pytest.raises(RunError, match="not training"):
        trainer.snapshot(timeout=1)
    reports: queue.Queue = queue.Queue()
    thread = threading.Thread(target=lambda: [reports.put(r) for r in trainer.run()], daemon=True)
    thread.start()
    while reports.get(timeout=30).kind != "train":
        pass
    model, tokenizer, step = trainer.snapshot(timeout=30)
    assert step >= 1 and tokenizer.vocab_size == store.vocab_size
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert all(v.device.type == "cpu" and v.dtype == torch.float32 for v in before.values())
    while reports.get(timeout=30).step < step + 3:  # training goes on: the copy does not move with it
        pass
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    later, _, later_step = trainer.snapshot(timeout=30)
    assert later_step >= step + 3
    assert any(not torch.equal(before[k], v) for k, v in later.state_dict().items())  # a fresh copy has moved on
    tokens = list(Generation(model, tokenizer, "a", SamplingSettings(max_new_tokens=8, seed=1, stop_at_eot=False)))
    assert len(tokens) == 8 and "".join(t.text for t in tokens) == tokenizer.decode([t.id for t in tokens])
    trainer.pause()  # served while paused as well
    time.sleep(0.2)
    assert trainer.snapshot(timeout=10)[2] >= step + 3
    trainer.stop()
    thread.join(timeout=30)
    assert not thread.is_alive()
    with pytest.raises(RunError, match="not training"):
        trainer.snapshot(timeout=1)


def test_samples_and_batch_views_do_not_change_the_training(store: TokenStore, tmp_path: Path) -> None:
    """The inspector's data and the eval samples run on the side: same seed, same losses to the last bit."""
    plain = make_run(store, tmp_path / "plain", dropout=0.1)
    watched = make_run(store, tmp_path / "watched", dropout=0.1)
    bare = run_all(Trainer(plain, store, views=ViewRequest(batch_views=False)))
    full = run_all(Trainer(watched, store, sample_prompt="ROMEO:"))
    assert "batch" not in kinds(bare) and "sample" not in kinds(bare)
    assert kinds(full).count("batch") == 4 and kinds(full).count("sample") == 2
    assert losses_by_step(plain) == losses_by_step(watched)
    assert [r.val_loss for r in bare if r.kind == "eval"] == [r.val_loss for r in full if r.kind == "eval"]


def test_sampling_from_live_snapshots_leaves_the_run_unchanged(store: TokenStore, tmp_path: Path) -> None:
    """Generating while training (the playground's live weights): same seed, same losses as a run left alone."""
    from shiftstudio.core.generate.generation import Generation
    from shiftstudio.core.generate.filters import SamplingSettings

    # checkpoints at 7, 14, 21, 28 (all kept): the weights each snapshot must have copied
    settings = dict(dropout=0.1, log_interval=1, max_iters=30, checkpoint_interval=7, keep_checkpoints=10)
    alone = make_run(store, tmp_path / "alone", **settings)
    watched = make_run(store, tmp_path / "watched", **settings)
    run_all(Trainer(alone, store))
    trainer = Trainer(watched, store)
    results: list = []

    settings = SamplingSettings(max_new_tokens=20, seed=3)

    def sample_live() -> None:  # the playground's worker thread: copy the weights, then sample beside training
        model, tokenizer, step = trainer.snapshot(timeout=30)
        text = "".join(t.text for t in Generation(model, tokenizer, "a", settings))
        results.append((step, text))

    askers = []
    for report in trainer.run():
        if report.kind == "train" and report.step % 7 == 0:
            askers.append(threading.Thread(target=sample_live))
            askers[-1].start()
            deadline = time.monotonic() + 10
            while not trainer.control.has_snapshot_requests() and time.monotonic() < deadline:
                time.sleep(0.005)  # the request is in: the next step boundary serves it
    for asker in askers:
        asker.join(timeout=30)
    assert sorted(step for step, _ in results) == [7, 14, 21, 28]
    for step, text in results:  # each copy held the weights of its step: the same text as the checkpoint gives
        model, tokenizer = weights_at(watched, step)
        assert text == "".join(t.text for t in Generation(model, tokenizer, "a", settings)), step
    assert len({text for _, text in results}) > 1  # the weights moved between snapshots
    assert losses_by_step(alone) == losses_by_step(watched)


def test_a_run_ended_before_its_first_checkpoint_starts_again_with_each_step_logged_once(store: TokenStore,
                                                                                       tmp_path: Path) -> None:
    """Killed (here: abandoned mid-iteration) before any checkpoint: the next start begins at step 0 again, and
    what the first attempt logged is dropped rather than left beside the new steps."""
    from shiftstudio.core.train.reports import FinishedReport, StepReport

    run = make_run(store, tmp_path / "early", max_iters=10, log_interval=1, eval_interval=100)
    first = Trainer(run).run()
    seen = 0
    for report in first:
        seen += isinstance(report, StepReport)
        if seen == 3:
            break
    first.close()  # the generator ends here: no checkpoint was written
    assert list_checkpoints(run) == [] and sorted(losses_by_step(run)) == [1, 2, 3]
    assert isinstance(run_all(Trainer(run))[-1], FinishedReport)
    steps = [r["step"] for r in read_metrics(run) if r.get("kind") == "train"]
    assert steps == list(range(1, 11))
