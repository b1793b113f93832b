"""A full disk while ShiftStudio writes: a checkpoint, the metrics log, a token store, a config or settings file.

Each case runs twice where it can: on a real, small ``tmpfs`` that the test fills up (``tmpfs``: real ENOSPC from
the kernel, through every library's own writes; it needs the right to mount, else it is skipped), and with the
lowest-level write the code uses made to fail with ``OSError(ENOSPC)`` after writing part of its data
(``patched``: the fault-injection seam — safetensors' ``save_file`` failing as it does, after half a file; the
log's ``os.write``; the token files' and ``core/io``'s file objects).

What must hold: the previous checkpoint survives and loads; the trainer ends with a ``FailedReport`` that says
"disk full", the path and the last good checkpoint; nothing half-written stays behind (no temporary file or
folder, no half line in the log, no half token store in the cache); the next start works once there is space
again; the CLI prints one line and exits non-zero.
"""

from __future__ import annotations

import errno
import json
import os
import pathlib
import shutil
import subprocess
from pathlib import Path

import pytest
import safetensors.torch
from safetensors import SafetensorError

from fault_injection import FillsUp
from shiftstudio.cli import main
from shiftstudio.config import RunConfig
from shiftstudio.core import io as core_io
from shiftstudio.core.data.store import META_FILE, TokenStore, prepare
from shiftstudio.core.errors import DiskFull, ShiftStudioError
from shiftstudio.core.runs import checkpoint as ckpt
from shiftstudio.core.runs.checkpoint import list_checkpoints, load_checkpoint
from shiftstudio.core.runs.folder import create_run, load_run, save_run_record
from shiftstudio.core.runs.layout import RunLayout
from shiftstudio.core.runs.lock import lock_state
from shiftstudio.core.runs.metrics import read_metrics
from shiftstudio.core.train.reports import CheckpointReport, FailedReport, FinishedReport
from shiftstudio.core.train.trainer import Trainer

ENOSPC_TEXT = "Error while serializing: I/O error: No space left on device (os error 28)"  # safetensors' own words
TINY = {"n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 16, "batch_size": 2, "max_iters": 6, "warmup_iters": 0,
        "lr_decay_iters": 6, "eval_interval": 100, "eval_iters": 1, "log_interval": 1, "checkpoint_interval": 2,
        "device": "cpu", "num_threads": 1, "compile": False}


