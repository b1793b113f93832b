"""The core's layers are a contract: import-linter checks it (as CI does), and it would catch a break."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINT = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"]


def _lint(cwd: Path, pythonpath: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    return subprocess.run(LINT + ["--no-cache"], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_the_contracts_hold() -> None:
    result = _lint(ROOT, ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 kept, 0 broken" in result.stdout


def test_a_core_module_importing_qt_or_a_higher_layer_breaks_them(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "shiftstudio", tmp_path / "shiftstudio", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    data = tmp_path / "shiftstudio" / "core" / "data" / "batches.py"
    data.write_text(data.read_text() + "\n\ndef _leak():\n    from shiftstudio.core.train import trainer  # noqa\n    import PySide6  # noqa\n")
    result = _lint(tmp_path, tmp_path)
    assert result.returncode != 0
    assert "2 broken" in result.stdout, result.stdout
    assert "shiftstudio.core.data.batches -> shiftstudio.core.train.trainer" in result.stdout


def test_every_package_is_installed() -> None:
    """A subpackage missing from pyproject's list works in a source checkout but not from a wheel."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "shiftstudio").rglob("__init__.py")
    }
    assert found <= listed, sorted(found - listed)
