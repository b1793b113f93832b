"""``shiftstudio compare`` on real (tiny) trained runs: the table, --json, one-line errors and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_helpers import assert_one_line_error, run_cli
from shiftstudio.core.runs.compare import compare_runs


@pytest.fixture(scope="module")
def deep_run(make_tiny_run) -> Path:
    """A run that differs from ``tiny_run`` in depth and learning rate."""
    return make_tiny_run("compare-deep", n_layer=2, learning_rate=2e-3)


def test_table_has_a_column_per_run_and_a_row_per_difference_and_figure(tiny_run: Path, deep_run: Path, capsys) -> None:
    code, out, err = run_cli(capsys, "compare", tiny_run, deep_run)
    assert code == 0 and err == ""
    lines = out.splitlines()
    comparison = compare_runs([tiny_run, deep_run])
    assert lines[0].split() == comparison.labels
    # aligned: each run's column starts at the same place on every line, after two spaces
    starts = [lines[0].index(label) for label in comparison.labels]
    ends = [*starts[1:], None]
    table = {line[: starts[0]].strip(): [line[s:e].strip() for s, e in zip(starts, ends)] for line in lines[1:]}
    for line in lines[1:]:
        assert all(line[s - 2 : s] == "  " and line[s] != " " for s in starts), line
    assert list(table) == [*comparison.fields, "best val loss", "last val loss", "steps", "tokens", "wall time"]
    assert table["n_layer"] == ["1", "2"] and table["learning_rate"] == ["0.001", "0.002"]
    assert table["steps"] == ["4/4", "4/4"] and table["tokens"] == ["128", "128"]
    assert table["best val loss"] == [f"{r.best_val_loss:.4f}" for r in comparison.runs]
    assert table["last val loss"] == [f"{r.last_val_loss:.4f}" for r in comparison.runs]


def test_json_matches_compare_runs(tiny_run: Path, deep_run: Path, capsys) -> None:
    code, out, err = run_cli(capsys, "compare", tiny_run, deep_run, "--json")
    assert code == 0 and err == ""
    data = json.loads(out)
    assert data == json.loads(json.dumps(compare_runs([tiny_run, deep_run]).to_json()))
    assert data["runs"][1]["config"]["n_layer"] == 2 and data["runs"][1]["steps"] == 4


def test_one_run_is_a_usage_error(tiny_run: Path, capsys) -> None:
    code, out, err = run_cli(capsys, "compare", tiny_run)
    assert code == 2 and out == ""
    assert_one_line_error(err, "two runs or more")
    code, _, err = run_cli(capsys, "compare", tiny_run, tiny_run, "--colour")
    assert code == 2
    assert_one_line_error(err, "unknown option --colour")


def test_a_folder_that_is_not_a_run_fails_with_one_line(tiny_run: Path, tmp_path: Path, capsys) -> None:
    code, out, err = run_cli(capsys, "compare", tiny_run, tmp_path)
    assert code == 1 and out == ""
    assert_one_line_error(err, str(tmp_path), "not a run folder")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "run.json").write_text('{"schema_version": 99, "config": {}, "data": {}}', encoding="utf-8")
    code, _, err = run_cli(capsys, "compare", tiny_run, broken, "--json")
    assert code == 1
    assert_one_line_error(err, "newer ShiftStudio")
    code, _, err = run_cli(capsys, "compare", tiny_run, tiny_run)
    assert code == 1
    assert_one_line_error(err, "given twice")


def test_help(capsys) -> None:
    code, out, _ = run_cli(capsys, "compare", "--help")
    assert code == 0 and "compare RUN_DIR RUN_DIR..." in out and "--json" in out
    code, out, _ = run_cli(capsys, "--help")
    assert "compare" in out
