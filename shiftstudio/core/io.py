"""Atomic, durable file writes: the only module that writes a file in place.

Every file ShiftStudio keeps (configs, tokenizers, ``run.json``, checkpoint
state, metrics rewrites, caches, presets) is written to a temporary name
beside its target, flushed to disk, then renamed over the target, so a crash
or a full disk leaves either the old file or the new one, never half of one.
Torch-free and Qt-free: the config and the GUI use it too.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Iterator


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
