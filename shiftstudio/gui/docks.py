"""The main window's pane layout: one dock per pane of the registry, tabbed by area, sized to fit; the
"center" panes as tabs in the middle; and an action per pane (its Ctrl+N shortcut) that brings it forward.

A pane taller or wider than its dock scrolls inside it, so the window still fits
a 1366x768 laptop screen. The default sizes give the bottom panes (inspector,
playground) about half the height: the Train pane's curves have small minimum
heights, so the separator above the bottom panes can move a long way up.
The View menu gets each pane's "go to" action (with its shortcut) and, in a
submenu, each dock's show/hide toggle.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QDockWidget, QFrame, QMainWindow, QScrollArea, QTabWidget, QWidget

from shiftstudio.gui.panes import PaneSpec

AREAS = {"left": Qt.LeftDockWidgetArea, "right": Qt.RightDockWidgetArea, "bottom": Qt.BottomDockWidgetArea}
DEFAULT_LEFT_WIDTH = 470  # at least; wider if a left pane needs it (up to 40 % of the window)
DEFAULT_BOTTOM_SHARE = 0.42  # of the window's height, for the inspector / playground
BOTTOM_MIN_HEIGHT = 300  # the bottom panes' default height at least (a 1366x768 screen leaves ~700 px)
CENTER_MIN_HEIGHT = 300  # ...and the Train pane's at least, by default (the user may shrink it further)


def focus_first_control(pane: QWidget) -> None:
    """Put the keyboard focus on the pane's first visible control that takes it (else on the pane)."""
    for child in pane.findChildren(QWidget):
        if child.isVisible() and child.isEnabled() and child.focusPolicy() & Qt.TabFocus:
            child.setFocus(Qt.ShortcutFocusReason)
            return
    pane.setFocus(Qt.ShortcutFocusReason)


class DockLayout:
    """Adds panes to a window as docks, tabbing the panes of one area together (the first one in front), or
    as tabs of the middle; makes each pane's "go to" action."""

    def __init__(self, window: QMainWindow, center: QTabWidget):
        self.window = window
        self.center = center
        self.first_in_area: dict[str, QDockWidget] = {}
        self.panes_in_area: dict[str, list[QWidget]] = {}
        self.docks: dict[str, QDockWidget] = {}
        self.panes: dict[str, QWidget] = {}
        self.focus_actions: list[QAction] = []  # one per pane, in registry order, with the pane's shortcut
        self.on_demand: dict[str, str] = {}  # "tab" panes: key -> title
        center.tabCloseRequested.connect(self._on_center_tab_close_requested)

    def add(self, spec: PaneSpec, pane: QWidget) -> QDockWidget | None:
        """Place ``pane`` as the spec says: a dock (in a scroll area; returned) or a tab of the middle (None)."""
        self.panes[spec.key] = pane
        self.focus_actions.append(self._focus_action(spec))
        if spec.area == "center":
            self.center.addTab(pane, spec.title)
            return None
        if spec.area == "tab":  # a middle tab that appears when asked for (and closes): none by default
            self.on_demand[spec.key] = spec.title
            pane.setParent(self.center)
            pane.hide()
            return None
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
        toggle.setToolTip(f"Show or hide the {spec.title} pane")
        self.docks[spec.key] = dock
        return dock

    def _focus_action(self, spec: PaneSpec) -> QAction:
        action = QAction(f"Go to {spec.title}", self.window)
        action.setObjectName(f"focus_{spec.key}_action")
        if spec.shortcut:
            action.setShortcut(QKeySequence(spec.shortcut))
        tip = f"Bring the {spec.title} pane forward (shown if hidden) and put the keyboard focus in it"
        action.setToolTip(tip + (f" ({spec.shortcut})" if spec.shortcut else ""))
        action.setStatusTip(tip)
        action.triggered.connect(lambda checked=False, key=spec.key: self.raise_pane(key))
        self.window.addAction(action)  # the shortcut works wherever the focus is
        return action

    def raise_pane(self, key: str, focus: bool = True) -> None:
        """Show the pane in front (its dock shown and raised, or its tab current) and, with ``focus``, give it
        the keyboard focus."""
        pane = self.panes.get(key)
        if pane is None:
            return
        dock = self.docks.get(key)
        if dock is not None:
            dock.show()
            dock.raise_()
        else:
            if key in self.on_demand and self.center.indexOf(pane) < 0:
                index = self.center.addTab(pane, self.on_demand[key])
                self.center.setTabsClosable(True)
                bar = self.center.tabBar()
                for i in range(self.center.count()):  # only the tabs that come and go can be closed
                    if self.center.widget(i) not in [self.panes[k] for k in self.on_demand]:
                        bar.setTabButton(i, bar.ButtonPosition.RightSide, None)
                        bar.setTabButton(i, bar.ButtonPosition.LeftSide, None)
                self.center.setTabToolTip(index, f"{self.on_demand[key]} (close the tab to put it away)")
            self.center.setCurrentWidget(pane)
        if focus:
            focus_first_control(pane)

    def _on_center_tab_close_requested(self, index: int) -> None:
        if self.center.widget(index) in [self.panes[k] for k in self.on_demand]:
            self.center.removeTab(index)

    def is_shown(self, key: str) -> bool:
        """The pane is in the window now (a dock that is not closed, a middle tab that is open)."""
        pane = self.panes.get(key)
        if pane is None:
            return False
        dock = self.docks.get(key)
        return dock.isVisible() if dock is not None else self.center.indexOf(pane) >= 0

    def finish(self) -> None:
        """Bring the first pane of each area to the front and give the areas their default sizes."""
        window, first = self.window, self.first_in_area
        for dock in first.values():
            dock.raise_()
        if "left" in first:
            # the panes' preferred widths (a form in a scroll area asks for its whole width there, and only a few
            # letters as its minimum), and room for a vertical scroll bar
            needed = max(max(pane.minimumSizeHint().width(), pane.sizeHint().width())
                         for pane in self.panes_in_area["left"]) + 24
            width = min(max(DEFAULT_LEFT_WIDTH, needed), int(window.width() * 0.4))
            window.resizeDocks([first["left"]], [width], Qt.Horizontal)
        if "bottom" in first:
            window.resizeDocks([first["bottom"]], [default_bottom_height(window.height())], Qt.Vertical)


def default_bottom_height(window_height: int) -> int:
    """The bottom panes' default height in a window this tall: about half, leaving the Train pane its share."""
    share = int(window_height * DEFAULT_BOTTOM_SHARE)
    return max(min(share, window_height - CENTER_MIN_HEIGHT - 90), min(BOTTOM_MIN_HEIGHT, window_height // 2))
