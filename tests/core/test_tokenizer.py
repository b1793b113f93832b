"""Character-level and byte-level BPE tokenizers, saved and loaded as real tokenizer.json files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from shiftstudio.config import DataConfig
from shiftstudio.core.data.corpus import Corpus
from shiftstudio.core.data.split import make_split
from shiftstudio.core.data.tokenizer import EOT, TextTokenizer, build_tokenizer, char_tokenizer, train_bpe
from shiftstudio.core.errors import TokenizerError

ODD_TEXT = "Ünïcödé — “quotes”, emoji 🙂, tabs\tand\r\nCRLF, 中文, and <angle> brackets.\n"


def test_char_tokenizer_ids_follow_sorted_alphabet_and_round_trip(shakespeare_text: str) -> None:
    tok = char_tokenizer(shakespeare_text)
    chars = sorted(set(shakespeare_text))
    assert tok.vocab_size == len(chars) + 2
    assert tok.encode(chars[0] + chars[-1]) == [0, len(chars) - 1]
    assert tok.eot_id == len(chars)
    assert tok.decode(tok.encode(shakespeare_text)) == shakespeare_text
    assert len(tok.encode(shakespeare_text)) == len(shakespeare_text)


def test_char_tokenizer_unknown_character_maps_to_unk(shakespeare_text: str) -> None:
    tok = char_tokenizer("abc")
    assert tok.encode("abz") == [0, 1, tok.unk_id]


def test_char_round_trip_on_any_text_from_its_alphabet() -> None:
    tok = char_tokenizer(ODD_TEXT)
    assert tok.decode(tok.encode(ODD_TEXT)) == ODD_TEXT
    assert tok.token_text(tok.encode("🙂")[0]) == "🙂"


def test_bpe_round_trips_arbitrary_text_and_compresses(shakespeare_text: str) -> None:
    tok = train_bpe(iter([shakespeare_text]), vocab_size=400, min_frequency=2)
    assert tok.kind == "bpe" and tok.vocab_size == 400 and tok.eot_id == 0
    for text in (shakespeare_text[:3000], ODD_TEXT, "never seen: ξψζ 🚀\x00\x7f"):
        assert tok.decode(tok.encode(text)) == text
    ids = tok.encode(shakespeare_text)
    assert len(ids) < 0.6 * len(shakespeare_text)  # merges learned: well under one token per char
    assert len(tok.encode(" the")) == 1  # the corpus's most frequent word is one token
    assert tok.decode(tok.encode(" the")) == " the"


def test_bpe_vocab_bounds() -> None:
    with pytest.raises(TokenizerError, match="smaller than the byte alphabet"):
        train_bpe(iter(["abc"]), vocab_size=100)
    with pytest.raises(TokenizerError, match="uint32"):
        train_bpe(iter(["abc"]), vocab_size=2**32 + 5)


def test_saved_files_are_standard_tokenizer_json(tmp_path: Path, shakespeare_text: str) -> None:
    for tok in (char_tokenizer(shakespeare_text), train_bpe(iter([shakespeare_text]), vocab_size=300)):
        path = tmp_path / f"{tok.kind}.json"
        tok.save(path)
        plain = Tokenizer.from_file(str(path))  # the library itself reads it
        assert plain.encode(shakespeare_text[:500]).ids == tok.encode(shakespeare_text[:500])
        loaded = TextTokenizer.load(path)
        assert loaded.kind == tok.kind and loaded.fingerprint() == tok.fingerprint()


def test_loading_a_foreign_tokenizer_json(tmp_path: Path, shakespeare_text: str) -> None:
    from tokenizers import models, pre_tokenizers

    foreign = Tokenizer(models.WordLevel({"hello": 0, "world": 1, "[UNK]": 2}, unk_token="[UNK]"))
    foreign.pre_tokenizer = pre_tokenizers.Whitespace()
    foreign.save(str(tmp_path / "tokenizer.json"))
    tok = TextTokenizer.load(tmp_path)  # a folder holding tokenizer.json works too
    assert tok.kind == "file" and tok.vocab_size == 3 and tok.eot_id is None
    assert tok.encode("hello world") == [0, 1]


def test_loading_bad_tokenizer_files(tmp_path: Path) -> None:
    with pytest.raises(TokenizerError, match="not found"):
        TextTokenizer.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"hello": 1}))
    with pytest.raises(TokenizerError, match="not a valid tokenizer.json"):
        TextTokenizer.load(bad)
    (tmp_path / "bin.json").write_bytes(b"\x89PNG\x00\xff")
    with pytest.raises(TokenizerError, match="not a valid tokenizer.json"):
        TextTokenizer.load(tmp_path / "bin.json")


def test_build_tokenizer_bpe_learns_from_train_split_only(tmp_path: Path) -> None:
    # The val tail holds a word that never appears in the head: BPE must not learn it whole.
    text = "alpha beta gamma\n" * 400 + "zyxwvu " * 100
    (tmp_path / "c.txt").write_text(text)
    split = make_split(Corpus.open([tmp_path / "c.txt"]), 0.1, seed=0)
    tok = build_tokenizer(DataConfig(tokenizer="bpe", vocab_size=300, min_frequency=2), split)
    assert " zyxwvu" not in tok.longest_tokens(50)
    assert len(tok.encode("alpha")) == 1 and len(tok.encode(" beta")) == 1
    char = build_tokenizer(DataConfig(tokenizer="char"), split)
    assert char.unk_id not in char.encode(text)  # the char alphabet covers train and val


def test_offsets_mark_token_boundaries(shakespeare_text: str) -> None:
    tok = train_bpe(iter([shakespeare_text]), vocab_size=350)
    text = "First Citizen: hear me speak."
    spans = tok.encode_with_offsets(text)
    assert "".join(text[s:e] for _, s, e in spans) == text
    assert [i for i, _, _ in spans] == tok.encode(text)
    assert EOT not in "".join(tok.token_text(i) for i, _, _ in spans)


def test_char_fast_path_matches_tokenizers_exactly(tmp_path: Path, shakespeare_text: str) -> None:
    # The vectorised code-point lookup must give the ids tokenizers gives, for
    # known characters, unknown ones (including astral code points past the
    # table), and for a char tokenizer loaded back from its tokenizer.json.
    from shiftstudio.core.data.tokenizer import corpus_alphabet

    alphabet = corpus_alphabet([shakespeare_text, "é—"])
    assert alphabet == set(shakespeare_text) | {"é", "—"}
    tok = char_tokenizer(alphabet)
    tok.save(tmp_path / "tokenizer.json")
    for t in (tok, TextTokenizer.load(tmp_path / "tokenizer.json")):
        table = t.char_table()
        assert table is not None  # the fast path is taken (else encode_array falls back to encode itself)
        assert [int(table[ord(c)]) for c in "Az\n"] == t.encode("Az\n")
        for text in (shakespeare_text[:3000], ODD_TEXT, "", "\U0010ffff x 🙂 é"):
            assert t.encode_array(text).tolist() == t.encode(text)
        # a literal special-token string goes through tokenizers, which matches it whole
        assert t.encode_array(f"ab{EOT}c").tolist() == t.encode(f"ab{EOT}c")


def test_bpe_has_no_char_fast_path(shakespeare_text: str) -> None:
    tok = train_bpe([shakespeare_text], vocab_size=300)
    assert tok.char_table() is None
    assert tok.encode_array(ODD_TEXT).tolist() == tok.encode(ODD_TEXT)
