"""Where ShiftStudio keeps its files: the only module that knows.

Everything lives under the platform's user directories (``platformdirs``)
unless ``SHIFTSTUDIO_HOME`` is set, in which case runs, cache and settings all
go below that one folder (tests point it at a temporary directory).
"""

from __future__ import annotations

import os
from pathlib import Path

APP_NAME = "ShiftStudio"
HOME_ENV = "SHIFTSTUDIO_HOME"


def _home_override() -> Path | None:
    value = os.environ.get(HOME_ENV, "").strip()
    return Path(value).expanduser() if value else None


def _ensure(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def data_dir() -> Path:
    """User data: runs live here."""
    home = _home_override()
    if home is not None:
        return _ensure(home / "data")
    import platformdirs

    return _ensure(Path(platformdirs.user_data_dir(APP_NAME, appauthor=False)))


def runs_dir() -> Path:
    """Default parent folder of training runs."""
    return _ensure(data_dir() / "runs")


def cache_dir() -> Path:
    """Token stores and other derived data that can be rebuilt at will."""
    home = _home_override()
    if home is not None:
        return _ensure(home / "cache")
    import platformdirs

    return _ensure(Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False)))


def config_dir() -> Path:
    """Settings: window layout, recent runs, last choices."""
    home = _home_override()
    if home is not None:
        return _ensure(home / "config")
    import platformdirs

    return _ensure(Path(platformdirs.user_config_dir(APP_NAME, appauthor=False)))


def resources_dir() -> Path:
    """The shipped resources (presets, sample corpus, icons)."""
    # Installed from a wheel, resources/ is the package ``shiftstudio.resources``
    # (shiftstudio/resources/); in a source checkout it sits beside the package.
    package = Path(__file__).resolve().parent
    for candidate in (package / "resources", package.parent / "resources"):
        if (candidate / "presets").is_dir():
            return candidate
    raise FileNotFoundError("ShiftStudio's resources folder is missing: reinstall the package")


def sample_corpus() -> Path:
    """The sample corpus that ships with the app (tiny shakespeare)."""
    return resources_dir() / "tinyshakespeare.txt"


def presets_dir() -> Path:
    return resources_dir() / "presets"


def user_presets_dir() -> Path:
    """Presets the user saved from the GUI."""
    return _ensure(config_dir() / "presets")
