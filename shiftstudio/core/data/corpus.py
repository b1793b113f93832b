"""The corpus: text files on disk, their statistics and the train/val split.

A corpus is opened from files, folders (walked recursively) or both. Plain
text files are one document each; a ``.jsonl`` file holds one document per
line in its ``text`` field — or fine-tuning *records*, one a line:
prompt/completion pairs or chats (see :mod:`shiftstudio.core.data.records`).
A corpus is all text or all records, never both. Opening scans every byte once, streaming, to count
characters and lines, check the encoding and hash the content; the result is
cached by (path, size, mtime) so opening the same files again costs only a
``stat`` per file. Text is never held whole in memory: documents are read back
as a stream of pieces when the token store encodes them.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from shiftstudio.core import io
from shiftstudio.core.data.records import CHAT, Record, line_kind, parse_record
from shiftstudio.core.errors import Cancelled, CorpusError, NotUtf8Error, one_line

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20  # read size when streaming a file
PIECE_CHARS = 1 << 16  # target size of a text piece handed to the tokenizer
SCAN_CACHE_VERSION = 2

TEXT_SUFFIXES = {
    ".txt", ".md", ".markdown", ".rst", ".py", ".pyi", ".c", ".h", ".cc", ".cpp", ".hpp", ".rs", ".go",
    ".java", ".js", ".ts", ".tsx", ".jsx", ".html", ".htm", ".css", ".xml", ".json", ".csv", ".tsv",
    ".tex", ".org", ".yaml", ".yml", ".toml", ".ini", ".cfg", ".sh", ".sql", ".rb", ".php", ".lua",
    ".jl", ".r", ".m", ".swift", ".kt", ".scala", ".hs", ".ml", ".el", ".lisp", ".clj", ".text", ".log",
}
JSONL_SUFFIXES = {".jsonl", ".ndjson"}
# Magic numbers of common binary formats, so a PNG is called a PNG.
BINARY_MAGIC = {
    b"\x89PNG": "a PNG image", b"\xff\xd8\xff": "a JPEG image", b"GIF8": "a GIF image", b"%PDF": "a PDF document",
    b"PK\x03\x04": "a ZIP archive", b"\x1f\x8b": "a gzip archive", b"\x7fELF": "a program", b"BZh": "a bzip2 archive",
}


@dataclass
class CorpusFile:
    path: Path
    size: int  # bytes
    kind: str  # "text" | "jsonl" | "records"
    documents: int  # records: examples
    chars: int  # records: characters of the rendered examples
    lines: int
    digest: str = ""  # content hash (blake2b)
    doc_chars: list[int] = field(default_factory=list, repr=False)  # jsonl, records: chars per document
    chats: int = 0  # records: how many of the examples are chats (the others are prompt/completion)


ProgressFn = Callable[[int, int], None]  # (bytes done, bytes total)


# Byte-order marks of the encodings that are text but not UTF-8 (UTF-32 first: its mark starts like UTF-16's).
OTHER_ENCODINGS = {b"\xff\xfe\x00\x00": "UTF-32", b"\x00\x00\xfe\xff": "UTF-32", b"\xff\xfe": "UTF-16", b"\xfe\xff": "UTF-16"}


def _sniff_binary(path: Path) -> str | None:
    """What ``path`` is if it is not UTF-8 text ('a PNG image, not text'), else None."""
    with path.open("rb") as fh:
        head = fh.read(8192)
    for magic, what in BINARY_MAGIC.items():
        if head.startswith(magic):
            return f"{what}, not text"
    for mark, encoding in OTHER_ENCODINGS.items():
        if head.startswith(mark):
            return f"{encoding} text, not UTF-8: save it as UTF-8"
    if b"\x00" in head:
        return "a binary file, not text"
    return None


def _kind_of(path: Path) -> str:
    return "jsonl" if path.suffix.lower() in JSONL_SUFFIXES else "text"


def _expand(paths: Sequence[str | os.PathLike], warn: Callable[[str], None]) -> list[Path]:
    """Files named, plus text-looking files found under folders (sorted, hidden skipped)."""
    out: list[Path] = []
    seen: set[Path] = set()
    for raw in paths:
        p = Path(raw).expanduser()
        if not p.exists():
            raise CorpusError(f"not found: {p}")
        if p.is_dir():
            found: list[Path] = []
            other: list[str] = []
            for root, dirs, files in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__pycache__")
                for name in sorted(files):
                    f = Path(root) / name
                    suffix = f.suffix.lower()
                    if name.startswith("."):
                        continue
                    if suffix in TEXT_SUFFIXES or suffix in JSONL_SUFFIXES or suffix == "":
                        found.append(f)
                    else:
                        other.append(name)
            if not found:
                raise CorpusError(f"no text files (.txt, .md, .py, .jsonl …) in folder {p}")
            if other:
                shown = ", ".join(other[:3]) + (f" and {len(other) - 3} more" if len(other) > 3 else "")
                warn(f"skipped {len(other)} file{'s' if len(other) > 1 else ''} in {p.name} that {'are' if len(other) > 1 else 'is'} not text: {shown}")
            candidates = found
        else:
            candidates = [p]
        for f in candidates:
            key = f.resolve()
            if key not in seen:
                seen.add(key)
                out.append(f)
    return out


def _scan_cache_path() -> Path:
    from shiftstudio import paths

    return paths.cache_dir() / "corpus-scan.json"


def _load_scan_cache() -> dict:
    try:
        data = json.loads(_scan_cache_path().read_text(encoding="utf-8"))
        return data if data.get("version") == SCAN_CACHE_VERSION else {}
    except (OSError, ValueError):
        return {}


def _save_scan_cache(cache: dict) -> None:
    cache["version"] = SCAN_CACHE_VERSION
    entries = cache.setdefault("files", {})
    if len(entries) > 2000:  # keep the cache small: drop the oldest entries
        for key in list(entries)[: len(entries) - 2000]:
            del entries[key]
    try:
        io.write_json(_scan_cache_path(), cache, indent=None, durable=False)
    except OSError as exc:  # a cache that cannot be written only costs time
        log.warning("cannot write corpus scan cache: %s", exc)


def _decode_error(path: Path, offset: int) -> NotUtf8Error:
    return NotUtf8Error(path, offset)


def _scan_text(path: Path, errors: str, tick: Callable[[int], None], cancel: Callable[[], bool] | None) -> CorpusFile:
    decoder = codecs.getincrementaldecoder("utf-8")(errors=errors)
    digest = hashlib.blake2b(digest_size=16)
    chars = lines = done = 0
    last = ""
    with path.open("rb") as fh:
        while True:
            chunk = fh.read(CHUNK_BYTES)
            final = not chunk
            pending = len(decoder.getstate()[0])  # bytes of a character split across chunks
            try:
                text = decoder.decode(chunk, final=final)
            except UnicodeDecodeError as exc:
                raise _decode_error(path, done - pending + exc.start) from None
            digest.update(chunk)
            chars += len(text)
            lines += text.count("\n")
            if text:
                last = text[-1]
            done += len(chunk)
            tick(len(chunk))
            if cancel is not None and cancel():
                raise Cancelled()
            if final:
                break
    if chars and last != "\n":
        lines += 1
    return CorpusFile(path, done, "text", 1 if chars else 0, chars, lines, digest.hexdigest())


def _scan_jsonl(path: Path, errors: str, tick: Callable[[int], None], cancel: Callable[[], bool] | None) -> CorpusFile:
    """A ``.jsonl`` file of ``text`` documents, or of records: its first object decides, every line is
    checked (records fully parsed, so bad input is caught here, naming the file and line)."""
    digest = hashlib.blake2b(digest_size=16)
    chars = lines = docs = size = chats = 0
    doc_chars: list[int] = []
    kind: str | None = None
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            digest.update(raw)
            size += len(raw)
            tick(len(raw))
            if cancel is not None and number % 4096 == 0 and cancel():
                raise Cancelled()
            if not raw.strip():
                continue
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8", errors=errors)  # (a BOM is fine)
            except UnicodeDecodeError as exc:
                raise _decode_error(path, size - len(raw) + exc.start) from None
            where = f"{path.name} line {number}" if kind == "records" else f"{path}, line {number}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise CorpusError(f"{where}: not valid JSON ({exc.msg})") from None
            except RecursionError:
                raise CorpusError(f"{where}: not valid JSON (nested too deeply)") from None
            except ValueError as exc:  # a number past Python's limits, say
                raise CorpusError(f"{where}: not valid JSON ({one_line(exc, 200)})") from None
            if kind is None:
                kind = line_kind(obj) or "text"
            if kind == "records":
                record = parse_record(obj, f"{path.name} line {number}")
                chats += record.kind == CHAT
                text = record.text()
            else:
                if line_kind(obj) == "records":
                    raise CorpusError(
                        f"{path.name} line {number}: a fine-tuning record among plain 'text' documents: "
                        "records and plain text cannot be mixed"
                    )
                if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
                    raise CorpusError(f'{path}, line {number}: expected an object with a "text" string field')
                text = obj["text"]
            docs += 1
            chars += len(text)
            lines += text.count("\n") + (1 if text and not text.endswith("\n") else 0)
            doc_chars.append(len(text))
    return CorpusFile(path, size, kind if kind == "records" else "jsonl", docs, chars, lines, digest.hexdigest(), doc_chars, chats)


class Corpus:
    """A set of text documents on disk, with their counts."""

    def __init__(self, files: list[CorpusFile], errors: str = "strict", warnings: list[str] | None = None):
        self.files = files
        self.errors = errors
        self.warnings = list(warnings or [])

    # -- opening -------------------------------------------------------------
    @classmethod
    def open(
        cls,
        paths: Sequence[str | os.PathLike] | str | os.PathLike,
        *,
        errors: str = "strict",
        on_warning: Callable[[str], None] | None = None,
        progress: ProgressFn | None = None,
        cancel: Callable[[], bool] | None = None,
    ) -> "Corpus":
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        if not paths:
            raise CorpusError("no corpus given: pick at least one file or folder")
        if errors not in ("strict", "replace"):
            raise CorpusError(f"errors must be 'strict' or 'replace', got {errors!r}")
        warnings: list[str] = []

        def warn(message: str) -> None:
            warnings.append(message)
            log.warning("%s", message)
            if on_warning is not None:
                on_warning(message)

        candidates = _expand(paths, warn)
        usable: list[Path] = []
        for f in candidates:
            if not f.is_file():
                continue
            what = _sniff_binary(f)
            if what is not None:
                if len(candidates) == 1:
                    raise CorpusError(f"{f} is {what}")
                warn(f"skipped {f.name}: it is {what}")
                continue
            usable.append(f)
        if not usable:
            raise CorpusError("no text files left to read: every file given is binary")

        total = sum(f.stat().st_size for f in usable)
        done = 0

        def tick(n: int) -> None:
            nonlocal done
            done += n
            if progress is not None:
                progress(done, total)

        cache = _load_scan_cache()
        entries = cache.setdefault("files", {})
        files: list[CorpusFile] = []
        for f in usable:
            st = f.stat()
            key = f"{f.resolve()}|{st.st_size}|{st.st_mtime_ns}|{errors}"
            hit = entries.get(key)
            if hit is not None:
                entry = CorpusFile(**{**hit, "path": f})
                tick(entry.size)
            else:
                scan = _scan_jsonl if _kind_of(f) == "jsonl" else _scan_text
                entry = scan(f, errors, tick, cancel)
                record = asdict(entry)
                record["path"] = str(f)
                entries[key] = record
            if entry.chars == 0:
                if len(usable) == 1:
                    raise CorpusError(f"{f} is empty: there is no text to train on")
                warn(f"skipped {f.name}: it is empty")
                continue
            files.append(entry)
        if not files:
            raise CorpusError("every file given is empty: there is no text to train on")
        _save_scan_cache(cache)
        records = [f for f in files if f.kind == "records"]
        if records and len(records) < len(files):
            text = next(f for f in files if f.kind != "records")
            raise CorpusError(
                f"records and plain text cannot be mixed in one corpus: {records[0].path.name} holds fine-tuning "
                f"records, {text.path.name} is plain text; open them separately"
            )
        return cls(files, errors, warnings)

    # -- counts --------------------------------------------------------------
    @property
    def n_files(self) -> int:
        return len(self.files)

    @property
    def n_documents(self) -> int:
        return sum(f.documents for f in self.files)

    @property
    def is_records(self) -> bool:
        """Fine-tuning records (prompt/completion or chat), not plain text."""
        return bool(self.files) and all(f.kind == "records" for f in self.files)

    @property
    def kind(self) -> str:
        """'records' or 'text'."""
        return "records" if self.is_records else "text"

    @property
    def n_examples(self) -> int:
        """Records: how many examples (0 for plain text)."""
        return self.n_documents if self.is_records else 0

    @property
    def n_chats(self) -> int:
        return sum(f.chats for f in self.files)

    @property
    def n_bytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def n_chars(self) -> int:
        return sum(f.chars for f in self.files)

    @property
    def n_lines(self) -> int:
        return sum(f.lines for f in self.files)

    def fingerprint(self) -> str:
        """Hash of the content (and order) of every file: same text, same key."""
        h = hashlib.blake2b(digest_size=16)
        for f in self.files:
            h.update(f.digest.encode())
        h.update(self.errors.encode())
        if self.is_records:
            h.update(b"|records")
        return h.hexdigest()

    def doc_chars(self) -> np.ndarray:
        """Characters per document, in corpus order."""
        sizes: list[int] = []
        for f in self.files:
            sizes.extend(f.doc_chars if f.kind in ("jsonl", "records") else [f.chars])
        return np.asarray(sizes, dtype=np.int64)

    # -- reading -------------------------------------------------------------
    def iter_file_records(self, index: int) -> Iterator[Record]:
        """The examples of records file ``index``, in order (checked when the corpus was opened)."""
        f = self.files[index]
        if f.kind != "records":
            raise CorpusError(f"{f.path.name} holds plain text, not records")
        with f.path.open("r", encoding="utf-8-sig", errors=self.errors) as fh:
            for number, line in enumerate(fh, start=1):
                if line.strip():
                    yield parse_record(json.loads(line), f"{f.path.name} line {number}")

    def iter_records(self) -> Iterator[Record]:
        """Every example of a records corpus, in corpus order."""
        for i in range(len(self.files)):
            yield from self.iter_file_records(i)

    def iter_file_documents(self, index: int) -> Iterator[Iterator[str]]:
        """Documents of file ``index``, each a stream of text pieces (records: each example's rendered text)."""
        f = self.files[index]
        if f.kind == "records":
            for record in self.iter_file_records(index):
                yield iter(text_pieces(record.text()))
        elif f.kind == "jsonl":
            with f.path.open("r", encoding="utf-8-sig", errors=self.errors) as fh:
                for line in fh:
                    if line.strip():
                        yield iter(text_pieces(json.loads(line)["text"]))
        else:
            yield stream_text(f.path, self.errors)

    def preview(self, max_chars: int = 5000) -> str:
        """The first characters of the corpus (documents separated by a blank line)."""
        out: list[str] = []
        size = 0
        for i in range(len(self.files)):
            for doc in self.iter_file_documents(i):
                if out:
                    out.append("\n\n")
                    size += 2
                for piece in doc:
                    out.append(piece[: max(0, max_chars - size)])
                    size += len(out[-1])
                    if size >= max_chars:
                        return "".join(out)[:max_chars]
        return "".join(out)[:max_chars]



def text_pieces(text: str, size: int = PIECE_CHARS) -> Iterator[str]:
    """Cut text into pieces of about ``size`` characters, after a newline where possible."""
    start = 0
    n = len(text)
    while start < n:
        end = min(n, start + size)
        if end < n:
            cut = text.rfind("\n", start + size // 2, end)
            if cut != -1:
                end = cut + 1
        yield text[start:end]
        start = end


def stream_text(path: Path, errors: str, start_byte: int = 0, end_byte: int | None = None) -> Iterator[str]:
    """Decoded text of ``path[start_byte:end_byte]`` as pieces cut after newlines."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors=errors)
    carry = ""
    with path.open("rb") as fh:
        fh.seek(start_byte)
        remaining = None if end_byte is None else end_byte - start_byte
        while True:
            want = CHUNK_BYTES if remaining is None else min(CHUNK_BYTES, remaining)
            chunk = fh.read(want) if want > 0 else b""
            if remaining is not None:
                remaining -= len(chunk)
            final = not chunk
            text = carry + decoder.decode(chunk, final=final)
            if final:
                if text:
                    yield from text_pieces(text)
                return
            cut = text.rfind("\n")
            if cut == -1 or len(text) - cut > PIECE_CHARS:
                cut = len(text) - 1
            carry = text[cut + 1 :]
            yield from text_pieces(text[: cut + 1])

