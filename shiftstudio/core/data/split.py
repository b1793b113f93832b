"""The train/validation split of a corpus.

Many documents split by document: a seeded shuffle picks whole documents for
validation until they hold about ``val_fraction`` of the characters. One
document (a single text file, say) splits at a character boundary near the
fraction: the head trains, the tail validates, as nanoGPT does with its
shakespeare file. If whole documents cannot come near the fraction (two
files, one huge), the corpus is cut the same way, inside the document that
straddles the fraction.

Fine-tuning records split by example: a seeded shuffle puts ``val_fraction``
of the examples (at least one, and at least one left to train) in validation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from shiftstudio.core.data.corpus import PIECE_CHARS, Corpus, stream_text, text_pieces
from shiftstudio.core.data.records import Record
from shiftstudio.core.errors import CorpusError

Piece = tuple[bool, str]  # (starts a new document, text)


@dataclass
class _Cut:
    doc: int  # global document index that is cut in two
    file: int
    byte: int | None  # text files: byte offset of the cut
    char: int | None  # jsonl documents: character offset of the cut


def _utf8_boundary(path, offset: int) -> int:
    """Move ``offset`` back to the first byte of a UTF-8 character."""
    with open(path, "rb") as fh:
        start = max(0, offset - 4)
        fh.seek(start)
        window = fh.read(offset - start + 1)
    pos = offset
    while pos > 0 and pos - start < len(window) and (window[pos - start] & 0xC0) == 0x80:
        pos -= 1
    return pos


class CorpusSplit:
    """Which documents (or which part of the one document) train and validate."""

    def __init__(self, corpus: Corpus, val_fraction: float, seed: int, val_docs: np.ndarray, cut: _Cut | None):
        self.corpus = corpus
        self.val_fraction = val_fraction
        self.seed = seed
        self.val_docs = val_docs  # bool per document (documents after a cut count as val)
        self.cut = cut
        sizes = corpus.doc_chars()
        if cut is None:
            self.val_chars = int(sizes[val_docs].sum())
        else:
            self.val_chars = int(sizes[cut.doc + 1 :].sum()) + self._cut_val_chars()
        self.train_chars = int(sizes.sum()) - self.val_chars
        self.val_documents = int(val_docs.sum()) + (1 if cut is not None else 0)
        self.train_documents = len(sizes) - int(val_docs.sum())

    def _cut_val_chars(self) -> int:
        return sum(len(p) for starts, p in self._doc_part(self.cut.doc, val=True))

    @property
    def mode(self) -> str:
        return "documents" if self.cut is None else "cut"

    # -- streaming -----------------------------------------------------------
    def _documents(self) -> Iterator[tuple[int, int, Iterator[str]]]:
        """(global doc index, file index, stream of pieces) in corpus order."""
        g = 0
        for fi in range(len(self.corpus.files)):
            for doc in self.corpus.iter_file_documents(fi):
                yield g, fi, doc
                g += 1

    def _doc_part(self, doc_index: int, val: bool) -> Iterator[Piece]:
        cut = self.cut
        f = self.corpus.files[cut.file]
        if cut.byte is not None:
            rng = (cut.byte, None) if val else (0, cut.byte)
            stream = stream_text(f.path, self.corpus.errors, rng[0], rng[1])
        else:
            for g, fi, doc in self._documents():
                if g == doc_index:
                    text = "".join(doc)
                    stream = text_pieces(text[cut.char :] if val else text[: cut.char])
                    break
            else:  # pragma: no cover - the cut document always exists
                return
        first = True
        for piece in stream:
            yield first, piece
            first = False

    def iter_train(self) -> Iterator[Piece]:
        yield from self._iter(val=False)

    def iter_val(self) -> Iterator[Piece]:
        yield from self._iter(val=True)

    def _iter(self, val: bool) -> Iterator[Piece]:
        for g, fi, doc in self._documents():
            if self.cut is not None and g == self.cut.doc:
                yield from self._doc_part(g, val)
                continue
            in_val = bool(self.val_docs[g]) if self.cut is None else g > self.cut.doc
            if in_val != val:
                continue
            first = True
            for piece in doc:
                yield first, piece
                first = False

    def split_bytes(self) -> tuple[int, int]:
        """Approximate bytes of (train, val), for progress reporting."""
        total = self.corpus.n_bytes
        chars = max(1, self.train_chars + self.val_chars)
        val = int(total * self.val_chars / chars)
        return total - val, val


class RecordSplit:
    """Which examples of a records corpus train and which validate (the same reading interface as
    :class:`CorpusSplit`: its pieces are the examples' rendered text, which a tokenizer learns from)."""

    mode = "examples"
    cut = None

    def __init__(self, corpus: Corpus, val_fraction: float, seed: int, val_docs: np.ndarray):
        self.corpus = corpus
        self.val_fraction = val_fraction
        self.seed = seed
        self.val_docs = val_docs  # bool per example
        sizes = corpus.doc_chars()
        self.val_chars = int(sizes[val_docs].sum())
        self.train_chars = int(sizes.sum()) - self.val_chars
        self.val_documents = int(val_docs.sum())
        self.train_documents = len(val_docs) - self.val_documents

    @property
    def train_examples(self) -> int:
        return self.train_documents

    @property
    def val_examples(self) -> int:
        return self.val_documents

    def iter_file_examples(self, index: int, first: int) -> Iterator[tuple[bool, Record]]:
        """(in validation?, record) for the examples of file ``index``, whose first example has global
        number ``first``."""
        for i, record in enumerate(self.corpus.iter_file_records(index), start=first):
            yield bool(self.val_docs[i]), record

    def iter_examples(self, val: bool) -> Iterator[Record]:
        first = 0
        for fi, f in enumerate(self.corpus.files):
            for in_val, record in self.iter_file_examples(fi, first):
                if in_val == val:
                    yield record
            first += f.documents

    def iter_train(self) -> Iterator[Piece]:
        yield from self._pieces(val=False)

    def iter_val(self) -> Iterator[Piece]:
        yield from self._pieces(val=True)

    def _pieces(self, val: bool) -> Iterator[Piece]:
        """The examples' rendered text, one a line, gathered into pieces of about ``PIECE_CHARS`` (a
        tokenizer learns from these; many tiny pieces would cost a Python step each)."""
        batch: list[str] = []
        size = 0
        for record in self.iter_examples(val):
            text = record.text()
            batch.append(text)
            size += len(text) + 1
            if size >= PIECE_CHARS:
                yield True, "\n".join(batch) + "\n"
                batch, size = [], 0
        if batch:
            yield True, "\n".join(batch) + "\n"

    def split_bytes(self) -> tuple[int, int]:
        total = self.corpus.n_bytes
        chars = max(1, self.train_chars + self.val_chars)
        val = int(total * self.val_chars / chars)
        return total - val, val


def split_examples(n: int, val_fraction: float, seed: int) -> np.ndarray:
    """Which of ``n`` examples validate (bool mask): a seeded choice of round(val_fraction * n), at least 1
    and at most n - 1."""
    if n < 2:
        raise CorpusError(
            f"fine-tuning needs at least 2 examples (one to train, one to validate); the corpus holds {n}"
        )
    n_val = min(n - 1, max(1, int(round(val_fraction * n))))
    val = np.zeros(n, dtype=bool)
    val[np.random.default_rng(seed).permutation(n)[:n_val]] = True
    return val


def make_split(corpus: Corpus, val_fraction: float, seed: int) -> CorpusSplit | RecordSplit:
    if not 0.0 < val_fraction < 1.0:
        raise CorpusError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    if corpus.is_records:
        return RecordSplit(corpus, val_fraction, seed, split_examples(corpus.n_documents, val_fraction, seed))
    sizes = corpus.doc_chars()
    total = int(sizes.sum())
    target = val_fraction * total
    n = len(sizes)
    if n >= 2:
        order = np.random.default_rng(seed).permutation(n)
        val = np.zeros(n, dtype=bool)
        got = 0
        for i in order:
            if got >= target:
                break
            if got + sizes[i] <= 1.5 * target or not val.any():
                val[i] = True
                got += int(sizes[i])
        if val.any() and not val.all() and 0.5 * target <= got <= 1.5 * target:
            return CorpusSplit(corpus, val_fraction, seed, val, None)
    # Cut the stream at the fraction, inside the document that straddles it.
    boundary = total * (1.0 - val_fraction)
    ends = np.cumsum(sizes)
    doc = int(np.searchsorted(ends, boundary, side="right"))
    doc = min(doc, n - 1)
    start = int(ends[doc] - sizes[doc])
    within = int(boundary - start)
    fi = 0
    seen = 0
    for fi, f in enumerate(corpus.files):
        if doc < seen + f.documents:
            break
        seen += f.documents
    f = corpus.files[fi]
    if f.kind == "text":
        byte = int(round(f.size * within / max(1, f.chars)))
        byte = _utf8_boundary(f.path, min(max(byte, 1), f.size - 1))
        cut = _Cut(doc, fi, byte, None)
    else:
        cut = _Cut(doc, fi, None, min(max(within, 1), int(sizes[doc]) - 1))
    val_docs = np.zeros(n, dtype=bool)
    val_docs[doc + 1 :] = True
    return CorpusSplit(corpus, val_fraction, seed, val_docs, cut)
