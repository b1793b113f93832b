"""Atomic writes (core/io.py) and the expected-error hierarchy (core/errors.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shiftstudio.core import errors, io


def test_a_write_replaces_the_file_whole_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "run.json"
    io.write_json(target, {"a": 1})
    io.write_json(target, {"a": 2, "b": [1, 2]})
    assert json.loads(target.read_text()) == {"a": 2, "b": [1, 2]}
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]


def test_a_failed_write_keeps_the_old_content(tmp_path: Path) -> None:
    target = tmp_path / "config.toml"
    io.write_text(target, "old = 1\n")
    with pytest.raises(TypeError):
        io.write_json(target, {"not json": object()})  # fails while serialising: nothing written
    with pytest.raises(RuntimeError):
        with io.atomic_path(target) as tmp:
            tmp.write_text("half of the new content")
            raise RuntimeError("the library writing by path failed half-way")
    assert target.read_text() == "old = 1\n"
    assert [p.name for p in tmp_path.iterdir()] == ["config.toml"]


def test_atomic_path_serves_libraries_that_write_by_file_name(tmp_path: Path) -> None:
    target = tmp_path / "tokenizer.json"
    with io.atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp != target
        tmp.write_bytes(b"{}")
        assert not target.exists()  # nothing shows until the block ends
    assert target.read_bytes() == b"{}"


def test_every_expected_error_is_one_family_and_cancelled_is_not_an_error() -> None:
    expected = [
        errors.ConfigError, errors.DeviceError, errors.CorpusError, errors.TokenizerError, errors.DataError,
        errors.RunError, errors.CorruptCheckpoint, errors.IncompatibleCheckpoint, errors.GenerationError,
    ]
    assert all(issubclass(e, errors.ShiftStudioError) for e in expected)
    assert not issubclass(errors.Cancelled, errors.ShiftStudioError)
    # a bug that raises ValueError must not pass for bad input
    assert not issubclass(ValueError, errors.ShiftStudioError) and not issubclass(errors.ShiftStudioError, ValueError)
    assert errors.one_line(errors.CorpusError("a.txt is not\nvalid UTF-8")) == "a.txt is not valid UTF-8"
    assert errors.one_line(KeyError()) == "KeyError"