class SmallDisk:
    """A real tmpfs of a few megabytes, filled up on demand by a file that takes all but ``leave`` bytes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.filler = root / ".filler"

    def free(self) -> int:
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize

    def fill(self, leave: int = 0) -> None:
        self.filler.unlink(missing_ok=True)
        with open(self.filler, "wb") as f:
            os.posix_fallocate(f.fileno(), 0, max(4096, self.free() - leave))
        assert self.free() <= leave

    def empty(self) -> None:
        self.filler.unlink(missing_ok=True)


@pytest.fixture(params=["tmpfs", "patched"])
def disk(request, tmp_path: Path):
    """``SmallDisk`` (a real 4 MB tmpfs, skipped where this machine does not let the test mount one) or None
    (the patched variant: the test makes the writes fail itself)."""
    if request.param == "patched":
        yield None
        return
    root = tmp_path / "disk"
    root.mkdir()
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(root)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield SmallDisk(root)
    finally:
        if subprocess.run(["umount", str(root)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(root)], capture_output=True)


def _save_file_on_a_full_disk(tensors, filename, metadata=None) -> None:
    """safetensors' ``save_file`` when the disk fills up halfway: half a file, then its I/O error."""
    data = safetensors.torch.save(tensors, metadata=metadata)
    with open(filename, "wb") as f:
        f.write(data[: len(data) // 2])
    raise SafetensorError(ENOSPC_TEXT)


def _token_files_fill_up(seam: pytest.MonkeyPatch, room: int) -> None:
    """The token store's id files (written through ``Path.open`` in its temporary folder) meet a full disk."""
    real_open = pathlib.Path.open

    def open_(self, mode="r", *args, **kwargs):
        f = real_open(self, mode, *args, **kwargs)
        return FillsUp(f, room) if "w" in mode and self.parent.name.startswith(".prepare-") else f

    seam.setattr(pathlib.Path, "open", open_)


def _leftovers(folder: Path) -> list[str]:
    """Temporary files or folders (ours start with a dot) anywhere under ``folder``, the filler aside."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*") if p.name != ".filler")


def _whole_lines(path: Path) -> list[dict]:
    data = path.read_bytes()
    assert data.endswith(b"\n"), "the log ends with half a line"
    return [json.loads(line) for line in data.splitlines()]


@pytest.fixture
def store(tmp_path: Path, small_corpus: Path) -> TokenStore:
    return prepare(RunConfig().updated({"corpus": [str(small_corpus)]}).data, out_dir=tmp_path / "store")


def _new_run(store: TokenStore, where: Path, **overrides) -> Path:
    config = RunConfig().updated({"corpus": store.meta["sources"], **TINY, **overrides})
    return create_run(config, store, where)


# -- a checkpoint ------------------------------------------------------------------------------


def test_a_checkpoint_on_a_full_disk_fails_the_run_cleanly_and_keeps_the_last_one(disk, tmp_path, store) -> None:
    run = _new_run(store, (disk.root if disk else tmp_path) / "run")
    reports = []
    with pytest.MonkeyPatch.context() as seam:
        for report in Trainer(run, store).run():
            reports.append(report)
            if isinstance(report, CheckpointReport) and report.step == 2:  # then the disk fills up
                if disk:
                    disk.fill(leave=12 << 10)  # room for log lines, not for a checkpoint
                else:
                    seam.setattr(ckpt, "save_file", _save_file_on_a_full_disk)
    failed = reports[-1]
    assert isinstance(failed, FailedReport) and failed.expected, failed
    step4 = RunLayout(run).checkpoint_dir(4)
    assert failed.step == 4 and failed.message.startswith(f"disk full while writing {step4} ")
    assert failed.message.endswith(": free some space; the last good checkpoint is step 2"), failed.message
    assert "\n" not in failed.message and not failed.detail
    # the previous checkpoint survives and loads; nothing half-written is left for the next start to trip on
    assert [c.step for c in list_checkpoints(run)] == [2]
    assert load_checkpoint(RunLayout(run).checkpoint_dir(2)).step == 2
    assert _leftovers(run) == []
    records = _whole_lines(RunLayout(run).metrics_file)
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 3, 4]
    assert lock_state(run)[0] == "free"
    # space again: the run resumes from step 2 and finishes
    if disk:
        disk.empty()
    last = list(Trainer(run, store).run())[-1]
    assert isinstance(last, FinishedReport) and last.step == 6, last
    assert load_checkpoint(RunLayout(run).checkpoint_dir(6)).step == 6
    assert [r["step"] for r in read_metrics(run, ("train",))] == [1, 2, 3, 4, 5, 6]  # each step once
    assert _leftovers(run) == []


# -- the metrics log -----------------------------------------------------------------------------


def test_a_metrics_line_on_a_full_disk_is_taken_back_whole_and_fails_the_run(tmp_path, store) -> None:
    """Patched only: on a real disk the log's next page and a checkpoint race to be the first write refused."""
    run = _new_run(store, tmp_path / "run", max_iters=9, lr_decay_iters=9, checkpoint_interval=3)
    log = RunLayout(run).metrics_file
    real_write = os.write
    state = {"armed": False, "partial": False}

    def write(fd: int, data) -> int:  # the log's write: half of a line fits, then the disk is full
        if state["armed"] and log.exists() and os.fstat(fd).st_ino == log.stat().st_ino:
            if not state["partial"]:
                state["partial"] = True
                return real_write(fd, bytes(data)[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    reports = []
    with pytest.MonkeyPatch.context() as seam:
        seam.setattr(os, "write", write)
        for report in Trainer(run, store).run():
            reports.append(report)
            if isinstance(report, CheckpointReport) and report.step == 3:
                state["armed"] = True  # the next line (step 4's) meets a full disk
    failed = reports[-1]
    assert isinstance(failed, FailedReport) and failed.step == 4, failed
    assert failed.message == f"disk full while writing {log} (No space left on device): free some space; the last good checkpoint is step 3"
    assert state["partial"]  # half a line was written …
    records = _whole_lines(log)  # … and taken back: the log is whole lines, up to the last one that fitted
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 3]
    assert read_metrics(run)[-1]["kind"] == "checkpoint"  # (the failure itself could not be logged either)
    assert _leftovers(run) == [] and lock_state(run)[0] == "free"
    last = list(Trainer(run, store).run())[-1]
    assert isinstance(last, FinishedReport) and last.step == 9, last
    assert [r["step"] for r in read_metrics(run, ("train",))] == list(range(1, 10))


# -- a token store -------------------------------------------------------------------------------


def test_a_token_store_on_a_full_disk_leaves_no_half_store(disk, tmp_path, small_corpus, monkeypatch) -> None:
    home = (disk.root if disk else tmp_path) / "home"
    monkeypatch.setenv("SHIFTSTUDIO_HOME", str(home))  # the cache, where `train` puts token stores, on that disk
    data = RunConfig().updated({"corpus": [str(small_corpus)]}).data
    out = (disk.root if disk else tmp_path) / "prepared"
    with pytest.MonkeyPatch.context() as seam:
        if disk:
            (home / "cache").mkdir(parents=True)
            disk.fill(leave=16 << 10)  # 20 KB of text is 40 KB of uint16 ids
        else:
            _token_files_fill_up(seam, 16 << 10)
        with pytest.raises(DiskFull) as caught:
            prepare(data)
        stores = home / "cache" / "stores"
        message = str(caught.value)
        assert message.startswith(f"disk full while writing {stores}{os.sep}") and message.endswith(": free some space")
        assert isinstance(caught.value, ShiftStudioError) and isinstance(caught.value, OSError)
        assert caught.value.errno == errno.ENOSPC and "\n" not in message
        assert not stores.exists() or list(stores.iterdir()) == []  # no half store (nor its temporary folder)
        with pytest.raises(DiskFull, match="disk full while writing .*prepared"):
            prepare(data, out_dir=out)
        assert not out.exists() and _leftovers(out.parent) == []
    if disk:
        disk.empty()
    fine = prepare(data)  # space again: built whole, and a second open finds it
    assert fine.dir.parent == stores and (fine.dir / META_FILE).is_file() and len(fine.train) > 0
    assert TokenStore.open(fine.dir).meta == fine.meta


# -- a config, a settings file, run.json, a tokenizer ------------------------------------------------


def test_a_config_or_settings_file_on_a_full_disk_keeps_the_old_one(disk, tmp_path, tiny_run) -> None:
    root = disk.root if disk else tmp_path
    config_file, settings_file = root / "mine.toml", root / "settings.json"
    old = RunConfig().updated({"n_layer": 2})
    old.save(config_file)
    core_io.write_json(settings_file, {"theme": "dark"})
    run = root / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("checkpoints", "lock.json"))
    record = load_run(run)
    from shiftstudio.core.data.tokenizer import TextTokenizer

    tokenizer = TextTokenizer.load(RunLayout(run).tokenizer_file)
    before = {p: p.read_bytes() for p in (config_file, settings_file, RunLayout(run).run_file, RunLayout(run).tokenizer_file)}
    seam = pytest.MonkeyPatch()
    if disk:
        disk.fill(leave=0)
    else:  # core/io's own file objects: the only place files are written in place
        real_open = open
        seam.setattr(core_io, "open", lambda *a, **k: FillsUp(real_open(*a, **k), 100), raising=False)
    writes = [
        (config_file, lambda: RunConfig().updated({"n_layer": 3}).save(config_file)),
        (settings_file, lambda: core_io.write_json(settings_file, {"theme": "light", "pad": "x" * 100_000})),
        (RunLayout(run).run_file, lambda: save_run_record(run, {**record, "notes": "y" * 100_000})),
    ]
    if disk:  # tokenizers writes by file name, in Rust: only a real disk can refuse it
        writes.append((RunLayout(run).tokenizer_file, lambda: tokenizer.save(RunLayout(run).tokenizer_file)))
    try:
        for path, write in writes:
            with pytest.raises(OSError) as caught:
                write()
            assert caught.value.errno == errno.ENOSPC, caught.value
            assert caught.value.filename == str(path)  # the file being written, not a temporary name
    finally:
        seam.undo()
    assert {p: p.read_bytes() for p in before} == before  # every old file whole
    assert _leftovers(root) == []  # and no temporary file beside it
    assert RunConfig.load(config_file) == old
    if disk:
        disk.empty()
    RunConfig().updated({"n_layer": 3}).save(config_file)
    assert RunConfig.load(config_file).model.n_layer == 3


# -- the command line --------------------------------------------------------------------------------


def test_the_cli_says_disk_full_in_one_line_and_exits_1(disk, tmp_path, store, small_corpus, capsys) -> None:
    root = disk.root if disk else tmp_path
    run = _new_run(store, root / "run")
    assert main(["resume", str(run), "--max_iters=2"]) == 0
    capsys.readouterr()
    with pytest.MonkeyPatch.context() as seam:
        if disk:
            disk.fill(leave=16 << 10)
        else:
            seam.setattr(ckpt, "save_file", _save_file_on_a_full_disk)
        assert main(["resume", str(run), "--max_iters=6"]) == 1
    _, err = capsys.readouterr()
    lines = err.splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    step4 = RunLayout(run).checkpoint_dir(4)
    assert lines[0] == (f"shiftstudio: error: training failed at step 4: disk full while writing {step4} "
                        "(No space left on device): free some space; the last good checkpoint is step 2")
    assert [c.step for c in list_checkpoints(run)] == [2] and _leftovers(run) == []

    # prepare: the token files do not fit
    out_dir = root / "data"
    with pytest.MonkeyPatch.context() as seam:
        if disk:
            disk.fill(leave=16 << 10)
        else:
            _token_files_fill_up(seam, 1000)
        assert main(["prepare", str(small_corpus), "--out", str(out_dir)]) == 1
    _, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0] == f"shiftstudio: error: disk full while writing {out_dir} (No space left on device): free some space"
    assert not out_dir.exists() and _leftovers(root) == []
