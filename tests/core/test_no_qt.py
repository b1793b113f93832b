"""The core, the config and the CLI never import Qt (checked in a fresh interpreter)."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import shiftstudio.cli
import shiftstudio.core


def _headless_modules() -> list[str]:
    names = ["shiftstudio", "shiftstudio.config", "shiftstudio.paths", "shiftstudio.cli", "shiftstudio.__main__"]
    names += [m.name for m in pkgutil.walk_packages(shiftstudio.core.__path__, "shiftstudio.core.")]
    names += [f"shiftstudio.cli.{m.name}" for m in pkgutil.iter_modules(shiftstudio.cli.__path__) if m.name != "gui"]
    return names


def test_core_and_cli_do_not_import_qt() -> None:
    modules = _headless_modules()
    # every subpackage's modules are walked, not only the top level
    for name in ("shiftstudio.core.train.reports", "shiftstudio.core.generate.decoder", "shiftstudio.core.runs.layout"):
        assert name in modules
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('PySide6', 'pyqtgraph', 'shiboken6'))\n"
        "assert not bad, bad\n"
        "print(len(sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
