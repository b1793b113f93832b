"""Fine-tuning records: parsing, the chat template, exact loss masks, the split by example, the example
sampler and the figures a context gives."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from shiftstudio.config import DataConfig
from shiftstudio.core.data.batches import ExampleSampler
from shiftstudio.core.data.corpus import Corpus
from shiftstudio.core.data.records import (
    CHAT,
    PROMPT_COMPLETION,
    RecordLengths,
    decode_marked,
    encode_records,
    parse_record,
)
from shiftstudio.core.data.split import RecordSplit, make_split
from shiftstudio.core.data.store import TokenStore, prepare
from shiftstudio.core.data.tokenizer import EOT, char_tokenizer, train_bpe
from shiftstudio.core.errors import CorpusError, DataError

CHAT_RECORD = {
    "messages": [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Bye."},
        {"role": "assistant", "content": "Bye!"},
    ]
}


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def qa_rows(n: int, offset: int = 0) -> list[dict]:
    return [{"prompt": f"Question {i}: what is {i} plus one?\n", "completion": f"It is {i + 1}."} for i in range(offset, offset + n)]


@pytest.fixture
def mixed_file(tmp_path: Path) -> Path:
    rows: list = []
    for i in range(30):
        rows.append(qa_rows(1, i)[0] if i % 3 else CHAT_RECORD)
    return write_jsonl(tmp_path / "data.jsonl", rows)


# -- parsing and rendering --------------------------------------------------------


def test_prompt_completion_and_chat_parse_into_scored_segments() -> None:
    pc = parse_record({"prompt": "2+2=", "completion": "4"}, "x line 1")
    assert pc.kind == PROMPT_COMPLETION and pc.segments == (("2+2=", False), ("4", True))
    chat = parse_record(CHAT_RECORD, "x line 1")
    assert chat.kind == CHAT
    assert chat.text(EOT) == (
        "<|system|>\nBe terse.\n<|user|>\nHi!\n<|assistant|>\nHello.<|endoftext|>"
        "<|user|>\nBye.\n<|assistant|>\nBye!<|endoftext|>"
    )
    assert chat.completion == "Hello.Bye!"  # only the assistant turns are scored
    # nothing after the last assistant turn is kept: it would never be scored
    tail = parse_record({"messages": [*CHAT_RECORD["messages"], {"role": "user", "content": "again?"}]}, "x")
    assert tail == chat


@pytest.mark.parametrize(
    "row, message",
    [
        ({"prompt": "p"}, "data.jsonl line 3: no 'completion' field"),
        ({"completion": "c"}, "data.jsonl line 3: no 'prompt' field"),
        ({"prompt": "p", "completion": 4}, "data.jsonl line 3: 'completion' must be a string, got a number"),
        ({"prompt": None, "completion": "c"}, "data.jsonl line 3: 'prompt' must be a string, got null"),
        ({"input": "p"}, "data.jsonl line 3: no 'prompt'/'completion' or 'messages' field"),
        ({"messages": [{"role": "bot", "content": "x"}]}, "data.jsonl line 3: unknown role 'bot' (system, user, assistant)"),
        ({"messages": [{"role": "user", "content": "x"}]}, "data.jsonl line 3: the chat has no assistant turn"),
        ({"messages": [{"role": "assistant", "content": ["x"]}]}, "data.jsonl line 3: message 1: 'content' must be a string"),
        ({"messages": [{"content": "x"}]}, "data.jsonl line 3: message 1 has no 'role' field"),
        ({"messages": "hello"}, "data.jsonl line 3: 'messages' must be a list"),
        ({"messages": []}, "data.jsonl line 3: 'messages' is empty"),
        ('{"prompt": "p", "completion": ', "data.jsonl line 3: not valid JSON"),
        ({"text": "a plain document"}, "data.jsonl line 3: a plain 'text' document among records"),
    ],
)
def test_bad_records_are_one_line_errors_naming_file_and_line(tmp_path: Path, row, message: str) -> None:
    path = write_jsonl(tmp_path / "data.jsonl", [*qa_rows(2), row])
    with pytest.raises(CorpusError) as info:
        Corpus.open([path])
    text = str(info.value)
    assert text.startswith(message) and "\n" not in text


def test_records_and_text_cannot_be_mixed(tmp_path: Path) -> None:
    recs = write_jsonl(tmp_path / "recs.jsonl", qa_rows(3))
    docs = write_jsonl(tmp_path / "docs.jsonl", [{"text": "a document"}])
    plain = tmp_path / "notes.txt"
    plain.write_text("plain text\n")
    for other in (docs, plain):
        with pytest.raises(CorpusError, match=f"records and plain text cannot be mixed in one corpus: recs.jsonl .* {other.name} is plain text"):
            Corpus.open([recs, other])
    # ... nor inside one file: text first, then a record
    both = write_jsonl(tmp_path / "both.jsonl", [{"text": "doc"}, *qa_rows(1)])
    with pytest.raises(CorpusError, match="both.jsonl line 2: .*records and plain text cannot be mixed"):
        Corpus.open([both])


def test_text_jsonl_still_reads_as_documents(tmp_path: Path) -> None:
    docs = write_jsonl(tmp_path / "docs.jsonl", [{"text": "one"}, {"text": "two"}])
    c = Corpus.open([docs])
    assert not c.is_records and c.kind == "text" and c.n_documents == 2 and c.files[0].kind == "jsonl"
    assert c.preview() == "one\n\ntwo"


def test_corpus_counts_records(mixed_file: Path) -> None:
    c = Corpus.open([mixed_file])
    assert c.is_records and c.kind == "records" and c.files[0].kind == "records"
    assert c.n_examples == 30 and c.n_chats == 10
    assert c.preview().startswith("<|system|>\nBe terse.\n<|user|>\nHi!")
    again = Corpus.open([mixed_file])  # from the scan cache: the same figures
    assert again.is_records and again.n_chats == 10 and again.fingerprint() == c.fingerprint()


# -- masks --------------------------------------------------------------------


@pytest.fixture(params=["char", "bpe"])
def tokenizer(request, mixed_file: Path):
    split = make_split(Corpus.open([mixed_file]), 0.2, 1)
    texts = [p for _, p in split.iter_train()] + [p for _, p in split.iter_val()]
    if request.param == "char":
        return char_tokenizer(set("".join(texts)))
    return train_bpe(iter(texts * 5), vocab_size=320, min_frequency=2)


def test_prompt_completion_mask_scores_exactly_the_completion_and_eot(tokenizer) -> None:
    records = [parse_record(r, "x") for r in qa_rows(4)]
    enc = encode_records(records, tokenizer)
    assert enc.ids.dtype == np.int64 and enc.mask.dtype == np.uint8 and len(enc) == 4
    for i, r in enumerate(qa_rows(4)):
        ids, mask = enc.example(i)
        assert tokenizer.decode(ids[mask == 1].tolist()) == r["completion"] + EOT
        assert tokenizer.decode(ids[mask == 0].tolist()) == r["prompt"]
        assert ids[-1] == tokenizer.eot_id and mask[-1] == 1  # it learns to stop
        assert ids.tolist() == tokenizer.encode(r["prompt"]) + tokenizer.encode(r["completion"]) + [tokenizer.eot_id]
    assert decode_marked(tokenizer, *enc.example(0)) == [(qa_rows(1)[0]["prompt"], False), ("It is 1." + EOT, True)]


def test_chat_mask_scores_only_assistant_turns(tokenizer) -> None:
    enc = encode_records([parse_record(CHAT_RECORD, "x")], tokenizer)
    ids, mask = enc.example(0)
    runs = decode_marked(tokenizer, ids, mask)
    assert [t for t, scored in runs if scored] == ["Hello." + EOT, "Bye!" + EOT]
    assert [t for t, scored in runs if not scored] == [
        "<|system|>\nBe terse.\n<|user|>\nHi!\n<|assistant|>\n", "<|user|>\nBye.\n<|assistant|>\n"
    ]
    # the context up to the first answer is encoded whole: a prompt encoded at generation time matches it
    prefix = tokenizer.encode("<|system|>\nBe terse.\n<|user|>\nHi!\n<|assistant|>\n")
    assert ids[: len(prefix)].tolist() == prefix and not mask[: len(prefix)].any()


def test_record_lengths_match_a_plain_count(tokenizer) -> None:
    records = [parse_record(r, "x") for r in [*qa_rows(3), CHAT_RECORD]]
    enc = encode_records(records, tokenizer)
    lens = RecordLengths.from_arrays(enc.mask, enc.index)
    for i in range(len(records)):
        ids, mask = enc.example(i)
        assert lens.lengths[i] == len(ids) and lens.scored[i] == mask.sum()
        assert lens.first_scored[i] == 1 + int(np.flatnonzero(mask[1:])[0])


# -- split and store ---------------------------------------------------------------


def test_split_by_example_is_disjoint_seeded_and_never_empty(mixed_file: Path) -> None:
    c = Corpus.open([mixed_file])
    a, b, other = make_split(c, 0.2, 7), make_split(c, 0.2, 7), make_split(c, 0.2, 8)
    assert isinstance(a, RecordSplit) and a.mode == "examples"
    assert a.val_examples == 6 and a.train_examples == 24
    assert np.array_equal(a.val_docs, b.val_docs) and not np.array_equal(a.val_docs, other.val_docs)
    train = [r.text() for r in a.iter_examples(False)]
    val = [r.text() for r in a.iter_examples(True)]
    every = [r.text() for r in c.iter_records()]
    assert sorted(train + val) == sorted(every) and len(train) + len(val) == 30
    assert "".join(p for _, p in a.iter_train()) == "".join(t + "\n" for t in train)  # what a tokenizer learns from
    tiny = Corpus.open([write_jsonl(mixed_file.parent / "two.jsonl", qa_rows(2))])
    s = make_split(tiny, 0.01, 0)
    assert s.val_examples == 1 and s.train_examples == 1
    one = Corpus.open([write_jsonl(mixed_file.parent / "one.jsonl", qa_rows(1))])
    with pytest.raises(CorpusError, match="at least 2 examples"):
        make_split(one, 0.1, 0)


def test_prepare_writes_ids_masks_and_index(tmp_path: Path, mixed_file: Path) -> None:
    store = prepare(DataConfig(corpus=[str(mixed_file)], val_fraction=0.2, split_seed=3), out_dir=tmp_path / "store")
    names = {p.name for p in (tmp_path / "store").iterdir()}
    assert names == {"tokenizer.json", "meta.json", "train.bin", "val.bin", "train.mask.bin", "val.mask.bin",
                     "train.index.bin", "val.index.bin"}
    m = store.meta
    assert m["format"] == "records" and m["examples"] == 30 and m["train_examples"] == 24 and m["val_examples"] == 6
    assert m["train_chats"] + m["val_chats"] == 10
    assert set(m["record_lengths"]["train"]) == {"prompt_tokens", "completion_tokens", "total_tokens"}
    mask = np.fromfile(tmp_path / "store" / "train.mask.bin", dtype=np.uint8)
    index = np.fromfile(tmp_path / "store" / "train.index.bin", dtype=np.int64)
    assert len(mask) == m["train_tokens"] and index[0] == 0 and index[-1] == m["train_tokens"] and len(index) == 25
    reopened = TokenStore.open(tmp_path / "store")
    assert reopened.is_records and reopened.n_examples("val") == 6
    # every example decodes to a record of the file, its scored part to the record's answers
    split = make_split(Corpus.open([mixed_file]), 0.2, 3)
    for name, val in (("train", False), ("val", True)):
        for i, record in enumerate(split.iter_examples(val)):
            ids, mask = reopened.example(name, i)
            assert reopened.tokenizer.decode(ids[mask == 1].tolist()) == "".join(
                t + EOT for t, scored in record.segments if scored
            )
    with pytest.raises(IndexError):
        reopened.example("val", 6)
    assert "24 train + 6 val examples" in reopened.summary()


def test_cache_key_tells_records_from_text(tmp_path: Path) -> None:
    # the same bytes as records and as text documents are different stores
    recs = write_jsonl(tmp_path / "r.jsonl", qa_rows(6))
    store = prepare(DataConfig(corpus=[str(recs)]))
    docs = write_jsonl(tmp_path / "t.jsonl", [{"text": r["prompt"] + r["completion"]} for r in qa_rows(6)])
    text_store = prepare(DataConfig(corpus=[str(docs)]))
    assert store.dir != text_store.dir and store.is_records and not text_store.is_records
    assert text_store.meta["format"] == "text"
    assert prepare(DataConfig(corpus=[str(recs)])).dir == store.dir  # cached


def test_an_old_meta_without_format_is_text(tmp_path: Path, small_corpus: Path) -> None:
    store = prepare(DataConfig(corpus=[str(small_corpus)]), out_dir=tmp_path / "s")
    meta = json.loads((tmp_path / "s" / "meta.json").read_text())
    del meta["format"]
    (tmp_path / "s" / "meta.json").write_text(json.dumps(meta))
    old = TokenStore.open(tmp_path / "s")
    assert not old.is_records and old.format == "text" and len(old.train) == len(store.train)
    assert type(old.sampler("train", 2, 16, 1)).__name__ == "BatchSampler"


def test_records_with_a_tokenizer_file(tmp_path: Path, mixed_file: Path) -> None:
    """How fine-tuning passes the pretrained model's tokenizer: a tokenizer.json used as is."""
    base = prepare(DataConfig(corpus=[str(mixed_file)], tokenizer="bpe", vocab_size=300), out_dir=tmp_path / "base")
    tok_file = tmp_path / "pretrained-tokenizer.json"
    base.tokenizer.save(tok_file)
    other = write_jsonl(tmp_path / "ft.jsonl", qa_rows(10, offset=100))
    store = prepare(DataConfig(corpus=[str(other)], tokenizer=str(tok_file)), out_dir=tmp_path / "ft")
    assert store.is_records and store.tokenizer.fingerprint() == base.tokenizer.fingerprint()
    ids, mask = store.example("train", 0)
    assert store.tokenizer.decode(ids[mask == 1].tolist()).endswith("." + EOT)


