"""Fuzzed bad files: every reader of a file a person hands ShiftStudio (or that a crash or a bad disk damaged) ends
in one of the project's expected errors with a one-line message naming the file — or reads the file, where it is
valid after all (a UTF-8 corpus with a byte-order mark) — and never in another exception, a hang or a memory
blow-up.

A seeded generator throws well over a thousand malformed inputs at the corpus reader (``.txt`` and ``.jsonl``),
the records reader, config files (TOML and JSON), ``tokenizer.json``, ``run.json``, and a checkpoint's
``state.json`` and safetensors files: random bytes, truncations and byte flips of valid files, JSON and TOML of
the wrong types, NUL bytes, UTF-16, a byte-order mark, huge numbers, 100,000 levels of nesting, empty files,
and once a 100 MB line without a newline. Each input must take under 5 s and raise the peak memory of the
process by under 256 MB. Run with ``-s`` for the counts per reader and kind.
"""

from __future__ import annotations

import collections
import copy
import json
import random
import resource
import shutil
import signal
import struct
import time
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from safetensors.torch import save as save_tensors

from shiftstudio.config import RunConfig
from shiftstudio.core.data.corpus import Corpus
from shiftstudio.core.data.records import parse_line
from shiftstudio.core.data.tokenizer import TextTokenizer, char_tokenizer, train_bpe
from shiftstudio.core.errors import ConfigError, CorpusError, RunError, ShiftStudioError, TokenizerError
from shiftstudio.core.runs.checkpoint import latest_checkpoint, load_checkpoint
from shiftstudio.core.runs.folder import load_run, load_run_config
from shiftstudio.core.runs.layout import MODEL_FILE, OPTIMIZER_FILE, STATE_FILE, RunLayout
from shiftstudio.core.runs.loading import load_model

SEED = 20240611
TIME_LIMIT_S = 5.0
RSS_LIMIT = 256 << 20
DEEP = 100_000  # levels of nesting
HUGE_NUMBERS = ["1e999", "-1e999", "1e-400", "9" * 5000, "-" + "9" * 400, str(2**64), str(-(2**63) - 1), "NaN",
                "Infinity", "-Infinity", "1" + "0" * 4300]
WRONG_VALUES: list[Any] = [None, True, False, 0, -1, 1.5, "", "text", "\u0000", [], [1, "a", None], {}, {"x": {"y": []}},
                           2**64, 1e308, -0.0, "é" * 50]
TOTALS: dict[str, collections.Counter] = {}


class Hang(BaseException):
    """An input took longer than its limit (a BaseException: no reader's ``except Exception`` may swallow it)."""


def _on_alarm(signum, frame):
    raise Hang()


