"""Regenerate the app's desktop data from its sources; commit what it writes.

- ``resources/icons/hicolor/NxN/apps/io.github.shiftstudio.ShiftStudio.png`` for
  N in 16 … 512, rendered from ``resources/icons/shiftstudio.svg`` with Qt's SVG
  renderer (the same one the window uses for its icon);
- ``packaging/linux/io.github.shiftstudio.ShiftStudio.desktop`` and
  ``….metainfo.xml``, the packagers' copies of what ``shiftstudio
  --install-desktop`` writes (``shiftstudio.desktop`` is their source; their
  ``Exec`` is the plain ``shiftstudio`` command).

Usage: ``python packaging/make_icons.py`` (from the repository root or
anywhere; Qt runs offscreen). ``--check`` writes nothing and exits 1 when a
file is out of date.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's shiftstudio, even when another is installed

from shiftstudio import desktop  # noqa: E402

ICONS = ROOT / "resources" / "icons"
LINUX = ROOT / "packaging" / "linux"


def render_png(svg: Path, size: int) -> bytes:
    """``svg`` drawn on a transparent ``size`` x ``size`` canvas, as PNG bytes."""
    from PySide6.QtCore import QBuffer, QByteArray, QIODevice, Qt
    from PySide6.QtGui import QImage, QPainter
    from PySide6.QtSvg import QSvgRenderer

    renderer = QSvgRenderer(str(svg))
    if not renderer.isValid():
        raise SystemExit(f"make_icons: cannot read {svg}")
    image = QImage(size, size, QImage.Format.Format_ARGB32_Premultiplied)
    image.fill(Qt.GlobalColor.transparent)
    painter = QPainter(image)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
    renderer.render(painter)
    painter.end()
    data = QByteArray()
    buffer = QBuffer(data)
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    image.convertToFormat(QImage.Format.Format_ARGB32).save(buffer, "PNG")
    buffer.close()
    return bytes(data.data())


def wanted() -> dict[Path, bytes]:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtGui import QGuiApplication

    app = QGuiApplication.instance() or QGuiApplication([sys.argv[0]])  # Qt's image code wants one
    files: dict[Path, bytes] = {}
    svg = ICONS / desktop.SVG_ICON
    for size in desktop.ICON_SIZES:
        files[ICONS / "hicolor" / f"{size}x{size}" / "apps" / f"{desktop.APP_ID}.png"] = render_png(svg, size)
    files[LINUX / desktop.DESKTOP_FILE] = desktop.desktop_entry(["shiftstudio"]).encode("utf-8")
    files[LINUX / desktop.METAINFO_FILE] = desktop.metainfo().encode("utf-8")
    app.processEvents()  # (the application lives until the images are made)
    return files


PIXEL_TOLERANCE = 2  # per channel: Qt's antialiasing differs by a level on a few edge pixels between CPUs


def same_image(old: bytes, new: bytes) -> bool:
    """Do two PNGs hold the same picture, up to ``PIXEL_TOLERANCE`` per channel? (Re-rendering the SVG on another
    machine moves a few antialiased edge pixels by one level; a changed icon moves far more.)"""
    from PySide6.QtGui import QImage

    a, b = (QImage.fromData(x).convertToFormat(QImage.Format.Format_ARGB32) for x in (old, new))
    if a.isNull() or b.isNull() or a.size() != b.size():
        return False
    pa, pb = bytes(a.constBits()), bytes(b.constBits())
    return len(pa) == len(pb) and all(abs(x - y) <= PIXEL_TOLERANCE for x, y in zip(pa, pb) if x != y)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a file is out of date")
    args = parser.parse_args()
    stale = []
    for path, data in wanted().items():
        if path.is_file() and (path.read_bytes() == data or (path.suffix == ".png" and same_image(path.read_bytes(), data))):
            continue  # (a picture within the tolerance is not rewritten either: no churn between machines)
        stale.append(path)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    for path in stale:
        print(("out of date: " if args.check else "wrote ") + str(path.relative_to(ROOT)))
    if not stale:
        print("all up to date")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
