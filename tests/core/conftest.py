"""Fixtures shared by the core tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from shiftstudio.config import RunConfig
from shiftstudio.core.data.store import TokenStore, prepare


@pytest.fixture
def store(tmp_path: Path, small_corpus: Path) -> TokenStore:
    """The small corpus prepared with the default (character) tokenizer."""
    return prepare(RunConfig().updated({"corpus": [str(small_corpus)]}).data, out_dir=tmp_path / "store")
