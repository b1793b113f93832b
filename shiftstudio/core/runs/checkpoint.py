"""Checkpoints on disk: safetensors for tensors, JSON for everything else.

A checkpoint is a folder ``RUN_DIR/checkpoints/step-N/``::

    model.safetensors      the raw (uncompiled) model's state dict
    optimizer.safetensors  AdamW's per-parameter state, keyed '<param name>::<slot>'
    ema.safetensors        the EMA weights, when ema_decay > 0
    state.json             step, tokens, best val loss, RNG states, sampler position, file sizes

No Python object serialisation is written or read: tensors and JSON only. Each checkpoint is
written into a hidden temporary folder and renamed into place, so a crash
mid-save leaves the previous checkpoints as they were; ``state.json`` is
written last and records every file's size, so a truncated file is caught
before any tensor is read.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from shiftstudio.core import io
from shiftstudio.core.errors import CorruptCheckpoint, DiskFull, IncompatibleCheckpoint, RunError, one_line
from shiftstudio.core.runs.layout import EMA_FILE, MODEL_FILE, OPTIMIZER_FILE, STATE_FILE, RunLayout, checkpoint_name, step_of

log = logging.getLogger(__name__)

CHECKPOINT_SCHEMA = 1
MAX_STATE_BYTES = 64 << 20  # a state.json is tens of kilobytes: anything far larger is not one


@dataclass
class CheckpointInfo:
    step: int
    path: Path
    is_best: bool = False
    val_loss: float | None = None


@dataclass
class Checkpoint:
    """A checkpoint read back from disk (tensors on the CPU)."""

    path: Path
    state: dict[str, Any]
    model: dict[str, torch.Tensor]
    optimizer: dict[str, torch.Tensor]
    ema: dict[str, torch.Tensor] | None

    @property
    def step(self) -> int:
        return int(self.state["step"])


# -- listing -------------------------------------------------------------------


def checkpoints_dir(run_dir: str | Path) -> Path:
    return RunLayout(run_dir).checkpoints_dir


def _step_of(path: Path) -> int | None:
    return step_of(path.name) if path.is_dir() else None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        if path.stat().st_size > MAX_STATE_BYTES:
            raise RunError(f"{path} is corrupt: {path.stat().st_size:,} bytes, far too large for a state file")
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise RunError(f"{path} is missing") from None
    except RecursionError:
        raise RunError(f"{path} is corrupt: nested too deeply") from None
    except (OSError, ValueError, MemoryError) as exc:  # (UnicodeDecodeError, JSONDecodeError: ValueErrors)
        raise RunError(f"{path} is corrupt: {one_line(exc, 200)}") from None
    if not isinstance(data, dict):
        raise RunError(f"{path} is corrupt: not a JSON object")
    return data


def list_checkpoints(run_dir: str | Path) -> list[CheckpointInfo]:
    """Every finished checkpoint of a run, oldest first (unreadable ones are listed without details)."""
    folder = checkpoints_dir(run_dir)
    found: list[CheckpointInfo] = []
    if not folder.is_dir():
        return found
    for path in folder.iterdir():
        step = _step_of(path)
        if step is None:
            continue
        info = CheckpointInfo(step=step, path=path)
        try:
            state = _read_json(path / STATE_FILE)
            info.is_best = state.get("best") is True
            info.val_loss = _finite(state.get("val_loss"))
        except RunError:
            pass
        found.append(info)
    return sorted(found, key=lambda c: c.step)


def _finite(value: Any) -> float | None:
    """A JSON number as a finite float; None for anything else (text, null, a number too large for a float)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        value = float(value)
    except OverflowError:
        return None
    return value if math.isfinite(value) else None


def latest_checkpoint(run_dir: str | Path) -> CheckpointInfo | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


# -- writing -------------------------------------------------------------------