# -- the example sampler ------------------------------------------------------------


def _store(tmp_path: Path, rows: list, **data) -> TokenStore:
    path = write_jsonl(tmp_path / "s.jsonl", rows)
    return prepare(DataConfig(corpus=[str(path)], **data), out_dir=tmp_path / "store")


def test_example_sampler_rows_are_examples_from_position_zero_padded_and_masked(tmp_path: Path) -> None:
    rows = [{"prompt": "ab", "completion": "cd"}, {"prompt": "abcdefgh", "completion": "ij"}] * 4
    store = _store(tmp_path, rows, val_fraction=0.25)
    eot = store.tokenizer.eot_id
    T, K = 8, 2
    sampler = store.sampler("train", 16, T, K, seed=0)
    assert isinstance(sampler, ExampleSampler)
    b = sampler.next()
    assert b.x.shape == (16, T) and b.y.shape == (16, K, T) and b.mask.shape == (16, K, T)
    assert b.x.dtype == torch.int64 and b.y.dtype == torch.int64 and b.mask.dtype == torch.float32
    enc = lambda s: store.tokenizer.encode(s)  # noqa: E731
    short = enc("abcd") + [eot]  # 5 tokens: padded to the window with EOT, the padding never scored
    long = enc("abcdefghij") + [eot]  # 11 tokens: longer than T + K = 10, the tail (its EOT) dropped
    for r in range(16):
        x, y, m = b.x[r].tolist(), b.y[r].tolist(), b.mask[r].tolist()
        ex = short if x[:4] == short[:4] and x[4] == eot else long
        window = (ex + [eot] * (T + K))[: T + K]
        mask = [0, 0, 1, 1, 1] + [0] * 5 if ex is short else [0] * 8 + [1, 1]
        assert x == window[:T]
        for k in range(1, K + 1):
            assert y[k - 1] == window[k : k + T]
            assert m[k - 1] == [float(mask[t + k]) for t in range(T)]
    seen = {tuple(row) for row in b.x.tolist()}
    assert len(seen) == 2  # both examples drawn


