"""Shared test set-up: no test touches a real profile, Qt runs offscreen."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

SHARED_DATA = Path(__file__).resolve().parents[1] / "resources"


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path_factory.mktemp("shiftstudio-home")
    monkeypatch.setenv("SHIFTSTUDIO_HOME", str(home))
    return home


@pytest.fixture(autouse=True)
def _restore_threads():
    """A trainer sets the process's torch thread count from its config: put it back after each test."""
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture
def shakespeare_text() -> str:
    """The first ~20 KB of the sample corpus: real text, small enough to be fast."""
    return (SHARED_DATA / "tinyshakespeare.txt").read_text(encoding="utf-8")[:20_000]


@pytest.fixture
def small_corpus(tmp_path: Path, shakespeare_text: str) -> Path:
    path = tmp_path / "small.txt"
    path.write_text(shakespeare_text, encoding="utf-8")
    return path


TINY_RUN_SETTINGS = {
    "n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 16, "batch_size": 2, "max_iters": 4, "eval_interval": 2,
    "eval_iters": 1, "log_interval": 2, "warmup_iters": 0, "lr_decay_iters": 4, "device": "cpu", "compile": False,
}


def _trained_tiny_run(base: Path, **overrides) -> Path:
    """A real run folder under ``base``, trained for 4 steps on 20 KB of shakespeare (``TINY_RUN_SETTINGS`` with
    ``overrides``)."""
    from shiftstudio.config import RunConfig
    from shiftstudio.core.runs.folder import prepare_and_create
    from shiftstudio.core.train.trainer import Trainer

    corpus = base / "corpus.txt"
    corpus.write_text((SHARED_DATA / "tinyshakespeare.txt").read_text(encoding="utf-8")[:20_000], encoding="utf-8")
    old = os.environ.get("SHIFTSTUDIO_HOME")
    os.environ["SHIFTSTUDIO_HOME"] = str(base / "home")
    try:
        config = RunConfig().updated({"corpus": [str(corpus)], **TINY_RUN_SETTINGS, **overrides})
        run_dir = prepare_and_create(config, out_dir=base / "run")
        last = list(Trainer(run_dir).run())[-1]
        assert type(last).__name__ == "FinishedReport", last
    finally:
        if old is None:
            os.environ.pop("SHIFTSTUDIO_HOME", None)
        else:
            os.environ["SHIFTSTUDIO_HOME"] = old
    return run_dir


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real run folder, trained for 4 steps on 20 KB of shakespeare (made once per session; treat it as read-only)."""
    return _trained_tiny_run(tmp_path_factory.mktemp("tiny-run"))


@pytest.fixture(scope="session")
def make_tiny_run(tmp_path_factory: pytest.TempPathFactory):
    """Builds runs like :func:`tiny_run` with other settings: ``make_tiny_run(name, shift=4, max_iters=30)``."""
    return lambda name, **overrides: _trained_tiny_run(tmp_path_factory.mktemp(name), **overrides)


@pytest.fixture(scope="session")
def tiny_k2_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """As :func:`tiny_run`, with shift = 2 (two heads)."""
    return _trained_tiny_run(tmp_path_factory.mktemp("tiny-k2-run"), shift=2)


@pytest.fixture
def poison_checkpoint():
    """``poison(run_dir, step)``: see :func:`_poison_checkpoint`."""
    return _poison_checkpoint


def _poison_checkpoint(run_dir: Path, step: int) -> None:
    """Put a NaN into one weight of checkpoint ``step`` (same file size, so the checkpoint still reads as whole):
    the next training step's loss is NaN. How tests make a run diverge now that an absurd learning rate is
    refused as a setting."""
    from safetensors.torch import load_file, save_file

    from shiftstudio.core.runs.layout import MODEL_FILE, RunLayout

    path = RunLayout(run_dir).checkpoint_dir(step) / MODEL_FILE
    tensors = load_file(str(path))
    name = next(k for k in tensors if k.endswith("mlp.c_fc.weight"))
    tensors[name][0, 0] = float("nan")
    size = path.stat().st_size
    save_file(tensors, str(path), metadata={"format": "pt", "shiftstudio_step": str(step)})
    assert path.stat().st_size == size


def _gpt2_folder(folder: Path, *, n_layer: int = 2, n_head: int = 2, n_embd: int = 32, n_positions: int = 128,
                 vocab: int = 400, tokenizer: str = "vocab", tie: bool = True, seed: int = 0,
                 activation: str = "gelu_new") -> Path:
    """A real Hugging Face GPT-2 folder made by ``transformers`` (random weights, every tensor randomised, so a
    zero bias or a unit norm cannot hide a mapping bug) with a byte-level BPE tokenizer trained on shakespeare:
    ``vocab.json`` + ``merges.txt`` (``tokenizer="vocab"``) or the ``tokenizer.json`` that transformers writes
    (``"json"``). ``<|endoftext|>`` is id 0."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging as hf_logging

    from shiftstudio.core.data.tokenizer import train_bpe

    hf_logging.disable_progress_bar()  # its bar would land on the stderr that CLI tests read

    text = (SHARED_DATA / "tinyshakespeare.txt").read_text(encoding="utf-8")[:60_000].splitlines()
    folder.mkdir(parents=True, exist_ok=True)
    bpe = train_bpe(iter(text), vocab, 2)
    bpe.tk.model.save(str(folder))  # vocab.json + merges.txt
    cfg = GPT2Config(n_layer=n_layer, n_head=n_head, n_embd=n_embd, n_positions=n_positions, vocab_size=bpe.vocab_size,
                     bos_token_id=0, eos_token_id=0, tie_word_embeddings=tie, activation_function=activation)
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("ln_1.weight") or name.endswith("ln_2.weight") or name.endswith("ln_f.weight"):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.02 * torch.randn_like(p))
    model.save_pretrained(folder)
    if tokenizer == "json":
        hf_tok = AutoTokenizer.from_pretrained(folder)
        hf_tok.save_pretrained(folder)
        for name in ("vocab.json", "merges.txt"):
            (folder / name).unlink(missing_ok=True)
    return folder


@pytest.fixture
def make_gpt2(tmp_path: Path):
    """Builds tiny real GPT-2 folders: ``make_gpt2(name, **shape)`` (see :func:`_gpt2_folder`)."""
    return lambda name="gpt2", **kwargs: _gpt2_folder(tmp_path / name, **kwargs)


@pytest.fixture(scope="session")
def gpt2_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny GPT-2 folder for the session (vocab.json + merges.txt; treat it as read-only)."""
    return _gpt2_folder(tmp_path_factory.mktemp("hf") / "gpt2")