def _cpu(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    state: dict[str, Any],
    model: dict[str, torch.Tensor],
    optimizer: dict[str, torch.Tensor],
    ema: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write ``checkpoints/step-N`` atomically; returns its path."""
    folder = checkpoints_dir(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / checkpoint_name(step)
    tmp = folder / f".tmp-step-{step}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    files = {MODEL_FILE: model, OPTIMIZER_FILE: optimizer}
    if ema is not None:
        files[EMA_FILE] = ema
    sizes: dict[str, int] = {}
    try:
        for name, tensors in files.items():
            save_file(_cpu(tensors), str(tmp / name), metadata={"format": "pt", "shiftstudio_step": str(step)})
            io.fsync_file(tmp / name)  # on disk before the rename makes the folder count
            sizes[name] = (tmp / name).stat().st_size
        io.write_json(tmp / STATE_FILE, {**state, "schema_version": CHECKPOINT_SCHEMA, "step": step, "files": sizes}, indent=1)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)  # nothing half-written stays behind
        if isinstance(exc, Exception) and io.is_disk_full(exc):  # (safetensors says it in its own words)
            raise DiskFull(final, io.disk_full_code(exc)) from exc
        raise
    if final.exists():  # the same step saved again (e.g. stop right after an eval): swap, then drop the old one
        old = folder / f".old-step-{step}-{os.getpid()}"
        os.replace(final, old)
        io.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        io.replace(tmp, final)
    return final


def set_best(run_dir: str | Path, step: int) -> None:
    """Mark ``step`` as the best checkpoint in its state.json, and unmark every other one."""
    for info in list_checkpoints(run_dir):
        want = info.step == step
        if info.is_best == want:
            continue
        path = info.path / STATE_FILE
        try:
            state = _read_json(path)
        except RunError:
            continue
        state["best"] = want
        io.write_json(path, state, indent=1)


def prune_checkpoints(run_dir: str | Path, keep: int) -> list[int]:
    """Delete all but the ``keep`` newest checkpoints, never the best one; returns the deleted steps."""
    found = list_checkpoints(run_dir)
    keep_steps = {c.step for c in found[-keep:]} | {c.step for c in found if c.is_best}
    deleted = []
    for info in found:
        if info.step not in keep_steps:  # renamed away first: a crash mid-delete leaves no half checkpoint listed
            doomed = info.path.with_name(f".del-{info.path.name}-{os.getpid()}")
            try:
                os.replace(info.path, doomed)
            except OSError:
                continue
            shutil.rmtree(doomed, ignore_errors=True)
            deleted.append(info.step)
    for pattern in (".tmp-step-*", ".del-step-*"):  # left by a crash mid-save or mid-delete
        for stale in checkpoints_dir(run_dir).glob(pattern):
            shutil.rmtree(stale, ignore_errors=True)
    for old in checkpoints_dir(run_dir).glob(".old-step-*"):  # a crash mid-swap: put the old one back if it is alone
        final = old.with_name(checkpoint_name(int(old.name.split("-")[2])))
        if final.exists():
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(old, final)
    return deleted


# -- reading -------------------------------------------------------------------


def _load_tensors(path: Path, expected_size: int | None) -> dict[str, torch.Tensor]:
    where = f"checkpoint {path.parent.name}: {path.name}"
    if not path.is_file():
        raise CorruptCheckpoint(f"{where} is missing")
    size = path.stat().st_size
    if expected_size is not None and size != expected_size:
        raise CorruptCheckpoint(f"{where} is truncated or corrupt ({size:,} bytes, expected {expected_size:,})")
    try:
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError, TypeError, OverflowError, MemoryError) as exc:
        raise CorruptCheckpoint(f"{where} is corrupt ({one_line(exc, 200)})") from None
    for name, tensor in tensors.items():  # weights and optimizer state are floating point, whatever the precision
        counter = name.endswith("::step") and tensor.dtype != torch.bool  # (an optimizer's step count may be an int)
        if not tensor.is_floating_point() and not counter:
            raise CorruptCheckpoint(f"{where} is corrupt: {one_line(name, 80)} holds {str(tensor.dtype).removeprefix('torch.')}, "
                                    "not floating-point numbers")
    return tensors


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint folder; raises :class:`RunError` if anything is missing, truncated or too new
    (:class:`CorruptCheckpoint` for damaged files)."""
    path = Path(path)
    try:
        state = _read_json(path / STATE_FILE)
    except RunError as exc:
        raise CorruptCheckpoint(f"checkpoint {path.name}: {str(exc).replace(str(path / STATE_FILE), STATE_FILE)}") from None
    version = state.get("schema_version")
    if not _is_int(version) or not _is_int(state.get("step")):
        raise CorruptCheckpoint(f"checkpoint {path.name}: {STATE_FILE} is corrupt (no schema_version or step)")
    if version > CHECKPOINT_SCHEMA:
        raise RunError(
            f"checkpoint {path.name} has schema version {version}; this ShiftStudio reads up to {CHECKPOINT_SCHEMA} — update ShiftStudio"
        )
    sizes = state.get("files") or {}
    if not isinstance(sizes, dict) or not all(
        isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in sizes.values()
    ):
        raise CorruptCheckpoint(f"checkpoint {path.name}: {STATE_FILE} is corrupt (its file sizes are not byte counts)")
    if state["step"] < 0:
        raise CorruptCheckpoint(f"checkpoint {path.name}: {STATE_FILE} is corrupt (step {state['step']})")
    model = _load_tensors(path / MODEL_FILE, sizes.get(MODEL_FILE))
    optimizer = _load_tensors(path / OPTIMIZER_FILE, sizes.get(OPTIMIZER_FILE))
    ema = _load_tensors(path / EMA_FILE, sizes.get(EMA_FILE)) if EMA_FILE in sizes else None
    return Checkpoint(path=path, state=state, model=model, optimizer=optimizer, ema=ema)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_shapes(what: str, saved: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    """Raise :class:`RunError` naming the first tensor that is missing, extra or of another shape."""
    missing = sorted(set(expected) - set(saved))
    extra = sorted(set(saved) - set(expected))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:3])}{' …' if len(missing) > 3 else ''}")
        if extra:
            parts.append(f"unexpected {', '.join(extra[:3])}{' …' if len(extra) > 3 else ''}")
        raise IncompatibleCheckpoint(f"{what} does not match the run's config: {'; '.join(parts)}")
    for name, tensor in expected.items():
        if tuple(saved[name].shape) != tuple(tensor.shape):
            raise IncompatibleCheckpoint(
                f"{what} does not match the run's config: {name} has shape {tuple(saved[name].shape)}, "
                f"the model needs {tuple(tensor.shape)}"
            )


