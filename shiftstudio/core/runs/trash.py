"""Moving a run folder to the desktop's trash instead of deleting it.

On Linux and the BSDs this follows the freedesktop.org trash specification:
the folder is renamed into ``$XDG_DATA_HOME/Trash/files`` (``~/.local/share``
by default) after a ``.trashinfo`` file recording where it came from and when
has been created beside it in ``Trash/info`` — so the file manager can put it
back. On macOS it goes to ``~/.Trash``. A folder on another disk than the
trash cannot be moved there by a rename: :class:`TrashError` says so, and the
caller may offer to delete it for good. (On Windows the window uses Qt's
recycle-bin call instead.) Torch-free and Qt-free.
"""

from __future__ import annotations

import os
import sys
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

from shiftstudio.core.errors import RunError


class TrashError(RunError):
    """There is no trash this folder can be moved to."""


def trash_dir() -> Path:
    if sys.platform == "darwin":
        return Path.home() / ".Trash"
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "Trash"


def move_to_trash(path: str | Path) -> Path:
    """Move ``path`` (a file or folder) to the trash; returns where it went."""
    path = Path(path).absolute()
    if not path.exists():
        raise RunError(f"{path} does not exist")
    trash = trash_dir()
    files = trash if sys.platform == "darwin" else trash / "files"
    info = None if sys.platform == "darwin" else trash / "info"
    try:
        files.mkdir(parents=True, exist_ok=True, mode=0o700)
        if info is not None:
            info.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise TrashError(f"there is no usable trash at {trash} ({exc.strerror or exc})") from None
    if os.stat(path).st_dev != os.stat(files).st_dev:
        raise TrashError(f"{path.name} is on another disk than the trash ({trash})")
    name, n = path.name, 1
    while True:  # reserve a name: the .trashinfo file is created exclusively first (as the specification asks)
        candidate = name if n == 1 else f"{name}.{n}"
        target = files / candidate
        if info is None:
            if not target.exists():
                break
        else:
            record = info / f"{candidate}.trashinfo"
            try:
                fd = os.open(record, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                n += 1
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(f"[Trash Info]\nPath={quote(str(path))}\nDeletionDate={datetime.now().strftime('%Y-%m-%dT%H:%M:%S')}\n")
            if not target.exists():
                break
            record.unlink()
        n += 1
    try:
        os.rename(path, target)
    except OSError as exc:
        if info is not None:
            (info / f"{candidate}.trashinfo").unlink(missing_ok=True)
        raise TrashError(f"could not move {path.name} to the trash: {exc.strerror or exc}") from None
    return target
