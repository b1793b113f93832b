"""Tokenizers: character-level, byte-level BPE, or a ``tokenizer.json`` from disk.

All three are Hugging Face ``tokenizers`` objects saved as a standard
``tokenizer.json``, so a run's tokenizer opens in any tool that reads that
format. :class:`TextTokenizer` wraps one with the few operations the rest of
ShiftStudio needs (encode, decode, a display form of each token).

Ids: a character tokenizer numbers the corpus alphabet in code-point order
from 0 (as nanoGPT's ``stoi`` does), then ``<|endoftext|>`` and ``<unk>``.
A BPE tokenizer has ``<|endoftext|>`` as id 0 and the 256 byte symbols after it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

from shiftstudio.config import UINT32_MAX, DataConfig
from shiftstudio.core import io
from shiftstudio.core.data.split import CorpusSplit
from shiftstudio.core.errors import Cancelled, TokenizerError, one_line

EOT = "<|endoftext|>"
UNK = "<unk>"
BYTE_ALPHABET = 256


def _byte_level_table() -> dict[str, int]:
    """The byte-level alphabet: each of the 256 byte values is written as one printable character (bytes
    that are printable Latin-1 stand for themselves; the others are moved up past U+0100, in order)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, shifted = {}, 0
    for b in range(256):
        if b in printable:
            table[chr(b)] = b
        else:
            table[chr(256 + shifted)] = b
            shifted += 1
    return table


_UNICODE_TO_BYTE = _byte_level_table()


@dataclass(frozen=True)
class TokenPiece:
    """One token of a text, for showing: ``kind`` is 'text' (its characters), 'bytes' (part of a multi-byte
    character: ``text`` is its bytes in hex), 'unknown' (a character the vocabulary lacks: ``text`` is that
    character, the id is ``<unk>``) or 'special'. ``start``/``end`` are character offsets in the input."""

    id: int
    text: str
    start: int
    end: int
    kind: str


