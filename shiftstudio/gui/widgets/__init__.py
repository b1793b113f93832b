"""Reusable widgets of the window, and the one helper every control goes through."""

from __future__ import annotations

from typing import TypeVar

from PySide6.QtWidgets import QWidget

W = TypeVar("W", bound=QWidget)


def named(widget: W, name: str, tip: str) -> W:
    """``widget`` with its objectName (tests and accessibility tools find controls by it) and its tooltip."""
    widget.setObjectName(name)
    widget.setToolTip(tip)
    return widget
