"""The ``shiftstudio`` command opening the desktop app, in a real process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.gui.conftest import expected_device_text

ROOT = Path(__file__).resolve().parents[2]

# Opens the app through the command line entry point; once the corpus and the device are in, prints
# what the window shows and closes it, as a user would.
DRIVER = """
import sys
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication
from shiftstudio.cli import main
from shiftstudio.gui.app import application

application()

def check():
    windows = [w for w in QApplication.topLevelWidgets() if w.objectName() == "main_window"]
    session = windows[0].ctx.session if windows else None
    if session is None or session.corpus is None or session.device is None or session.tokenizer is None:
        QTimer.singleShot(100, check)
        return
    w = windows[0]
    import torch  # (the device probe imported it)

    print("THREADS", torch.get_num_threads(), flush=True)
    print("CORPUS", session.corpus.paths, "PRESET", w.ctx.config.preset, "STATUS", w.status_bar.device_label.text(), flush=True)
    w.close()

QTimer.singleShot(100, check)
sys.exit(main(sys.argv[1:]))
"""


def run_app(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "SHIFTSTUDIO_HOME": str(tmp_path / "home"), "QT_QPA_PLATFORM": "offscreen"}
    return subprocess.run([sys.executable, "-c", DRIVER, *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=180)


def test_no_arguments_opens_the_sample_corpus_with_the_preset_for_the_device(tmp_path: Path) -> None:
    import torch

    out = run_app(tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    threads = int(next(l for l in lines if l.startswith("THREADS")).split()[1])
    line = next(l for l in lines if l.startswith("CORPUS"))
    preset = "gpu-small" if torch.cuda.is_available() else "cpu-tiny"  # a CUDA GPU found: its preset replaces the default
    assert line == f"CORPUS [] PRESET {preset} STATUS {expected_device_text(threads)}"  # [] = the sample corpus
    assert "QThread" not in out.stderr and "Traceback" not in out.stderr


def test_corpus_option_opens_that_corpus(tmp_path: Path, small_corpus: Path) -> None:
    out = run_app(tmp_path, "--corpus", str(small_corpus))
    assert out.returncode == 0, out.stderr
    line = next(l for l in out.stdout.splitlines() if l.startswith("CORPUS"))
    assert str(small_corpus) in line
    assert "QThread" not in out.stderr and "Traceback" not in out.stderr


def test_a_missing_run_folder_is_a_clear_error(tmp_path: Path) -> None:
    env = {**os.environ, "SHIFTSTUDIO_HOME": str(tmp_path / "home"), "QT_QPA_PLATFORM": "offscreen"}
    out = subprocess.run([sys.executable, "-m", "shiftstudio", str(tmp_path / "nope")], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert out.returncode == 2
    assert "run folder not found" in out.stderr
