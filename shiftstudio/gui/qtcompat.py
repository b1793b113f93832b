"""Work around a reference-counting bug of PySide6 6.12.0 on Python < 3.12.

That release returns ``None``, ``True`` and ``False`` from its C++ wrappers
without taking a reference (``label.setText(...)``, ``signal.emit(...)``,
``obj.sender()`` …). Each call then takes one reference away from the
singleton, and after some thousands of calls Python aborts with "Fatal
Python error: none_dealloc" (or bool_dealloc). From Python 3.12 these
singletons are immortal and the bug is harmless. Where it is detected, we
make them practically immortal too by adding a large constant to their
reference counts once; they are never freed anyway. Pinning PySide6 to a
release without the bug is the real fix (see the package's dependencies).
"""

from __future__ import annotations

import ctypes
import logging
import sys

log = logging.getLogger(__name__)

_BOOST = 1 << 40
_applied = False


def singletons_leak() -> bool:
    """Does a void PySide6 call take a reference from None? (False on Python 3.12+.)"""
    if sys.version_info >= (3, 12):
        return False
    from PySide6.QtCore import QObject

    probe = QObject()
    before = sys.getrefcount(None)
    for _ in range(32):
        probe.setObjectName("probe")
    return sys.getrefcount(None) <= before - 16


def apply() -> bool:
    """Apply the work-around once if this PySide6 needs it; returns whether it did."""
    global _applied
    if _applied or not singletons_leak():
        return _applied
    for obj in (None, True, False):
        ref = ctypes.c_ssize_t.from_address(id(obj))  # ob_refcnt is PyObject's first field
        ref.value += _BOOST
    _applied = True
    import PySide6

    log.info("PySide6 %s leaks references to None/True/False on this Python; work-around applied", PySide6.__version__)
    return True
