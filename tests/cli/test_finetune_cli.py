"""``shiftstudio train --init_from``: fine-tuning from the command line, and its bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_helpers import assert_one_line_error, run_cli

SMALL = ["--max_iters", "2", "--eval_interval", "2", "--eval_iters", "1", "--batch_size", "2", "--block_size", "32",
         "--warmup_iters", "0", "--lr_decay_iters", "2", "--device", "cpu"]


def test_lora_fine_tune_of_a_gpt2_folder_trains_and_info_says_so(gpt2_folder: Path, small_corpus: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    code, out, err = run_cli(capsys, "train", "--corpus", small_corpus, "--init_from", gpt2_folder, "--lora_rank", "4",
                             "--out", run, *SMALL)
    assert code == 0, err
    record = json.loads((run / "run.json").read_text())
    assert record["config"]["model"]["n_embd"] == 32 and record["config"]["model"]["activation"] == "gelu_tanh"
    assert record["origin"]["kind"] == "hf" and record["model"]["n_trainable"] < record["model"]["n_params"]
    code, out, err = run_cli(capsys, "info", run)
    assert code == 0, err
    assert "starts from  gpt2 2x32" in out and "LoRA rank 4" in out


@pytest.mark.parametrize("problem,needle", [
    ("missing", "does not exist"),
    ("not-a-model", "neither a run folder nor a Hugging Face model folder"),
    ("bert", "not a GPT-2 model: model_type 'bert'"),
    ("rank", "lora_rank (64) must not exceed the model width n_embd (32)"),
    ("scratch-lora", "lora_rank > 0 adapts a pretrained model"),
])
def test_bad_sources_are_one_line_and_write_nothing(make_gpt2, small_corpus: Path, tmp_path: Path, capsys,
                                                    problem: str, needle: str) -> None:
    extra: list[str] = []
    if problem == "missing":
        source = tmp_path / "nowhere"
    elif problem == "not-a-model":
        source = tmp_path / "plain"
        source.mkdir()
    elif problem == "bert":
        source = make_gpt2("bert")
        cfg = json.loads((source / "config.json").read_text())
        (source / "config.json").write_text(json.dumps({**cfg, "model_type": "bert"}))
    else:
        source = make_gpt2("ok")
        extra = ["--lora_rank", "64"] if problem == "rank" else ["--lora_rank", "4"]
    capsys.readouterr()  # whatever making the folder printed
    run = tmp_path / "run"
    args = ["train", "--corpus", small_corpus, "--out", run, *SMALL, *extra]
    if problem != "scratch-lora":
        args += ["--init_from", source]
    code, _, err = run_cli(capsys, *args)
    assert code != 0
    assert_one_line_error(err, needle)
    assert not run.exists()
