"""The token store (train/val ids on disk) and the shifted batches drawn from it.

``prepare`` turns a corpus into a folder::

    tokenizer.json   the tokenizer, standard format
    train.bin        flat uint16 (vocab <= 65,535) or uint32 token ids
    val.bin
    meta.json        dtype, counts, vocab size, sources, split

Encoding streams: pieces of text are encoded with ``encode_batch`` a batch at
a time and appended to the files, so memory stays flat whatever the corpus
size. Documents are separated by ``<|endoftext|>`` where the tokenizer has it.
Without an explicit folder the store is cached under the cache directory,
keyed by corpus content and tokenizer settings: opening the same corpus again
costs nothing.

``BatchSampler`` draws random windows and builds the shifted targets: input
``x = ids[i : i+T]`` and, for each horizon ``k = 1..K``, ``y_k = ids[i+k :
i+k+T]``; head k is scored on ``y_k``. ``K = 1`` is next-token prediction.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple

import numpy as np
import torch

from shiftstudio.core.corpus import Cancelled, Corpus, CorpusError
from shiftstudio.core.tokenizer import TextTokenizer, build_tokenizer

STORE_VERSION = 1
ENCODE_BATCH_CHARS = 1 << 20  # characters per encode_batch call (Encodings cost ~80 B a token)
UINT16_MAX_VOCAB = 65535


class DataError(ValueError):
    """The token data cannot serve the requested windows (too short, corrupt)."""


@dataclass
class Progress:
    phase: str  # "scanning" | "tokenizer" | "encoding"
    done: int  # bytes
    total: int

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0


ProgressCallback = Callable[[Progress], None]


def ids_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= UINT16_MAX_VOCAB else np.dtype(np.uint32)


# -- the store ----------------------------------------------------------------


class TokenStore:
    """A prepared folder: tokenizer and train/val ids, memory-mapped."""

    def __init__(self, folder: Path, tokenizer: TextTokenizer, meta: dict[str, Any]):
        self.dir = folder
        self.tokenizer = tokenizer
        self.meta = meta
        self.vocab_size = int(meta["vocab_size"])
        dtype = np.dtype(meta["dtype"])
        self.train = self._map("train.bin", dtype, int(meta["train_tokens"]))
        self.val = self._map("val.bin", dtype, int(meta["val_tokens"]))

    def _map(self, name: str, dtype: np.dtype, count: int) -> np.ndarray:
        path = self.dir / name
        size = path.stat().st_size if path.exists() else -1
        if size != count * dtype.itemsize:
            raise DataError(f"{path} is missing or truncated ({size} bytes, expected {count * dtype.itemsize}); prepare the data again")
        if count == 0:
            return np.zeros(0, dtype=dtype)
        return np.memmap(path, dtype=dtype, mode="r", shape=(count,))

    @classmethod
    def open(cls, folder: str | os.PathLike) -> "TokenStore":
        folder = Path(folder)
        meta_path = folder / "meta.json"
        if not meta_path.is_file():
            raise DataError(f"{folder} is not a prepared data folder (no meta.json); run 'shiftstudio prepare' first")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DataError(f"{meta_path} is unreadable: {exc}") from None
        if int(meta.get("version", 0)) > STORE_VERSION:
            raise DataError(f"{folder} was written by a newer ShiftStudio (store version {meta.get('version')})")
        tokenizer = TextTokenizer.load(folder / "tokenizer.json")
        return cls(folder, tokenizer, meta)

    def summary(self) -> str:
        m = self.meta
        return (
            f"{m['train_tokens']:,} train + {m['val_tokens']:,} val tokens, vocab {m['vocab_size']:,} "
            f"({m['tokenizer_kind']}), {m['dtype']}, {m['documents']:,} documents from {len(m['sources'])} file(s)"
        )


def _store_key(corpus: Corpus, data: Any) -> str:
    spec = data.tokenizer.strip()
    if spec in ("char", "bpe"):
        tok = f"{spec}|{data.vocab_size if spec == 'bpe' else 0}|{data.min_frequency if spec == 'bpe' else 0}"
    else:
        path = Path(spec)
        tok = "file|" + (hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest() if path.is_file() else spec)
    text = f"v{STORE_VERSION}|{corpus.fingerprint()}|{tok}|{data.val_fraction}|{data.split_seed}"
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def prepare(
    data: Any,
    out_dir: str | os.PathLike | None = None,
    progress: ProgressCallback | None = None,
    cancel: Callable[[], bool] | None = None,
    errors: str = "strict",
    corpus: Corpus | None = None,
) -> TokenStore:
    """Corpus -> tokenizer -> ids on disk, for a :class:`~shiftstudio.config.DataConfig`.

    Writes into a temporary folder and renames it into place, so a failure or
    a cancel leaves nothing half-written. Raises ``CorpusError``,
    ``TokenizerError``, ``DataError`` or ``Cancelled``.
    """
    from shiftstudio import paths

    def report(phase: str, done: int, total: int) -> None:
        if progress is not None:
            progress(Progress(phase, done, total))

    if corpus is None:
        sources = list(data.corpus) or [str(paths.sample_corpus())]
        corpus = Corpus.open(sources, errors=errors, progress=lambda d, t: report("scanning", d, t), cancel=cancel)
    key = _store_key(corpus, data)
    if out_dir is None:
        target = paths.cache_dir() / "stores" / key
        if (target / "meta.json").is_file():
            try:
                return TokenStore.open(target)
            except (DataError, ValueError):
                shutil.rmtree(target, ignore_errors=True)  # a damaged cache entry is rebuilt
    else:
        target = Path(out_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".prepare-", dir=target.parent))
    try:
        split = corpus.split(data.val_fraction, data.split_seed)
        tokenizer = build_tokenizer(data, split, progress=lambda d, t: report("tokenizer", d, t), cancel=cancel)
        dtype = ids_dtype(tokenizer.vocab_size)
        train_bytes, val_bytes = split.split_bytes()
        total = train_bytes + val_bytes
        started = time.perf_counter()
        done = 0

        def tick(n: int) -> None:
            nonlocal done
            done += n
            report("encoding", min(done, total), total)
            if cancel is not None and cancel():
                raise Cancelled()

        n_train = encode_to_file(split.iter_train(), tokenizer, tmp / "train.bin", dtype, tick)
        n_val = encode_to_file(split.iter_val(), tokenizer, tmp / "val.bin", dtype, tick)
        if n_train == 0:
            raise CorpusError("the training split holds no tokens: the corpus is too small")
        if n_val == 0:
            raise CorpusError("the validation split holds no tokens: raise val_fraction or add text")
        tokenizer.save(tmp / "tokenizer.json")
        meta = {
            "version": STORE_VERSION,
            "key": key,
            "dtype": dtype.name,
            "vocab_size": tokenizer.vocab_size,
            "tokenizer_kind": tokenizer.kind,
            "eot_id": tokenizer.eot_id,
            "train_tokens": n_train,
            "val_tokens": n_val,
            "train_chars": split.train_chars,
            "val_chars": split.val_chars,
            "train_documents": split.train_documents,
            "val_documents": split.val_documents,
            "documents": corpus.n_documents,
            "bytes": corpus.n_bytes,
            "chars": corpus.n_chars,
            "lines": corpus.n_lines,
            "val_fraction": data.val_fraction,
            "split_seed": data.split_seed,
            "split_mode": split.mode,
            "sources": [str(f.path) for f in corpus.files],
            "warnings": corpus.warnings,
            "encode_seconds": round(time.perf_counter() - started, 3),
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
        _move_into_place(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return TokenStore.open(target)


def _move_into_place(tmp: Path, target: Path) -> None:
    """Put the finished store at ``target``; files already there are replaced."""
    if not target.exists():
        tmp.rename(target)
        return
    for name in ("train.bin", "val.bin", "tokenizer.json"):
        os.replace(tmp / name, target / name)
    os.replace(tmp / "meta.json", target / "meta.json")  # last: the store is valid once meta is


def encode_to_file(
    pieces: Iterator[tuple[bool, str]],
    tokenizer: TextTokenizer,
    path: Path,
    dtype: np.dtype,
    tick: Callable[[int], None] | None = None,
) -> int:
    """Encode a stream of (starts_document, text) pieces into a flat id file.

    Pieces are gathered into batches of about ``ENCODE_BATCH_CHARS``
    characters and encoded with ``encode_batch`` (parallel in Rust); each
    batch's ids go straight to disk. Returns the number of tokens written.
    """
    eot = tokenizer.eot_id
    count = 0
    first_doc = True
    batch: list[str] = []
    starts: list[bool] = []
    size = 0
    with path.open("wb") as out:

        def flush() -> None:
            nonlocal count, first_doc, size
            if not batch:
                return
            if tokenizer.char_table() is not None:
                encoded = [tokenizer.encode_array(t) for t in batch]
            else:
                encoded = [e.ids for e in tokenizer.tk.encode_batch_fast(batch, add_special_tokens=False)]
            parts: list[np.ndarray] = []
            for new_doc, ids in zip(starts, encoded):
                if new_doc and not first_doc and eot is not None:
                    parts.append(np.array([eot], dtype=dtype))
                if new_doc:
                    first_doc = False
                parts.append(np.asarray(ids, dtype=dtype))
            block = np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)
            out.write(block.tobytes())
            count += int(block.size)
            if tick is not None:
                tick(sum(len(t.encode("utf-8")) if not t.isascii() else len(t) for t in batch))
            batch.clear()
            starts.clear()
            size = 0

        for new_doc, text in pieces:
            batch.append(text)
            starts.append(new_doc)
            size += len(text)
            if size >= ENCODE_BATCH_CHARS:
                flush()
        flush()
    return count


# -- shifted batches ------------------------------------------------------------


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


def check_windows(n_tokens: int, block_size: int, shift: int, split: str = "val") -> None:
    need = block_size + shift
    if n_tokens < need:
        raise DataError(
            f"the {split} split holds {n_tokens:,} tokens, fewer than one window of block_size + shift = {need:,}; "
            f"use a smaller block_size, a larger val_fraction or more text"
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