class TextTokenizer:
    """A ``tokenizers.Tokenizer`` plus what ShiftStudio asks of it."""

    def __init__(self, tokenizer: Tokenizer, kind: str):
        self.tk = tokenizer
        self.kind = kind  # "char" | "bpe" | "file"
        self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
        self.eot_id = tokenizer.token_to_id(EOT)
        self.unk_id = tokenizer.token_to_id(UNK)
        self._display: dict[int, str] = {}
        self._char_table: np.ndarray | None | bool = False  # False: not built yet

    # -- the character fast path -----------------------------------------------
    def char_table(self) -> np.ndarray | None:
        """For a plain character tokenizer, a code point → id table (int64).

        Index ``len - 1`` holds the ``<unk>`` id: code points past the table are
        clipped onto it. ``None`` for any other tokenizer (or a char vocabulary
        with a normalizer, or without ``<unk>``), which must go through
        ``tokenizers``. The table reproduces ``encode`` exactly for text that
        contains no special-token string (a test checks it).
        """
        if self._char_table is False:
            self._char_table = None
            if self.kind == "char" and self.tk.normalizer is None and self.unk_id is not None:
                vocab = self.tk.get_vocab(with_added_tokens=False)
                singles = {tok: i for tok, i in vocab.items() if len(tok) == 1}
                if len(singles) == len(vocab) - sum(1 for t in vocab if t in (EOT, UNK)):
                    top = max((ord(c) for c in singles), default=0)
                    table = np.full(top + 2, self.unk_id, dtype=np.int64)
                    for c, i in singles.items():
                        table[ord(c)] = i
                    self._char_table = table
        return self._char_table

    def encode_array(self, text: str) -> np.ndarray:
        """Ids of ``text`` as an int64 array; vectorised for char tokenizers."""
        table = self.char_table()
        if table is not None and EOT not in text and UNK not in text:
            try:
                points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
            except UnicodeEncodeError:  # a lone surrogate: let tokenizers decide
                pass
            else:
                return table[np.minimum(points, len(table) - 1)]
        return np.asarray(self.encode(text), dtype=np.int64)

    # -- coding --------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        return self.tk.encode(text, add_special_tokens=False).ids

    def encode_many(self, texts: list[str]) -> list[np.ndarray]:
        """Ids of each text (no special tokens added): vectorised for char tokenizers, else one parallel
        ``encode_batch`` call in Rust."""
        if self.char_table() is not None:
            return [self.encode_array(t) for t in texts]
        return [np.asarray(e.ids, dtype=np.int64) for e in self.tk.encode_batch_fast(texts, add_special_tokens=False)]

    def encode_with_offsets(self, text: str) -> list[tuple[int, int, int]]:
        """(id, start, end) per token, offsets in characters of ``text``."""
        enc = self.tk.encode(text, add_special_tokens=False)
        return [(i, s, e) for i, (s, e) in zip(enc.ids, enc.offsets)]

    def pieces(self, text: str) -> list[TokenPiece]:
        """``text`` as the model sees it: one :class:`TokenPiece` per token, honest about what each token
        holds — a character the vocabulary lacks is an *unknown* piece, a byte-level token that carries only
        part of a multi-byte character is a *bytes* piece (shown as its bytes, not as the whole character)."""
        enc = self.tk.encode(text, add_special_tokens=False)
        byte_level = self.kind == "bpe" or (self.kind == "file" and isinstance(self.tk.decoder, decoders.ByteLevel))
        specials = {EOT, UNK}
        out: list[TokenPiece] = []
        for token_id, token, (start, end) in zip(enc.ids, enc.tokens, enc.offsets):
            if token_id == self.unk_id:
                out.append(TokenPiece(token_id, text[start:end], start, end, "unknown"))
            elif token in specials:
                out.append(TokenPiece(token_id, token, start, end, "special"))
            elif byte_level and not all(c in _UNICODE_TO_BYTE for c in token):
                out.append(TokenPiece(token_id, token, start, end, "text"))  # an added token
            elif byte_level:
                raw = bytes(_UNICODE_TO_BYTE[c] for c in token)
                try:
                    out.append(TokenPiece(token_id, raw.decode("utf-8"), start, end, "text"))
                except UnicodeDecodeError:  # part of a character that other tokens finish
                    out.append(TokenPiece(token_id, " ".join(f"{b:02X}" for b in raw), start, end, "bytes"))
            else:
                out.append(TokenPiece(token_id, text[start:end], start, end, "text"))
        return out

    def decode(self, ids: Iterable[int]) -> str:
        return self.tk.decode(list(ids), skip_special_tokens=False)

    def token_text(self, token_id: int) -> str:
        """What one token stands for, as text (a BPE token's bytes decoded; a
        token that is part of a multi-byte character shows as U+FFFD)."""
        text = self._display.get(token_id)
        if text is None:
            text = self.tk.decode([int(token_id)], skip_special_tokens=False)
            self._display[token_id] = text
        return text

    def longest_tokens(self, n: int = 20) -> list[str]:
        vocab = self.tk.get_vocab(with_added_tokens=False)
        specials = {EOT, UNK}
        texts = [self.token_text(i) for tok, i in vocab.items() if tok not in specials]
        texts = [t for t in texts if "\ufffd" not in t]
        return sorted(texts, key=lambda t: (-len(t), t))[:n]

    # -- files ---------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        with io.atomic_path(path) as tmp:
            self.tk.save(str(tmp))

    @classmethod
    def load(cls, path: str | Path) -> "TextTokenizer":
        path = Path(path)
        if path.is_dir():
            path = path / "tokenizer.json"
        if not path.is_file():
            raise TokenizerError(f"tokenizer file not found: {path}")
        try:
            text = path.read_text(encoding="utf-8-sig")  # (a byte-order mark is fine)
            data = json.loads(text)
            if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
                raise ValueError("no tokenizer model in it")
            kind = _infer_kind(data)
            tk = Tokenizer.from_str(text)
        except RecursionError:
            raise TokenizerError(f"{path} is not a valid tokenizer.json (nested too deeply)") from None
        except Exception as exc:  # noqa: BLE001 - OSError, ValueError (UTF-8, JSON) and tokenizers' plain Exception
            raise TokenizerError(f"{path} is not a valid tokenizer.json ({one_line(exc, 200)})") from None
        if tk.get_vocab_size(with_added_tokens=True) > UINT32_MAX:
            raise TokenizerError(f"{path}: vocabulary larger than uint32 can hold")
        return cls(tk, kind)

    def fingerprint(self) -> str:
        return hashlib.blake2b(self.tk.to_str().encode("utf-8"), digest_size=16).hexdigest()