# -- optimizer state -------------------------------------------------------------

# The slots each optimizer keeps per parameter. A checkpoint's slot that the optimizer now stepping that parameter
# does not keep means the run's optimizer setting changed since it was written: refused, not silently dropped.
OPTIMIZER_SLOTS = {"AdamW": ("exp_avg", "exp_avg_sq", "step"), "Muon": ("momentum_buffer",)}


def _param_names(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """Parameter names in the order the optimizer numbers them."""
    by_id = {id(p): n for n, p in model.named_parameters()}
    return [by_id[id(p)] for group in optimizer.param_groups for p in group["params"]]


def _param_owners(optimizer: torch.optim.Optimizer) -> list[str]:
    """The class name of the optimizer that steps each parameter, in the same order (one optimizer, or the
    ``parts`` of one that combines several, e.g. Muon and AdamW)."""
    parts = getattr(optimizer, "parts", (optimizer,))
    return [type(part).__name__ for part in parts for group in part.param_groups for _ in group["params"]]


def optimizer_tensors(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """The optimizer's per-parameter state flattened to ``{'<param>::<slot>': tensor, ...}``: AdamW's
    ``exp_avg``, ``exp_avg_sq`` and ``step`` (a 0-d tensor), Muon's ``momentum_buffer``."""
    names = _param_names(model, optimizer)
    out: dict[str, torch.Tensor] = {}
    for index, slots in optimizer.state_dict()["state"].items():
        for slot, value in slots.items():
            out[f"{names[index]}::{slot}"] = value if torch.is_tensor(value) else torch.tensor(value)
    return out


def load_optimizer_tensors(model: torch.nn.Module, optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    """Inverse of :func:`optimizer_tensors`; hyperparameters stay those of the current optimizer."""
    names = _param_names(model, optimizer)
    owners = _param_owners(optimizer)
    index = {n: i for i, n in enumerate(names)}
    params = {n: p for n, p in model.named_parameters()}
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        name, _, slot = key.rpartition("::")
        if name not in index:
            raise IncompatibleCheckpoint(f"optimizer state does not match the run's config: unknown parameter {name}")
        owner = owners[index[name]]
        if slot not in OPTIMIZER_SLOTS.get(owner, (slot,)):
            writer = next((k for k, slots in OPTIMIZER_SLOTS.items() if slot in slots), "another optimizer")
            raise IncompatibleCheckpoint(
                f"optimizer state does not match the run's config: {key} is {writer}'s, but {owner} trains {name} "
                "now: the optimizer cannot change within a run (fork it instead)"
            )
        if slot != "step" and tuple(value.shape) != tuple(params[name].shape):
            raise IncompatibleCheckpoint(
                f"optimizer state does not match the run's config: {key} has shape {tuple(value.shape)}, "
                f"the model needs {tuple(params[name].shape)}"
            )
        state.setdefault(index[name], {})[slot] = value
    current = optimizer.state_dict()
    optimizer.load_state_dict({"state": state, "param_groups": current["param_groups"]})


# -- random number generators ---------------------------------------------------------


def _b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.cpu().numpy().tobytes()).decode("ascii")


def _unb64(s: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8)


def rng_state() -> dict[str, Any]:
    """Python, numpy (legacy global), torch and CUDA generator states as JSON."""
    py = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    out: dict[str, Any] = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": _b64(torch.get_rng_state()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = [_b64(s) for s in torch.cuda.get_rng_state_all()]
    return out


def set_rng_state(state: dict[str, Any]) -> None:
    try:
        py = state["python"]
        random.setstate((py[0], tuple(py[1]), py[2]))
        kind, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
        torch.set_rng_state(_unb64(state["torch"]))
        if "cuda" in state and torch.cuda.is_available():
            saved = [_unb64(s) for s in state["cuda"]]
            if len(saved) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(saved)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CorruptCheckpoint(f"checkpoint RNG state is corrupt: {exc}") from None
