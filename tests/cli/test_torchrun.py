"""`torchrun` on the CPU (gloo), with real processes: two ranks train exactly what one process trains with the
same micro-batches, rank 0 alone writes the run, a two-rank run resumes exactly, and a rank that fails ends
the whole job with the error in the run's log and the run marked failed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from shiftstudio.core.runs.layout import RunLayout
from shiftstudio.core.runs.library import read_entry
from shiftstudio.core.runs.lock import lock_state

ROOT = Path(__file__).resolve().parents[2]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
SETTINGS = ["--n_layer", "1", "--n_head", "2", "--n_embd", "16", "--block_size", "16", "--batch_size", "2",
            "--gradient_accumulation_steps", "2", "--eval_interval", "4", "--eval_iters", "2", "--log_interval", "1",
            "--warmup_iters", "0", "--lr_decay_iters", "8", "--device", "cpu", "--dropout", "0.1", "--shift", "2"]


@pytest.fixture
def corpus(tmp_path: Path, shakespeare_text: str) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(shakespeare_text, encoding="utf-8")
    return path


def run(args: list[str], env_extra: dict | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def train(corpus: Path, out: Path, ranks: int, max_iters: int = 8, env: dict | None = None,
          extra: list[str] = ()) -> subprocess.CompletedProcess:
    args = ["-m", "shiftstudio", "train", "--corpus", str(corpus), *SETTINGS, "--max_iters", str(max_iters), "--out", str(out),
            *extra]
    return run((TORCHRUN + args[1:]) if ranks == 2 else [sys.executable, *args], env)


def records(run_dir: Path, kind: str) -> list[dict]:
    out = []
    for line in RunLayout(run_dir).metrics_file.read_text().splitlines():
        rec = json.loads(line)
        if rec.get("kind") == kind:
            out.append(rec)
    return out


def test_two_ranks_train_what_one_process_trains_and_rank_0_alone_writes(corpus: Path, tmp_path: Path) -> None:
    """Without dropout (each rank draws its own dropout masks) the two runs see the same data and weights."""
    one, two = tmp_path / "one", tmp_path / "two"
    single = train(corpus, one, 1, extra=["--dropout", "0"])
    assert single.returncode == 0, single.stderr
    double = train(corpus, two, 2, extra=["--dropout", "0"])
    assert double.returncode == 0, double.stderr[-3000:]
    # the same micro-batches (rank r takes r, r + N, … of each step's), so the same losses to float rounding
    a, b = records(one, "train"), records(two, "train")
    assert [r["step"] for r in b] == list(range(1, 9))  # every step logged once: one writer
    assert [r["loss"] for r in b] == pytest.approx([r["loss"] for r in a], abs=1e-5)
    assert [r["grad_norm"] for r in b] == pytest.approx([r["grad_norm"] for r in a], rel=1e-4)
    ev_a, ev_b = records(one, "eval"), records(two, "eval")
    assert [e["val_loss"] for e in ev_b] == pytest.approx([e["val_loss"] for e in ev_a], abs=1e-5)  # averaged over ranks
    assert [r["tokens"] for r in b] == [r["tokens"] for r in a]  # tokens count every rank
    assert len(records(two, "started")) == 1
    assert sorted(p.name for p in RunLayout(two).checkpoints_dir.iterdir()) == ["step-4", "step-8"]
    assert double.stdout.count("finished at step 8") == 1  # rank 0 prints; rank 1 is quiet
    assert read_entry(two).state == "finished" and lock_state(two)[0] == "free"


def test_a_two_rank_run_resumes_exactly(corpus: Path, tmp_path: Path) -> None:
    straight, split = tmp_path / "straight", tmp_path / "split"
    whole = train(corpus, straight, 2)
    assert whole.returncode == 0, whole.stderr[-3000:]
    first = train(corpus, split, 2, max_iters=4)
    assert first.returncode == 0, first.stderr[-3000:]
    resumed = run(TORCHRUN + ["-m", "shiftstudio", "resume", str(split), "--max_iters", "8"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = {r["step"]: r["loss"] for r in records(straight, "train")}
    b = {r["step"]: r["loss"] for r in records(split, "train")}
    assert sorted(b) == list(range(1, 9)) and a == b  # bit-identical, not approximately
    assert records(split, "eval")[-1]["val_loss"] == records(straight, "eval")[-1]["val_loss"]


def test_a_rank_that_fails_ends_the_job_and_marks_the_run_failed(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "doomed"
    done = train(corpus, out, 2, env={"SHIFTSTUDIO_INJECT_FAULT": "1:3"})  # rank 1 raises at step 3
    assert done.returncode != 0
    entry = read_entry(out)
    assert entry.state == "failed", (entry, done.stderr[-2000:])
    log = (RunLayout(out).logs_dir / "rank-1.log").read_text()
    assert "rank 1 of 2" in log and "a fault injected at step 3 on rank 1" in log
    # rank 0 only saw its peer go: its line too names the cause, rank 1's error
    failed = records(out, "failed")
    assert len(failed) == 2 and all(r["message"].startswith("rank 1 of 2: RuntimeError: a fault injected") for r in failed)
    assert lock_state(out)[0] != "held"  # nobody is left holding the run


def test_pause_and_stop_reach_every_rank(corpus: Path, tmp_path: Path) -> None:
    """Requests through the control file: rank 0 decides, every rank pauses and stops at the same step, and the
    stop saves a checkpoint."""
    import time

    from shiftstudio.core.runs.control import send_request

    out = tmp_path / "steered"
    args = TORCHRUN + ["-m", "shiftstudio", "train", "--corpus", str(corpus), *SETTINGS, "--max_iters", "100000",
                       "--lr_decay_iters", "100000", "--eval_interval", "100000", "--out", str(out)]
    job = subprocess.Popen(args, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)

    def wait(predicate, what: str, timeout: float = 120) -> None:
        end = time.monotonic() + timeout
        while not predicate():
            assert job.poll() is None, job.stderr.read()[-3000:]
            assert time.monotonic() < end, f"timed out waiting for {what}"
            time.sleep(0.05)

    def logged(kind: str) -> list[dict]:
        return records(out, kind) if RunLayout(out).metrics_file.exists() else []

    try:
        wait(lambda: len(logged("train")) > 5, "training")
        send_request(out, "pause")
        wait(lambda: logged("control"), "the pause")
        paused_at = logged("control")[-1]["step"]
        time.sleep(1.0)
        assert max(r["step"] for r in logged("train")) <= paused_at + 1  # no rank goes on alone
        send_request(out, "stop")
        stdout, stderr = job.communicate(timeout=120)
    finally:
        job.kill()
    assert job.returncode == 0, stderr[-3000:]
    finished = logged("finished")
    assert finished and finished[-1]["reason"] == "stopped" and finished[-1]["step"] >= paused_at
    assert (RunLayout(out).checkpoints_dir / f"step-{finished[-1]['step']}").is_dir()
    assert read_entry(out).state == "stopped"


def test_another_number_of_ranks_may_resume_and_is_told_what_differs(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "two-then-one"
    first = train(corpus, out, 2, max_iters=4)
    assert first.returncode == 0, first.stderr[-3000:]
    state = json.loads((RunLayout(out).checkpoint_dir(4) / "state.json").read_text())
    assert state["ranks"] == 2
    resumed = run([sys.executable, "-m", "shiftstudio", "resume", str(out), "--max_iters", "6"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "note: resumed on 1 process(es) from a checkpoint trained on 2: the same batches" in resumed.stdout
    assert [r["step"] for r in records(out, "train")] == list(range(1, 7))


# -- FSDP2 (parallel = fsdp): sharded weights, gradients and optimizer state ------------------------------------

FSDP = ["--parallel", "fsdp", "--n_layer", "2"]  # two blocks: two FSDP units besides the root


def test_fsdp_trains_what_one_process_trains_and_writes_full_checkpoints(corpus: Path, tmp_path: Path) -> None:
    """The shards add up to the one-process model: the same losses and the same weights to float rounding, in a
    checkpoint that one process reads and resumes (full tensors, the same names, the same optimizer slots)."""
    from shiftstudio.core.runs.checkpoint import load_checkpoint

    one, sharded = tmp_path / "one", tmp_path / "sharded"
    assert train(corpus, one, 1, extra=["--dropout", "0", "--n_layer", "2"]).returncode == 0
    done = train(corpus, sharded, 2, extra=["--dropout", "0", *FSDP], env={})
    assert done.returncode == 0, done.stderr[-3000:]
    a, b = records(one, "train"), records(sharded, "train")
    assert [r["loss"] for r in b] == pytest.approx([r["loss"] for r in a], abs=1e-5)
    assert [e["val_loss"] for e in records(sharded, "eval")] == pytest.approx([e["val_loss"] for e in records(one, "eval")], abs=1e-5)
    ca = load_checkpoint(RunLayout(one).checkpoint_dir(8))
    cb = load_checkpoint(RunLayout(sharded).checkpoint_dir(8))
    assert sorted(cb.model) == sorted(ca.model) and sorted(cb.optimizer) == sorted(ca.optimizer)
    for name, tensor in ca.model.items():
        assert cb.model[name].shape == tensor.shape  # full tensors, not one rank's shard
        assert torch_allclose(cb.model[name], tensor), name
    resumed = run([sys.executable, "-m", "shiftstudio", "resume", str(sharded), "--max_iters", "10"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert [r["step"] for r in records(sharded, "train")] == list(range(1, 11))


def test_an_fsdp_run_resumes_exactly(corpus: Path, tmp_path: Path) -> None:
    straight, split = tmp_path / "straight", tmp_path / "split"
    whole = train(corpus, straight, 2, extra=FSDP)
    assert whole.returncode == 0, whole.stderr[-3000:]
    first = train(corpus, split, 2, max_iters=4, extra=FSDP)
    assert first.returncode == 0, first.stderr[-3000:]
    resumed = run(TORCHRUN + ["-m", "shiftstudio", "resume", str(split), "--max_iters", "8"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = {r["step"]: r["loss"] for r in records(straight, "train")}
    b = {r["step"]: r["loss"] for r in records(split, "train")}
    assert sorted(b) == list(range(1, 9)) and a == b  # bit-identical: the optimizer's shards came back whole
    assert records(split, "eval")[-1]["val_loss"] == records(straight, "eval")[-1]["val_loss"]


def test_fsdp_refuses_what_it_does_not_support_before_anything_is_written(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "refused"
    done = train(corpus, out, 2, extra=[*FSDP, "--ema_decay", "0.9"])
    assert done.returncode != 0  # (torchrun's own status: 1 when a worker fails; each worker exits 2)
    said = [line for line in done.stderr.splitlines() if line.startswith("shiftstudio: error:")]
    assert said == ["shiftstudio: error: parallel = fsdp does not support a weight EMA (ema_decay > 0): set it to 0 "
                    "or use parallel = ddp"]  # once (rank 0), one line
    assert not out.exists()


def torch_allclose(a, b) -> bool:
    import torch

    return bool(torch.allclose(a.float(), b.float(), rtol=1e-4, atol=1e-6))