def test_example_sampler_resumes_exactly(tmp_path: Path, mixed_file: Path) -> None:
    store = prepare(DataConfig(corpus=[str(mixed_file)]), out_dir=tmp_path / "s")
    a = store.sampler("train", 4, 32, 2, seed=5)
    b = store.sampler("train", 4, 32, 2, seed=5)
    for _ in range(3):
        ba, bb = a.next(), b.next()
        assert all(torch.equal(p, q) for p, q in zip(ba, bb))
    state = json.loads(json.dumps(a.state_dict()))  # survives JSON, as in a checkpoint
    expected = [a.next() for _ in range(3)]
    c = store.sampler("train", 4, 32, 2, seed=123)
    c.load_state_dict(state)
    for e in expected:
        got = c.next()
        assert all(torch.equal(p, q) for p, q in zip(got, e))
    with pytest.raises(DataError, match="PCG64"):
        c.load_state_dict({"bit_generator": {"bit_generator": "MT19937"}})


def test_unscorable_examples_are_skipped_and_counted(tmp_path: Path) -> None:
    long_prompt = {"prompt": "x" * 40, "completion": "yes"}
    ok = {"prompt": "q?", "completion": "yes"}
    store = _store(tmp_path, [long_prompt, ok] * 10, val_fraction=0.2, split_seed=0)
    T, K = 16, 1
    stats = store.record_stats(T, K)
    assert stats["examples"] == 20 and stats["unscorable"] == 10 and stats["truncated"] == 10
    assert stats["train"]["unscorable"] + stats["val"]["unscorable"] == 10
    assert stats["warnings"] == [
        "10 of 20 examples are longer than the context (block_size 16 + shift 1) and are truncated",
        "10 of 20 examples have no scored token inside the context (block_size 16 + shift 1): their prompt fills it, so they are skipped",
    ]
    store.check_windows(T, K)  # some examples remain: fine
    sampler = store.sampler("train", 32, T, K, seed=1)
    assert sampler.skipped == sum(1 for i in range(store.n_examples("train")) if store.example("train", i)[0].size > 40)
    b = sampler.next()
    assert (b.mask.sum(dim=(1, 2)) > 0).all()  # every row has a scored target
    assert not any(set(row) == {store.tokenizer.encode("x")[0]} for row in b.x.tolist())
    # at a longer context every example counts again
    assert store.record_stats(64, 1)["unscorable"] == 0 and store.record_stats(64, 1)["warnings"] == []


