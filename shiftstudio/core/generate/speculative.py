"""Self-speculative decoding: heads 2..K draft, head 1 verifies.

A model trained on the shifted objective with ``K = shift`` heads reads the
same hidden state at position ``t`` into K predictions: head 1 for token
``t + 1``, head ``k`` for token ``t + k``. So one pass gives the next token
(head 1) *and* drafts of the ``K - 1`` tokens after it (heads 2..K). The next
pass feeds the token plus its drafts (``T = K`` positions) through the cached
decoder and reads head 1 at every one of them: each position checks the draft
after it. The longest prefix of drafts that head 1 agrees with is kept, plus
head 1's own token at the first disagreement (or a bonus token when all
agree), and the key/value cache is rolled back past the rejected positions
(``cache.length``; what lies beyond is overwritten later). One pass thus
writes between 1 and K tokens.

**Greedy** (temperature 0): a draft is kept when it is head 1's argmax at
that position (after the repetition penalty and ``<unk>`` exclusion, as in
plain decoding), so every token written is head 1's greedy choice given the
text before it — plain greedy decoding's text. The window arithmetic is plain
decoding's too: a verification never reaches past the point where plain
decoding slides its window, and a slide re-fills the cache from the same
``keep`` tokens with the same single prefill, so every token is predicted from
the same window as in plain decoding. What can differ is the last bits of a
logit: ``T = K`` rows go through other matrix-product kernels than ``T = 1``
(about 1e-7 in float32), which can only flip an exact near-tie — the same
caveat as the cached vs uncached paths. Prefill and slide passes are computed
exactly as plain decoding computes them.

**Sampling**: speculative rejection sampling, so the text is distributed
exactly as plain sampling's with the same temperature / top-k / top-p /
repetition penalty. Draft ``d`` at a position was drawn from ``q`` (its
draft head's filtered distribution); head 1's filtered distribution there is
``p`` (repetition penalty over the text up to that position, drafts included).
``d`` is kept with probability ``min(1, p(d) / q(d))``; on the first rejection
the token is drawn from ``normalise(max(0, p - q))``; when all drafts are kept
a bonus token is drawn from ``p`` at the last position.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch

from shiftstudio.core.generate.decoder import Decoder
from shiftstudio.core.generate.filters import SamplingSettings, filter_rows, pick
from shiftstudio.core.model.gpt import GPT

TOP_ALTERNATIVES = 5


@dataclass
class SpeculativeStats:
    """Per generation: passes, drafts accepted, and how many passes accepted n = 0..K-1 drafts."""

    heads: int
    passes: int = 0
    accepted: int = 0
    histogram: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.histogram:
            self.histogram = [0] * max(1, self.heads)

    def record(self, accepted: int) -> None:
        self.passes += 1
        self.accepted += accepted
        self.histogram[accepted] += 1

    @property
    def mean_accepted_per_pass(self) -> float:
        return self.accepted / self.passes if self.passes else 0.0

    def histogram_text(self) -> str:
        """``0:12 1:30 2:7 3:1`` — passes by drafts accepted."""
        return " ".join(f"{n}:{c}" for n, c in enumerate(self.histogram))


def accept(u: torch.Tensor, p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Which drafts pass, given uniforms ``u`` and the probabilities ``p`` (head 1) and ``q`` (the draft head
    it was drawn from, > 0) of each draft: ``u < p / q``, i.e. probability min(1, p/q)."""
    return u * q < p


def _top(probs: torch.Tensor) -> list[list[tuple[int, float]]]:
    """The top alternatives (id, probability) of each row of ``probs`` (N, V), with one transfer."""
    values, ids = torch.topk(probs, min(TOP_ALTERNATIVES, probs.shape[-1]), dim=-1)
    return [list(zip(i, v)) for i, v in zip(ids.tolist(), values.tolist())]


