"""``shiftstudio train / resume / info`` end to end: real runs, one-line errors with the right exit codes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cli_helpers import assert_one_line_error, run_cli
from shiftstudio.config import ModelConfig
from shiftstudio.core.model.gpt import GPT
from shiftstudio.core.runs.checkpoint import list_checkpoints
from shiftstudio.core.runs.loading import load_model
from shiftstudio.core.runs.metrics import read_metrics
from shiftstudio.core.generate.generation import Generation
from shiftstudio.core.train.trainer import sample_settings
from shiftstudio.format import human_count

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "--n_layer=2", "--n_head=2", "--n_embd=32", "--block_size=16", "--batch_size=4", "--max_iters=12",
    "--warmup_iters=2", "--eval_interval=6", "--eval_iters=2", "--log_interval=3", "--device=cpu", "--num_threads=1",
]



def test_train_info_resume(tmp_path: Path, small_corpus: Path, shakespeare_text: str, capsys) -> None:
    run_dir = tmp_path / "run"
    code, out, err = run_cli(capsys, "train", "--corpus", small_corpus, *TINY, "--shift=2", "--out", run_dir, "--sample", "First")
    assert code == 0, err
    assert "training for 12 steps" in out
    # the size line: the parameters of the model built for this config and the corpus's character vocabulary
    vocab = len(set(shakespeare_text)) + 2  # the corpus alphabet, <|endoftext|> and <unk>
    with torch.device("meta"):
        n_params = sum(p.numel() for p in GPT(ModelConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, shift=2), vocab).parameters())
    assert f"model: {human_count(n_params)} parameters on CPU (1 thread, float32), 64 tokens per step" in out.splitlines()
    assert [line.split()[1] for line in out.splitlines() if line.startswith("step ")] == ["3/12", "6/12", "9/12", "12/12"]
    evals = {r["step"]: r for r in read_metrics(run_dir, ("eval",))}
    assert sorted(evals) == [6, 12]
    for step, ev in evals.items():  # the logged numbers, as printed; per-horizon losses for shift 2
        assert (
            f"eval step {step}: train loss {ev['train_loss']:.4f}, val loss {ev['val_loss']:.4f}, val ppl {ev['val_ppl']:.2f}"
            in out
        )
        t1, t2 = ev["val_loss_per_horizon"]
        assert f"  val loss per horizon: t+1 {t1:.4f}, t+2 {t2:.4f}" in out.splitlines()
    # the sample is the step-12 weights' continuation of the prompt, with the trainer's seed for that step
    model, tokenizer, _ = load_model(run_dir, "step-12")
    seed = json.loads((run_dir / "run.json").read_text())["config"]["train"]["seed"]
    text = "".join(t.text for t in Generation(model, tokenizer, "First", sample_settings(seed + 12)))
    assert f"sample at step 12:\nFirst{text}\n" in out
    best = min(r["val_loss"] for r in evals.values())
    assert "finished at step 12" in out and f"best val loss {best:.4f}" in out
    assert [c.step for c in list_checkpoints(run_dir)] == [6, 12]
    record = json.loads((run_dir / "run.json").read_text())
    assert record["config"]["model"]["shift"] == 2
    assert record["config"]["data"]["corpus"] == [str(small_corpus.resolve())]

    code, out, _ = run_cli(capsys, "info", run_dir)
    assert code == 0
    lines = out.splitlines()
    assert "step 12 of 12" in out and "shift = 2" in out
    assert f"size         {n_params:,} parameters ({human_count(n_params)}; " in out
    assert f"best val     {best:.4f} (head 1: next token)" in lines
    last = evals[12]["val_loss_per_horizon"]
    assert f"last eval    step 12: val loss per horizon t+1 {last[0]:.4f}, t+2 {last[1]:.4f}" in lines
    assert evals[12]["val_loss"] == last[0]  # the headline is head 1
    best_step = min(evals, key=lambda s: evals[s]["val_loss"])
    marks = ", ".join(f"step-{s}" + (" (best)" if s == best_step else "") for s in (6, 12))
    assert f"checkpoints  {marks}" in lines
    code, out, _ = run_cli(capsys, "info", run_dir, "--json")
    info = json.loads(out)
    assert info["steps"] == 12 and info["best_val_loss"] == pytest.approx(best)
    assert info["n_params"] == n_params and info["vocab_size"] == vocab
    assert [c["step"] for c in info["checkpoints"]] == [6, 12]

    code, out, _ = run_cli(capsys, "resume", run_dir)
    assert code == 0 and "nothing to do" in out
    assert [c.step for c in list_checkpoints(run_dir)] == [6, 12]  # nothing was trained or saved
    code, out, err = run_cli(capsys, "resume", run_dir, "--max_iters=18")
    assert code == 0, err
    assert "resuming at step 12 of 18" in out and "finished at step 18" in out
    assert [r["step"] for r in read_metrics(run_dir, ("train",))] == [3, 6, 9, 12, 15, 18]


def test_train_from_a_config_file_and_prepared_data(tmp_path: Path, small_corpus: Path, capsys) -> None:
    store = tmp_path / "store"
    assert run_cli(capsys, "prepare", small_corpus, "--out", store)[0] == 0
    config = tmp_path / "tiny.toml"
    config.write_text(
        "schema_version = 1\n[model]\nn_layer = 1\nn_head = 2\nn_embd = 16\nblock_size = 8\n"
        "[train]\nmax_iters = 4\neval_interval = 4\neval_iters = 1\nbatch_size = 2\ndevice = 'cpu'\nnum_threads = 1\n"
    )
    code, out, err = run_cli(capsys, "train", config, "--data", store, "--max_iters=6", "--out", tmp_path / "run")
    assert code == 0, err
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["config"]["model"]["n_embd"] == 16 and record["config"]["train"]["max_iters"] == 6
    assert record["data"]["store"] == str(store.resolve())
    assert "finished at step 6" in out


@pytest.mark.parametrize(
    "args,needles",
    [
        (["--n_embd=30", "--n_head=4"], ["divisible by n_head"]),
        (["--block_size=4096"], ["block_size", "validation split"]),
        (["--learning_rate=-1"], ["learning_rate"]),
        (["--n_layers=3"], ["unknown option --n_layers"]),
        (["--n_layer=three"], ["n_layer must be an integer"]),
        (["--dropout=2"], ["dropout"]),
        (["--preset", "no-such-preset"], ["unknown preset"]),
        (["--errors=ignore"], ["--errors"]),
    ],
)
def test_bad_config_is_one_line_and_exit_2(tmp_path: Path, small_corpus: Path, capsys, args, needles) -> None:
    out_dir = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "--corpus", small_corpus, *TINY, *args, "--out", out_dir)
    assert code == 2
    assert_one_line_error(err, *needles)
    assert not (out_dir / "run.json").exists()


def test_missing_config_file_and_preset_with_file(tmp_path: Path, capsys) -> None:
    code, _, err = run_cli(capsys, "train", tmp_path / "nope.toml", "--out", tmp_path / "run")
    assert code == 2
    assert_one_line_error(err, "not found")
    code, _, err = run_cli(capsys, "train", tmp_path / "nope.toml", "--preset", "cpu-tiny")
    assert code == 2
    assert_one_line_error(err, "not both")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_a_clear_error(tmp_path: Path, small_corpus: Path, capsys) -> None:
    code, _, err = run_cli(capsys, "train", "--corpus", small_corpus, *TINY, "--device=cuda", "--out", tmp_path / "run")
    assert code == 2
    assert_one_line_error(err, "cuda", "--device=cpu")
    assert not (tmp_path / "run").exists()


def test_runtime_failures_exit_1(tmp_path: Path, small_corpus: Path, capsys, poison_checkpoint) -> None:
    code, _, err = run_cli(capsys, "info", tmp_path)
    assert code == 1
    assert_one_line_error(err, "not a run folder")
    code, _, err = run_cli(capsys, "train", "--corpus", tmp_path / "missing.txt", *TINY, "--out", tmp_path / "r0")
    assert code == 1
    assert_one_line_error(err, "missing.txt")
    # a diverging run: the failure names the step, the last good checkpoint stays
    run_dir = tmp_path / "nan"
    code, out, err = run_cli(
        capsys, "train", "--corpus", small_corpus, *TINY, "--max_iters=1", "--log_interval=1", "--checkpoint_interval=1",
        "--out", run_dir,
    )
    assert code == 0
    poison_checkpoint(run_dir, 1)  # step 2, trained from these weights, diverges
    code, out, err = run_cli(capsys, "resume", run_dir, "--max_iters=5")
    assert code == 1
    assert_one_line_error(err, "step 2", "nan", "checkpoint is step 1")
    assert [c.step for c in list_checkpoints(run_dir)] == [1]
    # the same folder again: refused, nothing touched
    code, _, err = run_cli(capsys, "train", "--corpus", small_corpus, *TINY, "--out", run_dir)
    assert code == 2
    assert_one_line_error(err, "already holds a run", "resume")
    record = json.loads((run_dir / "run.json").read_text())
    (run_dir / "run.json").write_text(json.dumps({**record, "schema_version": 99}))
    code, _, err = run_cli(capsys, "resume", run_dir)
    assert code == 1
    assert_one_line_error(err, "newer ShiftStudio")


def test_help_lists_every_setting(capsys) -> None:
    code, out, _ = run_cli(capsys, "train", "--help")
    assert code == 0 and "--early_stop_patience" in out and "--out RUN_DIR" in out
    code, out, _ = run_cli(capsys, "resume", "--help")
    assert code == 0 and "--max_iters" in out


def test_real_process_exit_codes_and_ctrl_c(tmp_path: Path, small_corpus: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    bad = subprocess.run(
        [sys.executable, "-m", "shiftstudio", "train", "--corpus", str(small_corpus), "--n_embd=30", "--n_head=4"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert bad.returncode == 2 and bad.stderr.startswith("shiftstudio: error: ") and "Traceback" not in bad.stderr

    run_dir = tmp_path / "run"
    argv = [sys.executable, "-m", "shiftstudio", "train", "--corpus", str(small_corpus), *TINY, "--max_iters=1000000",
            "--log_interval=1", "--eval_interval=1000000", "--out", str(run_dir)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        for line in proc.stdout:  # plain lines: stdout is a pipe
            if line.startswith("step "):
                break
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert "stopping: saving a checkpoint" in out
    stopped = [line for line in out.splitlines() if line.startswith("stopped at step ")]
    assert len(stopped) == 1, out
    step = int(stopped[0].split()[3].replace(",", ""))
    assert step >= 1  # at least the step whose line was read before the signal
    saved = list_checkpoints(run_dir)
    assert [c.step for c in saved] == [step]  # the checkpoint is of the step it says it stopped at
    finished = read_metrics(run_dir)[-1]
    assert (finished["kind"], finished["reason"], finished["step"]) == ("finished", "stopped", step)
    assert max(r["step"] for r in read_metrics(run_dir, ("train",))) == step  # every step up to it was logged


def test_a_sample_prompt_the_tokenizer_cannot_read_is_a_usage_error(tmp_path: Path, small_corpus: Path, capsys) -> None:
    # the char vocabulary is the corpus alphabet: no '§' in shakespeare
    code, _, err = run_cli(capsys, "train", "--corpus", small_corpus, *TINY, "--out", tmp_path / "run", "--sample", "§1")
    assert code == 2
    assert_one_line_error(err, "--sample", "never saw", "'§'")
    assert not (tmp_path / "run").exists()  # refused before a run folder was made


def test_errors_replace_is_recorded_so_a_resume_rebuilds_the_same_data(tmp_path: Path, shakespeare_text: str, capsys) -> None:
    import shutil

    corpus = tmp_path / "latin1.txt"
    corpus.write_bytes(shakespeare_text.encode("utf-8").replace(b"citizen", b"citiz\xe9n"))
    run_dir = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "--corpus", corpus, *TINY, "--max_iters=2", "--out", run_dir)
    assert code == 1 and "not valid UTF-8" in err and "--errors replace" in err  # the CLI says what to do
    code, _, err = run_cli(capsys, "train", "--corpus", corpus, *TINY, "--max_iters=2", "--errors", "replace", "--out", run_dir)
    assert code == 0, err
    record = json.loads((run_dir / "run.json").read_text())
    assert record["config"]["data"]["encoding_errors"] == "replace"
    shutil.rmtree(record["data"]["store"])  # the cached token data is gone: resume rebuilds it, the same way
    code, out, err = run_cli(capsys, "resume", run_dir, "--max_iters=4")
    assert code == 0, err
    assert "finished at step 4" in out


def test_a_folder_left_by_a_killed_creation_is_reused_and_a_foreign_one_refused(tmp_path: Path, small_corpus: Path, capsys) -> None:
    """A creation killed after the tokenizer but before run.json (kill -9, power loss) leaves only files create_run
    writes: training into that folder again redoes the creation. A folder with anything else stays refused."""
    run_dir = tmp_path / "interrupted"
    run_dir.mkdir()
    (run_dir / "tokenizer.json").write_text('{"half": ')  # cut mid-write by the kill
    (run_dir / f".run.json.{os.getpid() + 1}.tmp").write_text("{")
    code, out, err = run_cli(capsys, "train", "--corpus", small_corpus, *TINY, "--max_iters=2", "--out", run_dir)
    assert code == 0, err
    assert json.loads((run_dir / "run.json").read_text())["name"] == "interrupted"
    assert json.loads((run_dir / "tokenizer.json").read_text())["model"]  # rewritten whole
    assert not list(run_dir.glob(".*.tmp"))
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "tokenizer.json").write_text("{}")
    (foreign / "my notes.txt").write_text("keep me")
    code, _, err = run_cli(capsys, "train", "--corpus", small_corpus, *TINY, "--out", foreign)
    assert code == 2
    assert_one_line_error(err, "not an empty folder")
    assert sorted(p.name for p in foreign.iterdir()) == ["my notes.txt", "tokenizer.json"]
    assert (foreign / "tokenizer.json").read_text() == "{}"
