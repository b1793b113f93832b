"""The main window's dock layout: one dock per pane of the registry, tabbed by area, sized to fit.

A pane taller or wider than its dock scrolls inside it, so the window still fits
a 1366x768 laptop screen. Each dock's show/hide action (with the pane's
shortcut) goes into the View menu.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QKeySequence
from PySide6.QtWidgets import QDockWidget, QFrame, QMainWindow, QScrollArea, QWidget

from shiftstudio.gui.panes import PaneSpec

AREAS = {"left": Qt.LeftDockWidgetArea, "right": Qt.RightDockWidgetArea, "bottom": Qt.BottomDockWidgetArea}
DEFAULT_LEFT_WIDTH = 470  # at least; wider if a left pane needs it (up to 40 % of the window)
DEFAULT_BOTTOM_SHARE = 0.36  # of the window's height, for the inspector / playground


class DockLayout:
    """Adds panes to a window as docks, tabbing the panes of one area together (the first one in front)."""

    def __init__(self, window: QMainWindow):
        self.window = window
        self.first_in_area: dict[str, QDockWidget] = {}
        self.panes_in_area: dict[str, list[QWidget]] = {}

    def add(self, spec: PaneSpec, pane: QWidget) -> QDockWidget:
        """A dock holding ``pane`` (in a scroll area), in the spec's area; its toggle action is named and
        has the spec's shortcut."""
        window = self.window
        dock = QDockWidget(spec.title.replace("&", "&&"), window)  # '&' would be read as a shortcut mark
        dock.setObjectName(f"{spec.key}_dock")
        scroll = QScrollArea(dock)
        scroll.setObjectName(f"{spec.key}_scroll")
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.NoFrame)
        scroll.setWidget(pane)
        dock.setWidget(scroll)
        dock.setFeatures(QDockWidget.DockWidgetMovable | QDockWidget.DockWidgetFloatable | QDockWidget.DockWidgetClosable)
        window.addDockWidget(AREAS.get(spec.area, Qt.LeftDockWidgetArea), dock)
        if spec.area in self.first_in_area:
            window.tabifyDockWidget(self.first_in_area[spec.area], dock)
        else:
            self.first_in_area[spec.area] = dock
        self.panes_in_area.setdefault(spec.area, []).append(pane)
        toggle = dock.toggleViewAction()
        toggle.setObjectName(f"view_{spec.key}_action")
        if spec.shortcut:
            toggle.setShortcut(QKeySequence(spec.shortcut))
        toggle.setToolTip(f"Show or hide the {spec.title} pane")
        return dock

    def finish(self) -> None:
        """Bring the first pane of each area to the front and give the areas their default sizes."""
        window, first = self.window, self.first_in_area
        for dock in first.values():
            dock.raise_()
        if "left" in first:
            needed = max(pane.minimumSizeHint().width() for pane in self.panes_in_area["left"]) + 24
            width = min(max(DEFAULT_LEFT_WIDTH, needed), int(window.width() * 0.4))
            window.resizeDocks([first["left"]], [width], Qt.Horizontal)
        if "bottom" in first:
            window.resizeDocks([first["bottom"]], [max(260, int(window.height() * DEFAULT_BOTTOM_SHARE))], Qt.Vertical)
