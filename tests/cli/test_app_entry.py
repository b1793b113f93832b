"""The bundle's executable (packaging/app_entry.py) as the Python of a torchrun job: the window runs
``EXE -m torch.distributed.run … -m shiftstudio …`` and torchrun starts each rank as ``EXE -u -m shiftstudio …``.

A frozen app's ``sys.executable`` is the app, not a Python. The test builds the same situation without
PyInstaller: an executable script whose ``sys.executable`` is itself and whose body is the bundle's entry point,
so torchrun (running inside it) starts its ranks through it, as in the bundle."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENTRY = ROOT / "packaging" / "app_entry.py"
sys.path.insert(0, str(ROOT / "packaging"))

from app_entry import module_run  # noqa: E402


def test_module_runs_are_recognised_with_interpreter_flags_first() -> None:
    assert module_run(["-u", "-m", "shiftstudio", "train", "-m", "x"]) == ("shiftstudio", ["train", "-m", "x"], True)
    assert module_run(["-m", "torch.distributed.run", "--standalone"]) == ("torch.distributed.run", ["--standalone"], False)
    assert module_run(["train", "--corpus", "a.txt"]) is None  # the app's own command line
    assert module_run(["-u"]) is None and module_run(["-m"]) is None


@pytest.fixture
def app_exe(tmp_path: Path) -> Path:
    """An executable that is not a Python by name: like the bundle's, its sys.executable is itself."""
    exe = tmp_path / "ShiftStudio"
    exe.write_text(f"#!{sys.executable}\nimport sys\nsys.executable = {str(exe)!r}\nsys.path.insert(0, {str(ROOT)!r})\n"
                   f"__file__ = {str(ENTRY)!r}\nexec(compile(open(__file__).read(), __file__, 'exec'))\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return exe


def test_any_other_module_is_refused_in_one_line(app_exe: Path) -> None:
    out = subprocess.run([str(app_exe), "-m", "http.server"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == ["shiftstudio: error: this executable runs only torch.distributed.run "
                                               "and shiftstudio with -m, not http.server"]


def test_a_torchrun_job_through_the_app_executable_trains_on_two_ranks(app_exe: Path, tmp_path: Path, shakespeare_text: str) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(shakespeare_text, encoding="utf-8")
    run_dir = tmp_path / "run"
    args = [str(app_exe), "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "shiftstudio",
            "train", "--corpus", str(corpus), "--n_layer", "1", "--n_head", "2", "--n_embd", "16", "--block_size", "16",
            "--batch_size", "2", "--gradient_accumulation_steps", "2", "--max_iters", "4", "--eval_interval", "4",
            "--eval_iters", "1", "--log_interval", "1", "--warmup_iters", "0", "--device", "cpu", "--out", str(run_dir)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("finished at step 4") == 1  # rank 0 printed it: each rank ran `EXE -u -m shiftstudio`
    assert "× 2 ranks (torchrun)" in out.stdout  # the device line: two processes trained it
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step-4"]
