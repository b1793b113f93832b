"""Text generation: a token-by-token iterator over the KV-cache decoder.

``Generation(model, tokenizer, prompt, settings)`` is an iterator of
:class:`Token` objects (id, decoded text piece, probability, top-5
alternatives). Nothing runs until the caller asks for the next token, so
stopping is simply not asking for more; ``finish_reason`` says why a stream
that ran out ended.

The cached path (:mod:`~shiftstudio.core.generate.decoder`) writes each new
token's keys and values into per-layer buffers sized ``block_size``: one token
costs one position's work, not a re-run of the prefix. When the window is full
it slides: the cache is re-filled from the last ``keep`` tokens.
``use_cache=False`` runs the same windows through the model's ``forward``
without a cache (the baseline and the test oracle: greedy output must be
identical). The sampling filters are in :mod:`~shiftstudio.core.generate.filters`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

from shiftstudio.core.data.tokenizer import TextTokenizer
from shiftstudio.core.errors import GenerationError
from shiftstudio.core.generate.decoder import Decoder, uncached_forward
from shiftstudio.core.generate.filters import SamplingSettings, filter_rows, pick
from shiftstudio.core.generate.speculative import DRAFT_TREE, SpeculativeStats, speculative_tokens
from shiftstudio.core.model.gpt import GPT

TOP_ALTERNATIVES = 5
HOLD_BACK_TOKENS = 4  # a UTF-8 character spans at most 4 byte-level tokens

# -- tokens out ----------------------------------------------------------------


@dataclass
class Token:
    index: int  # 0 for the first generated token
    id: int
    text: str  # the text this token releases ("" while a split UTF-8 character or a possible stop string is held back)
    prob: float  # the model's probability of this token (temperature 1, no filters)
    top: list[tuple[int, str, float]]  # the model's top-5 (id, token text, probability) at this position
    drafted: bool = False  # speculative decoding: the token was a draft of heads 2..K that head 1 accepted


class TextStream:
    """Turns generated ids into text pieces: holds back byte-level pieces until a UTF-8
    character is whole, and text that might be the start of a stop string."""

    def __init__(self, tokenizer: TextTokenizer, stop: Sequence[str] = ()):
        self.tokenizer = tokenizer
        self.stop = tuple(stop)
        self.pending_ids: list[int] = []
        self.held = ""  # decoded text not yet released
        self.text = ""  # text released so far
        self.stopped = False

    def push(self, token_id: int) -> str:
        """Add one id; returns the text released by it (maybe ""; always "" once stopped)."""
        if self.stopped:
            return ""
        self.pending_ids.append(token_id)
        piece = self.tokenizer.decode(self.pending_ids)
        if piece.endswith("\ufffd") and len(self.pending_ids) < HOLD_BACK_TOKENS:
            return ""  # the last bytes start a character the next token(s) finish
        self.pending_ids.clear()
        self.held += piece
        return self._release()

    def _release(self) -> str:
        for s in self.stop:
            cut = self.held.find(s)
            if cut != -1:
                out, self.held, self.stopped = self.held[:cut], "", True
                self.text += out
                return out
        keep = 0  # longest tail of held text that could still grow into a stop string
        for s in self.stop:
            for n in range(min(len(s) - 1, len(self.held)), 0, -1):
                if self.held.endswith(s[:n]):
                    keep = max(keep, n)
                    break
        out = self.held[: len(self.held) - keep]
        self.held = self.held[len(self.held) - keep :]
        self.text += out
        return out

    def flush(self) -> str:
        """Release whatever is held (at the end of a stream that did not stop on a stop string)."""
        if self.stopped:
            return ""
        rest = (self.tokenizer.decode(self.pending_ids) if self.pending_ids else "")
        out = self.held + rest
        self.pending_ids.clear()
        self.held = ""
        self.text += out
        return out


# -- the generation iterator -----------------------------------------------------


def encode_prompt(tokenizer: TextTokenizer, prompt: str | Sequence[int]) -> list[int]:
    """Prompt ids; a character tokenizer rejects characters it has never seen, and an
    empty prompt starts from ``<|endoftext|>`` (a document start)."""
    if not isinstance(prompt, str):
        ids = [int(i) for i in prompt]
        bad = [i for i in ids if not 0 <= i < tokenizer.vocab_size]
        if bad or not ids:
            raise GenerationError(f"prompt ids must be 1 or more in 0..{tokenizer.vocab_size - 1}, got {bad[:5] or 'none'}")
        return ids
    if prompt == "":
        start = tokenizer.eot_id if tokenizer.eot_id is not None else tokenizer.tk.token_to_id("\n")
        if start is None:
            raise GenerationError("the prompt is empty and the tokenizer has no <|endoftext|> to start from; type a prompt")
        return [start]
    ids = tokenizer.encode(prompt)
    if tokenizer.kind == "char" and tokenizer.unk_id is not None and tokenizer.unk_id in ids:
        table = tokenizer.char_table()
        unknown = sorted({c for c in prompt if table is None or ord(c) >= len(table) - 1 or table[ord(c)] == tokenizer.unk_id})
        shown = ", ".join(repr(c) for c in unknown[:8]) + (" …" if len(unknown) > 8 else "")
        raise GenerationError(f"the prompt has characters this model's tokenizer never saw: {shown}")
    return ids


class Generation:
    """An iterator of :class:`Token`; see the module docstring."""

    def __init__(
        self,
        model: GPT,
        tokenizer: TextTokenizer,
        prompt: str | Sequence[int],
        settings: SamplingSettings | None = None,
        *,
        use_cache: bool = True,
        keep: int | None = None,
        speculative: bool | None = None,
        draft_tree: int = DRAFT_TREE,
    ) -> None:
        self.model = getattr(model, "_orig_mod", model)  # a torch.compile wrapper shares its module's weights
        heads = self.model.config.shift
        if speculative and heads < 2:
            raise GenerationError(f"speculative decoding needs a model with shift >= 2 heads; this one has {heads}")
        if speculative and not use_cache:
            raise GenerationError("speculative decoding runs on the KV cache; it cannot be combined with use_cache=False")
        # None: on wherever it can run (K >= 2 heads, cached decoding)
        self.speculative = bool(speculative if speculative is not None else heads >= 2 and use_cache)
        self.stats = SpeculativeStats(heads)
        if not 0 <= draft_tree <= 256:
            raise GenerationError(f"draft_tree must be between 0 (one chain of drafts) and 256 tokens, got {draft_tree}")
        self.draft_tree = draft_tree  # drafted tokens verified per greedy pass (0: a chain)
        self.tokenizer = tokenizer
        self.settings = settings or SamplingSettings()
        self.use_cache = use_cache
        block = self.model.config.block_size
        # After a slide the window holds `keep` tokens, so the cache has room for block - keep more.
        self.keep = max(1, min(block - 1, keep if keep is not None else block - max(1, block // 4)))
        self.prompt_ids = encode_prompt(tokenizer, prompt)
        self.seed = self.settings.seed if self.settings.seed is not None else int.from_bytes(os.urandom(8), "little") >> 1
        self.finish_reason: str | None = None  # "length" | "eot" | "stop" once the stream ends by itself
        self.n_generated = 0
        self.stream = TextStream(tokenizer, self.settings.stop)

    def __iter__(self) -> Iterator[Token]:
        return self._run_speculative() if self.speculative else self._run()

    # the stats, as attributes of the generation (the playground and the CLI read them)
    @property
    def passes(self) -> int:
        """Model passes that produced tokens (prefill, window slides, and one per token or per verification)."""
        return self.stats.passes

    @property
    def accepted(self) -> int:
        """Drafts of heads 2..K that head 1 accepted (0 without speculative decoding)."""
        return self.stats.accepted

    @property
    def accepted_histogram(self) -> list[int]:
        """``[n]``: how many passes accepted ``n`` drafts, n = 0..K-1."""
        return self.stats.histogram

    @property
    def mean_accepted_per_pass(self) -> float:
        return self.stats.mean_accepted_per_pass

    def _emit(self, index: int, token_id: int, probs: list[float] | torch.Tensor, top: list[tuple[int, float]],
              drafted: bool) -> tuple[Token, bool]:
        """The :class:`Token` for a picked id, and whether the stream ends with it (end of document, stop string,
        ``max_new_tokens``); also pushes its text. ``probs``: the row's probabilities (indexable by id)."""
        s = self.settings
        self.n_generated = index + 1
        top_texts = [(i, self.tokenizer.token_text(i), p) for i, p in top]
        prob = float(probs[token_id])
        if s.stop_at_eot and token_id == self.tokenizer.eot_id:
            self.finish_reason = "eot"
            return Token(index, token_id, self.stream.flush(), prob, top_texts, drafted), True
        text = self.stream.push(token_id)
        last = index == s.max_new_tokens - 1
        if last and not self.stream.stopped:
            text += self.stream.flush()
        if self.stream.stopped:
            self.finish_reason = "stop"
        elif last:
            self.finish_reason = "length"
        return Token(index, token_id, text, prob, top_texts, drafted), self.stream.stopped or last

    @torch.inference_mode()
    def _run_speculative(self) -> Iterator[Token]:
        model = self.model
        was_training = model.training
        model.eval()
        try:
            for index, (token_id, probs, top, drafted) in enumerate(
                speculative_tokens(model, self.prompt_ids, self.settings, self.seed, self.keep, self.tokenizer.unk_id,
                                   self.stats, self.draft_tree)
            ):
                token, done = self._emit(index, token_id, probs, top, drafted)
                yield token
                if done:
                    return
        finally:
            model.train(was_training)

    @torch.inference_mode()
    def _run(self) -> Iterator[Token]:
        model, s = self.model, self.settings
        was_training = model.training
        model.eval()
        try:
            device = next(model.parameters()).device
            generator = torch.Generator(device="cpu").manual_seed(self.seed)
            block = model.config.block_size
            ids = list(self.prompt_ids)
            seen = torch.zeros(model.vocab_size, dtype=torch.bool, device=device)
            seen[torch.tensor(ids, device=device)] = True
            decoder = Decoder(model) if self.use_cache else None
            cache = decoder.cache if decoder is not None else None
            unk_id = self.tokenizer.unk_id
            unk = torch.tensor([unk_id], device=device) if unk_id is not None and unk_id < model.vocab_size else None
            window_start = max(0, len(ids) - block)  # the window is ids[window_start:]
            fresh = ids[window_start:]  # ids not yet in the cache
            for index in range(s.max_new_tokens):
                if len(ids) - window_start > block:
                    window_start = len(ids) - self.keep  # slide: keep the last `keep` tokens
                    if cache is not None:
                        cache.reset()
                        fresh = ids[window_start:]
                if cache is not None:
                    logits = decoder(torch.tensor([fresh], device=device))[0]
                else:
                    logits = uncached_forward(model, torch.tensor([ids[window_start:]], device=device))[0]
                self.stats.record(0)
                logits = logits.float()  # (V,)
                probs = torch.softmax(logits, dim=-1)
                top_p, top_i = torch.topk(probs, min(TOP_ALTERNATIVES, probs.numel()))
                # penalty, <unk> never written (it stands for no text), temperature, top-k, top-p: one chain
                filtered = filter_rows(logits[None], s, seen[None] if s.repetition_penalty != 1.0 else None, unk)[0]
                token_id = pick(filtered, s.temperature, generator)
                token, done = self._emit(index, token_id, probs, list(zip(top_i.tolist(), top_p.tolist())), False)
                ids.append(token_id)
                fresh = [token_id]
                seen[token_id] = True
                yield token
                if done:
                    return
            self.finish_reason = "length"  # no token asked for (max_new_tokens 0)
        finally:
            model.train(was_training)

    @property
    def text(self) -> str:
        """The text released so far."""
        return self.stream.text
