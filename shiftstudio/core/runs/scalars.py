"""A run's numeric history as named series, exported for TensorBoard or as CSV.

The series come from ``metrics.jsonl`` and are named like TensorBoard tags:
``train/loss``, ``train/lr``, ``train/grad_norm``, ``train/tokens_per_s``,
``eval/train_loss``, ``eval/val_loss``, ``eval/val_ppl``, one
``eval/val_loss_headK`` for each head K >= 2 the run has, and
``eval/ema_val_loss`` for a run with EMA weights. Headline figures are head
1's whatever the run's age, as in the window's curves.

The TensorBoard writer is self-contained (no tensorboard or protobuf
package): TFRecord framing with masked CRC32C checksums around hand-encoded
``Event`` messages holding ``simple_value`` scalars.
"""

from __future__ import annotations

import csv
import math
import socket
import struct
import time
from datetime import datetime
from io import StringIO
from pathlib import Path
from typing import Any, Iterator

from shiftstudio.core import io
from shiftstudio.core.errors import RunError
from shiftstudio.core.runs.folder import load_run
from shiftstudio.core.runs.layout import RUN_FILE, RunLayout
from shiftstudio.core.runs.metrics import headline_val_loss, iter_metrics

Point = tuple[int, float, float]  # (step, run time in seconds, value)

FILE_VERSION = "brain.Event:2"
_F32_MAX = 3.4028234663852886e38


# --- series -----------------------------------------------------------------------------------------------------


def _finite(value: Any) -> float | None:
    """``value`` as a float when it is a finite number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _head1(record: dict[str, Any], per_horizon: str, headline: str) -> float | None:
    """Head 1's figure: the per-horizon list's first entry, else the record's headline field."""
    per = record.get(per_horizon)
    if isinstance(per, list) and per:
        return _finite(per[0])
    return _finite(record.get(headline))


def _eval_values(record: dict[str, Any]) -> Iterator[tuple[str, float | None]]:
    """An eval record's (tag, value) pairs, None where the record has no usable figure."""
    val = _finite(headline_val_loss(record))
    per_val = record.get("val_loss_per_horizon")
    if isinstance(per_val, list) and per_val:  # a ppl logged beside a mean-over-heads loss was exp(mean)
        ppl = math.exp(val) if val is not None and val < 700 else None
    else:
        ppl = _finite(record.get("val_ppl"))
    yield "eval/train_loss", _head1(record, "train_loss_per_horizon", "train_loss")
    yield "eval/val_loss", val
    yield "eval/val_ppl", ppl
    if isinstance(per_val, list):
        for k, value in enumerate(per_val[1:], 2):
            yield f"eval/val_loss_head{k}", _finite(value)
    yield "eval/ema_val_loss", _finite(record.get("ema_val_loss"))


def _records(run_dir: Path) -> Iterator[tuple[int, float, list[tuple[str, float]]]]:
    """(step, time_s, [(tag, value)...]) for each train and eval record with at least one finite value."""
    for record in iter_metrics(run_dir, ("train", "eval")):
        step = record.get("step")
        if isinstance(step, bool) or not isinstance(step, int):
            continue
        time_s = _finite(record.get("time_s")) or 0.0
        if record["kind"] == "train":
            pairs = ((f"train/{key}", _finite(record.get(key))) for key in ("loss", "lr", "grad_norm", "tokens_per_s"))
        else:
            pairs = _eval_values(record)
        values = [(tag, value) for tag, value in pairs if value is not None]
        if values:
            yield step, time_s, values


def _checked_records(run_dir: Path) -> tuple[dict[str, Any], list[tuple[int, float, list[tuple[str, float]]]]]:
    """``run.json`` and the records of :func:`_records`; raises :class:`RunError` for a folder that is not a run
    or a run without any."""
    run = load_run(run_dir)
    records = list(_records(run_dir))
    if not records:
        raise RunError(f"{run_dir} has no metrics yet (no train or eval records in {RunLayout(run_dir).metrics_file.name}): "
                       "train it first")
    return run, records


def scalar_series(run_dir: str | Path) -> dict[str, list[Point]]:
    """Every numeric series of a run as tag -> [(step, time_s, value)...], in the order of ``metrics.jsonl``.

    None and non-finite values are left out. Raises :class:`RunError` for a folder that is not a run or a run
    with no train or eval records yet.
    """
    series: dict[str, list[Point]] = {}
    for step, time_s, values in _checked_records(Path(run_dir))[1]:
        for tag, value in values:
            series.setdefault(tag, []).append((step, time_s, value))
    return series


# --- output folder ----------------------------------------------------------------------------------------------


