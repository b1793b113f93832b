"""``shiftstudio gui --self-test`` in a child process: the real window trains, samples, reports and exits."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def self_test(tmp_path: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["SHIFTSTUDIO_HOME"] = str(tmp_path / "users-home")  # the self-test must not write here
    env.pop("SHIFTSTUDIO_LOG", None)
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run([sys.executable, "-m", "shiftstudio", "gui", "--self-test", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=timeout)


def report_rows(out: str) -> dict[str, str]:
    rows = {}
    for line in out.splitlines()[1:]:
        key, _, value = line.strip().partition(":")
        rows[key] = value.strip()
    return rows


def test_the_self_test_trains_generates_and_reports(tmp_path: Path) -> None:
    done = self_test(tmp_path, "--timeout", "400")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "ShiftStudio self-test passed", done.stdout
    rows = report_rows(done.stdout)
    assert list(rows) == ["version", "platform", "device", "corpus", "window", "training", "generated", "generation", "total"]
    assert rows["version"].startswith("ShiftStudio ") and "torch " in rows["version"] and "PySide6 " in rows["version"]
    assert "offscreen" in rows["platform"]
    assert rows["device"]
    assert rows["corpus"].startswith("sample (tinyshakespeare.txt) · ") and "characters" in rows["corpus"]
    assert rows["window"].startswith("shown ")
    assert rows["training"].startswith("30 steps in ") and "loss " in rows["training"] and "val loss " in rows["training"]
    first, last = (float(x) for x in rows["training"].split("· loss ")[1].split(" ·")[0].split(" -> "))
    assert last < first  # it learned something
    assert rows["generated"].startswith("ROMEO:") and len(rows["generated"]) > len("ROMEO:")
    assert "60 tokens in " in rows["generation"]
    assert rows["total"].endswith(" s after the process started")
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "users-home").exists(), "the self-test wrote into the user's SHIFTSTUDIO_HOME"


def test_a_failing_self_test_exits_1_with_one_line(tmp_path: Path) -> None:
    done = self_test(tmp_path, "--corpus", str(tmp_path / "missing.txt"))
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines == [f"shiftstudio: self-test failed: the corpus could not be read: not found: {tmp_path / 'missing.txt'}"]
    assert "passed" not in done.stdout
    assert not (tmp_path / "users-home").exists()


def test_the_timeout_ends_a_self_test_that_takes_too_long(tmp_path: Path) -> None:
    done = self_test(tmp_path, "--timeout", "0.5", timeout=120)
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines == ["shiftstudio: self-test failed: timed out after 0.5 s (raise it with --timeout SECONDS)"]
