"""Corpus opening, counting, bad input and the train/val split, on real files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shiftstudio.core.data.corpus import Corpus
from shiftstudio.core.data.split import make_split
from shiftstudio.core.errors import CorpusError, NotUtf8Error

PNG_HEAD = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256))


def _join(pieces) -> str:
    return "".join(p for _, p in pieces)


def test_single_file_counts(small_corpus: Path, shakespeare_text: str) -> None:
    c = Corpus.open([small_corpus])
    assert (c.n_files, c.n_documents) == (1, 1)
    assert c.n_chars == len(shakespeare_text)
    assert c.n_bytes == len(shakespeare_text.encode())
    assert c.n_lines == shakespeare_text.count("\n") + (0 if shakespeare_text.endswith("\n") else 1)
    assert c.preview(200) == shakespeare_text[:200]


def test_non_ascii_counts_characters_not_bytes(tmp_path: Path) -> None:
    text = "héllo wörld — ünïcode ✓\nsecond line\n"
    (tmp_path / "u.txt").write_text(text, encoding="utf-8")
    c = Corpus.open(tmp_path / "u.txt")
    assert c.n_chars == len(text) and c.n_bytes == len(text.encode()) > c.n_chars
    assert c.n_lines == 2


def test_folder_is_walked_recursively_and_documents_counted(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "b").mkdir()
    (tmp_path / "one.txt").write_text("alpha\n")
    (tmp_path / "a" / "two.md").write_text("# beta\n")
    (tmp_path / "a" / "b" / "three.py").write_text("print('gamma')\n")
    (tmp_path / "a" / "b" / "docs.jsonl").write_text(json.dumps({"text": "d1"}) + "\n\n" + json.dumps({"text": "d2 longer"}) + "\n")
    (tmp_path / ".hidden.txt").write_text("secret")
    c = Corpus.open([tmp_path])
    names = sorted(f.path.name for f in c.files)
    assert names == ["docs.jsonl", "one.txt", "three.py", "two.md"]
    assert c.n_documents == 5  # three text files + two jsonl lines
    assert c.n_chars == len("alpha\n") + len("# beta\n") + len("print('gamma')\n") + len("d1") + len("d2 longer")


def test_missing_path_empty_file_and_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="not found"):
        Corpus.open([tmp_path / "nope.txt"])
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(CorpusError, match="empty"):
        Corpus.open([tmp_path / "empty.txt"])
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "image.png").write_bytes(PNG_HEAD)
    with pytest.raises(CorpusError, match="no text files"):
        Corpus.open([tmp_path / "folder"])


def test_binary_file_among_text_is_skipped_with_warning(tmp_path: Path) -> None:
    (tmp_path / "good.txt").write_text("some text\n")
    (tmp_path / "pic.txt").write_bytes(PNG_HEAD)  # a PNG with a misleading name
    warnings: list[str] = []
    c = Corpus.open([tmp_path / "good.txt", tmp_path / "pic.txt"], on_warning=warnings.append)
    assert [f.path.name for f in c.files] == ["good.txt"]
    assert len(warnings) == 1 and "PNG" in warnings[0] and "pic.txt" in warnings[0]
    with pytest.raises(CorpusError, match="PNG image, not text"):
        Corpus.open([tmp_path / "pic.txt"])
    (tmp_path / "pic2.bin").write_bytes(b"\x00\x01\x02" * 10)
    with pytest.raises(CorpusError, match="binary"):
        Corpus.open([tmp_path / "pic.txt", tmp_path / "pic2.bin"])


def test_invalid_utf8_names_file_and_offset(tmp_path: Path) -> None:
    bad = tmp_path / "latin1.txt"
    bad.write_bytes(b"hello caf\xe9 world\n")
    with pytest.raises(NotUtf8Error) as info:
        Corpus.open([bad])
    assert isinstance(info.value, CorpusError) and info.value.offset == 9 and info.value.path == bad
    assert str(info.value) == f"{bad} is not valid UTF-8 (first bad byte at offset 9)"  # what to do is the front end's
    c = Corpus.open([bad], errors="replace")
    assert c.preview() == "hello caf\ufffd world\n"


def test_invalid_utf8_offset_across_read_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shiftstudio.core.data.corpus as corpus_mod

    monkeypatch.setattr(corpus_mod, "CHUNK_BYTES", 7)
    bad = tmp_path / "x.txt"
    bad.write_bytes("ééééé".encode() + b"ab\xffcd")  # 10 bytes of é, then the bad byte at 12
    with pytest.raises(CorpusError, match="offset 12"):
        Corpus.open([bad])


def test_jsonl_bad_line_names_line_number(tmp_path: Path) -> None:
    f = tmp_path / "d.jsonl"
    f.write_text('{"text": "ok"}\n{"text": "fine"}\n{"txt": "wrong key"}\n')
    with pytest.raises(CorpusError, match=r"d\.jsonl, line 3"):
        Corpus.open([f])
    f.write_text('{"text": "ok"}\nnot json at all\n')
    with pytest.raises(CorpusError, match=r"line 2: not valid JSON"):
        Corpus.open([f])


def test_single_file_split_is_a_cut_near_the_fraction(small_corpus: Path, shakespeare_text: str) -> None:
    split = make_split(Corpus.open([small_corpus]), 0.1, seed=1)
    train, val = _join(split.iter_train()), _join(split.iter_val())
    assert train + val == shakespeare_text
    assert len(train) == int(len(shakespeare_text) * 0.9)  # nanoGPT's cut, to the character
    assert (split.train_chars, split.val_chars) == (len(train), len(val))


def test_cut_respects_utf8_character_boundaries(tmp_path: Path) -> None:
    text = "ü" * 1000  # two bytes each: a byte cut could land mid-character
    (tmp_path / "u.txt").write_text(text, encoding="utf-8")
    split = make_split(Corpus.open([tmp_path / "u.txt"]), 0.33, seed=0)
    train, val = _join(split.iter_train()), _join(split.iter_val())
    assert train + val == text and "\ufffd" not in train + val
    assert abs(len(val) / len(text) - 0.33) < 0.01


def test_many_documents_split_by_document_seeded(tmp_path: Path) -> None:
    lines = [json.dumps({"text": f"document number {i} " + "x" * (i % 7)}) for i in range(200)]
    (tmp_path / "docs.jsonl").write_text("\n".join(lines) + "\n")
    corpus = Corpus.open([tmp_path / "docs.jsonl"])
    a = make_split(corpus, 0.1, seed=3)
    b = make_split(corpus, 0.1, seed=3)
    c = make_split(corpus, 0.1, seed=4)
    assert a.mode == "documents"
    assert (a.val_docs == b.val_docs).all() and not (a.val_docs == c.val_docs).all()
    assert 0.05 < a.val_chars / (a.train_chars + a.val_chars) < 0.15
    val_docs = [p for start, p in a.iter_val() if start]
    train_docs = [p for start, p in a.iter_train() if start]
    assert len(val_docs) + len(train_docs) == 200 and not set(val_docs) & set(train_docs)


def test_two_unequal_documents_fall_back_to_a_cut(tmp_path: Path) -> None:
    (tmp_path / "big.txt").write_text("b" * 10_000)
    (tmp_path / "small.txt").write_text("s" * 100)
    split = make_split(Corpus.open([tmp_path]), 0.1, seed=0)
    assert split.mode == "cut"
    assert abs(split.val_chars - 1010) <= 2


def test_reopening_uses_the_scan_cache(small_corpus: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shiftstudio.core.data.corpus as corpus_mod

    first = Corpus.open([small_corpus])
    monkeypatch.setattr(corpus_mod, "_scan_text", lambda *a, **k: pytest.fail("file was scanned again"))
    again = Corpus.open([small_corpus])
    assert again.fingerprint() == first.fingerprint() and again.n_chars == first.n_chars
