"""The token store: a corpus's train/val ids on disk, memory-mapped.

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
from typing import Any, Callable, Iterator

import numpy as np

from shiftstudio.config import DataConfig
from shiftstudio.core import io
from shiftstudio.core.data.batches import BatchSampler, check_windows
from shiftstudio.core.data.corpus import Corpus
from shiftstudio.core.data.split import make_split
from shiftstudio.core.data.tokenizer import TextTokenizer, build_tokenizer
from shiftstudio.core.errors import Cancelled, CorpusError, DataError

STORE_VERSION = 1
ENCODE_BATCH_CHARS = 1 << 20  # characters per encode_batch call (Encodings cost ~80 B a token)
UINT16_MAX_VOCAB = 65535
# The store folder's files (the one place that names them).
META_FILE = "meta.json"
TRAIN_FILE = "train.bin"
VAL_FILE = "val.bin"
TOKENIZER_FILE = "tokenizer.json"


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
        self.train = self._map(TRAIN_FILE, dtype, int(meta["train_tokens"]))
        self.val = self._map(VAL_FILE, dtype, int(meta["val_tokens"]))

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
        meta_path = folder / META_FILE
        if not meta_path.is_file():
            raise DataError(f"{folder} is not a prepared data folder (no meta.json); run 'shiftstudio prepare' first")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DataError(f"{meta_path} is unreadable: {exc}") from None
        if int(meta.get("version", 0)) > STORE_VERSION:
            raise DataError(f"{folder} was written by a newer ShiftStudio (store version {meta.get('version')})")
        tokenizer = TextTokenizer.load(folder / TOKENIZER_FILE)
        return cls(folder, tokenizer, meta)

    def check_windows(self, block_size: int, shift: int) -> None:
        """Raise :class:`DataError` unless both splits hold at least one window of ``block_size + shift``."""
        check_windows(len(self.train), block_size, shift, "training")
        check_windows(len(self.val), block_size, shift, "validation")

    def sampler(
        self, split: str, batch_size: int, block_size: int, shift: int, seed: int = 0, device: Any = "cpu"
    ) -> BatchSampler:
        """A seeded, resumable sampler of shifted batches from the ``split`` ('train' or 'val')."""
        ids = self.train if split == "train" else self.val
        return BatchSampler(ids, batch_size, block_size, shift, seed=seed, device=device, split=split)

    def summary(self) -> str:
        m = self.meta
        return (
            f"{m['train_tokens']:,} train + {m['val_tokens']:,} val tokens, vocab {m['vocab_size']:,} "
            f"({m['tokenizer_kind']}), {m['dtype']}, {m['documents']:,} documents from {len(m['sources'])} file(s)"
        )


def _store_key(corpus: Corpus, data: DataConfig) -> str:
    spec = data.tokenizer.strip()
    if spec in ("char", "bpe"):
        tok = f"{spec}|{data.vocab_size if spec == 'bpe' else 0}|{data.min_frequency if spec == 'bpe' else 0}"
    else:
        path = Path(spec)
        tok = "file|" + (hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest() if path.is_file() else spec)
    text = f"v{STORE_VERSION}|{corpus.fingerprint()}|{tok}|{data.val_fraction}|{data.split_seed}"
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def prepare(
    data: DataConfig,
    out_dir: str | os.PathLike | None = None,
    progress: ProgressCallback | None = None,
    cancel: Callable[[], bool] | None = None,
    errors: str | None = None,
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

    errors = errors or data.encoding_errors
    if corpus is None:
        sources = list(data.corpus) or [str(paths.sample_corpus())]
        corpus = Corpus.open(sources, errors=errors, progress=lambda d, t: report("scanning", d, t), cancel=cancel)
    key = _store_key(corpus, data)
    if out_dir is None:
        target = paths.cache_dir() / "stores" / key
        if (target / META_FILE).is_file():
            try:
                return TokenStore.open(target)
            except (DataError, ValueError):
                shutil.rmtree(target, ignore_errors=True)  # a damaged cache entry is rebuilt
    else:
        target = Path(out_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".prepare-", dir=target.parent))
    try:
        split = make_split(corpus, data.val_fraction, data.split_seed)
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

        n_train = encode_to_file(split.iter_train(), tokenizer, tmp / TRAIN_FILE, dtype, tick)
        n_val = encode_to_file(split.iter_val(), tokenizer, tmp / VAL_FILE, dtype, tick)
        if n_train == 0:
            raise CorpusError("the training split holds no tokens: the corpus is too small")
        if n_val == 0:
            raise CorpusError("the validation split holds no tokens: raise val_fraction or add text")
        tokenizer.save(tmp / TOKENIZER_FILE)
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
        io.write_json(tmp / META_FILE, meta)
        _move_into_place(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return TokenStore.open(target)


def _move_into_place(tmp: Path, target: Path) -> None:
    """Put the finished store at ``target``; files already there are replaced."""
    if not target.exists():
        io.replace(tmp, target)
        return
    for name in (TRAIN_FILE, VAL_FILE, TOKENIZER_FILE):
        io.replace(tmp / name, target / name)
    io.replace(tmp / META_FILE, target / META_FILE)  # last: the store is valid once meta is


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
            encoded = tokenizer.encode_many(batch)
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
