"""Look and feel: Fusion with a light or dark palette, the app's style sheet and icon."""

from __future__ import annotations

import sys
from pathlib import Path

from PySide6.QtCore import QObject, Qt
from PySide6.QtGui import QAction, QActionGroup, QColor, QIcon, QPalette
from PySide6.QtWidgets import QApplication

from shiftstudio import paths

THEMES = ("system", "light", "dark")

# Accent shared by the palettes, the plots and the message bar.
ACCENT = "#3d7be0"


def resource(kind: str, name: str) -> Path | None:
    try:
        path = paths.resources_dir() / kind / name
    except FileNotFoundError:
        return None
    return path if path.is_file() else None


def app_icon() -> QIcon:
    path = resource("icons", "shiftstudio.svg")
    return QIcon(str(path)) if path else QIcon()


def _dark_palette() -> QPalette:
    p = QPalette()
    window, base, alt, text = QColor("#2b2d31"), QColor("#1f2023"), QColor("#303236"), QColor("#e6e6e6")
    disabled = QColor("#7d8087")
    p.setColor(QPalette.Window, window)
    p.setColor(QPalette.WindowText, text)
    p.setColor(QPalette.Base, base)
    p.setColor(QPalette.AlternateBase, alt)
    p.setColor(QPalette.ToolTipBase, QColor("#3a3c41"))
    p.setColor(QPalette.ToolTipText, text)
    p.setColor(QPalette.PlaceholderText, disabled)
    p.setColor(QPalette.Text, text)
    p.setColor(QPalette.Button, QColor("#35373c"))
    p.setColor(QPalette.ButtonText, text)
    p.setColor(QPalette.BrightText, QColor("#ff6b6b"))
    p.setColor(QPalette.Light, QColor("#45474d"))
    p.setColor(QPalette.Midlight, QColor("#3b3d42"))
    p.setColor(QPalette.Mid, QColor("#26272b"))
    p.setColor(QPalette.Dark, QColor("#18191b"))
    p.setColor(QPalette.Shadow, QColor("#0d0d0e"))
    p.setColor(QPalette.Highlight, QColor(ACCENT))
    p.setColor(QPalette.HighlightedText, QColor("#ffffff"))
    p.setColor(QPalette.Link, QColor("#7fb0ff"))
    for role in (QPalette.WindowText, QPalette.Text, QPalette.ButtonText):
        p.setColor(QPalette.Disabled, role, disabled)
    p.setColor(QPalette.Disabled, QPalette.Base, window)
    return p


def _light_palette() -> QPalette:
    p = QApplication.style().standardPalette()
    p.setColor(QPalette.Highlight, QColor(ACCENT))
    p.setColor(QPalette.HighlightedText, QColor("#ffffff"))
    return p


def system_prefers_dark(app: QApplication) -> bool:
    try:
        return app.styleHints().colorScheme() == Qt.ColorScheme.Dark
    except AttributeError:  # Qt < 6.5
        return False


def is_dark(palette: QPalette | None = None) -> bool:
    palette = palette or QApplication.palette()
    return palette.color(QPalette.Window).lightness() < 128


def apply_theme(app: QApplication, theme: str = "system") -> None:
    """Fusion everywhere but native macOS in 'system' mode; then palette and style sheet."""
    theme = theme if theme in THEMES else "system"
    if not (sys.platform == "darwin" and theme == "system"):
        app.setStyle("Fusion")
    dark = theme == "dark" or (theme == "system" and system_prefers_dark(app))
    app.setPalette(_dark_palette() if dark else _light_palette())
    sheet = resource("styles", "app.qss")
    text = sheet.read_text(encoding="utf-8") if sheet else ""
    app.setStyleSheet(text.replace("@accent", ACCENT))


def theme_actions(parent: QObject, current: str) -> QActionGroup:
    """One checkable action per theme for a menu (named ``theme_<name>_action``, the theme in its data),
    ``current`` checked; the group's ``triggered`` tells which was picked."""
    group = QActionGroup(parent)
    for theme in THEMES:
        action = QAction(theme.capitalize(), parent, checkable=True)
        action.setObjectName(f"theme_{theme}_action")
        action.setData(theme)
        action.setChecked(theme == current)
        group.addAction(action)
    return group