def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def _reset_peak() -> bool:
    """Reset the process's peak memory (Linux: /proc/self/clear_refs); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class Fuzzer:
    """Feeds inputs to one reader and keeps what went wrong (all of it, to report every bug at once)."""

    def __init__(self, name: str, folder: Path, read: Callable[[Path], Any], expected: type[ShiftStudioError]) -> None:
        self.name, self.folder, self.read, self.expected = name, folder, read, expected
        self.counts: collections.Counter[str] = collections.Counter()
        self.outcomes: collections.Counter[str] = collections.Counter()
        self.problems: list[str] = []
        self.folder.mkdir(parents=True, exist_ok=True)
        TOTALS[name] = self.counts

    def feed(self, kind: str, target: Path, *, ok: bool | None = None, limit_s: float = TIME_LIMIT_S,
             read: Callable[[Path], Any] | None = None) -> None:
        """Read ``target`` (already written); ``ok``: True must succeed, False must fail, None either."""
        n = sum(self.counts.values())
        self.counts[kind] += 1
        what = f"{self.name} #{n} ({kind}, {target.name}, {target.stat().st_size if target.is_file() else '-'} bytes)"
        peak = _reset_peak()
        before = _status_kb("VmRSS") if peak else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        previous = signal.signal(signal.SIGALRM, _on_alarm)
        signal.setitimer(signal.ITIMER_REAL, limit_s)
        start = time.perf_counter()
        outcome = "read"
        try:
            (read or self.read)(target)
        except self.expected as exc:
            outcome = "refused"
            message = str(exc)
            if "\n" in message or not message.strip() or len(message) > 1000:
                self.problems.append(f"{what}: not a one-line message: {message[:300]!r}")
            elif target.name not in message and target.parent.name not in message:
                self.problems.append(f"{what}: the message does not name the file: {message!r}")
        except Hang:
            outcome = "hang"
            self.problems.append(f"{what}: still running after {limit_s} s")
        except BaseException as exc:  # noqa: BLE001 - what the fuzzer is looking for
            outcome = "crash"
            self.problems.append(f"{what}: {type(exc).__module__}.{type(exc).__name__}: {str(exc)[:300]!r}")
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        elapsed = time.perf_counter() - start
        after = _status_kb("VmHWM") if peak else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        grew = (after - before) * 1024
        self.outcomes[outcome] += 1
        if elapsed > limit_s and outcome != "hang":
            self.problems.append(f"{what}: took {elapsed:.1f} s")
        if grew > RSS_LIMIT:
            self.problems.append(f"{what}: peak memory grew by {grew >> 20} MB")
        if ok is True and outcome != "read":
            self.problems.append(f"{what}: a valid input was refused or crashed ({outcome})")
        if ok is False and outcome == "read":
            self.problems.append(f"{what}: a bad input was read as fine")

    def feed_bytes(self, kind: str, data: bytes, name: str, **kwargs) -> None:
        target = self.folder / f"{sum(self.counts.values())}" / name
        target.parent.mkdir()
        target.write_bytes(data)
        self.feed(kind, target, **kwargs)

    def report(self) -> None:
        print(f"\n{self.name}: {sum(self.counts.values())} inputs — " + ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items()))
              + "; outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(self.outcomes.items())))
        assert not self.problems, f"{len(self.problems)} problem(s):\n" + "\n".join(self.problems[:40])


# -- generators -------------------------------------------------------------------------------------


def random_bytes(rng: random.Random) -> bytes:
    return rng.randbytes(rng.choice([1, 2, 3, 8, 64, 500, 4096]))


def truncated(rng: random.Random, valid: bytes) -> bytes:
    return valid[: rng.randrange(len(valid))]


def flipped(rng: random.Random, valid: bytes) -> bytes:
    data = bytearray(valid)
    for _ in range(rng.choice([1, 2, 8, 32])):
        i = rng.randrange(len(data))
        op = rng.random()
        if op < 0.6:
            data[i] = rng.randrange(256)
        elif op < 0.8:
            del data[i]
        else:
            data.insert(i, rng.randrange(256))
    return bytes(data)


def with_nuls(rng: random.Random, valid: bytes) -> bytes:
    data = bytearray(valid)
    for _ in range(rng.choice([1, 3, 20])):
        data.insert(rng.randrange(len(data) + 1), 0)
    return bytes(data)


def _nodes(obj: Any, path: tuple = ()) -> list[tuple]:
    out = [path]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _nodes(v, path + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:20]):
            out += _nodes(v, path + (i,))
    return out


def replaced(obj: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    out = copy.deepcopy(obj)
    node = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return out


def wrong_json(rng: random.Random, obj: Any) -> bytes:
    """A valid JSON document with one value (at any depth, the top too) of another type."""
    path = rng.choice(_nodes(obj))
    return json.dumps(replaced(obj, path, rng.choice(WRONG_VALUES))).encode()


def huge_json(rng: random.Random, obj: Any) -> bytes:
    """A valid document with one value replaced by a number no float or int handles."""
    nodes = _nodes(obj)[1:] or [()]
    text = json.dumps(replaced(obj, rng.choice(nodes), "\x00HUGE\x00"))
    return text.replace('"\\u0000HUGE\\u0000"', rng.choice(HUGE_NUMBERS)).encode()


def deep_json() -> bytes:
    return b"[" * DEEP + b"]" * DEEP


def deep_object() -> bytes:
    return b'{"a":' * DEEP + b"1" + b"}" * DEEP


def json_kinds(fz: Fuzzer, rng: random.Random, valid_obj: Any, name: str, counts: dict[str, int], **ok_valid) -> None:
    """The JSON-specific inputs: wrong types, huge numbers, deep nesting."""
    for _ in range(counts.get("wrong JSON types", 40)):
        fz.feed_bytes("wrong JSON types", wrong_json(rng, valid_obj), name)
    for _ in range(counts.get("huge numbers", 15)):
        fz.feed_bytes("huge numbers", huge_json(rng, valid_obj), name)
    fz.feed_bytes("deep nesting", deep_json(), name, ok=False)
    fz.feed_bytes("deep nesting", deep_object(), name, ok=False)


def byte_kinds(fz: Fuzzer, rng: random.Random, valid: bytes, name: str, *, n: int = 40, bom_ok: bool = True,
               empty_ok: bool | None = False, utf16_ok: bool | None = False) -> None:
    """The inputs every reader gets: the valid file itself, random bytes, truncations, byte flips, NULs, UTF-16,
    a byte-order mark, an empty file."""
    fz.feed_bytes("valid", valid, name, ok=True)
    for _ in range(n):
        fz.feed_bytes("random bytes", random_bytes(rng), name)
    for _ in range(n):
        fz.feed_bytes("truncated", truncated(rng, valid), name)
    for _ in range(n):
        fz.feed_bytes("byte flips", flipped(rng, valid), name)
    for _ in range(15):
        fz.feed_bytes("NUL bytes", with_nuls(rng, valid), name)
    text = valid.decode("utf-8")
    fz.feed_bytes("UTF-16", text.encode("utf-16"), name, ok=utf16_ok)
    fz.feed_bytes("UTF-16", text.encode("utf-16-le"), name, ok=utf16_ok)
    fz.feed_bytes("BOM", b"\xef\xbb\xbf" + valid, name, ok=bom_ok)
    fz.feed_bytes("empty", b"", name, ok=empty_ok)


# -- the readers --------------------------------------------------------------------------------------


def read_corpus(path: Path) -> None:
    corpus = Corpus.open([path])
    for i in range(corpus.n_files):
        for document in corpus.iter_file_documents(i):
            for _ in document:
                pass


def read_records(path: Path) -> None:
    corpus = Corpus.open([path])
    for record in corpus.iter_records():
        record.text()
    for number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
        if line.strip():
            parse_line(line, f"{path.name} line {number}")


def read_tokenizer(path: Path) -> None:
    TextTokenizer.load(path).fingerprint()


def read_run(path: Path) -> None:
    load_run(path.parent)
    load_run_config(path.parent)


def test_corpus_reader(tmp_path: Path, shakespeare_text: str) -> None:
    rng = random.Random(SEED)
    fz = Fuzzer("corpus", tmp_path / "in", read_corpus, CorpusError)
    text = shakespeare_text[:3000].encode("utf-8")
    byte_kinds(fz, rng, text, "doc.txt", utf16_ok=False)
    lines = [{"text": shakespeare_text[i:i + 300]} for i in range(0, 3000, 300)]
    jsonl = "".join(json.dumps(d) + "\n" for d in lines).encode()
    byte_kinds(fz, rng, jsonl, "docs.jsonl", n=25)
    for _ in range(20):
        i = rng.randrange(len(lines))
        fz.feed_bytes("wrong JSON types", b"".join(
            (wrong_json(rng, d) if j == i else json.dumps(d).encode()) + b"\n" for j, d in enumerate(lines)), "docs.jsonl")
    for _ in range(10):
        fz.feed_bytes("huge numbers", huge_json(rng, lines[0]) + b"\n" + jsonl, "docs.jsonl")
    fz.feed_bytes("deep nesting", deep_json() + b"\n", "docs.jsonl", ok=False)
    # once: a 100 MB line without a newline (streamed: memory stays flat)
    big = fz.folder / "big" / "one-line.txt"
    big.parent.mkdir()
    block = (shakespeare_text.replace("\n", " ") * 60).encode("utf-8")[: 1 << 20]
    with open(big, "wb") as f:
        for _ in range(100):
            f.write(block)
    fz.feed("a 100 MB line", big, ok=True, limit_s=120)
    big.unlink()
    fz.report()


def test_records_reader(tmp_path: Path) -> None:
    rng = random.Random(SEED + 1)
    fz = Fuzzer("records", tmp_path / "in", read_records, CorpusError)
    records: list[Any] = [{"prompt": f"Q{i}: what is {i} + {i}?", "completion": f" {2 * i}"} for i in range(5)]
    records += [{"messages": [{"role": "system", "content": "Be terse."}, {"role": "user", "content": f"Hi {i}"},
                              {"role": "assistant", "content": "Hello."}]} for i in range(3)]
    valid = "".join(json.dumps(r) + "\n" for r in records).encode()
    byte_kinds(fz, rng, valid, "train.jsonl")
    for _ in range(50):  # one record of the wrong shape among good ones
        i = rng.randrange(len(records))
        fz.feed_bytes("wrong JSON types", b"".join(
            (wrong_json(rng, r) if j == i else json.dumps(r).encode()) + b"\n" for j, r in enumerate(records)), "train.jsonl")
    for _ in range(15):
        i = rng.randrange(len(records))
        fz.feed_bytes("huge numbers", b"".join(
            (huge_json(rng, r) if j == i else json.dumps(r).encode()) + b"\n" for j, r in enumerate(records)), "train.jsonl")
    fz.feed_bytes("deep nesting", valid + deep_json() + b"\n", "train.jsonl", ok=False)
    fz.feed_bytes("deep nesting", valid + b'{"messages":' + deep_json() + b"}\n", "train.jsonl", ok=False)
    fz.report()


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value) if value == value and abs(value) != float("inf") else ("nan" if value != value else "inf")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value if v is not None) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items() if v is not None) + "}"
    return json.dumps(str(value))


def test_config_files(tmp_path: Path) -> None:
    rng = random.Random(SEED + 2)
    fz = Fuzzer("config", tmp_path / "in", RunConfig.load, ConfigError)
    config = RunConfig().updated({"n_layer": 2, "n_embd": 32, "max_iters": 50})
    toml = config.to_toml(name="mine", description="fuzzed").encode()
    byte_kinds(fz, rng, toml, "mine.toml", empty_ok=True)  # an empty TOML file is the defaults
    data = config.to_dict()
    for _ in range(45):  # one setting (or a section) of another TOML type
        section = rng.choice(["model", "train", "data"])
        key = rng.choice([*data[section], section])
        value = rng.choice([v for v in WRONG_VALUES if v is not None] + ["1979-05-27", [[1, 2], ["a"]]])
        parts = copy.deepcopy(data)
        if key == section:
            parts[section] = value
        else:
            parts[section][key] = value
        lines = [f"schema_version = {parts['schema_version']}"]
        tables = []
        for name, body in parts.items():
            if name == "schema_version":
                continue
            if isinstance(body, dict):
                tables.append(f"[{name}]\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in body.items() if v is not None))
            else:
                lines.append(f"{name} = {_toml_value(body)}")
        fz.feed_bytes("wrong TOML types", ("\n".join(lines) + "\n" + "\n".join(tables)).encode(), "mine.toml")
    for _ in range(15):
        key = rng.choice(["n_layer", "learning_rate", "max_iters", "seed", "dropout"])
        number = rng.choice(["9" * 5000, "inf", "-inf", "nan", str(2**64), "1e999", "1" + "0" * 4300])
        text = toml.decode().replace(f"\n{key} = ", f"\n{key} = {number}\n#", 1)
        fz.feed_bytes("huge numbers", text.encode(), "mine.toml")
    fz.feed_bytes("deep nesting", b"a = " + b"[" * DEEP + b"]" * DEEP + b"\n", "mine.toml", ok=False)
    fz.feed_bytes("deep nesting", b"a = " + b"{b = " * DEEP + b"1" + b"}" * DEEP + b"\n", "mine.toml", ok=False)
    as_json = json.dumps(data).encode()
    byte_kinds(fz, rng, as_json, "mine.json", n=15)
    json_kinds(fz, rng, data, "mine.json", {"wrong JSON types": 25, "huge numbers": 10})
    fz.report()


def test_tokenizer_json(tmp_path: Path, shakespeare_text: str) -> None:
    rng = random.Random(SEED + 3)
    fz = Fuzzer("tokenizer.json", tmp_path / "in", read_tokenizer, TokenizerError)
    char = char_tokenizer(shakespeare_text[:2000]).tk.to_str().encode()
    byte_kinds(fz, rng, char, "tokenizer.json", n=30)
    json_kinds(fz, rng, json.loads(char), "tokenizer.json", {"wrong JSON types": 30, "huge numbers": 10})
    bpe = train_bpe(iter(shakespeare_text[:20000].splitlines()), 300).tk.to_str().encode()
    byte_kinds(fz, rng, bpe, "tokenizer.json", n=15)
    json_kinds(fz, rng, json.loads(bpe), "tokenizer.json", {"wrong JSON types": 20, "huge numbers": 5})
    fz.report()


def test_run_json(tmp_path: Path, tiny_run: Path) -> None:
    rng = random.Random(SEED + 4)
    fz = Fuzzer("run.json", tmp_path / "in", read_run, RunError)
    valid = RunLayout(tiny_run).run_file.read_bytes()
    byte_kinds(fz, rng, valid, "run.json")
    json_kinds(fz, rng, json.loads(valid), "run.json", {"wrong JSON types": 60, "huge numbers": 20})
    fz.report()


# -- checkpoints ------------------------------------------------------------------------------------


def _header(data: bytes) -> dict:
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + n])


def _with_header(header: bytes, body: bytes) -> bytes:
    return struct.pack("<Q", len(header)) + header + body


def test_checkpoint_files(tmp_path: Path, tiny_run: Path) -> None:
    rng = random.Random(SEED + 5)
    source = latest_checkpoint(tiny_run).path
    valid = {name: (source / name).read_bytes() for name in (STATE_FILE, MODEL_FILE, OPTIMIZER_FILE)}
    state = json.loads(valid[STATE_FILE])

    def checkpoint_with(name: str, data: bytes, sizes: bool) -> Path:
        """A copy of the checkpoint with ``name`` replaced by ``data``; ``sizes``: state.json says its new size
        (so the bytes themselves are read, not refused for their size)."""
        folder = fz.folder / f"{sum(fz.counts.values())}" / source.name
        folder.mkdir(parents=True)
        for other, content in valid.items():
            (folder / other).write_bytes(data if other == name else content)
        if sizes and name != STATE_FILE:
            (folder / STATE_FILE).write_text(json.dumps({**state, "files": {**state["files"], name: len(data)}}))
        return folder / name

    fz = Fuzzer("checkpoint", tmp_path / "in", lambda path: load_checkpoint(path.parent), RunError)

    def feed(kind: str, name: str, data: bytes, sizes: bool = True, **kwargs) -> None:
        fz.feed(kind, checkpoint_with(name, data, sizes), **kwargs)

    # state.json
    feed("valid", STATE_FILE, valid[STATE_FILE], ok=True)
    gens: list[tuple[str, Callable[[], bytes]]] = [
        ("random bytes", lambda: random_bytes(rng)), ("truncated", lambda: truncated(rng, valid[STATE_FILE])),
        ("byte flips", lambda: flipped(rng, valid[STATE_FILE])), ("NUL bytes", lambda: with_nuls(rng, valid[STATE_FILE])),
        ("wrong JSON types", lambda: wrong_json(rng, state)), ("huge numbers", lambda: huge_json(rng, state)),
    ]
    for kind, make in gens:
        for _ in range(40 if kind == "wrong JSON types" else 15):
            feed(kind, STATE_FILE, make())
    for _ in range(15):  # the file sizes: the part of state.json that guards the tensors
        feed("wrong JSON types", STATE_FILE, json.dumps({**state, "files": rng.choice(WRONG_VALUES)}).encode())
        feed("wrong JSON types", STATE_FILE, json.dumps(
            {**state, "files": {**state["files"], MODEL_FILE: rng.choice(WRONG_VALUES)}}).encode())
    feed("UTF-16", STATE_FILE, valid[STATE_FILE].decode().encode("utf-16"), ok=False)
    feed("BOM", STATE_FILE, b"\xef\xbb\xbf" + valid[STATE_FILE], ok=True)
    feed("empty", STATE_FILE, b"", ok=False)
    feed("deep nesting", STATE_FILE, deep_json(), ok=False)
    feed("deep nesting", STATE_FILE, deep_object(), ok=False)

    # the safetensors files
    for name in (MODEL_FILE, OPTIMIZER_FILE):
        data = valid[name]
        header = _header(data)
        (n,) = struct.unpack("<Q", data[:8])
        body = data[8 + n:]
        for _ in range(15):
            feed("random bytes", name, random_bytes(rng))
        for _ in range(20):
            cut = truncated(rng, data)
            feed("truncated", name, cut, sizes=rng.random() < 0.7)
        for _ in range(20):  # flips in the header (the body's bytes are any floats)
            head = flipped(rng, data[: 8 + n])
            feed("byte flips", name, head + body)
        for length in (2**64 - 1, 2**63, 2**40, 100_000_001, 99_999_999, n + 1, n - 1, 0, 7):
            feed("huge header length", name, struct.pack("<Q", length) + data[8:])
        for _ in range(25):
            feed("wrong JSON types", name, _with_header(wrong_json(rng, header), body))
        for _ in range(10):
            feed("huge numbers", name, _with_header(huge_json(rng, header), body))
        some = rng.choice([k for k in header if k != "__metadata__"])
        for dtype in ("Q99", "F64", "I8", "BOOL", "", "F8_E4M3"):
            bad = {**header, some: {**header[some], "dtype": dtype}}
            feed("wrong dtype", name, _with_header(json.dumps(bad).encode(), body))
        for shape in ([2**62, 2**62], [-1], [1, 2, 3, 4, 5, 6, 7, 8, 9], [], [0]):
            bad = {**header, some: {**header[some], "shape": shape}}
            feed("wrong shape", name, _with_header(json.dumps(bad).encode(), body))
        feed("NUL bytes", name, _with_header(with_nuls(rng, json.dumps(header).encode()), body))
        feed("UTF-16", name, _with_header(json.dumps(header).encode("utf-16"), body))
        feed("deep nesting", name, _with_header(b'{"a":' + deep_json() + b"}", body), ok=False)
        feed("empty", name, b"", ok=False)
        feed("BOM", name, b"\xef\xbb\xbf" + data, ok=False)

    # well-formed safetensors of the wrong dtype or shape: refused when loaded into the run's model
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("lock.json"))
    target = latest_checkpoint(run).path
    model = {k: v.clone() for k, v in load_checkpoint(target).model.items()}  # (not views of a file rewritten below)
    model_file, state_file = target / MODEL_FILE, target / STATE_FILE

    def with_model(kind: str, tensors: dict[str, torch.Tensor], ok: bool | None = False) -> None:
        blob = save_tensors(tensors, metadata={"format": "pt"})
        model_file.write_bytes(blob)
        state_file.write_text(json.dumps({**state, "files": {**state["files"], MODEL_FILE: len(blob)}}))
        fz.feed(kind, model_file, ok=ok, read=lambda path: load_model(run, target.name))

    with_model("valid", dict(model), ok=True)
    for name in list(model)[:6]:
        t = model[name]
        for dtype in (torch.int8, torch.int64, torch.bool, torch.uint8):
            with_model("wrong dtype", {**model, name: torch.zeros(t.shape, dtype=dtype)})
        for shape in ((t.numel() + 1,), (*t.shape, 1), (0,), tuple(reversed(t.shape)) if t.dim() > 1 and t.shape[0] != t.shape[-1] else (2, 3)):
            with_model("wrong shape", {**model, name: torch.zeros(shape)})
        with_model("missing tensor", {k: v for k, v in model.items() if k != name})
    with_model("extra tensor", {**model, "surprise.weight": torch.zeros(3)})
    fz.report()


def test_at_least_a_thousand_inputs_in_all() -> None:
    """(After the readers' tests, when the whole file runs: the counts across readers.)"""
    if len(TOTALS) < 6:
        pytest.skip("run the whole file to count every reader's inputs")
    total = sum(sum(c.values()) for c in TOTALS.values())
    kinds: collections.Counter[str] = collections.Counter()
    for c in TOTALS.values():
        kinds.update(c)
    print(f"\nfuzzed inputs in all: {total} — by kind: " + ", ".join(f"{k} {v}" for k, v in kinds.most_common()))
    assert total >= 1000
