"""``shiftstudio --install-desktop`` / ``--uninstall-desktop`` under a temporary XDG_DATA_HOME, and the shipped
desktop data (icons, packagers' copies of the entry and the metainfo)."""

from __future__ import annotations

import configparser
import os
import shlex
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from shiftstudio import desktop
from shiftstudio.cli import main

REPO = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CACHES = {"mimeinfo.cache", "icon-theme.cache"}  # what the desktop's own tools may write when asked to refresh


@pytest.fixture
def xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "share"
    monkeypatch.setenv("XDG_DATA_HOME", str(home))
    return home


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file() and p.name not in CACHES}


def read_entry(path: Path) -> configparser.SectionProxy:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # keys are case-sensitive
    parser.read(path, encoding="utf-8")
    return parser["Desktop Entry"]


def test_install_writes_the_entry_icons_and_metainfo_and_uninstall_removes_only_them(xdg: Path, capsys) -> None:
    # things of other apps that must survive
    others = [xdg / "applications" / "other.desktop", xdg / "icons" / "hicolor" / "48x48" / "apps" / "other.png",
              xdg / "metainfo" / "other.metainfo.xml", xdg / "icons" / "hicolor" / "scalable" / "apps" / "other.svg"]
    for path in others:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("not ours")
    before = files_under(xdg)

    assert main(["--install-desktop"]) == 0
    out = capsys.readouterr().out
    added = files_under(xdg) - before
    assert added == set(desktop.installed_paths(xdg))
    for path in added:
        assert str(path) in out  # it says what it wrote

    entry_path = xdg / "applications" / desktop.DESKTOP_FILE
    entry = read_entry(entry_path)
    assert entry["Type"] == "Application" and entry["Name"] == "ShiftStudio" and entry["Terminal"] == "false"
    command = shlex.split(entry["Exec"])  # (no field codes, nothing the spec's quoting and shlex read differently)
    assert command == desktop.launcher()
    assert command == [str(Path(sys.executable).with_name("shiftstudio"))] or command == [sys.executable, "-m", "shiftstudio"]
    done = subprocess.run([*command, "--version"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("shiftstudio "), done.stderr  # the Exec line starts this app

    icon = entry["Icon"]
    assert icon == desktop.APP_ID
    for size in desktop.ICON_SIZES:
        png = xdg / "icons" / "hicolor" / f"{size}x{size}" / "apps" / f"{icon}.png"
        data = png.read_bytes()
        assert data[:8] == PNG_MAGIC
        assert int.from_bytes(data[16:20], "big") == size and int.from_bytes(data[20:24], "big") == size
    assert (xdg / "icons" / "hicolor" / "scalable" / "apps" / f"{icon}.svg").read_text().lstrip().startswith("<svg")
    component = ET.parse(xdg / "metainfo" / desktop.METAINFO_FILE).getroot()
    assert component.findtext("id") == desktop.APP_ID
    assert component.findtext("launchable") == entry_path.name

    validate = shutil.which("desktop-file-validate")
    if validate:
        checked = subprocess.run([validate, str(entry_path)], capture_output=True, text=True, timeout=60)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert "error" not in checked.stdout, checked.stdout

    # installing again replaces the same files
    assert main(["--install-desktop"]) == 0
    assert files_under(xdg) - before == added

    assert main(["--uninstall-desktop"]) == 0
    out = capsys.readouterr().out
    assert files_under(xdg) == before
    assert all(path.read_text() == "not ours" for path in others)
    for path in added:
        assert str(path) in out
    assert main(["--uninstall-desktop"]) == 0  # nothing left: says so, not an error
    assert "No ShiftStudio desktop entry" in capsys.readouterr().out


def test_install_follows_xdg_data_home_else_local_share(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_DATA_HOME", "relative/path")  # the spec says to ignore a relative value
    assert desktop.data_home() == tmp_path / ".local" / "share"
    monkeypatch.delenv("XDG_DATA_HOME")
    assert desktop.data_home() == tmp_path / ".local" / "share"
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "x"))
    assert desktop.data_home() == tmp_path / "x"


def test_install_refuses_extra_arguments(xdg: Path, capsys) -> None:
    assert main(["--install-desktop", "somewhere"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "shiftstudio: error: --install-desktop takes no arguments"
    assert not xdg.exists()


@pytest.mark.parametrize("arg, quoted", [
    ("/usr/bin/shiftstudio", "/usr/bin/shiftstudio"),
    ("/home/a b/.venv/bin/python", '"/home/a b/.venv/bin/python"'),
    ('/odd/"$x`\\', '"/odd/\\\\"\\\\$x\\\\`\\\\\\\\"'),
    ("/100%/python", "/100%%/python"),
])
def test_exec_arguments_are_quoted_as_the_spec_says(arg: str, quoted: str) -> None:
    assert desktop.exec_quote(arg) == quoted


def test_the_packagers_copies_are_up_to_date_and_valid() -> None:
    """packaging/linux/ and the PNG icons are what packaging/make_icons.py writes (run it after changing them)."""
    done = subprocess.run([sys.executable, str(REPO / "packaging" / "make_icons.py"), "--check"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    linux = REPO / "packaging" / "linux"
    entry = read_entry(linux / desktop.DESKTOP_FILE)
    assert entry["Exec"] == "shiftstudio" and entry["Icon"] == desktop.APP_ID
    component = ET.parse(linux / desktop.METAINFO_FILE).getroot()
    assert component.tag == "component" and component.get("type") == "desktop-application"
    for tag in ("id", "metadata_license", "project_license", "name", "summary", "description", "launchable"):
        assert component.find(tag) is not None and (component.find(tag).text or len(component.find(tag))), tag
    appstream = shutil.which("appstreamcli")
    if appstream:
        checked = subprocess.run([appstream, "validate", "--no-net", str(linux / desktop.METAINFO_FILE)],
                                 capture_output=True, text=True, timeout=60)
        assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_bundle_and_the_wheel_carry_every_resource() -> None:
    """packaging/bundle_config.py's data list (the PyInstaller bundle) and pyproject's package-data (the wheel) both
    cover every file under resources/, icons included, at the place paths.resources_dir() looks."""
    import importlib.util
    import tomllib

    spec = importlib.util.spec_from_file_location("bundle_config", REPO / "packaging" / "bundle_config.py")
    bundle = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bundle)
    resources = REPO / "resources"
    shipped = {p for p in resources.rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts}
    assert resources / "tinyshakespeare.txt" in shipped and resources / "icons" / desktop.SVG_ICON in shipped
    assert {p.name for p in (resources / "presets").iterdir()} <= {p.name for p in shipped}
    for size in desktop.ICON_SIZES:
        assert resources / "icons" / "hicolor" / f"{size}x{size}" / "apps" / f"{desktop.APP_ID}.png" in shipped

    placed = {Path(src): dest for src, dest in bundle.datas()}
    assert set(placed) == shipped
    for src, dest in placed.items():
        assert dest == str(Path("shiftstudio/resources") / src.parent.relative_to(resources))
        assert bundle.keep(f"{dest}/{src.name}")

    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = pyproject["tool"]["setuptools"]["package-data"]["shiftstudio.resources"]
    in_wheel = {p for pattern in patterns for p in resources.glob(pattern) if p.is_file()}
    assert shipped <= in_wheel, sorted(str(p) for p in shipped - in_wheel)


def test_the_icon_check_forgives_a_level_of_antialiasing_but_not_a_changed_picture() -> None:
    """Another CPU may antialias a few edge pixels one level differently: still up to date; a pixel changed by
    more than that, or another size, is out of date."""
    code = (
        "import sys; sys.path.insert(0, %r)\n"
        "import make_icons\n"
        "from PySide6.QtCore import QBuffer, QByteArray, QIODevice\n"
        "from PySide6.QtGui import QGuiApplication, QImage\n"
        "app = QGuiApplication([])\n"
        "png = make_icons.render_png(make_icons.ICONS / make_icons.desktop.SVG_ICON, 64)\n"
        "def moved(by, x=31, y=31):\n"
        "    img = QImage.fromData(png).convertToFormat(QImage.Format.Format_ARGB32)\n"
        "    c = img.pixelColor(x, y); c.setAlpha(max(0, c.alpha() - by) if c.alpha() >= by else c.alpha() + by)\n"
        "    img.setPixelColor(x, y, c)\n"
        "    data = QByteArray(); buf = QBuffer(data); buf.open(QIODevice.OpenModeFlag.WriteOnly)\n"
        "    img.save(buf, 'PNG'); buf.close(); return bytes(data.data())\n"
        "other = make_icons.render_png(make_icons.ICONS / make_icons.desktop.SVG_ICON, 48)\n"
        "print(make_icons.same_image(png, png), make_icons.same_image(png, moved(1)), make_icons.same_image(png, moved(40)),"
        " make_icons.same_image(png, other), make_icons.same_image(png, b'not a png'))\n"
    ) % str(REPO / "packaging")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "True", "False", "False", "False"]
