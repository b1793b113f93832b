"""Fixtures shared by the core tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from shiftstudio.config import RunConfig
from shiftstudio.core.tokens import TokenStore, prepare


@pytest.fixture(autouse=True)
def _restore_threads():
    """The trainer sets the process's thread count from its config: put it back."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture
def store(tmp_path: Path, small_corpus: Path) -> TokenStore:
    """The small corpus prepared with the default (character) tokenizer."""
    return prepare(RunConfig().updated({"corpus": [str(small_corpus)]}).data, out_dir=tmp_path / "store")
