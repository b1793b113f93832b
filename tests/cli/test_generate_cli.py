"""``shiftstudio generate`` on a real (tiny) trained run."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from shiftstudio.cli import main


def test_generate_streams_reproducible_text(tiny_run: Path, capsys) -> None:
    args = ["generate", str(tiny_run), "--prompt", "ROMEO:", "--max_new_tokens=30", "--seed=3", "--temperature", "1.0"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert main(args) == 0
    assert capsys.readouterr().out == first
    assert 1 <= len(first.rstrip("\n")) <= 30
    assert main([*args[:-1], "0"]) == 0  # greedy


def test_generate_reads_the_prompt_from_stdin(tiny_run: Path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("First Citizen:\n"))
    assert main(["generate", str(tiny_run), "--prompt", "-", "--max_new_tokens=5", "--seed=1", "--stats"]) == 0
    captured = capsys.readouterr()
    assert "tokens/s" in captured.err and "seed 1" in captured.err


@pytest.mark.parametrize(
    "extra, needle, code",
    [
        (["--checkpoint=step-77"], "step-77", 1),
        (["--ema"], "EMA", 1),
        (["--prompt", "naïve ☃"], "never saw", 1),
        (["--temperature=-1"], "temperature", 2),
        (["--top_p=2"], "top_p", 2),
        (["--device=cuda"], "cuda", 1),
    ],
)
def test_generate_errors_are_one_line(tiny_run: Path, capsys, extra, needle, code) -> None:
    if needle == "cuda":
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA: asking for it is not an error")
    assert main(["generate", str(tiny_run), "--max_new_tokens=3", *extra]) == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err and err.startswith("shiftstudio: error:")


def test_generate_on_a_folder_that_is_not_a_run(tmp_path: Path, capsys) -> None:
    assert main(["generate", str(tmp_path)]) == 1
    assert "run" in capsys.readouterr().err


def test_generate_in_a_real_process(tiny_run: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "shiftstudio", "generate", str(tiny_run), "--prompt=First", "--max_new_tokens=12", "--seed=5"],
        capture_output=True, text=True, timeout=120, env=dict(os.environ),
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "" and 1 <= len(proc.stdout.strip("\n")) <= 12