def test_every_prompt_filling_the_context_is_a_data_error(tmp_path: Path) -> None:
    store = _store(tmp_path, [{"prompt": "p" * 30, "completion": "c"}] * 6)
    with pytest.raises(DataError, match=r"^every example's prompt fills the context \(block_size 16\): raise block_size or shorten prompts$"):
        store.check_windows(16, 1)
    with pytest.raises(DataError, match="no training example has a scored token"):
        store.sampler("train", 2, 16, 1)
    store.check_windows(32, 1)  # fits now
    # the validation split alone cannot be scored
    rows = [{"prompt": "p", "completion": "c"}] * 5 + [{"prompt": "p" * 30, "completion": "c"}]
    path = write_jsonl(tmp_path / "v.jsonl", rows)
    for seed in range(50):
        store = prepare(DataConfig(corpus=[str(path)], val_fraction=0.1, split_seed=seed), out_dir=tmp_path / f"v{seed}")
        if store.record_stats(16, 1)["val"]["unscorable"] == 1:
            break
    with pytest.raises(DataError, match="every validation example's prompt fills the context"):
        store.check_windows(16, 1)


def test_record_stats_figures(tmp_path: Path) -> None:
    rows = [{"prompt": "a" * n, "completion": "b" * c} for n, c in ((2, 1), (4, 3), (6, 5), (9, 7))]
    store = _store(tmp_path, rows, val_fraction=0.25)
    stats = store.record_stats(8, 1)
    assert stats["prompt_tokens"] == {"min": 2, "median": 5.0, "max": 9}
    assert stats["completion_tokens"] == {"min": 2, "median": 5.0, "max": 8}  # + the EOT
    assert stats["total_tokens"] == {"min": 4, "median": 10.0, "max": 17}
    assert stats["truncated"] == 2  # 12 and 17 tokens > 9
    assert stats["unscorable"] == 1  # the 9-token prompt fills the 9-token window
    assert stats["train"]["examples"] == 3 and stats["val"]["examples"] == 1
    assert stats["warnings"][0] == "2 of 4 examples are longer than the context (block_size 8 + shift 1) and are truncated"