def _infer_kind(data: dict) -> str:
    """'char' or 'bpe' for tokenizers this module builds, else 'file'."""

    def kind_of(part: object) -> object:
        return part.get("type") if isinstance(part, dict) else None

    model, pre, dec = kind_of(data.get("model")), kind_of(data.get("pre_tokenizer")), kind_of(data.get("decoder"))
    if model == "WordLevel" and pre == "Split" and dec == "Fuse":
        return "char"
    if model == "BPE" and pre == "ByteLevel" and dec == "ByteLevel":
        return "bpe"
    return "file"


# -- builders ----------------------------------------------------------------


def char_tokenizer(alphabet: Iterable[str]) -> TextTokenizer:
    """One token per character of ``alphabet``, plus ``<|endoftext|>`` and ``<unk>``."""
    chars = sorted(set(alphabet) - {""})
    if not chars:
        raise TokenizerError("the corpus has no characters to build a vocabulary from")
    vocab = {c: i for i, c in enumerate(chars)}
    vocab[EOT] = len(vocab)
    vocab[UNK] = len(vocab)
    tk = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tk.decoder = decoders.Fuse()
    tk.add_special_tokens([AddedToken(EOT, special=True, normalized=False), AddedToken(UNK, special=True, normalized=False)])
    return TextTokenizer(tk, "char")


def corpus_alphabet(pieces: Iterable[str], cancel: Callable[[], bool] | None = None) -> set[str]:
    """Every character in ``pieces`` (counted with numpy: ~10× a set update)."""
    alphabet: set[str] = set()
    for i, piece in enumerate(pieces):
        try:
            points = np.frombuffer(piece.encode("utf-32-le"), dtype=np.uint32)
        except UnicodeEncodeError:
            alphabet.update(piece)
        else:
            if points.size:
                alphabet.update(map(chr, np.flatnonzero(np.bincount(points)).tolist()))
        if cancel is not None and i % 64 == 0 and cancel():
            raise Cancelled()
    return alphabet


def train_bpe(
    texts: Iterator[str],
    vocab_size: int,
    min_frequency: int = 2,
    special_tokens: Iterable[str] = (EOT,),
) -> TextTokenizer:
    """Byte-level BPE trained on ``texts`` (an iterator of text pieces)."""
    specials = list(dict.fromkeys([EOT, *special_tokens]))
    floor = BYTE_ALPHABET + len(specials)
    if vocab_size < floor:
        raise TokenizerError(
            f"vocab_size {vocab_size} is smaller than the byte alphabet plus special tokens ({floor}); use at least {floor}"
        )
    if vocab_size > UINT32_MAX:
        raise TokenizerError(f"vocab_size {vocab_size} is larger than uint32 can hold")
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tk.train_from_iterator(texts, trainer=trainer)
    return TextTokenizer(tk, "bpe")


def build_tokenizer(
    data: DataConfig,
    split: CorpusSplit,
    progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> TextTokenizer:
    """The tokenizer ``data.tokenizer`` asks for: 'char', 'bpe' or a file path.

    A char tokenizer takes the alphabet of the whole corpus (so validation text
    never meets ``<unk>``); BPE learns its merges from the train split only.
    ``progress(done, total)`` counts bytes read.
    """
    spec = data.tokenizer.strip()
    if spec not in ("char", "bpe"):
        return TextTokenizer.load(spec)
    train_bytes, val_bytes = split.split_bytes()
    total = train_bytes + (val_bytes if spec == "char" else 0)
    done = 0

    def counted(pieces: Iterator[tuple[bool, str]]) -> Iterator[str]:
        nonlocal done
        for _, piece in pieces:
            yield piece
            done += len(piece.encode("utf-8")) if not piece.isascii() else len(piece)
            if progress is not None:
                progress(min(done, total), total)
            if cancel is not None and cancel():
                raise Cancelled()

    if spec == "char":
        alphabet = corpus_alphabet(counted(split.iter_train()))
        alphabet |= corpus_alphabet(counted(split.iter_val()))
        return char_tokenizer(alphabet)
    return train_bpe(counted(split.iter_train()), data.vocab_size, data.min_frequency)
