"""One run, one writer: the lock file a training process holds.

The process that trains a run opens ``RUN_DIR/lock.json``, takes an exclusive
operating-system lock on it (``flock`` on POSIX, ``msvcrt.locking`` on
Windows) and writes who it is: pid, host, start time and what it is (the CLI,
the window, a ``torchrun`` rank). The system releases that lock when the
process ends, however it ends — so a lock file that is there but not locked
is *stale*: its process died without removing it (killed, crashed, the
machine went down). Nothing is guessed from pids, which get reused.

A normal end removes the file. The library calls a run whose log has no final
report after its last start and whose lock is stale *crashed*.

Torch-free and Qt-free.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from shiftstudio.core.errors import RunLocked
from shiftstudio.core.runs.layout import RunLayout

ACQUIRE_TRIES = 20  # a lister's brief shared lock can stand in the way for a moment: retry for ~0.2 s


@dataclass(frozen=True)
class LockInfo:
    """Who holds (or held) a run's lock."""

    pid: int
    host: str
    started: str  # ISO 8601, UTC
    purpose: str = ""  # "shiftstudio train", "the window", "torchrun rank 0", ...

    def describe(self) -> str:
        since = self.started.replace("T", " ").split("+")[0]
        what = f" ({self.purpose})" if self.purpose else ""
        return f"pid {self.pid} on {self.host}{what} since {since} UTC"


def _try_lock(fd: int, exclusive: bool) -> bool:
    """Take the OS lock on ``fd`` without waiting; False when someone else holds it."""
    if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
        import msvcrt

        try:
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    import fcntl

    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        return True
    except OSError:
        return False


def _unlock(fd: int) -> None:
    if sys.platform == "win32":  # pragma: no cover
        import msvcrt

        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        return
    import fcntl

    fcntl.flock(fd, fcntl.LOCK_UN)


def _parse(text: str) -> LockInfo | None:
    try:
        data = json.loads(text)
        return LockInfo(int(data["pid"]), str(data["host"]), str(data["started"]), str(data.get("purpose", "")))
    except (ValueError, KeyError, TypeError):
        return None


def read_lock(run_dir: str | Path) -> LockInfo | None:
    """What the lock file says (None when there is none or it cannot be read)."""
    try:
        return _parse(RunLayout(run_dir).lock_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return None


def lock_state(run_dir: str | Path) -> tuple[str, LockInfo | None]:
    """``("free", None)`` (no lock file), ``("held", info)`` (a live process trains the run) or
    ``("stale", info)`` (a lock file whose process is gone)."""
    path = RunLayout(run_dir).lock_file
    try:
        fd = os.open(path, os.O_RDONLY if sys.platform != "win32" else os.O_RDWR)
    except FileNotFoundError:
        return "free", None
    except OSError:
        return "free", None
    try:
        info = read_lock(run_dir)
        if _try_lock(fd, exclusive=False):
            _unlock(fd)
            return "stale", info
        return "held", info
    finally:
        os.close(fd)


class RunLock:
    """The lock of one run, held by this process until :meth:`release` (or the process ends).

    ``RunLock.acquire(run_dir, purpose)`` raises :class:`RunLocked` naming the holder when a live process
    has it; a stale lock file is taken over."""

    def __init__(self, run_dir: Path, fd: int, info: LockInfo, took_over: LockInfo | None) -> None:
        self.run_dir, self._fd, self.info = run_dir, fd, info
        self.took_over = took_over  # the stale lock found (its process died without a final word), if any

    @classmethod
    def acquire(cls, run_dir: str | Path, purpose: str = "") -> "RunLock":
        run_dir = Path(run_dir)
        path = RunLayout(run_dir).lock_file
        stale = read_lock(run_dir) if path.exists() else None
        for _ in range(ACQUIRE_TRIES):
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            if not _try_lock(fd, exclusive=True):
                os.close(fd)
                time.sleep(0.01)
                continue
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino  # not a file its last holder just removed
            except FileNotFoundError:
                same = False
            if not same:
                _unlock(fd)
                os.close(fd)
                continue
            info = LockInfo(os.getpid(), socket.gethostname(), datetime.now(timezone.utc).isoformat(timespec="seconds"),
                            purpose)
            data = json.dumps(asdict(info)).encode("utf-8")
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, data)
            os.fsync(fd)
            return cls(run_dir, fd, info, stale)
        holder = read_lock(run_dir)
        who = holder.describe() if holder else "another process"
        raise RunLocked(f"{run_dir.name} is being trained by {who}: one run has one writer; "
                        "open it in the window to follow it, or wait until it stops", holder)

    def release(self) -> None:
        """Remove the lock file and let go (a normal end: nothing stale is left)."""
        if self._fd < 0:
            return
        try:
            RunLayout(self.run_dir).lock_file.unlink(missing_ok=True)
        except OSError:
            pass
        try:
            _unlock(self._fd)
        finally:
            os.close(self._fd)
            self._fd = -1

    @property
    def held(self) -> bool:
        return self._fd >= 0

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
