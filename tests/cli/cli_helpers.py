"""What the CLI tests share: run the real ``main`` in-process, and check a one-line error."""

from __future__ import annotations

import pytest

from shiftstudio.cli import main


def run_cli(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of ``shiftstudio ARGV...``."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(err: str, *needles: str) -> None:
    """Exactly one non-empty line on stderr, ``shiftstudio: error: ...`` containing every needle; no traceback."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("shiftstudio: error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert "Traceback" not in err
