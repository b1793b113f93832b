"""Where and in which precision training runs.

``auto`` picks CUDA, then Apple's MPS, then the CPU; ``auto`` precision is
bfloat16 on a CUDA GPU that supports it, float16 (with a gradient scaler) on
an older one and float32 elsewhere. Weights always stay float32; the lower
precision applies to the forward pass through ``torch.autocast``.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import ContextManager

import torch

from shiftstudio.core.errors import DeviceError

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` | ``mps`` -> a device that exists, or :class:`DeviceError`."""
    name = name.strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            built = "this PyTorch build has no CUDA support" if torch.version.cuda is None else "no CUDA GPU was found"
            raise DeviceError(f"device '{name}' was requested but {built}; use --device=cpu or --device=auto")
        index = int(name.split(":", 1)[1]) if ":" in name else torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            raise DeviceError(f"device '{name}' does not exist: {torch.cuda.device_count()} CUDA device(s) found")
        return torch.device("cuda", index)
    if name == "mps":
        if not mps_available():
            raise DeviceError("device 'mps' was requested but Apple's Metal backend is not available; use --device=cpu")
        return torch.device("mps")
    raise DeviceError(f"unknown device '{name}': use auto, cpu, cuda, cuda:N or mps")


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """The autocast precision for ``name`` on ``device``."""
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if name not in DTYPES:
        raise DeviceError(f"unknown dtype '{name}': use auto, float32, bfloat16 or float16")
    dtype = DTYPES[name]
    if device.type == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise DeviceError(f"{torch.cuda.get_device_name(device)} does not support bfloat16; use --dtype=float16")
    return dtype


def dtype_name(dtype: torch.dtype) -> str:
    return {v: k for k, v in DTYPES.items()}[dtype]


def autocast(device: torch.device, dtype: torch.dtype) -> ContextManager:
    """Mixed precision for the forward pass; nothing at float32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def configure(device: torch.device, num_threads: int = 0) -> int:
    """Process-wide speed settings: TF32 matmuls on CUDA, CPU thread count. Returns the thread count."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if num_threads > 0 and torch.get_num_threads() != num_threads:
        torch.set_num_threads(num_threads)
    return torch.get_num_threads()


@dataclass
class DeviceInfo:
    device: torch.device
    dtype: torch.dtype
    threads: int

    def describe(self) -> str:
        """e.g. 'CUDA: NVIDIA H100 (bfloat16)' or 'CPU (2 threads, float32)'."""
        precision = dtype_name(self.dtype)
        if self.device.type == "cuda":
            return f"CUDA: {torch.cuda.get_device_name(self.device)} ({precision})"
        if self.device.type == "mps":
            return f"MPS: Apple GPU ({precision})"
        return f"CPU ({self.threads} thread{'s' if self.threads != 1 else ''}, {precision})"


# Dense peak tensor throughput per GPU (bfloat16 / float16 with float32 accumulation; half that for TF32 float32),
# from the makers' data sheets. The first name found in the device's name wins (longer names first).
PEAK_TFLOPS = (
    ("H200", 989.0), ("H100 PCIe", 756.0), ("H100", 989.0), ("GH200", 989.0), ("B200", 2250.0), ("A100", 312.0),
    ("A800", 312.0), ("L40S", 362.0), ("L40", 181.0), ("L4", 121.0), ("A6000", 155.0), ("A10G", 70.0), ("A10", 125.0),
    ("RTX 4090", 165.0), ("RTX 3090", 71.0), ("V100", 125.0), ("T4", 65.0),
)


def peak_flops(device: torch.device, dtype: torch.dtype) -> float | None:
    """The device's dense peak FLOP/s at ``dtype`` for MFU, or None when unknown (CPUs, MPS, unlisted GPUs)."""
    if device.type != "cuda":
        return None
    return peak_for_name(torch.cuda.get_device_name(device), dtype, torch.backends.cuda.matmul.allow_tf32)


def peak_for_name(name: str, dtype: torch.dtype, tf32: bool = True) -> float | None:
    """:func:`peak_flops` for a GPU called ``name``: float32 counts as TF32 (half the 16-bit peak) when TF32 is
    on, and is unknown otherwise."""
    for key, tflops in PEAK_TFLOPS:
        if key in name:
            if dtype == torch.float32:
                return tflops * 1e12 / 2 if tf32 else None
            return tflops * 1e12
    return None


def setup(device: str, dtype: str, num_threads: int = 0) -> DeviceInfo:
    """Resolve and configure in one call (raises :class:`DeviceError`)."""
    dev = resolve_device(device)
    precision = resolve_dtype(dtype, dev)
    threads = configure(dev, num_threads)
    return DeviceInfo(dev, precision, threads)


def is_out_of_memory(exc: BaseException) -> bool:
    """True for CUDA/MPS/CPU allocation failures (which surface as different exception types)."""
    if isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "not enough memory" in text)
