"""``shiftstudio export --format tensorboard|csv``: a run's curves, judged independently of the writer.

The event file is read record by record here, both CRCs checked with a bit-by-bit CRC-32C, and each record
decoded with the protobuf classes ``tensorboardX`` ships; the expected figures are read straight from
``metrics.jsonl``. Bad input gives one line and a non-zero exit.
"""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
import struct
from datetime import datetime
from pathlib import Path

import pytest
from tensorboardX.proto.event_pb2 import Event

from cli_helpers import assert_one_line_error, run_cli
from shiftstudio.config import RunConfig
from shiftstudio.core.runs.folder import prepare_and_create
from shiftstudio.core.runs.scalars import crc32c, scalar_series

EVENT_FILE = re.compile(r"events\.out\.tfevents\.\d+\.[^/]+\.shiftstudio")
TRAIN_KEYS = ("loss", "lr", "grad_norm", "tokens_per_s")


# --- an independent reader ---------------------------------------------------------------------------------------


def reference_crc32c(data: bytes) -> int:
    """CRC-32C bit by bit (reflected Castagnoli polynomial), no table."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def masked(data: bytes) -> int:
    crc = reference_crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def read_tfrecords(path: Path) -> list[bytes]:
    """The payloads of a TFRecord file; ValueError on a bad CRC or a cut-short record."""
    data, at, out = path.read_bytes(), 0, []
    while at < len(data):
        if len(data) - at < 12:
            raise ValueError(f"truncated header at byte {at}")
        header = data[at:at + 8]
        (length,) = struct.unpack("<Q", header)
        (length_crc,) = struct.unpack("<I", data[at + 8:at + 12])
        if length_crc != masked(header):
            raise ValueError(f"length CRC mismatch at byte {at}")
        if len(data) - at < 16 + length:
            raise ValueError(f"truncated record at byte {at}")
        payload = data[at + 12:at + 12 + length]
        (payload_crc,) = struct.unpack("<I", data[at + 12 + length:at + 16 + length])
        if payload_crc != masked(payload):
            raise ValueError(f"data CRC mismatch at byte {at}")
        out.append(payload)
        at += 16 + length
    return out


def f32(value: float) -> float:
    return struct.unpack("<f", struct.pack("<f", value))[0]


# --- what the files must hold, from metrics.jsonl -----------------------------------------------------------------


def expected_series(run_dir: Path) -> dict[str, list[tuple[int, float, float]]]:
    """tag -> [(step, time_s, value)] from the raw lines: head 1 as the headline, heads 2.. as their own series."""
    series: dict[str, list[tuple[int, float, float]]] = {}

    def add(tag: str, rec: dict, value) -> None:
        if isinstance(value, (int, float)) and math.isfinite(value):
            series.setdefault(tag, []).append((rec["step"], rec["time_s"], float(value)))

    for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if rec.get("kind") == "train":
            for key in TRAIN_KEYS:
                add(f"train/{key}", rec, rec.get(key))
        elif rec.get("kind") == "eval":
            val_h, train_h = rec["val_loss_per_horizon"], rec["train_loss_per_horizon"]
            add("eval/train_loss", rec, train_h[0])
            add("eval/val_loss", rec, val_h[0])
            add("eval/val_ppl", rec, math.exp(val_h[0]) if val_h[0] is not None else None)
            for k, value in enumerate(val_h[1:], 2):
                add(f"eval/val_loss_head{k}", rec, value)
            add("eval/ema_val_loss", rec, rec.get("ema_val_loss"))
    return series


def run_start(run_dir: Path) -> float:
    return datetime.fromisoformat(json.loads((run_dir / "run.json").read_text())["created"]).timestamp()


@pytest.fixture(scope="module")
def k2_run(make_tiny_run) -> Path:
    """A trained run with two heads and EMA weights: every kind of series."""
    return make_tiny_run("scalars-k2-ema", shift=2, ema_decay=0.9)


# --- tests --------------------------------------------------------------------------------------------------------


def test_crc32c_matches_the_standard_check_value() -> None:
    assert reference_crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"123456789") == 0xE3069283
    blob = bytes(range(256)) * 3
    assert crc32c(blob) == reference_crc32c(blob)


def test_tensorboard_export_matches_metrics(tmp_path: Path, k2_run: Path, capsys) -> None:
    out_dir = tmp_path / "tb" / "k2"
    code, out, err = run_cli(capsys, "export", k2_run, "--format", "tensorboard", "--out", out_dir)
    assert code == 0, err
    files = list(out_dir.iterdir())
    assert len(files) == 1 and EVENT_FILE.fullmatch(files[0].name), files
    assert len(out.splitlines()) == 1 and str(files[0]) in out

    events = [Event.FromString(payload) for payload in read_tfrecords(files[0])]
    start = run_start(k2_run)
    assert events[0].file_version == "brain.Event:2"
    assert events[0].wall_time == pytest.approx(start)
    got: dict[str, list[tuple[int, float, float]]] = {}
    for ev in events[1:]:
        assert ev.WhichOneof("what") == "summary"
        for value in ev.summary.value:
            assert value.WhichOneof("value") == "simple_value"
            got.setdefault(value.tag, []).append((ev.step, ev.wall_time, value.simple_value))

    expected = expected_series(k2_run)
    assert set(got) == set(expected)
    assert {"train/loss", "eval/val_loss", "eval/val_loss_head2", "eval/ema_val_loss"} <= set(got)
    assert "eval/val_loss_head3" not in got
    for tag, points in expected.items():
        assert [p[0] for p in got[tag]] == [p[0] for p in points], tag
        assert [p[2] for p in got[tag]] == [f32(p[2]) for p in points], tag  # float32, rounded as written
        assert [p[1] for p in got[tag]] == pytest.approx([start + p[1] for p in points], abs=1e-3), tag


def test_corrupted_crc_is_detected(tmp_path: Path, tiny_run: Path, capsys) -> None:
    code, _, err = run_cli(capsys, "export", tiny_run, "--format", "tensorboard", "--out", tmp_path / "tb")
    assert code == 0, err
    (path,) = (tmp_path / "tb").iterdir()
    good = path.read_bytes()
    assert len(read_tfrecords(path)) > 1

    (length,) = struct.unpack("<Q", good[:8])
    for where, message in ((12 + length // 2, "data CRC"), (8, "length CRC"), (12 + length, "data CRC")):
        bad = bytearray(good)
        bad[where] ^= 0x01
        path.write_bytes(bytes(bad))
        with pytest.raises(ValueError, match=message):
            read_tfrecords(path)
    path.write_bytes(good[:-1])
    with pytest.raises(ValueError, match="truncated"):
        read_tfrecords(path)


def test_csv_export_matches_metrics(tmp_path: Path, k2_run: Path, capsys) -> None:
    out_dir = tmp_path / "csv"
    code, out, err = run_cli(capsys, "export", k2_run, "--format", "csv", "--out", out_dir)
    assert code == 0, err
    assert len(out.splitlines()) == 1 and str(out_dir) in out
    expected = expected_series(k2_run)
    names = {tag.replace("/", "_") + ".csv": tag for tag in expected}
    assert {p.name for p in out_dir.iterdir()} == set(names)
    assert {"train_loss.csv", "eval_val_loss.csv", "eval_val_loss_head2.csv"} <= set(names)
    for name, tag in names.items():
        with open(out_dir / name, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
        assert rows[0] == ["step", "time_s", "value"]
        assert [(int(s), float(t), float(v)) for s, t, v in rows[1:]] == expected[tag], name


def test_series_of_a_one_head_run_and_odd_lines(tmp_path: Path, tiny_run: Path) -> None:
    assert set(scalar_series(tiny_run)) == {f"train/{k}" for k in TRAIN_KEYS} | {
        "eval/train_loss", "eval/val_loss", "eval/val_ppl"}

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    with open(run / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write('{"kind":"train","step":6,"loss":NaN,"lr":null,"grad_norm":Infinity,"tokens_per_s":12.5,"time_s":9}\n')
        f.write('{"kind":"eval","step":6,"time_s":9.5,"val_loss":null,"val_ppl":null,"train_loss":3.5}\n')
        f.write('{"kind":"train","step":8,"loss":3.2')  # a line cut short by a crash
    series = scalar_series(run)
    assert series["train/tokens_per_s"][-1] == (6, 9.0, 12.5)
    assert series["train/loss"][-1][0] == 4 and series["train/grad_norm"][-1][0] == 4
    assert series["eval/train_loss"][-1] == (6, 9.5, 3.5)
    assert series["eval/val_loss"][-1][0] == 4


def test_metrics_export_bad_input(tmp_path: Path, tiny_run: Path, small_corpus: Path, capsys) -> None:
    out_dir = tmp_path / "out"
    for fmt in ("tensorboard", "csv"):
        code, _, err = run_cli(capsys, "export", tmp_path / "nowhere", "--format", fmt, "--out", out_dir)
        assert code == 1
        assert_one_line_error(err, "nowhere", "is not a run folder")
        plain = tmp_path / "plain"
        plain.mkdir(exist_ok=True)
        code, _, err = run_cli(capsys, "export", plain, "--format", fmt, "--out", out_dir)
        assert code == 1
        assert_one_line_error(err, "plain", "is not a run folder")

    fresh = prepare_and_create(RunConfig().updated({"corpus": [str(small_corpus)], "n_layer": 1, "n_head": 2,
                                                    "n_embd": 16, "block_size": 16, "device": "cpu"}),
                               out_dir=tmp_path / "fresh")
    code, _, err = run_cli(capsys, "export", fresh, "--format", "tensorboard", "--out", out_dir)
    assert code == 1
    assert_one_line_error(err, "has no metrics yet")
    assert not out_dir.exists()

    code, _, err = run_cli(capsys, "export", tiny_run, "--format", "nonsense", "--out", out_dir)
    assert code == 2
    assert_one_line_error(err, "--format 'nonsense' is not supported", "'tensorboard'", "'csv'")
    code, _, err = run_cli(capsys, "export", tiny_run, "--format", "csv")
    assert code == 2
    assert_one_line_error(err, "--out DIR is required")
    code, _, err = run_cli(capsys, "export", tiny_run, "--format", "csv", "--out", out_dir, "--checkpoint", "best")
    assert code == 2
    assert_one_line_error(err, "--checkpoint and --ema")
    assert not out_dir.exists()

    a_file = tmp_path / "a_file"
    a_file.write_text("mine")
    code, _, err = run_cli(capsys, "export", tiny_run, "--format", "tensorboard", "--out", a_file / "tb")
    assert code == 1
    assert_one_line_error(err, "cannot create the folder", str(a_file / "tb"))
    blocked = tmp_path / "blocked"
    (blocked / "train_loss.csv").mkdir(parents=True)  # where a file must go, a folder
    code, _, err = run_cli(capsys, "export", tiny_run, "--format", "csv", "--out", blocked)
    assert code == 1
    assert_one_line_error(err, "cannot write", str(blocked / "train_loss.csv"))
    assert a_file.read_text() == "mine"