def _prepare_out(out_dir: str | Path) -> Path:
    out_dir = Path(out_dir).expanduser()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunError(f"cannot create the folder {out_dir}: {exc.strerror or exc}") from None
    return out_dir


def _write(path: Path, data: bytes) -> None:
    try:
        io.write_bytes(path, data)
    except OSError as exc:
        raise RunError(f"cannot write {path}: {exc.strerror or exc}") from None


# --- CSV --------------------------------------------------------------------------------------------------------


def csv_name(tag: str) -> str:
    """The CSV file of a series: ``train/loss`` -> ``train_loss.csv``."""
    return tag.replace("/", "_") + ".csv"


def write_csv(run_dir: str | Path, out_dir: str | Path) -> list[Path]:
    """One CSV per series in ``out_dir`` (created if needed), header ``step,time_s,value``; returns the files.

    Files of the same names are replaced (atomically); other files in ``out_dir`` are left alone. Raises
    :class:`RunError` as :func:`scalar_series` does, or naming the path that cannot be written.
    """
    series = scalar_series(run_dir)
    out = _prepare_out(out_dir)
    written: list[Path] = []
    for tag, points in series.items():
        text = StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(("step", "time_s", "value"))
        writer.writerows((step, repr(time_s), repr(value)) for step, time_s, value in points)
        path = out / csv_name(tag)
        _write(path, text.getvalue().encode("utf-8"))
        written.append(path)
    return written


# --- TensorBoard ------------------------------------------------------------------------------------------------


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), the checksum of TFRecord files."""
    crc = 0xFFFFFFFF
    table = _CRC32C_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """The CRC as TFRecord stores it: rotated right by 15 bits plus a constant."""
    crc = crc32c(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord(data: bytes) -> bytes:
    """One TFRecord: length (uint64 LE), its masked CRC, the data, the data's masked CRC."""
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked_crc32c(length)) + data + struct.pack("<I", masked_crc32c(data))


def _varint(value: int) -> bytes:
    value &= 0xFFFFFFFFFFFFFFFF  # int64 two's complement, as protobuf encodes negatives
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field_bytes(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _summary_value(tag: str, value: float) -> bytes:
    """``Summary.Value``: tag (1, string), simple_value (2, float32); beyond float32's range becomes +-inf."""
    if abs(value) > _F32_MAX:
        value = math.copysign(math.inf, value)
    return _field_bytes(1, tag.encode("utf-8")) + _varint(2 << 3 | 5) + struct.pack("<f", value)


def event(wall_time: float, step: int = 0, *, file_version: str | None = None,
          scalars: list[tuple[str, float]] | None = None) -> bytes:
    """An encoded ``Event``: wall_time (1, double), step (2, int64), file_version (3) or summary (5)."""
    out = _varint(1 << 3 | 1) + struct.pack("<d", wall_time)
    if step:
        out += _varint(2 << 3 | 0) + _varint(step)
    if file_version is not None:
        out += _field_bytes(3, file_version.encode("utf-8"))
    if scalars:
        out += _field_bytes(5, b"".join(_field_bytes(1, _summary_value(tag, v)) for tag, v in scalars))
    return out


def _run_start(run_dir: Path, record: dict[str, Any]) -> float:
    """The run's ``created`` time as a POSIX timestamp (``run.json``'s modification time if it has none)."""
    try:
        return datetime.fromisoformat(str(record["created"])).timestamp()
    except (KeyError, ValueError, OverflowError):
        return (run_dir / RUN_FILE).stat().st_mtime


def event_file_name(now: float | None = None) -> str:
    """``events.out.tfevents.<seconds>.<host>.shiftstudio``: the name TensorBoard looks for."""
    return f"events.out.tfevents.{int(time.time() if now is None else now)}.{socket.gethostname()}.shiftstudio"


def write_tensorboard(run_dir: str | Path, out_dir: str | Path) -> Path:
    """Write the run's series (:func:`scalar_series`) as ONE TensorBoard event file in ``out_dir``; returns it.

    Scalars only: samples, checkpoints and settings are not written. Each train or eval record becomes one event
    at its step, stamped with the run's ``created`` time plus its ``time_s``, so TensorBoard's "relative" axis is
    the run's own clock. Earlier event files in ``out_dir`` are left alone (TensorBoard reads them all: export
    each run to a folder of its own). Raises :class:`RunError` as :func:`write_csv` does.
    """
    run_dir = Path(run_dir)
    run, records = _checked_records(run_dir)
    start = _run_start(run_dir, run)
    out = _prepare_out(out_dir)
    chunks = [tfrecord(event(start, file_version=FILE_VERSION))]
    chunks += [tfrecord(event(start + time_s, step, scalars=values)) for step, time_s, values in records]
    path = out / event_file_name()
    _write(path, b"".join(chunks))
    return path
