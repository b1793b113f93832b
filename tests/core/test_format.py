"""The number formats the CLI and the GUI share."""

from __future__ import annotations

from shiftstudio.format import human_bytes, human_count, human_duration, short_float


def test_counts() -> None:
    assert human_count(999) == "999"
    assert human_count(1234567) == "1.23M"
    assert human_count(2.5e9) == "2.5G"
    assert human_count(float("nan")) == "–"


def test_bytes_and_durations() -> None:
    assert human_bytes(512) == "512 B"
    assert human_bytes(1536) == "1.5 KB"
    assert human_bytes(3e9) == "3.0 GB"
    assert human_duration(59) == "0:59"
    assert human_duration(3725) == "1:02:05"
    assert human_duration(float("nan")) == "–" and human_duration(-1) == "–"
    assert short_float(7.19e-4) == "7.190e-04" and short_float(2.5) == "2.5"
