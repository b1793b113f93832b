"""The app's settings file on a full disk: the old file stays whole and the window says why in its status bar."""

from __future__ import annotations

import pytest

from fault_injection import FillsUp
from shiftstudio.core import io as core_io


def test_settings_on_a_full_disk_keep_the_old_file_and_the_status_bar_says_so(window, qtbot, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = window.settings
    assert settings.save()
    before = settings.path.read_bytes()
    real_open = open
    monkeypatch.setattr(core_io, "open", lambda *a, **k: FillsUp(real_open(*a, **k), 10), raising=False)
    window.save_settings()  # what closing the window and each started run do
    message = window.status_bar.currentMessage()
    assert message.startswith(f"Could not save the app's settings to {settings.path}: the disk is full"), message
    assert "\n" not in message
    assert settings.path.read_bytes() == before  # the old file whole
    assert [p.name for p in settings.path.parent.iterdir() if p.name.startswith(".")] == []  # no temporary file
    monkeypatch.undo()
    assert settings.save() and settings.path.read_bytes() != before  # space again: saved