# -- training on records --------------------------------------------------------


def test_training_on_records_scores_only_the_completion(tmp_path: Path) -> None:
    """A completion that is always the same after random prompts: the loss the trainer reports (masked)
    falls near zero, while the same model's loss on the prompt positions stays near that of random letters."""
    import random

    from shiftstudio.config import RunConfig
    from shiftstudio.core.runs.folder import prepare_and_create
    from shiftstudio.core.train.trainer import Trainer

    rng = random.Random(0)
    rows = [{"prompt": "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(12)) + "?\n", "completion": "OK"}
            for _ in range(100)]
    path = write_jsonl(tmp_path / "recs.jsonl", rows)
    settings = {
        "corpus": [str(path)], "n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 16, "batch_size": 16,
        "max_iters": 30, "eval_interval": 30, "eval_iters": 2, "log_interval": 30, "warmup_iters": 0,
        "lr_decay_iters": 30, "learning_rate": 1e-2, "device": "cpu", "compile": False, "num_threads": 1,
    }
    run_dir = prepare_and_create(RunConfig().updated(settings), out_dir=tmp_path / "run")
    reports = list(Trainer(run_dir).run())
    assert type(reports[-1]).__name__ == "FinishedReport", reports[-1]
    evals = [r for r in reports if type(r).__name__ == "EvalReport"]
    views = [r for r in reports if type(r).__name__ == "BatchViewReport"]
    assert evals and views
    assert evals[-1].val_loss < 0.2 and evals[-1].train_loss < 0.2
    view = views[-1]
    scored = view.mask[0] > 0
    assert scored.sum() == 3  # "O", "K" and the end token of the row's example
    assert view.loss[0][scored].mean() < 0.2
    assert view.loss[0][~scored][:10].mean() > 2.0  # the random letters: what the prompt would cost if scored
