"""Shifted batches: random windows of a token array and the targets each head is scored on.

For a window starting at ``o`` the model reads ``x = ids[o : o+T]``; head
``k`` (``k = 1..K``) is scored on ``y_k = ids[o+k : o+k+T]``, so ``K = 1`` is
next-token prediction. ``mask`` marks which targets count (all of them for
plain text; records will mask their prompt tokens).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch

from shiftstudio.core.errors import DataError



class Batch(NamedTuple):
    x: torch.Tensor  # (B, T) int64: the tokens the model reads
    y: torch.Tensor  # (B, K, T) int64: y[:, k-1, t] is the token k places after x[:, t]
    mask: torch.Tensor  # (B, K, T) float32: 1 where the target is scored


def shifted_windows(ids: np.ndarray, offsets: np.ndarray, block_size: int, shift: int) -> tuple[np.ndarray, np.ndarray]:
    """Inputs and shifted targets for windows starting at ``offsets``.

    Returns ``x`` of shape (B, T) and ``y`` of shape (B, K, T) with
    ``x[b] = ids[o : o+T]`` and ``y[b, k-1] = ids[o+k : o+k+T]``.
    """
    T, K = block_size, shift
    offsets = np.asarray(offsets, dtype=np.int64)
    if offsets.size and (offsets.min() < 0 or offsets.max() + T + K > len(ids)):
        raise DataError(f"window out of range: offsets need {T + K} tokens from each start, ids hold {len(ids)}")
    span = offsets[:, None] + np.arange(T + K, dtype=np.int64)[None, :]  # (B, T+K)
    window = np.asarray(ids[span], dtype=np.int64)  # one gather from the memmap
    x = window[:, :T]
    y = np.lib.stride_tricks.sliding_window_view(window[:, 1:], T, axis=1)[:, :K]  # (B, K, T), a view
    return x, y


def check_windows(n_tokens: int, block_size: int, shift: int, split: str = "validation") -> None:
    """Raise :class:`DataError` unless ``n_tokens`` hold at least one window (``block_size + shift`` tokens).

    The one place that knows what a split must hold; the config check, run creation, the sampler and the
    GUI all ask it.
    """
    need = block_size + shift
    if n_tokens < need:
        split = {"train": "training", "val": "validation"}.get(split, split)
        advice = "a larger val_fraction or more text" if split == "validation" else "or more text"
        raise DataError(
            f"block_size {block_size} (+ shift {shift}) is larger than the {split} split ({n_tokens:,} tokens): "
            f"use a smaller block_size, {advice}"
        )


class BatchSampler:
    """Random windows from a flat id array, seeded and resumable.

    The generator state is part of :meth:`state_dict`, so a resumed run draws
    exactly the batches the uninterrupted run would have drawn.
    """

    def __init__(
        self,
        ids: np.ndarray,
        batch_size: int,
        block_size: int,
        shift: int = 1,
        seed: int = 0,
        device: str | torch.device = "cpu",
        split: str = "train",
    ):
        check_windows(len(ids), block_size, shift, split)
        self.ids = ids
        self.batch_size = batch_size
        self.block_size = block_size
        self.shift = shift
        self.device = torch.device(device)
        self.n_windows = len(ids) - block_size - shift + 1
        self._rng = np.random.Generator(np.random.PCG64(seed))
        self._pin = self.device.type == "cuda"
        self._mask = torch.ones(batch_size, shift, block_size, dtype=torch.float32, device=self.device)

    def offsets(self) -> np.ndarray:
        return self._rng.integers(0, self.n_windows, size=self.batch_size)

    def next(self) -> Batch:
        x, y = shifted_windows(self.ids, self.offsets(), self.block_size, self.shift)
        xt = torch.from_numpy(x)
        yt = torch.from_numpy(np.ascontiguousarray(y))
        if self._pin:
            xt = xt.pin_memory().to(self.device, non_blocking=True)
            yt = yt.pin_memory().to(self.device, non_blocking=True)
        elif self.device.type != "cpu":
            xt, yt = xt.to(self.device), yt.to(self.device)
        return Batch(xt, yt, self._mask)

    __next__ = next

    def __iter__(self) -> "BatchSampler":
        return self

    def state_dict(self) -> dict[str, Any]:
        return {"bit_generator": self._rng.bit_generator.state, "n_windows": self.n_windows}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        bg = state["bit_generator"]
        if bg.get("bit_generator") != "PCG64":
            raise DataError("sampler state is not a PCG64 state")
        self._rng.bit_generator.state = bg
