"""kill -9 at any moment, then ``shiftstudio resume``: a run survives it, and ends bit-identical to a run that was
never interrupted.

One real ``shiftstudio train`` process, then ``shiftstudio resume`` after each of at least twenty SIGKILLs at
seeded moments: during start-up, at a random point while training, the moment a checkpoint's temporary folder
appears (mid-save, sometimes a millisecond or two in), and the moment a metrics line lands. After each kill the
checkpoints folder is inspected (every checkpoint that could be picked loads; no half-written one is listed) and
the log is read. A kill cannot cut one ``write(2)`` of a line in two, but a machine that loses power can, so
after some kills the test leaves half a record at the end of ``metrics.jsonl``, as such a crash would: it must
be read, and repaired by the resume, without an error. At the end the per-step losses, the evaluations and the
last checkpoint (weights, optimizer state, sampler and RNG state) are compared with an uninterrupted run of the
same settings: equal to the bit, wherever the kills landed. Run with ``-s`` for the counts.
"""

from __future__ import annotations

import collections
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shiftstudio.core.runs.checkpoint import list_checkpoints, load_checkpoint
from shiftstudio.core.runs.layout import RunLayout
from shiftstudio.core.runs.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[2]
SEED = 20240611
MAX_ITERS = 400  # room for 21 kills however fast the steps are (each kill moves the run on a few checkpoints)
SETTINGS = [
    "--n_layer=1", "--n_head=2", "--n_embd=16", "--block_size=16", "--batch_size=2", f"--max_iters={MAX_ITERS}",
    "--warmup_iters=0", f"--lr_decay_iters={MAX_ITERS}", "--eval_interval=5", "--eval_iters=1", "--log_interval=1",
    "--checkpoint_interval=2", "--keep_checkpoints=2", "--dropout=0.1", "--device=cpu", "--num_threads=1", "--seed=7",
]
# How each kill is timed (a fixed mix, in a seeded order): start-up, anywhere while training, the moment a
# checkpoint's temporary folder exists, the moment a metrics line lands.
MODES = ["startup"] * 2 + ["checkpoint"] * 8 + ["metrics"] * 4 + ["anytime"] * 7  # 21: at least 20 must land
WAIT_S = 120  # the longest any one wait may take before the test says what it was waiting for


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def _launch(args: list[str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as out:  # a file, not a pipe: a child that writes a lot never blocks on it
        return subprocess.Popen([sys.executable, "-m", "shiftstudio", *args], cwd=ROOT, env=_env(), stdout=out,
                                stderr=subprocess.STDOUT)


def _steps_saved(run: Path) -> list[int]:
    folder = RunLayout(run).checkpoints_dir
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    return sorted(int(n[5:]) for n in names if n.startswith("step-") and n[5:].isdigit())


def _hidden(run: Path) -> list[str]:
    try:
        return sorted(n for n in os.listdir(RunLayout(run).checkpoints_dir) if n.startswith("."))
    except OSError:
        return []


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return -1


class Session:
    """One training process, and the means to kill it at the moment a mode asks for."""

    def __init__(self, run: Path, args: list[str], log: Path) -> None:
        self.run, self.log = run, log
        self.proc = _launch(args, log)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_for(self, predicate, what: str, spin: float) -> bool:
        """Poll until ``predicate()``; False if the process ended first."""
        end = time.monotonic() + WAIT_S
        while not predicate():
            if not self.alive():
                return False
            assert time.monotonic() < end, f"timed out waiting for {what}: {self.log.read_text(errors='replace')[-2000:]}"
            time.sleep(spin)
        return True

    def kill(self) -> bool:
        """SIGKILL; True if the process was still running (a kill that landed)."""
        landed = self.alive()
        if landed:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=60)
        return landed and self.proc.returncode == -signal.SIGKILL


def _kill_at(session: Session, mode: str, rng: random.Random) -> bool:
    run = session.run
    if mode == "startup":
        time.sleep(rng.uniform(0.05, 3.0))
        return session.kill()
    # training first: a checkpoint past the one this session started from (a fresh run: its first one)
    start = max(_steps_saved(run), default=0)
    target = start + rng.randint(1, 3)
    if not session.wait_for(lambda: max(_steps_saved(run), default=0) >= target, f"a checkpoint at step {target}", 0.005):
        return False
    if mode == "anytime":
        time.sleep(rng.uniform(0.0, 0.04))  # a few steps at most (a step takes ~2 ms on a quiet CPU): mid-step
    elif mode == "checkpoint":  # mid-save: the temporary folder exists, its files partly written
        folder, stale = RunLayout(run).checkpoints_dir, set(_hidden(run))
        saving = lambda: any(n.startswith(".tmp-step-") and n not in stale for n in os.listdir(folder))  # noqa: E731
        if not session.wait_for(saving, "a checkpoint being saved", 0.0002):
            return False
        delay = rng.choice([0.0, 0.0, 0.0005, 0.002])
        if delay:
            time.sleep(delay)
    elif mode == "metrics":  # just as a line lands
        log = RunLayout(run).metrics_file
        before = _size(log)
        if not session.wait_for(lambda: _size(log) != before, "a metrics line", 0.0002):
            return False
    return session.kill()


def _ends_mid_line(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[-1:] not in (b"", b"\n")


def _classify(run: Path, started_before: int, torn_before: bool, hidden: list[str]) -> str:
    """Where the kill landed, as the files on disk tell it."""
    if any(n.startswith(".tmp-step-") for n in hidden):
        files = sorted(os.listdir(RunLayout(run).checkpoints_dir / next(n for n in hidden if n.startswith(".tmp-step-"))))
        return f"mid-checkpoint (its temporary folder held: {', '.join(files) or 'nothing yet'})"
    if any(n.startswith(".del-step-") for n in hidden):
        return "mid-prune"
    if any(n.startswith(".old-step-") for n in hidden):
        return "mid-swap of a checkpoint saved again"
    if _ends_mid_line(RunLayout(run).metrics_file) and not torn_before:
        return "mid-metrics-append"
    if sum(1 for r in read_metrics(run, ("started",))) == started_before:
        return "during start-up (before the first report)"
    return "while training (mid-step, between steps or at a log point)"


def _tear_last_line(run: Path, rng: random.Random) -> None:
    """Leave half a record at the end of the log, as a crash mid-write (a power loss) would."""
    log = RunLayout(run).metrics_file
    last = log.read_bytes().rstrip(b"\n").rsplit(b"\n", 1)[-1]
    with open(log, "ab") as f:
        f.write(last[: rng.randint(1, len(last) - 2)])


def _check_after_kill(run: Path) -> None:
    """Every checkpoint that could be picked loads; the log reads without an error."""
    for info in list_checkpoints(run):
        c = load_checkpoint(info.path)  # raises for a half-written one
        assert c.step == info.step and set(c.state["files"]) >= {"model.safetensors", "optimizer.safetensors"}
    read_metrics(run)


def _by_step(run: Path, kind: str, field: str) -> dict[int, float]:
    out: dict[int, float] = {}
    for rec in read_metrics(run, (kind,)):
        assert rec["step"] not in out, f"step {rec['step']} logged twice ({kind})"
        out[rec["step"]] = rec[field]
    return out


@pytest.mark.timeout(900)
def test_kill_9_anywhere_then_resume_ends_bit_identical(tmp_path: Path, shakespeare_text: str) -> None:
    from shiftstudio.config import RunConfig
    from shiftstudio.core.data.store import prepare

    rng = random.Random(SEED)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(shakespeare_text, encoding="utf-8")
    data = tmp_path / "data"  # prepared once: both runs train on the same token files
    prepare(RunConfig().updated({"corpus": [str(corpus)]}).data, out_dir=data)
    started = time.monotonic()
    reference = tmp_path / "straight"
    ref_proc = _launch(["train", "--data", str(data), *SETTINGS, "--out", str(reference)], tmp_path / "straight.log")

    run = tmp_path / "killed"
    modes = MODES[:]
    rng.shuffle(modes)
    if modes[0] == "startup":  # the first process must create the run folder: kill it once it trains
        modes.append(modes.pop(0))
    landed: collections.Counter[str] = collections.Counter()
    by_mode: collections.Counter[str] = collections.Counter()
    torn = 0
    finished_early = False
    for i, mode in enumerate(modes):
        args = ["train", "--data", str(data), *SETTINGS, "--out", str(run)] if i == 0 else ["resume", str(run)]
        before = sum(1 for _ in read_metrics(run, ("started",))) if RunLayout(run).is_run() else 0
        torn_before = _ends_mid_line(RunLayout(run).metrics_file)
        session = Session(run, args, tmp_path / f"session-{i}.log")
        if not _kill_at(session, mode, rng):
            # it ended on its own: only acceptable as the end of the run
            assert session.proc.returncode == 0, session.log.read_text(errors="replace")[-3000:]
            finished_early = True
            break
        by_mode[mode] += 1
        hidden = _hidden(run)
        landed[_classify(run, before, torn_before, hidden)] += 1
        _check_after_kill(run)
        if rng.random() < 0.35:  # a crash mid-write: half a record ends the log
            _tear_last_line(run, rng)
            torn += 1
            records = read_metrics(run)  # read without an error, the cut line skipped
            assert records and all(isinstance(r, dict) for r in records)
        assert not [r for r in read_metrics(run, ("failed",))], "a resume failed"
    kills = sum(by_mode.values())
    assert kills >= 20 and not finished_early, (kills, by_mode)
    reached = max(_steps_saved(run), default=0)  # where the kills left it (the last resume trains the rest)

    final = subprocess.run([sys.executable, "-m", "shiftstudio", "resume", str(run)], cwd=ROOT, env=_env(),
                           capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stdout[-2000:] + final.stderr[-2000:]
    assert f"finished at step {MAX_ITERS}" in final.stdout
    assert ref_proc.wait(timeout=300) == 0, (tmp_path / "straight.log").read_text()[-3000:]
    elapsed = time.monotonic() - started

    # the log: whole lines only (the cut ones repaired), each step once, no failure
    lines = RunLayout(run).metrics_file.read_text(encoding="utf-8").splitlines()
    assert all(isinstance(json.loads(line), dict) for line in lines)  # every cut line is gone: a resume dropped it
    assert not read_metrics(run, ("failed",))
    assert sum(r["resumed"] for r in read_metrics(run, ("started",))) >= kills - by_mode["startup"]

    # bit-identical to the uninterrupted run: every step's loss and grad norm, every evaluation
    losses, straight = _by_step(run, "train", "loss"), _by_step(reference, "train", "loss")
    assert sorted(losses) == list(range(1, MAX_ITERS + 1))
    assert losses == straight
    assert _by_step(run, "train", "grad_norm") == _by_step(reference, "train", "grad_norm")
    assert _by_step(run, "eval", "val_loss") == _by_step(reference, "eval", "val_loss")
    # … and the last checkpoint: weights, optimizer state, sampler position, RNG states
    a = load_checkpoint(RunLayout(run).checkpoint_dir(MAX_ITERS))
    b = load_checkpoint(RunLayout(reference).checkpoint_dir(MAX_ITERS))
    for mine, theirs in ((a.model, b.model), (a.optimizer, b.optimizer)):
        assert mine.keys() == theirs.keys()
        for name in mine:
            assert mine[name].dtype == theirs[name].dtype and mine[name].shape == theirs[name].shape
            assert mine[name].view(-1).view(dtype=_int_view(mine[name])).equal(theirs[name].view(-1).view(dtype=_int_view(theirs[name]))), name
    assert a.state["sampler"] == b.state["sampler"] and a.state["rng"] == b.state["rng"]
    assert a.state["tokens"] == b.state["tokens"]
    assert not _hidden(run)  # no temporary folder left behind

    print(f"\nkill -9 and resume: {kills} kills landed on a running trainer (seed {SEED}), {elapsed:.0f} s in all; "
          f"the last left a checkpoint at step {reached} of {MAX_ITERS}")
    print("  timed by mode: " + ", ".join(f"{m} {n}" for m, n in sorted(by_mode.items())))
    print("  where they landed (from the files on disk):")
    for where, n in sorted(landed.items(), key=lambda kv: -kv[1]):
        print(f"    {n:3d}  {where}")
    print(f"  half a record left at the end of metrics.jsonl after {torn} kills: each read without an error, "
          "and gone after the resume")
    print(f"  final: {MAX_ITERS} steps, losses, evals and last checkpoint bit-identical to the uninterrupted run")


def _int_view(t):
    """An integer dtype of the same width, to compare tensors bit for bit (NaN == NaN, -0.0 != 0.0)."""
    import torch

    return {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()]
