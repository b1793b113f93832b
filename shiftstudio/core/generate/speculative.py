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

**A tree of drafts** (greedy): the draft heads are sure of some guesses and
unsure of others, and on a CPU (or any batch-1 device) a pass over 16 tokens
costs about what a pass over 4 does. So greedy decoding verifies a small tree
instead of one chain: the branches are the most probable continuations under
the draft heads (best-first over the product of their probabilities, each
head's top few tokens at its depth), every token attends to the cache and its
own branch only (:meth:`Decoder.forward_states` with ``tree``), and the kept
branch is the longest one whose every token is head 1's argmax after the text
before it — still exactly plain greedy decoding's text. The kept branch's
keys and values are moved together (:meth:`KVCache.keep_slots`).
``draft_tree = 0`` verifies the single chain of top-1 drafts, as sampling
always does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import heapq
from typing import Iterator, Sequence

import torch
import torch.nn as nn

from shiftstudio.core.generate.decoder import Decoder
from shiftstudio.core.generate.filters import SamplingSettings, filter_rows, pick
from shiftstudio.core.model.gpt import GPT, LinearShiftHead, ShiftHead, norm_function, softcap

TOP_ALTERNATIVES = 5
DRAFT_TREE = 16  # drafted tokens verified per greedy pass (the tree's size; 0 = a single chain)
BRANCHING = 4  # candidates per draft head the tree may branch into


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


class Drafter:
    """Heads 2..K's draft logits at the last accepted position, with as few operations as it can.

    Residual and linear heads read one position: their projections are stacked so that all K-1 heads take
    one batched matrix product (the per-module path costs more than the trunk's pass on a small model).
    Block heads attend over the window, so they are given the trunk states of every position in the cache
    (``trunk``, kept in step with it by the caller) through :meth:`GPT.draft_states`: exact, as in training.
    Logits are soft-capped (float32) when the model caps its logits. A test checks both against the model's own
    heads."""

    def __init__(self, model: GPT, unembedding_t: torch.Tensor) -> None:
        self.model = model
        self.U = unembedding_t  # (C, V)
        self.ln_f = norm_function(model.ln_f)
        self.cap = model.config.logit_softcap  # 0: off
        heads = list(model.shift_heads)
        self.window = model.config.head_kind == "block" or not all(
            type(h) in (ShiftHead, LinearShiftHead) and type(h.proj) is nn.Linear for h in heads)
        if not self.window:
            self.residual = isinstance(heads[0], ShiftHead)
            self.norms = [norm_function(h.norm) for h in heads] if self.residual else []
            self.w = torch.stack([h.proj.weight.t() for h in heads])  # (K-1, C, C)
            bias = [h.proj.bias for h in heads]
            self.b = torch.stack(bias)[:, None] if bias[0] is not None else None  # (K-1, 1, C)

    def logits(self, trunk: torch.Tensor) -> torch.Tensor:
        """(K-1, V) draft logits of heads 2..K at the last row of ``trunk`` (T, C): the trunk's hidden states of
        the window up to that position (only the last row is read unless the heads are blocks)."""
        if self.window:
            z = self.model.draft_states(trunk[None], last_only=True)[0, 1:]  # (K-1, C), normalised
        else:
            h = trunk[-1:]  # (1, C)
            n = len(self.w)
            inputs = torch.stack([norm(h) for norm in self.norms]) if self.residual else h.expand(n, 1, -1)  # (K-1, 1, C)
            z = torch.bmm(inputs, self.w)
            if self.b is not None:
                z = z + self.b
            if self.residual:
                z = z + h
            z = self.ln_f(z.view(n, -1))  # (K-1, C)
        logits = torch.mm(z, self.U)  # (K-1, V)
        return softcap(logits, self.cap) if self.cap else logits


def draft_tree(candidates: list[list[tuple[int, float]]], size: int) -> tuple[list[int], list[int]]:
    """The ``size`` most probable drafted continuations as a tree: ``candidates[d]`` are the draft head for depth
    ``d + 1``'s best (token, probability) pairs, most probable first. A node's score is the product of the
    probabilities along its branch, so a child never outscores its parent and the best ``size`` nodes, taken in
    order, form a tree (every node's parent comes before it). Returns (tokens, parents): node i (row i + 1 of the
    verification; row 0 is the token before the drafts) drafts ``tokens[i]`` after row ``parents[i]``."""
    tokens: list[int] = []
    parents: list[int] = []
    if not candidates or size <= 0:
        return tokens, parents
    # (-score, tie-breaker, depth, rank at that depth, parent row)
    heap = [(-candidates[0][0][1], 0, 0, 0, 0)]
    counter = 1
    while heap and len(tokens) < size:
        neg, _, depth, rank, parent = heapq.heappop(heap)
        tokens.append(candidates[depth][rank][0])
        parents.append(parent)
        row = len(tokens)
        if rank + 1 < len(candidates[depth]):  # the next sibling: same parent, next candidate
            parent_score = -neg / candidates[depth][rank][1] if candidates[depth][rank][1] > 0 else 0.0
            heapq.heappush(heap, (-parent_score * candidates[depth][rank + 1][1], counter, depth, rank + 1, parent))
            counter += 1
        if depth + 1 < len(candidates):  # the first child
            heapq.heappush(heap, (neg * candidates[depth + 1][0][1], counter, depth + 1, 0, row))
            counter += 1
    return tokens, parents


def tree_masks(parents: list[int], device: torch.device) -> tuple[torch.Tensor, torch.Tensor, list[list[int]]]:
    """Depths (T,), the ancestor-or-self matrix (T, T) and each row's branch (its rows from the root) of a tree
    whose row 0 is the root and row i + 1 hangs under row ``parents[i]``."""
    branches = [[0]]
    for parent in parents:
        branches.append(branches[parent] + [len(branches)])
    T = len(branches)
    r, c = zip(*[(i, j) for i, branch in enumerate(branches) for j in branch])
    ancestors = torch.zeros(T, T, dtype=torch.bool)
    ancestors[list(r), list(c)] = True
    depths = torch.tensor([len(b) - 1 for b in branches])
    return depths.to(device), ancestors.to(device), branches


def speculative_tokens(
    model: GPT,
    prompt_ids: Sequence[int],
    settings: SamplingSettings,
    seed: int,
    keep: int,
    unk_id: int | None = None,
    stats: SpeculativeStats | None = None,
    tree_size: int = DRAFT_TREE,
) -> Iterator[tuple[int, torch.Tensor, list[tuple[int, float]], bool]]:
    """Generated tokens as ``(id, probabilities of its row (V,) at temperature 1 without filters, top-5 (id, p),
    drafted)``, up to ``settings.max_new_tokens``; the caller stops asking at an end of document or a stop
    string. ``tree_size``: drafted tokens verified per greedy pass (0: one chain of top-1 drafts; sampling always
    verifies a chain). Call under ``torch.inference_mode()`` with the model in eval mode."""
    s = settings
    K = model.config.shift
    if K < 2:
        raise ValueError("speculative decoding needs shift >= 2")
    stats = stats if stats is not None else SpeculativeStats(K)
    device = next(model.parameters()).device
    generator = torch.Generator(device="cpu").manual_seed(seed)
    greedy = s.temperature == 0
    use_tree = greedy and tree_size > 0
    penalty = s.repetition_penalty != 1.0
    block = model.config.block_size
    V = model.vocab_size
    decoder = Decoder(model)
    cache = decoder.cache
    drafter = Drafter(model, decoder.unembedding_t)
    # The trunk's hidden states of every cached position, for block heads (they attend over the window).
    trunk = torch.empty(block, model.config.n_embd, device=device, dtype=cache.kv.dtype) if drafter.window else None
    unk = torch.tensor([unk_id], device=device) if unk_id is not None and unk_id < V else None

    ids = list(prompt_ids)
    seen = torch.zeros(V, dtype=torch.bool, device=device)
    seen[torch.tensor(ids, device=device)] = True
    window_start = max(0, len(ids) - block)
    remaining = s.max_new_tokens

    def seen_rows(tokens: list[int], branches: list[list[int]]) -> torch.Tensor | None:
        """(rows, V): row i sees the text so far and the tokens of its branch (rows ``branches[i]``, itself
        included); ``tokens[j]`` is row j's token."""
        if not penalty:
            return None
        rows = seen.expand(len(branches), V).clone()
        r, c = zip(*[(i, tokens[j]) for i, branch in enumerate(branches) for j in branch])
        rows[list(r), list(c)] = True
        return rows

    def draft(fed: torch.Tensor, first: int, budget: int) -> tuple[list[int], list[int], torch.Tensor | None]:
        """Drafts after ``first`` from heads 2..K at the last row of ``fed`` (the trunk states up to the last
        accepted position): (tokens, parent rows) of a tree of at most ``budget`` nodes, or of the chain of
        K-1, and for sampling the (K-1, V) distributions the chain was drawn from."""
        logits = drafter.logits(fed).float()  # (K-1, V)
        rows = None
        if penalty:
            rows = seen.expand(K - 1, V).clone()
            rows[:, first] = True
        filtered = filter_rows(logits, s, rows, unk)
        if use_tree:
            probs, top = torch.softmax(filtered, dim=-1).topk(min(BRANCHING, V), dim=-1)
            candidates = [list(zip(t, p)) for t, p in zip(top.tolist(), probs.tolist())]
            tokens, parents = draft_tree(candidates, budget)
            return tokens, parents, None
        if greedy:
            tokens = torch.argmax(filtered, dim=-1).tolist()
            return tokens, list(range(len(tokens))), None
        q = torch.softmax(filtered, dim=-1).cpu()  # (K-1, V)
        tokens = torch.multinomial(q, 1, generator=generator).view(-1).tolist()
        return tokens, list(range(len(tokens))), q

    def commit(token: int) -> None:
        ids.append(token)
        seen[token] = True

    def fed_states() -> torch.Tensor:
        """What the drafter reads: the trunk states up to the last cached position (block heads), else that one."""
        return trunk[: cache.length] if trunk is not None else x_last

    # The prefill: head 1's token after the prompt, exactly as plain decoding computes it.
    x = decoder.forward_states(torch.tensor([ids[window_start:]], device=device))
    if trunk is not None:
        trunk[: cache.length] = x
    x_last = x[-1:]
    stats.record(0)
    raw = decoder.head1_logits(x_last).float()  # (1, V)
    filtered = filter_rows(raw, s, seen[None] if penalty else None, unk)
    token = pick(filtered[0], s.temperature, generator)  # as plain decoding picks
    probs = torch.softmax(raw, dim=-1)
    commit(token)
    remaining -= 1
    yield token, probs[0], _top(probs)[0], False
    drafts, parents, q = draft(fed_states(), token, tree_size) if remaining > 0 else ([], [], None)

    while remaining > 0:
        L = len(ids)  # ids[-1] is not in the cache yet; the cache holds ids[window_start : L - 1]
        start = cache.length
        if L - window_start > block:  # slide exactly where plain decoding does: re-fill from the last `keep`
            window_start = L - keep
            cache.reset()
            x = decoder.forward_states(torch.tensor([ids[window_start:]], device=device))
            if trunk is not None:
                trunk[: cache.length] = x
            x, n, tokens_kept = x[-1:], 0, []
            raw = decoder.head1_logits(x).float()
            filtered = filter_rows(raw, s, seen[None] if penalty else None, unk)
            token = pick(filtered[0], s.temperature, generator)
        else:
            # verify the last token (row 0) and the drafts that still fit the window and the budget
            room = max(0, min(window_start + block - L, remaining - 1))  # drafts that may be kept
            if use_tree:
                # the best nodes no deeper than `room`, as many as the window has slots for: still a tree
                depths = [0]
                for parent in parents:
                    depths.append(depths[parent] + 1)
                chosen = [i for i in range(len(drafts)) if depths[i + 1] <= room][: window_start + block - L]
                row_of = {0: 0} | {i + 1: j + 1 for j, i in enumerate(chosen)}
                tokens = [ids[-1]] + [drafts[i] for i in chosen]
                tree_parents = [row_of[parents[i]] for i in chosen]
                depth_t, ancestors, branches = tree_masks(tree_parents, device)
                x = decoder.forward_states(torch.tensor([tokens], device=device), (depth_t, ancestors))
            else:
                m = min(len(drafts), room)
                tokens = [ids[-1], *drafts[:m]]
                branches = [list(range(j + 1)) for j in range(m + 1)]
                x = decoder.forward_states(torch.tensor([tokens], device=device))  # (m + 1, C)
            if trunk is not None:
                trunk[start : cache.length] = x
            raw = decoder.head1_logits(x).float()  # (rows, V): head 1 after each fed token
            filtered = filter_rows(raw, s, seen_rows(tokens, branches), unk)
            if greedy:
                targets = torch.argmax(filtered, dim=-1).tolist()
                if use_tree:
                    children = {(tree_parents[i], t): i + 1 for i, t in enumerate(tokens[1:])}
                    kept_rows = [0]
                    while (kept_rows[-1], targets[kept_rows[-1]]) in children:
                        kept_rows.append(children[(kept_rows[-1], targets[kept_rows[-1]])])
                else:
                    kept_rows = [0]
                    while len(kept_rows) <= m and targets[len(kept_rows) - 1] == tokens[len(kept_rows)]:
                        kept_rows.append(len(kept_rows))
                token = targets[kept_rows[-1]]
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
                kept_rows = list(range(n + 1))
            n = len(kept_rows) - 1
            cache.keep_slots(start, [start + r for r in kept_rows])  # roll back past the rest
            if trunk is not None and kept_rows[-1] != n:
                trunk[start : start + n + 1] = trunk[torch.tensor([start + r for r in kept_rows], device=device)]
            x = x[kept_rows]
            raw = raw[kept_rows]
            tokens_kept = [tokens[r] for r in kept_rows[1:]]
        stats.record(n)
        probs = torch.softmax(raw[: n + 1], dim=-1)
        tops = _top(probs)
        out = [(d, True) for d in tokens_kept] + [(token, False)]
        for j, (t, drafted) in enumerate(out):
            commit(t)
            remaining -= 1
            yield t, probs[j], tops[j], drafted
        x_last = x[n : n + 1]
        drafts, parents, q = draft(fed_states(), token, tree_size) if remaining > 0 else ([], [], None)
