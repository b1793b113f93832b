"""The token store: a corpus's train/val ids on disk, memory-mapped.

``prepare`` turns a corpus into a folder::

    tokenizer.json   the tokenizer, standard format
    train.bin        flat uint16 (vocab <= 65,535) or uint32 token ids
    val.bin
    meta.json        dtype, counts, vocab size, sources, split, "format": "text"

A corpus of fine-tuning records (:mod:`~shiftstudio.core.data.records`) adds,
per split, the loss mask and where each example starts::

    train.bin        every training example's ids, end to end
    train.mask.bin   uint8, 1 where the token is a scored target (completion, assistant turns, their EOT)
    train.index.bin  int64, the n+1 start offsets of the examples
    val.bin, val.mask.bin, val.index.bin
    meta.json        "format": "records", example counts, per-split token length figures

and is sampled by example (:class:`~shiftstudio.core.data.batches.ExampleSampler`).
A meta.json without "format" is a text store.

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
from shiftstudio.core.data.batches import BatchSampler, ExampleSampler, check_windows
from shiftstudio.core.data.corpus import Corpus
from shiftstudio.core.data.records import TEMPLATE_VERSION, RecordLengths, context_warnings, encode_records, spread
from shiftstudio.core.data.split import RecordSplit, make_split
from shiftstudio.core.data.tokenizer import TextTokenizer, build_tokenizer
from shiftstudio.core.errors import Cancelled, CorpusError, DataError, DiskFull, TokenizerError, one_line

TEXT_STORE_VERSION = 1
RECORDS_STORE_VERSION = 2
STORE_VERSION = 2  # the newest this code reads (text stores are still written as version 1)
ENCODE_BATCH_CHARS = 1 << 20  # characters per encode_batch call (Encodings cost ~80 B a token)
UINT16_MAX_VOCAB = 65535
# The store folder's files (the one place that names them).
META_FILE = "meta.json"
TRAIN_FILE = "train.bin"
VAL_FILE = "val.bin"
TOKENIZER_FILE = "tokenizer.json"
MASK_FILES = {"train": "train.mask.bin", "val": "val.mask.bin"}
INDEX_FILES = {"train": "train.index.bin", "val": "val.index.bin"}
SPLIT_NAMES = {"train": "training", "val": "validation"}


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
        self.format = meta.get("format", "text")
        self.masks: dict[str, np.ndarray] = {}
        self.indexes: dict[str, np.ndarray] = {}
        self._lengths: dict[str, RecordLengths] = {}
        if self.is_records:
            for split, tokens in (("train", len(self.train)), ("val", len(self.val))):
                self.masks[split] = self._map(MASK_FILES[split], np.dtype(np.uint8), tokens)
                index = np.asarray(self._map(INDEX_FILES[split], np.dtype(np.int64), int(meta[f"{split}_examples"]) + 1))
                if len(index) == 0 or index[0] != 0 or index[-1] != tokens or np.any(np.diff(index) < 0):
                    raise DataError(f"{self.dir / INDEX_FILES[split]} does not match {split}.bin; prepare the data again")
                self.indexes[split] = index

    @property
    def is_records(self) -> bool:
        """Fine-tuning records (ids + loss masks, sampled by example), not plain text."""
        return self.format == "records"

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
        except (OSError, ValueError, RecursionError) as exc:
            raise DataError(f"{meta_path} is unreadable: {one_line(exc, 200)}") from None
        version = meta.get("version", 0) if isinstance(meta, dict) else None
        if not isinstance(version, int):
            raise DataError(f"{meta_path} is corrupt; prepare the data again")
        if version > STORE_VERSION:
            raise DataError(f"{folder} was written by a newer ShiftStudio (store version {meta.get('version')})")
        tokenizer = TextTokenizer.load(folder / TOKENIZER_FILE)
        try:
            return cls(folder, tokenizer, meta)
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise DataError(f"{meta_path} is corrupt ({one_line(exc, 200)}); prepare the data again") from None

    def check_windows(self, block_size: int, shift: int) -> None:
        """Raise :class:`DataError` unless both splits can give a batch at this context: a window of
        ``block_size + shift`` tokens for text; for records, an example with a scored target inside its
        first window (examples whose prompt alone fills the context are skipped by the sampler)."""
        if not self.is_records:
            check_windows(len(self.train), block_size, shift, "training")
            check_windows(len(self.val), block_size, shift, "validation")
            return
        ok = {split: bool(self.lengths(split).scorable(block_size, shift).any()) for split in ("train", "val")}
        if not ok["train"] and not ok["val"]:
            raise DataError(
                f"every example's prompt fills the context (block_size {block_size}): raise block_size or shorten prompts"
            )
        for split in ("train", "val"):
            if not ok[split]:
                raise DataError(
                    f"every {SPLIT_NAMES[split]} example's prompt fills the context (block_size {block_size}): "
                    "raise block_size or shorten prompts" + (", or raise val_fraction" if split == "val" else "")
                )

    def sampler(
        self, split: str, batch_size: int, block_size: int, shift: int, seed: int = 0, device: Any = "cpu"
    ) -> BatchSampler | ExampleSampler:
        """A seeded, resumable sampler of shifted batches from the ``split`` ('train' or 'val'): windows of the
        token stream for text, whole examples (right-padded, masked) for records."""
        ids = self.train if split == "train" else self.val
        if self.is_records:
            eligible = self.lengths(split).scorable(block_size, shift)
            pad = self.tokenizer.eot_id if self.tokenizer.eot_id is not None else 0
            return ExampleSampler(
                ids, self.masks[split], self.indexes[split], batch_size, block_size, shift,
                seed=seed, device=device, split=split, pad_id=pad, eligible=eligible,
            )
        return BatchSampler(ids, batch_size, block_size, shift, seed=seed, device=device, split=split)

    # -- records ---------------------------------------------------------------
    def n_examples(self, split: str) -> int:
        """Examples in ``split`` (0 for a text store)."""
        return len(self.indexes[split]) - 1 if self.is_records else 0

    def example(self, split: str, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Example ``i`` of ``split``: its ids (int64) and its mask (uint8, 1 = scored)."""
        if not self.is_records:
            raise DataError("this token store holds plain text, not examples")
        n = self.n_examples(split)
        if not 0 <= i < n:
            raise IndexError(f"example {i} of {n} in the {split} split")
        a, b = int(self.indexes[split][i]), int(self.indexes[split][i + 1])
        ids = self.train if split == "train" else self.val
        return np.asarray(ids[a:b], dtype=np.int64), np.asarray(self.masks[split][a:b], dtype=np.uint8)

    def lengths(self, split: str) -> RecordLengths:
        """Per-example token figures of ``split`` (computed once, from the index and mask files)."""
        if split not in self._lengths:
            self._lengths[split] = RecordLengths.from_arrays(self.masks[split], self.indexes[split])
        return self._lengths[split]

    def record_stats(self, block_size: int, shift: int) -> dict[str, Any]:
        """What this context does to the examples: per split and overall, the example count, prompt
        (unscored) / completion (scored) / total token spreads (min, median, max), how many are truncated
        (longer than ``block_size + shift``) and how many are unscorable (no scored token inside the
        window: skipped); ``warnings`` says it in sentences."""
        if not self.is_records:
            raise DataError("this token store holds plain text, not examples")
        out: dict[str, Any] = {"block_size": block_size, "shift": shift}
        for split in ("train", "val"):
            out[split] = self.lengths(split).stats(block_size, shift)
        out.update(RecordLengths.concat([self.lengths("train"), self.lengths("val")]).stats(block_size, shift))
        out["warnings"] = context_warnings(out["examples"], out["truncated"], out["unscorable"], block_size, shift)
        return out

    def summary(self) -> str:
        m = self.meta
        if self.is_records:
            return (
                f"{m['train_examples']:,} train + {m['val_examples']:,} val examples "
                f"({m['train_tokens']:,} + {m['val_tokens']:,} tokens), vocab {m['vocab_size']:,} "
                f"({m['tokenizer_kind']}), {m['dtype']}, from {len(m['sources'])} file(s)"
            )
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
    text = f"v{TEXT_STORE_VERSION}|{corpus.fingerprint()}|{tok}|{data.val_fraction}|{data.split_seed}"
    if corpus.is_records:
        text = f"v{RECORDS_STORE_VERSION}|records-t{TEMPLATE_VERSION}|" + text
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
            except (DataError, TokenizerError, ValueError):
                shutil.rmtree(target, ignore_errors=True)  # a damaged cache entry is rebuilt
    else:
        target = Path(out_dir)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".prepare-", dir=target.parent))
    except OSError as exc:
        if io.is_disk_full(exc):
            raise DiskFull(target, io.disk_full_code(exc)) from exc
        raise
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

        extra: dict[str, Any] = {"format": "text"}
        if isinstance(split, RecordSplit):
            extra = encode_records_to_files(split, tokenizer, tmp, dtype, tick)
            n_train, n_val = extra["train_tokens"], extra["val_tokens"]
        else:
            n_train = encode_to_file(split.iter_train(), tokenizer, tmp / TRAIN_FILE, dtype, tick)
            n_val = encode_to_file(split.iter_val(), tokenizer, tmp / VAL_FILE, dtype, tick)
        if n_train == 0:
            raise CorpusError("the training split holds no tokens: the corpus is too small")
        if n_val == 0:
            raise CorpusError("the validation split holds no tokens: raise val_fraction or add text")
        tokenizer.save(tmp / TOKENIZER_FILE)
        meta = {
            "version": RECORDS_STORE_VERSION if isinstance(split, RecordSplit) else TEXT_STORE_VERSION,
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
            **extra,
        }
        io.write_json(tmp / META_FILE, meta)
        _move_into_place(tmp, target)
    except Exception as exc:
        if io.is_disk_full(exc):  # the ids, the tokenizer or meta.json: the store is what was being written
            raise DiskFull(target, io.disk_full_code(exc)) from exc
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # nothing half-written stays behind
    return TokenStore.open(target)


