"""Atomic, durable file writes: the only module that writes a file in place.

Every file ShiftStudio keeps (configs, tokenizers, ``run.json``, checkpoint
state, metrics rewrites, caches, presets) is written to a temporary name
beside its target, flushed to disk, then renamed over the target, so a crash
or a full disk leaves either the old file or the new one, never half of one.
A full disk, however the writing library reports it (an ``OSError`` about a
temporary name, or the plain exception of a Rust library such as tokenizers),
becomes an ``OSError`` with errno ENOSPC naming the file being written (the
layers above turn it into :class:`~shiftstudio.core.errors.DiskFull`).
Torch-free and Qt-free: the config and the GUI use it too.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
from pathlib import Path
from typing import Any, Iterator

DISK_FULL_ERRNOS = frozenset(e for e in (errno.ENOSPC, getattr(errno, "EDQUOT", None)) if e is not None)
# How libraries that do their own I/O in Rust say it (std::io::Error's text and kind; Windows' wording)
_DISK_FULL_WORDS = ("no space left on device", "os error 28", "storagefull", "disk quota exceeded",
                    "quotaexceeded", "not enough space on the disk")


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` says a write failed for want of space (ENOSPC, or the quota: EDQUOT)."""
    if isinstance(exc, OSError):
        return exc.errno in DISK_FULL_ERRNOS
    text = str(exc).lower()
    return any(word in text for word in _DISK_FULL_WORDS)


def disk_full_code(exc: BaseException) -> int:
    """The errno a disk-full error stands for (EDQUOT for a quota, else ENOSPC)."""
    code = getattr(exc, "errno", None)
    return code if code in DISK_FULL_ERRNOS else errno.ENOSPC


@contextlib.contextmanager
def writing(path: str | os.PathLike) -> Iterator[None]:
    """Writes to ``path`` happen in this block: a full disk, however it is reported (even about a temporary
    file inside), is raised as an ``OSError`` about ``path`` (its ``filename``)."""
    try:
        yield
    except Exception as exc:
        if is_disk_full(exc):
            code = disk_full_code(exc)
            raise OSError(code, os.strerror(code), str(path)) from exc
        raise


def fsync_file(path: str | os.PathLike) -> None:
    """Flush a file that was written by someone else (a library writing by path) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename inside ``path`` durable (POSIX); a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def replace(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Rename ``src`` over ``dst`` and make the rename durable."""
    os.replace(src, dst)
    fsync_dir(Path(dst).parent)


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, durable: bool = True) -> Iterator[Path]:
    """A temporary path to write ``path``'s new content to (for libraries that write by file name);
    renamed over ``path`` when the block ends without an exception, deleted otherwise."""
    path = Path(path)
    tmp = _tmp_name(path)
    try:
        with writing(path):
            yield tmp
            if durable:
                fsync_file(tmp)
            os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if durable:
        fsync_dir(path.parent)


def write_bytes(path: str | os.PathLike, data: bytes, *, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` atomically (and durably unless ``durable=False``, for caches)."""
    with atomic_path(path, durable=False) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
    if durable:
        fsync_dir(Path(path).parent)


def write_text(path: str | os.PathLike, text: str, *, durable: bool = True) -> None:
    write_bytes(path, text.encode("utf-8"), durable=durable)


def write_json(path: str | os.PathLike, data: Any, *, indent: int | None = 2, durable: bool = True) -> None:
    write_text(path, json.dumps(data, indent=indent), durable=durable)
