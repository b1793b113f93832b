"""GUI test helpers: a real main window on a tiny corpus, tiny settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# The GUI suite runs wherever the test extras are installed: a missing PySide6 or pytest-qt fails the run
# (an import error here), so a broken install cannot pass as "skipped". Only an explicit
# SHIFTSTUDIO_SKIP_GUI_TESTS=1 skips it (e.g. on a machine without a display stack); CI never sets it.
SKIP_GUI_TESTS = os.environ.get("SHIFTSTUDIO_SKIP_GUI_TESTS") == "1"

if SKIP_GUI_TESTS:
    collect_ignore_glob = ["test_*.py"]  # (their imports need PySide6)

    def pytest_report_header() -> str:
        return "SHIFTSTUDIO_SKIP_GUI_TESTS=1: the GUI tests are not collected"

else:
    import PySide6  # noqa: F401 - the test extras must be installed
    import pytestqt  # noqa: F401

# A model that trains in well under a second per dozen steps on a CPU.
TINY = {
    "n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 32, "batch_size": 4,
    "max_iters": 40, "warmup_iters": 5, "lr_decay_iters": 40, "eval_interval": 10, "eval_iters": 2,
    "log_interval": 2, "device": "cpu", "dtype": "float32", "compile": False, "num_threads": 1,
}


def expected_device_text(torch_threads: int) -> str:
    """What the device probe says on this machine, for a process whose torch has ``torch_threads`` threads."""
    from shiftstudio.core.train.device import DeviceInfo, resolve_device, resolve_dtype
    from shiftstudio.gui.session import default_cpu_threads

    device = resolve_device("auto")
    threads = min(torch_threads, default_cpu_threads())
    text = DeviceInfo(device, resolve_dtype("auto", device), threads).describe()
    if device.type == "cpu":
        assert text == f"CPU ({threads} thread{'s' if threads != 1 else ''}, float32)"
    return text


@pytest.fixture
def tiny_corpus(tmp_path: Path, shakespeare_text: str) -> Path:
    path = tmp_path / "tiny.txt"
    path.write_text(shakespeare_text[:6000], encoding="utf-8")
    return path


@pytest.fixture
def empty_window(qtbot):
    """The real main window, built and shown, nothing opened; on teardown a run still going is stopped and the
    window's threads are waited for."""
    from shiftstudio.gui.main_window import MainWindow
    from shiftstudio.gui.settings import Settings

    win = MainWindow(Settings())
    qtbot.addWidget(win)
    win.confirm_stop_on_close = lambda: True
    win.ask_stop_launched_run = lambda: "stop"  # (a run launched with torchrun: never a modal box in a test)
    win.show()
    win.build()
    yield win
    runs = win.ctx.runs
    if runs.is_active:
        runs.stop()
    runs.wait(30_000)
    win.ctx.session.shutdown()


@pytest.fixture
def window(qtbot, empty_window, tiny_corpus: Path):
    """The real main window, built, with the tiny corpus open and tiny settings."""
    win = empty_window
    with qtbot.waitSignal(win.ctx.session.corpus_opened, timeout=20_000):
        win.open_corpus([str(tiny_corpus)])
    win.ctx.config.load_flat(TINY)
    assert win.ctx.config.is_valid, win.ctx.config.error
    return win


@pytest.fixture
def curves(qtbot):
    """The curves view alone, 900 x 600, on an empty metrics store."""
    from shiftstudio.gui.metrics_store import MetricsStore
    from shiftstudio.gui.plots import CurvesView

    view = CurvesView(MetricsStore())
    qtbot.addWidget(view)
    view.resize(900, 600)
    view.show()
    return view
