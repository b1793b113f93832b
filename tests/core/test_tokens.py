"""The token store on disk and the shifted batches drawn from it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from shiftstudio.config import DataConfig
from shiftstudio.core.errors import Cancelled, CorpusError
from shiftstudio.core.data.batches import BatchSampler, shifted_windows
from shiftstudio.core.errors import DataError
from shiftstudio.core.data.store import Progress, TokenStore, encode_to_file, ids_dtype, prepare


def test_shifted_windows_align_exactly_including_the_window_end() -> None:
    ids = np.arange(100, 120, dtype=np.uint16)  # token value = 100 + position
    T, K = 5, 3
    last = len(ids) - T - K  # the last valid start
    x, y = shifted_windows(ids, np.array([0, 7, last]), T, K)
    assert x.shape == (3, T) and y.shape == (3, K, T)
    assert x[1].tolist() == [107, 108, 109, 110, 111]
    for k in range(1, K + 1):
        assert y[1, k - 1].tolist() == [107 + k + t for t in range(T)]
    assert y[2, K - 1, -1] == ids[-1]  # the very last token is reachable, not past it
    with pytest.raises(DataError, match="out of range"):
        shifted_windows(ids, np.array([last + 1]), T, K)


def test_shift_one_is_plain_next_token_prediction() -> None:
    ids = np.arange(50, dtype=np.uint32)
    x, y = shifted_windows(ids, np.array([3, 10]), 8, 1)
    assert np.array_equal(y[:, 0, :-1], x[:, 1:])
    assert np.array_equal(y[:, 0], x + 1)


def test_sampler_batches_are_seeded_and_resumable() -> None:
    ids = np.arange(1000, dtype=np.uint16)
    a = BatchSampler(ids, batch_size=4, block_size=16, shift=2, seed=7)
    b = BatchSampler(ids, batch_size=4, block_size=16, shift=2, seed=7)
    for _ in range(3):
        ba, bb = a.next(), b.next()
        assert torch.equal(ba.x, bb.x) and torch.equal(ba.y, bb.y)
    assert ba.x.dtype == torch.int64 and ba.y.shape == (4, 2, 16) and ba.mask.shape == (4, 2, 16)
    assert torch.equal(ba.y[:, 0], ba.x + 1) and torch.equal(ba.y[:, 1], ba.x + 2)
    assert float(ba.mask.min()) == 1.0
    state = json.loads(json.dumps(a.state_dict()))  # must survive JSON
    expected = [a.next().x for _ in range(3)]
    c = BatchSampler(ids, batch_size=4, block_size=16, shift=2, seed=999)
    c.load_state_dict(state)
    assert all(torch.equal(c.next().x, e) for e in expected)


def test_sampler_refuses_a_split_shorter_than_one_window() -> None:
    with pytest.raises(DataError, match=r"larger than the validation split \(10 tokens\)"):
        BatchSampler(np.arange(10, dtype=np.uint16), 2, block_size=9, shift=2, split="val")
    BatchSampler(np.arange(11, dtype=np.uint16), 2, block_size=9, shift=2)  # exactly one window is fine


def test_ids_dtype_boundary() -> None:
    assert ids_dtype(65535) == np.uint16 and ids_dtype(65536) == np.uint32


def test_prepare_writes_a_store_that_round_trips(tmp_path: Path, small_corpus: Path, shakespeare_text: str) -> None:
    seen: list[Progress] = []
    store = prepare(DataConfig(corpus=[str(small_corpus)], tokenizer="bpe", vocab_size=300), tmp_path / "out", progress=seen.append)
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["meta.json", "tokenizer.json", "train.bin", "val.bin"]
    assert isinstance(store.train, np.memmap) and store.train.dtype == np.uint16
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["train_tokens"] == len(store.train) and meta["vocab_size"] == 300
    text = store.tokenizer.decode(np.concatenate([store.train, store.val]).tolist())
    assert text == shakespeare_text
    assert {p.phase for p in seen} >= {"scanning", "tokenizer", "encoding"}
    assert seen[-1].done == seen[-1].total  # progress ends at 100 %
    reopened = TokenStore.open(tmp_path / "out")
    assert np.array_equal(reopened.val, store.val)


def test_documents_are_separated_by_endoftext(tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(30):
        (folder / f"{i:02d}.txt").write_text(f"doc {i} says hello\n")
    store = prepare(DataConfig(corpus=[str(folder)], tokenizer="char", val_fraction=0.2), tmp_path / "s")
    eot = store.tokenizer.eot_id
    n_docs = store.meta["train_documents"]
    assert int((np.asarray(store.train) == eot).sum()) == n_docs - 1
    assert store.meta["split_mode"] == "documents"


def test_store_is_cached_by_content(small_corpus: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shiftstudio.core.data.store as tokens_mod

    data = DataConfig(corpus=[str(small_corpus)], tokenizer="char")
    first = prepare(data)
    monkeypatch.setattr(tokens_mod, "encode_to_file", lambda *a, **k: pytest.fail("encoded again"))
    again = prepare(data)
    assert again.dir == first.dir
    other = DataConfig(corpus=[str(small_corpus)], tokenizer="char", val_fraction=0.2)
    with pytest.raises(pytest.fail.Exception):
        prepare(other)  # a different split is a different store


def test_uint32_store_for_large_vocabularies(tmp_path: Path) -> None:
    from shiftstudio.core.data.tokenizer import char_tokenizer

    tok = char_tokenizer("ab")
    path = tmp_path / "ids.bin"
    n = encode_to_file(iter([(True, "abab"), (True, "ba")]), tok, path, np.dtype(np.uint32))
    ids = np.fromfile(path, dtype=np.uint32)
    assert n == 7 and ids.tolist() == [0, 1, 0, 1, tok.eot_id, 1, 0]


def test_truncated_store_is_reported(tmp_path: Path, small_corpus: Path) -> None:
    prepare(DataConfig(corpus=[str(small_corpus)]), tmp_path / "s")
    with open(tmp_path / "s" / "train.bin", "r+b") as fh:
        fh.truncate(100)
    with pytest.raises(DataError, match="truncated"):
        TokenStore.open(tmp_path / "s")
    with pytest.raises(DataError, match="not a prepared data folder"):
        TokenStore.open(tmp_path)


def test_cancel_leaves_nothing_behind(tmp_path: Path, small_corpus: Path) -> None:
    calls = {"n": 0}

    def cancel() -> bool:
        calls["n"] += 1
        return calls["n"] > 2

    with pytest.raises(Cancelled):
        prepare(DataConfig(corpus=[str(small_corpus)], tokenizer="bpe", vocab_size=300), tmp_path / "out", cancel=cancel)
    assert not (tmp_path / "out").exists()
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".prepare-")] == []


def test_tiny_corpus_with_an_empty_split_is_refused(tmp_path: Path) -> None:
    (tmp_path / "t.txt").write_text("a")
    with pytest.raises(CorpusError, match="split holds no tokens"):
        prepare(DataConfig(corpus=[str(tmp_path / "t.txt")], val_fraction=0.1), tmp_path / "s")
    assert not (tmp_path / "s").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_batches_are_pinned_copies() -> None:  # pragma: no cover - GPU only
    s = BatchSampler(np.arange(1000, dtype=np.uint16), 4, 16, 2, 0, device="cuda")
    b = s.next()
    assert b.x.is_cuda and b.y.is_cuda and torch.equal(b.y[:, 0], b.x + 1)


def test_memory_stays_flat_while_encoding(tmp_path: Path, shakespeare_text: str) -> None:
    """Encoding ~24 MB must not hold the text or the ids as Python objects."""
    import subprocess
    import sys

    big = tmp_path / "big.txt"
    with big.open("w") as fh:
        for _ in range(1200):
            fh.write(shakespeare_text)
    code = (
        "import resource, sys\n"
        "from shiftstudio.config import DataConfig\n"
        "from shiftstudio.core.data.store import prepare\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        f"s = prepare(DataConfig(corpus=[{str(big)!r}], tokenizer='char'), {str(tmp_path / 'store')!r})\n"
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(before, after, len(s.train) + len(s.val))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ})
    assert out.returncode == 0, out.stderr
    before, after, n = map(int, out.stdout.split())
    assert n == big.stat().st_size
    growth_mb = (after - before) / 1024
    assert growth_mb < 200, f"peak RSS grew by {growth_mb:.0f} MB for a {big.stat().st_size >> 20} MB corpus"


@pytest.mark.parametrize("damage", ["meta_not_an_object", "tokenizer_garbage"])
def test_a_damaged_cache_entry_is_rebuilt(small_corpus, damage: str) -> None:
    from shiftstudio.config import RunConfig
    from shiftstudio.core.data.store import prepare

    data = RunConfig().updated({"corpus": [str(small_corpus)]}).data
    first = prepare(data)
    entry = Path(first.dir)
    assert (entry / "meta.json").is_file()
    if damage == "meta_not_an_object":
        (entry / "meta.json").write_text("[1, 2, 3]", encoding="utf-8")
    else:
        (entry / "tokenizer.json").write_bytes(b"\x00garbage{")
    again = prepare(data)  # not an uncaught error: the entry is made again
    assert again.vocab_size == first.vocab_size and len(again.train) == len(first.train)
    assert list(again.train[:50]) == list(first.train[:50])
