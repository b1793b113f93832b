"""Fine-tuning records: prompt/completion pairs and chats, rendered to token ids with a loss mask.

A ``.jsonl`` file holds records when its lines are objects with either

* ``{"prompt": "...", "completion": "..."}`` — a prompt and the answer to learn, or
* ``{"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}`` — a chat.

(A ``.jsonl`` file whose lines have a ``text`` field is plain text, one document a line; the two cannot be
mixed in one corpus.)

Rendering. A prompt/completion record is its two strings, no template::

    ids  = encode(prompt) + encode(completion) + [EOT]
    mask =   0 ... 0      +    1 ... 1          +  1

A chat is rendered with one role marker a turn, each on a line of its own; every assistant turn ends with
the end-of-text token (EOT, ``<|endoftext|>``), the stop the model learns::

    <|system|>
    You are terse.
    <|user|>
    Hi!
    <|assistant|>
    Hello.<|endoftext|><|user|>
    Bye.
    <|assistant|>
    Bye!<|endoftext|>

Only the assistant turns' content and the EOT after each are scored (mask 1); the system and user turns and
all role markers are context (mask 0). To ask a model trained this way, give it the same text up to and
including ``<|assistant|>\\n`` and stop at EOT. Nothing after the last assistant turn is kept (it would
never be scored).

Exact masks. Each scored stretch is encoded on its own and the ids are concatenated, so no token straddles
the boundary between context and answer: a token is either all prompt or all answer. The unscored text
between two answers is encoded as one string (so a prompt encoded whole at generation time gets the same
ids). Without an EOT in the tokenizer (a ``tokenizer.json`` from elsewhere that lacks it) nothing is
appended after an answer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from shiftstudio.core.errors import CorpusError, one_line

ROLES = ("system", "user", "assistant")
TEMPLATE_VERSION = 1  # part of the token store's cache key: change it when the rendering changes
PROMPT_COMPLETION = "prompt/completion"
CHAT = "chat"
ENCODE_BATCH_CHARS = 1 << 20


def role_marker(role: str) -> str:
    return f"<|{role}|>\n"


@dataclass(frozen=True)
class Record:
    """One example: its kind and its text as (text, scored) segments, in order.

    A scored segment is followed by the EOT token (scored too) when the tokenizer has one.
    """

    kind: str  # PROMPT_COMPLETION | CHAT
    segments: tuple[tuple[str, bool], ...]

    def text(self, eot: str = "") -> str:
        """The rendered text (``eot`` written after each scored segment: '' for the tokenizer's training
        text, ``<|endoftext|>`` for showing)."""
        return "".join(t + (eot if scored else "") for t, scored in self.segments)

    @property
    def prompt(self) -> str:
        """The unscored text (all of it, for a chat)."""
        return "".join(t for t, scored in self.segments if not scored)

    @property
    def completion(self) -> str:
        """The scored text (every assistant turn, for a chat)."""
        return "".join(t for t, scored in self.segments if scored)


def line_kind(obj: Any) -> str | None:
    """'records' for an object with prompt/completion or messages, 'text' for one with a text field,
    else None (the caller says what is missing)."""
    if isinstance(obj, dict):
        if "messages" in obj or "prompt" in obj or "completion" in obj:
            return "records"
        if "text" in obj:
            return "text"
    return None


def parse_record(obj: Any, where: str) -> Record:
    """A :class:`Record` from one parsed JSON line; ``where`` ('data.jsonl line 7') starts every message."""
    if not isinstance(obj, dict):
        raise CorpusError(f"{where}: expected an object with 'prompt' and 'completion' or 'messages', got {type(obj).__name__}")
    if "messages" in obj:
        return _parse_chat(obj["messages"], where)
    if "prompt" not in obj and "completion" not in obj:
        if "text" in obj:
            raise CorpusError(f"{where}: a plain 'text' document among records: records and plain text cannot be mixed")
        raise CorpusError(f"{where}: no 'prompt'/'completion' or 'messages' field")
    for key in ("prompt", "completion"):
        if key not in obj:
            raise CorpusError(f"{where}: no '{key}' field")
        if not isinstance(obj[key], str):
            raise CorpusError(f"{where}: '{key}' must be a string, got {_json_type(obj[key])}")
    return Record(PROMPT_COMPLETION, ((obj["prompt"], False), (obj["completion"], True)))


def _json_type(value: Any) -> str:
    return {dict: "an object", list: "a list", bool: "true/false", type(None): "null", int: "a number", float: "a number"}.get(
        type(value), type(value).__name__
    )


def _parse_chat(messages: Any, where: str) -> Record:
    if not isinstance(messages, list):
        raise CorpusError(f"{where}: 'messages' must be a list, got {_json_type(messages)}")
    if not messages:
        raise CorpusError(f"{where}: 'messages' is empty")
    segments: list[tuple[str, bool]] = []
    pending = ""
    for n, m in enumerate(messages, start=1):
        if not isinstance(m, dict):
            raise CorpusError(f"{where}: message {n} must be an object with 'role' and 'content', got {_json_type(m)}")
        role, content = m.get("role"), m.get("content")
        if "role" not in m:
            raise CorpusError(f"{where}: message {n} has no 'role' field")
        if not isinstance(role, str):
            raise CorpusError(f"{where}: message {n}: 'role' must be a string, got {_json_type(role)}")
        if role not in ROLES:
            raise CorpusError(f"{where}: unknown role {role!r} ({', '.join(ROLES)})")
        if "content" not in m:
            raise CorpusError(f"{where}: message {n} has no 'content' field")
        if not isinstance(content, str):
            raise CorpusError(f"{where}: message {n}: 'content' must be a string, got {_json_type(content)}")
        if role == "assistant":
            segments.append((pending + role_marker(role), False))
            segments.append((content, True))
            pending = ""
        else:
            pending += role_marker(role) + content + "\n"
    if not any(scored for _, scored in segments):
        raise CorpusError(f"{where}: the chat has no assistant turn (nothing to learn)")
    return Record(CHAT, tuple(segments))


def parse_line(raw: str, where: str) -> Record:
    """A record from one line of text (JSON)."""
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise CorpusError(f"{where}: not valid JSON ({exc.msg})") from None
    except RecursionError:
        raise CorpusError(f"{where}: not valid JSON (nested too deeply)") from None
    except ValueError as exc:  # a number past Python's limits, say
        raise CorpusError(f"{where}: not valid JSON ({one_line(exc, 200)})") from None
    return parse_record(obj, where)


# -- encoding ----------------------------------------------------------------


@dataclass
class EncodedRecords:
    """Examples as flat arrays: ``ids`` and ``mask`` (uint8, 1 = scored) of every example end to end,
    ``index`` the n+1 start offsets (example i is ``ids[index[i]:index[i+1]]``)."""

    ids: np.ndarray
    mask: np.ndarray
    index: np.ndarray

    def __len__(self) -> int:
        return len(self.index) - 1

    def example(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = int(self.index[i]), int(self.index[i + 1])
        return self.ids[a:b], self.mask[a:b]


def encode_records(records: Sequence[Record], tokenizer: Any, dtype: np.dtype | type = np.int64) -> EncodedRecords:
    """Ids, mask and index of ``records`` (segments encoded separately with ``tokenizer.encode_many``, in
    batches of about a megabyte of text; one Python step a segment, none a token)."""
    eot = tokenizer.eot_id
    texts = [t for r in records for t, _ in r.segments]
    encoded: list[np.ndarray] = []
    batch: list[str] = []
    size = 0
    for t in texts:
        batch.append(t)
        size += len(t)
        if size >= ENCODE_BATCH_CHARS:
            encoded.extend(tokenizer.encode_many(batch))
            batch, size = [], 0
    if batch:
        encoded.extend(tokenizer.encode_many(batch))
    eot_ids = np.array([eot] if eot is not None else [], dtype=dtype)
    one = np.ones(len(eot_ids), dtype=np.uint8)
    id_parts: list[np.ndarray] = []
    mask_parts: list[np.ndarray] = []
    lengths = np.zeros(len(records), dtype=np.int64)
    j = 0
    for i, r in enumerate(records):
        n = 0
        for _, scored in r.segments:
            ids = encoded[j].astype(dtype, copy=False)
            j += 1
            id_parts.append(ids)
            mask_parts.append(np.full(len(ids), 1 if scored else 0, dtype=np.uint8))
            n += len(ids)
            if scored and len(eot_ids):
                id_parts.append(eot_ids)
                mask_parts.append(one)
                n += len(eot_ids)
        lengths[i] = n
    index = np.zeros(len(records) + 1, dtype=np.int64)
    np.cumsum(lengths, out=index[1:])
    ids = np.concatenate(id_parts) if id_parts else np.zeros(0, dtype=dtype)
    mask = np.concatenate(mask_parts) if mask_parts else np.zeros(0, dtype=np.uint8)
    return EncodedRecords(ids, mask, index)


# -- lengths and what a context does to them ------------------------------------


def _median(a: np.ndarray) -> float:
    return float(np.median(a)) if a.size else 0.0


def spread(a: np.ndarray) -> dict[str, float]:
    """min / median / max of ``a`` (zeros when empty)."""
    if not a.size:
        return {"min": 0, "median": 0.0, "max": 0}
    return {"min": int(a.min()), "median": _median(a), "max": int(a.max())}


def spread_text(s: dict[str, float]) -> str:
    """'min 3 · median 12.5 · max 40' for a :func:`spread`."""
    median = format(s["median"], ",.1f").removesuffix(".0")
    return f"min {s['min']:,} · median {median} · max {s['max']:,}"


@dataclass
class RecordLengths:
    """Per-example token figures, enough to say what a context does to the examples.

    ``first_scored`` is the position (within the example) of its first scored token that can be a target
    (position 1 or later: the first token is never predicted), or the example's length when it has none.
    """

    lengths: np.ndarray  # tokens per example
    scored: np.ndarray  # scored tokens per example
    first_scored: np.ndarray

    @classmethod
    def from_arrays(cls, mask: np.ndarray, index: np.ndarray) -> "RecordLengths":
        """From a flat mask and the n+1 start offsets (vectorised: no Python step per example)."""
        index = np.asarray(index, dtype=np.int64)
        starts, ends = index[:-1], index[1:]
        lengths = ends - starts
        hits = np.flatnonzero(np.asarray(mask))  # positions of scored tokens, sorted
        csum = np.searchsorted(hits, index)  # scored tokens before each offset
        scored = np.diff(csum)
        # first scored position at or after start + 1, per example
        if len(hits):
            k = np.searchsorted(hits, starts + 1)
            pos = hits[np.minimum(k, len(hits) - 1)]
            first = np.where((k < len(hits)) & (pos < ends), pos - starts, lengths)
        else:
            first = lengths.copy()
        return cls(lengths.astype(np.int64), scored.astype(np.int64), np.asarray(first, dtype=np.int64))

    @classmethod
    def concat(cls, parts: Iterable["RecordLengths"]) -> "RecordLengths":
        parts = list(parts)
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("lengths", "scored", "first_scored")))

    def __len__(self) -> int:
        return len(self.lengths)

    def truncated(self, block_size: int, shift: int) -> np.ndarray:
        """Which examples are longer than a window (block_size + shift tokens): their tail is dropped."""
        return self.lengths > block_size + shift

    def scorable(self, block_size: int, shift: int) -> np.ndarray:
        """Which examples have a scored target inside their first window (the others are skipped)."""
        return self.first_scored < np.minimum(self.lengths, block_size + shift)

    def stats(self, block_size: int, shift: int) -> dict[str, Any]:
        """Counts, prompt/completion/total token spreads, and how many are truncated or unscorable."""
        n = len(self)
        truncated = int(self.truncated(block_size, shift).sum())
        unscorable = n - int(self.scorable(block_size, shift).sum())
        return {
            "examples": n,
            "prompt_tokens": spread(self.lengths - self.scored),
            "completion_tokens": spread(self.scored),
            "total_tokens": spread(self.lengths),
            "truncated": truncated,
            "unscorable": unscorable,
        }


def context_warnings(examples: int, truncated: int, unscorable: int, block_size: int, shift: int) -> list[str]:
    """What a user should know about the examples at this context, as sentences."""
    ctx = f"(block_size {block_size} + shift {shift})"
    out = []
    if truncated:
        verb = "is" if truncated == 1 else "are"
        out.append(f"{truncated:,} of {examples:,} examples {verb} longer than the context {ctx} and {verb} truncated")
    if unscorable:
        out.append(
            f"{unscorable:,} of {examples:,} examples have no scored token inside the context {ctx}: "
            "their prompt fills it, so they are skipped"
        )
    return out


def decode_marked(tokenizer: Any, ids: np.ndarray, mask: np.ndarray) -> list[tuple[str, bool]]:
    """An encoded example as (text, scored) runs: each run of equal mask decoded on its own (one decode a
    run, none a token), for showing which part of an example is scored."""
    ids = np.asarray(ids)
    mask = np.asarray(mask)
    if not len(ids):
        return []
    cuts = np.flatnonzero(np.diff(mask.astype(np.int8))) + 1
    bounds = [0, *cuts.tolist(), len(ids)]
    return [(tokenizer.decode(ids[a:b].tolist()), bool(mask[a])) for a, b in zip(bounds[:-1], bounds[1:])]
