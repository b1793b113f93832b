"""The errors a person can act on, in one small hierarchy.

Everything the core raises *on purpose* — a missing or binary file, a setting
out of range, a corrupt checkpoint, a prompt the tokenizer cannot read — is a
:class:`ShiftStudioError` whose message is one line for a person. The CLI
prints that line and exits non-zero; the window shows it as a message with no
traceback. Any other exception is a bug and is shown with its traceback.

:class:`Cancelled` is not an error: the user asked a long operation to stop.

Imports nothing but the standard library, so every layer (and the torch-free config) can use it.
"""

from __future__ import annotations

import errno
import os


class ShiftStudioError(Exception):
    """An expected problem with the user's input or files; ``str()`` is one readable line."""


class ConfigError(ShiftStudioError):
    """A setting is missing, unknown, of the wrong type or out of range."""


class DeviceError(ConfigError):
    """The requested device or precision is not available on this machine."""


class CorpusError(ShiftStudioError):
    """The corpus cannot be used (missing, empty, binary, not UTF-8, malformed records)."""


class NotUtf8Error(CorpusError):
    """A text file is not valid UTF-8. Each front end says what to do about it (the CLI's ``--errors
    replace``, the window's "Replace invalid bytes")."""

    def __init__(self, path: object, offset: int) -> None:
        self.path, self.offset = path, offset
        super().__init__(f"{path} is not valid UTF-8 (first bad byte at offset {offset})")


class TokenizerError(ShiftStudioError):
    """The tokenizer cannot be built or loaded."""


class DataError(ShiftStudioError):
    """The token data cannot serve the requested windows (too short, missing, corrupt)."""


class RunError(ShiftStudioError):
    """A run folder cannot be used: not a run, corrupt, from a newer ShiftStudio, or not matching its data."""


class RunLocked(RunError):
    """Another process trains the run: one run, one writer. ``holder`` says who (a :class:`LockInfo`)."""

    def __init__(self, message: str, holder: object = None) -> None:
        super().__init__(message)
        self.holder = holder


class CorruptCheckpoint(RunError):
    """A checkpoint's files are missing, truncated or unreadable (an earlier checkpoint may still be fine)."""


class IncompatibleCheckpoint(RunError):
    """A checkpoint is readable but does not fit the model it is loaded into (other shapes or names)."""


class DiskFull(ShiftStudioError, OSError):
    """A write failed because the disk (or the user's quota) is full. It is an :class:`OSError` too (``errno``
    ENOSPC or EDQUOT, ``filename`` the path), so code that handles failed writes handles it; ``path`` is the
    file or folder that was being written (its final name, not a temporary one)."""

    def __init__(self, path: object, code: int = errno.ENOSPC) -> None:
        OSError.__init__(self, code, os.strerror(code), str(path))
        self.path = path

    def __str__(self) -> str:
        return f"disk full while writing {self.path} ({self.strerror}): free some space"

    def __reduce__(self) -> tuple:
        return type(self), (self.path, self.errno)


class GenerationError(ShiftStudioError):
    """The prompt or the sampling settings cannot be used."""


class Cancelled(Exception):
    """The user cancelled a long operation (not an error: nothing is reported)."""


def one_line(exc: BaseException | str, limit: int | None = None) -> str:
    """The message of ``exc`` folded to a single line (its type name if it has none), cut to ``limit``
    characters when given (a library's message can quote the whole of a bad input)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if limit is None or len(text) <= limit else text[: limit - 1] + "…"
