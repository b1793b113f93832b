"""Fault-injection seams the tests share (importable from every test folder: tests/ is on the path)."""

from __future__ import annotations

import errno
import os


class FillsUp:
    """A file object whose disk is full after ``room`` more bytes: the write that does not fit writes what fits
    and raises ENOSPC, as a buffered write does."""

    def __init__(self, f, room: int) -> None:
        self._f, self._room = f, room

    def write(self, data) -> int:
        data = bytes(data)
        n = max(0, min(len(data), self._room))
        self._f.write(data[:n])
        self._room -= n
        if n < len(data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return n

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._f.close()
