"""``shiftstudio generate`` on a real (tiny) trained run."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cli_helpers import assert_one_line_error
from shiftstudio.cli import main
from shiftstudio.cli.generate import COMMAND
from shiftstudio.core.generate.filters import SamplingSettings
from shiftstudio.core.generate.generation import Generation
from shiftstudio.core.runs.loading import load_model

CLI_DEFAULTS = {o.name: o.default for o in COMMAND.options}


def expected_generation(run_dir: Path, prompt: str, **options) -> Generation:
    """The oracle: the core's ``Generation`` on the run's latest checkpoint (CPU), with the CLI's defaults for any
    option not given, run to its end. What ``generate`` prints must be its text plus a newline."""
    values = {**CLI_DEFAULTS, **options}
    model, tokenizer, _ = load_model(run_dir)
    settings = SamplingSettings(
        max_new_tokens=values["max_new_tokens"], temperature=values["temperature"], top_k=values["top_k"],
        top_p=values["top_p"], repetition_penalty=values["repetition_penalty"], seed=values["seed"],
    )
    generation = Generation(model, tokenizer, prompt, settings)
    tokens = list(generation)
    assert tokens, "the oracle generated nothing"
    return generation


def test_generate_streams_reproducible_text(tiny_run: Path, capsys) -> None:
    args = ["generate", str(tiny_run), "--prompt", "ROMEO:", "--max_new_tokens=30", "--seed=3", "--device=cpu",
            "--temperature", "1.0"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert main(args) == 0
    assert capsys.readouterr().out == first
    sampled = expected_generation(tiny_run, "ROMEO:", max_new_tokens=30, seed=3, temperature=1.0)
    assert first == sampled.text + "\n"
    assert main([arg.replace("--seed=3", "--seed=4") for arg in args]) == 0
    assert capsys.readouterr().out != first  # the seed is passed through: another seed, another text


def test_greedy_generate_prints_the_cores_greedy_text(tiny_run: Path, capsys) -> None:
    """temperature 0: exactly the core's greedy continuation from the same checkpoint and prompt; the seed is
    irrelevant, so two runs with different seeds print the same."""
    base = ["generate", str(tiny_run), "--prompt", "ROMEO:", "--max_new_tokens=30", "--temperature=0", "--device=cpu"]
    assert main([*base, "--seed=3"]) == 0
    first = capsys.readouterr().out
    assert main([*base, "--seed=11"]) == 0
    second = capsys.readouterr().out
    greedy = expected_generation(tiny_run, "ROMEO:", max_new_tokens=30, temperature=0.0, seed=0)
    assert first == second == greedy.text + "\n"
    sampled = expected_generation(tiny_run, "ROMEO:", max_new_tokens=30, temperature=1.0, seed=3)
    assert greedy.text != sampled.text  # the comparison can tell greedy from sampled text


def test_generate_reads_the_prompt_from_stdin(tiny_run: Path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("First Citizen:\n"))
    assert main(["generate", str(tiny_run), "--prompt", "-", "--max_new_tokens=5", "--seed=1", "--device=cpu", "--stats"]) == 0
    captured = capsys.readouterr()
    expected = expected_generation(tiny_run, "First Citizen:\n", max_new_tokens=5, seed=1)
    assert captured.out == expected.text + "\n"  # the prompt came from stdin: its continuation is printed
    stats = captured.err.strip()
    assert stats.count("\n") == 0 and stats.startswith(f"{expected.n_generated} tokens in ")
    assert "tokens/s" in stats and stats.endswith(f"finished: {expected.finish_reason}, seed 1")


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
    assert_one_line_error(capsys.readouterr().err, str(tmp_path), "is not a run folder")


def test_generate_in_a_real_process(tiny_run: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "shiftstudio", "generate", str(tiny_run), "--prompt=First", "--max_new_tokens=12", "--seed=5",
         "--device=cpu"],
        capture_output=True, text=True, timeout=120, env=dict(os.environ),
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert proc.stdout == expected_generation(tiny_run, "First", max_new_tokens=12, seed=5).text + "\n"


# -- speculative decoding --------------------------------------------------------------


@pytest.fixture
def k2_run(tiny_k2_run: Path) -> Path:
    return tiny_k2_run


def test_speculative_on_a_one_head_model_is_a_one_line_usage_error(tiny_run: Path, capsys) -> None:
    assert main(["generate", str(tiny_run), "--max_new_tokens=3", "--device=cpu", "--speculative", "true"]) == 2
    assert_one_line_error(capsys.readouterr().err, "speculative decoding needs a model with shift >= 2 heads; this one has 1")
    assert main(["generate", str(tiny_run), "--max_new_tokens=3", "--device=cpu", "--compare"]) == 2
    assert_one_line_error(capsys.readouterr().err, "--compare", "this one has 1")
    assert main(["generate", str(tiny_run), "--max_new_tokens=3", "--device=cpu", "--speculative=false"]) == 0


def test_speculative_greedy_prints_plain_greedy_text_with_stats_and_comparison(k2_run: Path, capsys) -> None:
    base = ["generate", str(k2_run), "--prompt", "ROMEO:", "--max_new_tokens=40", "--temperature=0", "--device=cpu"]
    assert main([*base, "--stats", "--compare"]) == 0
    captured = capsys.readouterr()
    assert main([*base, "--speculative", "false"]) == 0
    plain_out = capsys.readouterr().out
    model, tokenizer, _ = load_model(k2_run)
    settings = SamplingSettings(max_new_tokens=40, temperature=0)
    spec = Generation(model, tokenizer, "ROMEO:", settings)
    plain = Generation(model, tokenizer, "ROMEO:", settings, speculative=False)
    list(spec), list(plain)
    assert spec.speculative and not plain.speculative
    assert captured.out == plain_out == spec.text + "\n" == plain.text + "\n"
    lines = captured.err.strip().split("\n")
    assert len(lines) == 3 and "tokens/s" in lines[0]
    assert lines[1].startswith("speculative: ") and "drafts accepted per pass" in lines[1] and " 0:" in lines[1]
    assert lines[2].startswith("compare: plain ") and "speed-up" in lines[2] and lines[2].endswith("x, same text")


def test_draft_tree_option_keeps_the_text_and_refuses_bad_sizes(k2_run: Path, capsys) -> None:
    base = ["generate", str(k2_run), "--prompt", "ROMEO:", "--max_new_tokens=40", "--temperature=0", "--device=cpu"]
    outs = []
    for tree in ("0", "1", "40"):
        assert main([*base, "--draft_tree", tree]) == 0
        outs.append(capsys.readouterr().out)
    assert outs[0] == outs[1] == outs[2] == expected_generation(k2_run, "ROMEO:", max_new_tokens=40, temperature=0).text + "\n"
    assert main([*base, "--draft_tree", "-3"]) == 2
    assert_one_line_error(capsys.readouterr().err, "draft_tree must be between 0")


def test_speculative_sampling_is_seeded_in_the_cli(k2_run: Path, capsys) -> None:
    args = ["generate", str(k2_run), "--prompt", "ROMEO:", "--max_new_tokens=20", "--seed=3", "--device=cpu",
            "--temperature=1.0"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert main(args) == 0
    assert capsys.readouterr().out == first == expected_generation(k2_run, "ROMEO:", max_new_tokens=20, seed=3, temperature=1.0).text + "\n"
