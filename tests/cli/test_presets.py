"""The shipped presets: each is a valid config, and ``cpu-bpe`` trains what it says (a BPE model with the recipe)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_helpers import run_cli
from shiftstudio import paths
from shiftstudio.config import RunConfig
from shiftstudio.presets import load_preset

SHIPPED = sorted(p.stem for p in paths.presets_dir().glob("*.toml"))


def test_the_shipped_presets_are_the_documented_ones() -> None:
    assert SHIPPED == ["cpu-bpe", "cpu-tiny", "gpt2-124m", "gpu-small"]


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_preset_is_a_valid_config_named_for_its_file(name: str) -> None:
    config = load_preset(name)
    assert isinstance(config, RunConfig)
    raw = (paths.presets_dir() / f"{name}.toml").read_text(encoding="utf-8")
    assert f'name = "{name}"' in raw and "description = " in raw
    assert 0 <= config.train.warmup_iters < config.train.max_iters <= config.train.lr_decay_iters


def test_cpu_bpe_is_cpu_tiny_with_a_bpe_tokenizer() -> None:
    tiny, bpe = load_preset("cpu-tiny").to_flat(), load_preset("cpu-bpe").to_flat()
    differs = {k for k in tiny if tiny[k] != bpe[k]}
    assert differs == {"tokenizer", "vocab_size"}, differs
    assert (bpe["tokenizer"], bpe["vocab_size"], bpe["optimizer"], bpe["qk_norm"]) == ("bpe", 2048, "muon", True)


def test_cpu_bpe_trains_a_bpe_model_from_the_command_line(tmp_path: Path, capsys) -> None:
    # A few kB of Python source: what the preset is for (code or prose), small enough for a test.
    source = "".join(p.read_text(encoding="utf-8") for p in sorted(Path(json.__file__).parent.glob("*.py")))
    corpus = tmp_path / "code.txt"
    corpus.write_text(source, encoding="utf-8")
    run_dir = tmp_path / "run"
    code, out, err = run_cli(capsys, "train", "--preset", "cpu-bpe", "--corpus", corpus, "--max_iters=6", "--lr_decay_iters=6",
                             "--warmup_iters=2", "--eval_interval=3", "--eval_iters=1", "--log_interval=3", "--device=cpu",
                             "--num_threads=1", "--out", run_dir, "--sample", "")
    assert code == 0, err
    tokenizer = json.loads((run_dir / "tokenizer.json").read_text(encoding="utf-8"))
    assert tokenizer["model"]["type"] == "BPE" and 256 < len(tokenizer["model"]["vocab"]) <= 2048
    run = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    assert run["config"]["train"]["optimizer"] == "muon" and run["config"]["model"]["qk_norm"] is True
    assert list((run_dir / "checkpoints").glob("*"))  # trained and saved
