"""Presets: named configs shipped in ``resources/presets`` and saved by the user (a user's preset
overrides a shipped one of the same name)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from shiftstudio import paths
from shiftstudio.config import RunConfig
from shiftstudio.core.errors import ConfigError


def preset_paths() -> dict[str, Path]:
    """Shipped presets, then the user's own (a user preset overrides by name)."""
    found: dict[str, Path] = {}
    for folder in (paths.presets_dir(), paths.user_presets_dir()):
        if folder.is_dir():
            for p in sorted(folder.glob("*.toml")):
                found[p.stem] = p
    return found


def load_preset(name: str) -> RunConfig:
    presets = preset_paths()
    if name not in presets:
        raise ConfigError(f"unknown preset '{name}' (available: {', '.join(sorted(presets))})")
    return RunConfig.load(presets[name])


def preset_description(name: str) -> str:
    path = preset_paths().get(name)
    if path is None:
        return ""
    try:
        return str(tomllib.loads(path.read_text(encoding="utf-8")).get("description", ""))
    except (OSError, tomllib.TOMLDecodeError):
        return ""
