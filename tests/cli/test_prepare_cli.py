"""``shiftstudio prepare`` end to end: real files in, real store out, one-line errors for bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cli_helpers import assert_one_line_error, run_cli
from shiftstudio.core.data.tokenizer import TextTokenizer

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4


def test_prepare_writes_a_complete_store(tmp_path: Path, small_corpus: Path, shakespeare_text: str, capsys) -> None:
    out = tmp_path / "store"
    code, stdout, _ = run_cli(capsys, "prepare", str(small_corpus), "--out", str(out), "--val_fraction=0.2")
    assert code == 0
    assert {p.name for p in out.iterdir()} == {"tokenizer.json", "train.bin", "val.bin", "meta.json"}
    meta = json.loads((out / "meta.json").read_text())
    assert meta["dtype"] == "uint16" and meta["sources"] == [str(small_corpus)]
    tok = TextTokenizer.load(out / "tokenizer.json")
    train = np.fromfile(out / "train.bin", dtype=np.uint16)
    val = np.fromfile(out / "val.bin", dtype=np.uint16)
    assert len(train) == meta["train_tokens"] and len(val) == meta["val_tokens"]
    # a single file is cut once near 80 %: the two halves decode back to the text
    assert tok.decode(train.tolist()) + tok.decode(val.tolist()) == shakespeare_text
    assert abs(len(val) / (len(train) + len(val)) - 0.2) < 0.01
    lines = stdout.splitlines()
    assert lines[0].startswith(f"prepared {out} in ")
    assert f"  tokenizer  char, vocab {len(set(shakespeare_text)) + 2}" in lines  # alphabet + <|endoftext|> + <unk>
    assert f"  split      {len(train):,} train / {len(val):,} val tokens (cut), uint16" in lines


def test_prepare_bpe_with_equals_syntax(tmp_path: Path, small_corpus: Path, capsys) -> None:
    out = tmp_path / "bpe"
    code, _, _ = run_cli(capsys, "prepare", str(small_corpus), "--tokenizer=bpe", "--vocab_size=300", f"--out={out}")
    assert code == 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["tokenizer_kind"] == "bpe" and meta["vocab_size"] == 300
    assert meta["val_chars"] / meta["val_tokens"] > 1.2  # merges compress


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    "make, needles, code",
    [
        (lambda d: d / "missing.txt", ["missing.txt"], 1),
        (lambda d: _write(d / "empty.txt", b""), ["empty"], 1),
        (lambda d: _write(d / "folder" / "a.png", PNG).parent, ["no text files"], 1),
        (lambda d: _write(d / "bad.txt", b"hello wor\xffld\n" * 3), ["bad.txt", "offset 9", "--errors replace"], 1),
        (lambda d: _write(d / "docs.jsonl", b'{"text": "fine"}\n{"text": oops}\n'), ["docs.jsonl", "line 2"], 1),
        (lambda d: _write(d / "data.jsonl", b'{"prompt": "a", "completion": "b"}\n{"prompt": "c"}\n'),
         ["data.jsonl line 2: no 'completion' field"], 1),
        (lambda d: _write(d / "chat.jsonl", b'{"messages": [{"role": "bot", "content": "x"}]}\n'),
         ["chat.jsonl line 1: unknown role 'bot' (system, user, assistant)"], 1),
        (lambda d: _write(d / "one.jsonl", b'{"prompt": "a", "completion": "b"}\n'), ["at least 2 examples"], 1),
    ],
    ids=["missing", "empty", "no-text-files", "invalid-utf8", "bad-jsonl-line", "record-without-completion",
         "unknown-chat-role", "one-example"],
)
def test_bad_corpora_give_one_line_and_write_nothing(tmp_path: Path, capsys, make, needles, code) -> None:
    source = make(tmp_path)
    out = tmp_path / "out"
    got, _, err = run_cli(capsys, "prepare", str(source), "--out", str(out))
    assert got == code
    assert_one_line_error(err, *needles)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".prepare-")]


def test_binary_file_among_text_is_skipped_with_a_warning(tmp_path: Path, shakespeare_text: str, capsys) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "a.txt").write_text(shakespeare_text[:10_000])
    (folder / "b.md").write_text(shakespeare_text[10_000:])
    (folder / "logo.png").write_bytes(PNG)
    code, _, err = run_cli(capsys, "prepare", str(folder), "--out", str(tmp_path / "out"))
    assert code == 0
    assert "logo.png" in err and "warning" in err
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["documents"] == 2


def test_errors_replace_accepts_invalid_utf8(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"hello wor\xffld, and more text follows here\n" * 50)
    code, _, _ = run_cli(capsys, "prepare", str(bad), "--out", str(tmp_path / "out"), "--errors", "replace")
    assert code == 0
    tok = TextTokenizer.load(tmp_path / "out" / "tokenizer.json")
    assert tok.encode("\ufffd") != [tok.unk_id]
    train = np.fromfile(tmp_path / "out" / "train.bin", dtype=np.uint16).tolist()
    val = np.fromfile(tmp_path / "out" / "val.bin", dtype=np.uint16).tolist()
    assert tok.decode(train) + tok.decode(val) == bad.read_bytes().decode("utf-8", errors="replace")


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--vocab_size=100", "--tokenizer=bpe"], "vocab_size"),
        (["--vocab_size=5000000000", "--tokenizer=bpe"], "4,294,967,295"),
        (["--bogus=1"], "bogus"),
        (["--val_fraction=abc"], "val_fraction"),
        (["--val_fraction=1.5"], "val_fraction"),
        ([], "--out"),
    ],
    ids=["vocab-too-small", "vocab-too-large", "unknown-key", "bad-type", "out-of-range", "no-out"],
)
def test_bad_settings_exit_2(tmp_path: Path, small_corpus: Path, capsys, args, needle) -> None:
    out = [] if args == [] else ["--out", str(tmp_path / "out")]
    code, _, err = run_cli(capsys, "prepare", str(small_corpus), *out, *args)
    assert code == (1 if "--vocab_size=100" in args else 2)  # the alphabet is known only once the corpus is read
    assert_one_line_error(err, needle)
    assert not (tmp_path / "out").exists()


def test_real_process_exit_code_and_stderr(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.run(
        [sys.executable, "-m", "shiftstudio", "prepare", str(tmp_path / "nope.txt"), "--out", str(tmp_path / "o")],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "nope.txt" in proc.stderr
    assert proc.stdout == ""


def test_prepare_records_prints_the_example_figures(tmp_path: Path, capsys) -> None:
    rows = [{"prompt": f"Q{i}: " + "x" * (i % 7), "completion": f"A{i}"} for i in range(40)]
    rows += [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}] * 10
    source = _write(tmp_path / "recs.jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode())
    out = tmp_path / "store"
    code, stdout, err = run_cli(capsys, "prepare", str(source), "--out", str(out), "--val_fraction=0.2", "--block_size=8")
    assert code == 0, err
    assert {p.name for p in out.iterdir()} == {
        "tokenizer.json", "meta.json", "train.bin", "val.bin", "train.mask.bin", "val.mask.bin", "train.index.bin", "val.index.bin"
    }
    meta = json.loads((out / "meta.json").read_text())
    assert meta["format"] == "records" and meta["examples"] == 50
    from shiftstudio.core.data.store import TokenStore

    stats = TokenStore.open(out).record_stats(8, 1)
    lines = stdout.splitlines()
    assert "  records    50 examples (10 chats, the rest prompt/completion), " in stdout
    assert f"  split      40 train / 10 val examples ({meta['train_tokens']:,} / {meta['val_tokens']:,} tokens), uint16" in lines
    p, c = stats["prompt_tokens"], stats["completion_tokens"]
    assert f"  prompt     min {p['min']} · median {p['median']:g} · max {p['max']} tokens (not scored)" in lines
    assert f"  completion min {c['min']} · median {c['median']:g} · max {c['max']} tokens (scored, with the end token)" in lines
    assert stats["truncated"] > 0
    assert (f"  context    block_size 8 + shift 1: {stats['truncated']} truncated, "
            f"{stats['unscorable']} without a scored token") in lines
    assert (f"warning: {stats['truncated']} of 50 examples are longer than the context (block_size 8 + shift 1) "
            "and are truncated") in err.splitlines()
    # a context that holds every example: no warning
    code, _, err = run_cli(capsys, "prepare", str(source), "--out", str(tmp_path / "s2"), "--block_size=64")
    assert code == 0 and "warning" not in err


def test_records_and_text_mixed_is_one_line(tmp_path: Path, capsys) -> None:
    recs = _write(tmp_path / "recs.jsonl", b'{"prompt": "a", "completion": "b"}\n' * 3)
    text = _write(tmp_path / "notes.txt", b"some plain text\n")
    code, _, err = run_cli(capsys, "prepare", str(recs), str(text), "--out", str(tmp_path / "out"))
    assert code == 1
    assert_one_line_error(err, "records and plain text cannot be mixed", "recs.jsonl", "notes.txt")
