"""Shifted batches: random windows of a token array and the targets each head is scored on.

For a window starting at ``o`` the model reads ``x = ids[o : o+T]``; head
``k`` (``k = 1..K``) is scored on ``y_k = ids[o+k : o+k+T]``, so ``K = 1`` is
next-token prediction. ``mask`` marks which targets count (all of them for
plain text).

Fine-tuning records are drawn by example instead (:class:`ExampleSampler`):
each row is one example from its first token, right-padded, and only its
scored tokens (the completion, the assistant turns) are targets.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch

from shiftstudio.core.data.records import RecordLengths
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


class _SeededSampler:
    """What both samplers share: a PCG64 generator whose state is the sampler's state (so a resumed run draws
    exactly the batches the uninterrupted run would have drawn), and the host-to-device move of a batch."""

    def __init__(self, batch_size: int, block_size: int, shift: int, seed: int, device: str | torch.device) -> None:
        self.batch_size = batch_size
        self.block_size = block_size
        self.shift = shift
        self.device = torch.device(device)
        self._rng = np.random.Generator(np.random.PCG64(seed))
        self._pin = self.device.type == "cuda"

    def _to_device(self, *arrays: np.ndarray) -> list[torch.Tensor]:
        """Host arrays as tensors on the device: pinned and copied without blocking on CUDA."""
        tensors = [torch.from_numpy(np.ascontiguousarray(a)) for a in arrays]
        if self._pin:
            return [t.pin_memory().to(self.device, non_blocking=True) for t in tensors]
        if self.device.type != "cpu":
            return [t.to(self.device) for t in tensors]
        return tensors

    def __next__(self) -> Batch:
        return self.next()

    def __iter__(self):
        return self

    def next(self) -> Batch:  # pragma: no cover - each sampler has its own
        raise NotImplementedError

    def skip(self) -> None:  # pragma: no cover - each sampler has its own
        """Advance past one batch without building it (another rank trains it)."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return {"bit_generator": self._rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        bg = state["bit_generator"]
        if bg.get("bit_generator") != "PCG64":
            raise DataError("sampler state is not a PCG64 state")
        self._rng.bit_generator.state = bg


class BatchSampler(_SeededSampler):
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
        super().__init__(batch_size, block_size, shift, seed, device)
        self.ids = ids
        self.n_windows = len(ids) - block_size - shift + 1
        self._mask = torch.ones(batch_size, shift, block_size, dtype=torch.float32, device=self.device)

    def offsets(self) -> np.ndarray:
        return self._rng.integers(0, self.n_windows, size=self.batch_size)

    def skip(self) -> None:
        self.offsets()

    def next(self) -> Batch:
        x, y = shifted_windows(self.ids, self.offsets(), self.block_size, self.shift)
        xt, yt = self._to_device(x, y)
        return Batch(xt, yt, self._mask)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "n_windows": self.n_windows}


def example_windows(
    ids: np.ndarray, mask: np.ndarray, starts: np.ndarray, lengths: np.ndarray, block_size: int, shift: int, pad: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inputs, shifted targets and their mask for examples starting at ``starts`` (each ``lengths`` long).

    Row ``b`` reads ``ids[s : s+T]`` of its example, right-padded with ``pad``; ``y[b, k-1, t]`` is token
    ``t+k`` of the example and ``m[b, k-1, t]`` is 1 only where that token exists and is scored. Examples
    longer than ``T + K`` lose their tail. One gather from the memmaps, no Python step per row.
    """
    T, K = block_size, shift
    W = T + K
    starts = np.asarray(starts, dtype=np.int64)
    lengths = np.minimum(np.asarray(lengths, dtype=np.int64), W)
    pos = np.arange(W, dtype=np.int64)[None, :]
    inside = pos < lengths[:, None]  # (B, W)
    span = np.minimum(starts[:, None] + pos, max(len(ids) - 1, 0))
    window = np.where(inside, np.asarray(ids[span], dtype=np.int64), pad)
    scored = np.where(inside, np.asarray(mask[span], dtype=np.float32), np.float32(0.0))
    x = window[:, :T]
    y = np.lib.stride_tricks.sliding_window_view(window[:, 1:], T, axis=1)[:, :K]  # (B, K, T)
    m = np.lib.stride_tricks.sliding_window_view(scored[:, 1:], T, axis=1)[:, :K]
    return x, y, m


class ExampleSampler(_SeededSampler):
    """Random examples of a records split, one a row, seeded and resumable (the interface of
    :class:`BatchSampler`).

    Only examples with a scored target inside the window are drawn (``eligible``); the rest (prompts that
    fill the context) are skipped, and counted in ``skipped``. The generator state is part of
    :meth:`state_dict`, so a resumed run draws exactly the batches the uninterrupted run would have drawn.
    """

    def __init__(
        self,
        ids: np.ndarray,
        mask: np.ndarray,
        index: np.ndarray,
        batch_size: int,
        block_size: int,
        shift: int = 1,
        seed: int = 0,
        device: str | torch.device = "cpu",
        split: str = "train",
        pad_id: int = 0,
        eligible: np.ndarray | None = None,
    ):
        self.ids = ids
        self.mask = mask
        index = np.asarray(index, dtype=np.int64)
        self.starts = index[:-1]
        self.lengths = np.diff(index)
        if eligible is None:
            eligible = RecordLengths.from_arrays(mask, index).scorable(block_size, shift)
        self.examples = np.flatnonzero(eligible)  # the examples that can be drawn
        self.skipped = len(self.starts) - len(self.examples)
        if not len(self.examples):
            name = {"train": "training", "val": "validation"}.get(split, split)
            raise DataError(
                f"no {name} example has a scored token inside the context (block_size {block_size} + shift {shift}): "
                "raise block_size or shorten prompts"
            )
        super().__init__(batch_size, block_size, shift, seed, device)
        self.pad_id = int(pad_id)

    def rows(self) -> np.ndarray:
        """The example numbers of the next batch (advances the generator)."""
        return self.examples[self._rng.integers(0, len(self.examples), size=self.batch_size)]

    def skip(self) -> None:
        self.rows()

    def next(self) -> Batch:
        rows = self.rows()
        x, y, m = example_windows(self.ids, self.mask, self.starts[rows], self.lengths[rows], self.block_size, self.shift, self.pad_id)
        return Batch(*self._to_device(x, y, m))

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "n_examples": int(len(self.examples))}
