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


@pytest.fixture
def shakespeare_text() -> str:
    """The first ~20 KB of the sample corpus: real text, small enough to be fast."""
    return (SHARED_DATA / "tinyshakespeare.txt").read_text(encoding="utf-8")[:20_000]


@pytest.fixture
def small_corpus(tmp_path: Path, shakespeare_text: str) -> Path:
    path = tmp_path / "small.txt"
    path.write_text(shakespeare_text, encoding="utf-8")
    return path