def speculative_tokens(
    model: GPT,
    prompt_ids: Sequence[int],
    settings: SamplingSettings,
    seed: int,
    keep: int,
    unk_id: int | None = None,
    stats: SpeculativeStats | None = None,
) -> Iterator[tuple[int, torch.Tensor, list[tuple[int, float]], bool]]:
    """Generated tokens as ``(id, probabilities of its row (V,) at temperature 1 without filters, top-5 (id, p),
    drafted)``, up to ``settings.max_new_tokens``; the caller stops asking at an end of document or a stop
    string. Call under ``torch.inference_mode()`` with the model in eval mode."""
    s = settings
    K = model.config.shift
    if K < 2:
        raise ValueError("speculative decoding needs shift >= 2")
    stats = stats if stats is not None else SpeculativeStats(K)
    device = next(model.parameters()).device
    generator = torch.Generator(device="cpu").manual_seed(seed)
    greedy = s.temperature == 0
    penalty = s.repetition_penalty != 1.0
    block = model.config.block_size
    V = model.vocab_size
    decoder = Decoder(model)
    cache = decoder.cache
    U = decoder.unembedding_t  # (C, V)
    unk = torch.tensor([unk_id], device=device) if unk_id is not None and unk_id < V else None

    ids = list(prompt_ids)
    seen = torch.zeros(V, dtype=torch.bool, device=device)
    seen[torch.tensor(ids, device=device)] = True
    window_start = max(0, len(ids) - block)
    remaining = s.max_new_tokens

    def seen_rows(first: int, drafts: list[int]) -> torch.Tensor | None:
        """(1 + len(drafts), V): row j sees the text so far, ``first``, and drafts[:j]."""
        if not penalty:
            return None
        rows = seen.expand(len(drafts) + 1, V).clone()
        rows[:, first] = True
        pairs = [(j, d) for i, d in enumerate(drafts) for j in range(i + 1, len(drafts) + 1)]
        if pairs:
            r, c = zip(*pairs)
            rows[list(r), list(c)] = True
        return rows

    def draft(x_last: torch.Tensor, first: int) -> tuple[list[int], torch.Tensor | None]:
        """Drafts of the K-1 tokens after ``first`` from heads 2..K at the last accepted position (hidden state
        ``x_last`` (1, C)), and the (K-1, V) distributions they were drawn from (sampling only)."""
        z = model.head_states(x_last.view(1, 1, -1))[0, 1:, 0]  # (K-1, C): heads 2..K
        logits = torch.mm(z, U).float()  # (K-1, V)
        rows = None
        if penalty:
            rows = seen.expand(K - 1, V).clone()
            rows[:, first] = True
        filtered = filter_rows(logits, s, rows, unk)
        if greedy:
            return torch.argmax(filtered, dim=-1).tolist(), None
        q = torch.softmax(filtered, dim=-1).cpu()  # (K-1, V)
        return torch.multinomial(q, 1, generator=generator).view(-1).tolist(), q

    def commit(token: int) -> None:
        ids.append(token)
        seen[token] = True

    # The prefill: head 1's token after the prompt, exactly as plain decoding computes it.
    x = decoder.forward_states(torch.tensor([ids[window_start:]], device=device))
    x_last = x[-1:]
    stats.record(0)
    raw = decoder.head1_logits(x_last).float()  # (1, V)
    filtered = filter_rows(raw, s, seen[None] if penalty else None, unk)
    token = pick(filtered[0], s.temperature, generator)  # as plain decoding picks
    probs = torch.softmax(raw, dim=-1)
    commit(token)
    remaining -= 1
    yield token, probs[0], _top(probs)[0], False
    drafts, q = draft(x_last, token) if remaining > 0 else ([], None)

    while remaining > 0:
        L = len(ids)  # ids[-1] is not in the cache yet; the cache holds ids[window_start : L - 1]
        if L - window_start > block:  # slide exactly where plain decoding does: re-fill from the last `keep`
            window_start = L - keep
            cache.reset()
            x = decoder.forward_states(torch.tensor([ids[window_start:]], device=device))
            m, x = 0, x[-1:]
        else:  # verify: the last token and up to K-1 drafts, as far as the window (and the budget) allows
            m = max(0, min(len(drafts), window_start + block - L, remaining - 1))
            x = decoder.forward_states(torch.tensor([[ids[-1], *drafts[:m]]], device=device))  # (m + 1, C)
        raw = decoder.head1_logits(x).float()  # (m + 1, V): head 1 after each fed position
        filtered = filter_rows(raw, s, seen_rows(ids[-1], drafts[:m]) if penalty else None, unk)
        if greedy:
            targets = torch.argmax(filtered, dim=-1).tolist()
            n = 0
            while n < m and targets[n] == drafts[n]:
                n += 1
            token = targets[n]
        else:
            p = torch.softmax(filtered, dim=-1).cpu()  # (m + 1, V)
            n = 0
            if m:
                d = torch.tensor(drafts[:m])
                rows = torch.arange(m)
                u = torch.rand(m, generator=generator)
                kept = accept(u, p[rows, d], q[rows, d]).int()
                n = int(kept.cumprod(0).sum())  # the drafts kept: those before the first rejection
            if n < m:  # the first rejected draft: draw from what p has beyond q
                residual = (p[n] - q[n]).clamp_min(0)
                total = float(residual.sum())
                token = int(torch.multinomial(residual / total if total > 0 else p[n], 1, generator=generator))
            else:  # every draft kept: a bonus token from p after the last one
                token = int(torch.multinomial(p[m], 1, generator=generator))
        if m:
            cache.length -= m - n  # roll back past the rejected drafts
        stats.record(n)
        probs = torch.softmax(raw[: n + 1], dim=-1)
        tops = _top(probs)
        out = [(d, True) for d in drafts[:n]] + [(token, False)]
        for j, (t, drafted) in enumerate(out):
            commit(t)
            remaining -= 1
            yield t, probs[j], tops[j], drafted
        x_last = x[n : n + 1]
        drafts, q = draft(x_last, token) if remaining > 0 else ([], None)