def _move_into_place(tmp: Path, target: Path) -> None:
    """Put the finished store at ``target``; files already there are replaced."""
    if not target.exists():
        io.replace(tmp, target)
        return
    for name in (TRAIN_FILE, VAL_FILE, TOKENIZER_FILE, *MASK_FILES.values(), *INDEX_FILES.values()):
        if (tmp / name).exists():
            io.replace(tmp / name, target / name)
        elif name not in (TRAIN_FILE, VAL_FILE, TOKENIZER_FILE):
            (target / name).unlink(missing_ok=True)  # a text store replacing a records store
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


def encode_records_to_files(
    split: RecordSplit, tokenizer: TextTokenizer, folder: Path, dtype: np.dtype, tick: Callable[[int], None] | None = None
) -> dict[str, Any]:
    """Encode the examples of a records split into ``folder``: ids, mask and index per split.

    One file's records are held at a time (records files are small); each is encoded with
    ``encode_many`` and appended. Returns the meta.json entries of a records store.
    """
    paths = {"train": folder / TRAIN_FILE, "val": folder / VAL_FILE}
    outs = {}
    counts = {"train": 0, "val": 0}
    starts: dict[str, list[np.ndarray]] = {"train": [], "val": []}
    lengths: dict[str, list[RecordLengths]] = {"train": [], "val": []}
    chats = {"train": 0, "val": 0}
    try:
        for split_name in ("train", "val"):
            outs[split_name] = (paths[split_name].open("wb"), (folder / MASK_FILES[split_name]).open("wb"))
        first = 0
        for fi, f in enumerate(split.corpus.files):
            chosen: dict[str, list] = {"train": [], "val": []}
            for in_val, record in split.iter_file_examples(fi, first):
                chosen["val" if in_val else "train"].append(record)
            first += f.documents
            for split_name, records in chosen.items():
                if not records:
                    continue
                enc = encode_records(records, tokenizer, dtype)
                ids_out, mask_out = outs[split_name]
                ids_out.write(enc.ids.tobytes())
                mask_out.write(enc.mask.tobytes())
                starts[split_name].append(enc.index[:-1] + counts[split_name])
                lengths[split_name].append(RecordLengths.from_arrays(enc.mask, enc.index))
                counts[split_name] += len(enc.ids)
                chats[split_name] += sum(r.kind == "chat" for r in records)
            if tick is not None:
                tick(f.size)
    finally:
        for pair in outs.values():
            for fh in pair:
                fh.close()
    meta: dict[str, Any] = {"format": "records", "template_version": TEMPLATE_VERSION, "record_lengths": {}}
    for split_name in ("train", "val"):
        index = np.concatenate([*starts[split_name], np.array([counts[split_name]], dtype=np.int64)]).astype(np.int64)
        with (folder / INDEX_FILES[split_name]).open("wb") as fh:
            fh.write(index.tobytes())
        meta[f"{split_name}_tokens"] = counts[split_name]
        meta[f"{split_name}_examples"] = len(index) - 1
        meta[f"{split_name}_chats"] = chats[split_name]
        ls = RecordLengths.concat(lengths[split_name]) if lengths[split_name] else RecordLengths.from_arrays(np.zeros(0), np.zeros(1))
        meta["record_lengths"][split_name] = {
            "prompt_tokens": spread(ls.lengths - ls.scored),
            "completion_tokens": spread(ls.scored),
            "total_tokens": spread(ls.lengths),
        }
    meta["examples"] = meta["train_examples"] + meta["val_examples"]
    return meta
