"""Self-speculative decoding (heads 2..K draft, head 1 verifies): greedy writes plain greedy decoding's text,
sampling draws from plain sampling's distribution (a chi-square test that a wrong acceptance rule fails), the
window slides where plain decoding's does, and a K = 1 model refuses it."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from shiftstudio.config import ModelConfig
from shiftstudio.core.data.tokenizer import char_tokenizer
from shiftstudio.core.errors import GenerationError, IncompatibleCheckpoint
from shiftstudio.core.generate import speculative
from shiftstudio.core.generate.filters import (
    SamplingSettings, apply_repetition_penalty, apply_temperature, top_k_filter, top_p_filter,
)
from shiftstudio.core.generate.generation import Generation
from shiftstudio.core.model.gpt import GPT

ROOT = Path(__file__).resolve().parents[2]
TEXT = (ROOT / "resources" / "tinyshakespeare.txt").read_text(encoding="utf-8")[:20_000]
TOK = char_tokenizer(set(TEXT))
NEAR_TIE = 1e-4  # float32 logits of T = K rows and of T = 1 rows differ by ~1e-7; only a closer top-2 can flip


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models on a shared machine: one thread is several times faster than two fighting (conftest restores)."""
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def trained() -> GPT:
    return train_k4()


# The architecture options of the small-model recipe, all on (the soft cap low enough to bend these logits).
RECIPE = {"qk_norm": True, "activation": "relu2", "logit_softcap": 4.0, "zero_init_proj": True}


@pytest.fixture(scope="module")
def trained_recipe() -> GPT:
    return train_k4(steps=150, pos="rope", **RECIPE)


def train_k4(steps: int = 300, **overrides) -> GPT:
    """A K = 4 char model trained for a few hundred steps on 20 KB of shakespeare (a few seconds): heads 2..4
    have learned enough that drafts are often accepted and often rejected."""
    torch.manual_seed(0)
    cfg = ModelConfig(n_layer=2, n_head=2, n_embd=48, block_size=24, dropout=0.0, shift=4, **overrides)
    model = GPT(cfg, TOK.vocab_size)
    data = torch.tensor(TOK.encode(TEXT))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    B, T, K = 24, cfg.block_size, cfg.shift
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    for _ in range(steps):
        starts = torch.randint(0, len(data) - T - K, (B,), generator=gen)
        x = torch.stack([data[s : s + T] for s in starts])
        y = torch.stack([torch.stack([data[s + k : s + k + T] for k in range(1, K + 1)]) for s in starts])
        loss = model(x, y).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    torch.set_num_threads(threads)
    return model.eval()


def random_gpt(shift: int, seed: int, **overrides) -> GPT:
    torch.manual_seed(seed)
    cfg = ModelConfig(**{"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 16, "dropout": 0.0, "shift": shift,
                         **overrides})
    return GPT(cfg, TOK.vocab_size).eval()


def run(model: GPT, prompt, settings: SamplingSettings, **kw) -> tuple[list[int], Generation]:
    g = Generation(model, TOK, prompt, settings, **kw)
    return [t.id for t in g], g


# -- greedy: plain greedy's text ---------------------------------------------------


def plain_window_starts(prompt_len: int, n: int, block: int, keep: int) -> list[int]:
    """Where plain decoding's window starts when it predicts generated token i (i < n): Generation's rule."""
    starts, ws = [], max(0, prompt_len - block)
    for i in range(n):
        if prompt_len + i - ws > block:
            ws = prompt_len + i - keep
        starts.append(ws)
    return starts


@torch.no_grad()
def plain_margin(model: GPT, gen: Generation, ids: list[int], i: int) -> float:
    """Top-1 minus top-2 of the filtered head-1 logits plain greedy decoding picked generated token i from
    (recomputed by the model's forward on that token's window)."""
    prompt = gen.prompt_ids
    seq = list(prompt) + ids
    ws = plain_window_starts(len(prompt), i + 1, model.config.block_size, gen.keep)[i]
    logits = model(torch.tensor([seq[ws : len(prompt) + i]])).logits[0, 0, -1].float()
    logits = apply_repetition_penalty(logits, torch.tensor(sorted(set(seq[: len(prompt) + i]))), gen.settings.repetition_penalty)
    if TOK.unk_id is not None:
        logits[TOK.unk_id] = float("-inf")
    top2 = torch.topk(logits, 2).values
    return float(top2[0] - top2[1])


def assert_same_greedy(model: GPT, prompt: str, settings: SamplingSettings, counts: Counter) -> Generation:
    """Speculative greedy == plain greedy, token for token. A difference is only allowed at a certified near-tie
    (plain's own top-2 margin under NEAR_TIE, 1000x the float noise between the two paths), after which the two
    texts legitimately go separate ways; anything else is a bug."""
    plain, _ = run(model, prompt, settings, speculative=False)
    spec, gen = run(model, prompt, settings, speculative=True)
    if spec != plain:
        i = next((i for i, (a, b) in enumerate(zip(spec, plain)) if a != b), min(len(spec), len(plain)))
        assert i < min(len(spec), len(plain)), (prompt, spec, plain)  # same prefix, different length: a bug
        margin = plain_margin(model, gen, plain, i)
        assert margin < NEAR_TIE, f"greedy differs at token {i} where plain's top-2 margin is {margin:.2e}: {prompt!r}"
        counts["near ties"] += 1
        counts["compared"] += i
    else:
        counts["compared"] += len(plain)
    return gen


PROMPTS = ["ROMEO:", "First Citizen:\n", "What", "The king", "\n", "O, ", "MENENIUS:\nI tell you", "Go",
           "You are all resolved rather to die than to famish?"]


@pytest.mark.parametrize("penalty", [1.0, 1.3])
def test_greedy_is_plain_greedy_on_a_trained_model_across_window_slides(trained: GPT, penalty: float) -> None:
    counts: Counter = Counter()
    accepted = 0
    for prompt in PROMPTS:
        for n in (1, 2, 5, 23, 70):  # block 24: 70 tokens slide the window several times
            settings = SamplingSettings(max_new_tokens=n, temperature=0, repetition_penalty=penalty, stop_at_eot=False)
            gen = assert_same_greedy(trained, prompt, settings, counts)
            accepted += gen.accepted
    assert counts["near ties"] <= 2 and counts["compared"] > 0.9 * len(PROMPTS) * (1 + 2 + 5 + 23 + 70)
    total = len(PROMPTS) * (1 + 2 + 5 + 23 + 70)
    assert accepted > 0.1 * total  # the drafts were really used: a tenth of the tokens at least came from drafts


@pytest.mark.parametrize("shift", [2, 4])
@pytest.mark.parametrize("pos", ["learned", "rope"])
@pytest.mark.parametrize("kind", ["residual", "linear", "block"])
def test_greedy_is_plain_greedy_on_random_models(shift: int, pos: str, kind: str) -> None:
    counts: Counter = Counter()
    for seed in range(3):
        model = random_gpt(shift, seed, pos=pos, block_size=12, head_kind=kind)
        for prompt in PROMPTS[:5]:
            assert_same_greedy(model, prompt, SamplingSettings(max_new_tokens=40, temperature=0, stop_at_eot=False), counts)
    assert counts["near ties"] <= 1


@pytest.mark.parametrize("kind", ["residual", "block"])
def test_greedy_is_plain_greedy_with_qk_norm_relu2_and_a_soft_cap(kind: str) -> None:
    counts: Counter = Counter()
    for seed in range(3):
        model = random_gpt(3, seed, pos="rope", block_size=12, head_kind=kind, **RECIPE)
        for prompt in PROMPTS[:5]:
            assert_same_greedy(model, prompt, SamplingSettings(max_new_tokens=40, temperature=0, stop_at_eot=False), counts)
    assert counts["near ties"] <= 1


@pytest.mark.parametrize("tree", [0, 16])
def test_greedy_is_plain_greedy_on_a_trained_model_with_the_recipe_options(trained_recipe: GPT, tree: int) -> None:
    """A model trained with qk_norm, relu2, a soft cap and zero-initialised projections: drafts are accepted
    (the capped heads are read the same way as head 1) and the text is plain greedy's, across window slides."""
    counts: Counter = Counter()
    accepted = 0
    for prompt in PROMPTS[:4]:
        for n in (5, 70):
            settings = SamplingSettings(max_new_tokens=n, temperature=0, stop_at_eot=False)
            plain, _ = run(trained_recipe, prompt, settings, speculative=False)
            spec, gen = run(trained_recipe, prompt, settings, speculative=True, draft_tree=tree)
            if spec != plain:
                i = next(i for i, (a, b) in enumerate(zip(spec, plain)) if a != b)
                assert plain_margin(trained_recipe, gen, plain, i) < NEAR_TIE, (prompt, i)
                counts["near ties"] += 1
            accepted += gen.accepted
    assert counts["near ties"] <= 1 and accepted > 0.1 * 4 * 75


@pytest.mark.parametrize("tree", [0, 1, 3, 16, 64])
def test_every_draft_tree_size_writes_plain_greedy_text(trained: GPT, tree: int) -> None:
    """A chain (0), a single node, a small tree, the default and one bigger than the window (block 24): all give
    plain greedy's text, across window slides; a tree accepts more drafts per pass than the chain."""
    counts: Counter = Counter()
    accepted, passes = 0, 0
    for prompt in PROMPTS[:6]:
        settings = SamplingSettings(max_new_tokens=70, temperature=0, repetition_penalty=1.2, stop_at_eot=False)
        plain, _ = run(trained, prompt, settings, speculative=False)
        spec, gen = run(trained, prompt, settings, speculative=True, draft_tree=tree)
        if spec != plain:
            i = next(i for i, (a, b) in enumerate(zip(spec, plain)) if a != b)
            assert plain_margin(trained, gen, plain, i) < NEAR_TIE, (tree, prompt, i)
            counts["near ties"] += 1
        accepted, passes = accepted + gen.accepted, passes + gen.passes
    assert counts["near ties"] <= 1
    rate = accepted / passes
    chain = sum(run(trained, p, SamplingSettings(max_new_tokens=70, temperature=0, repetition_penalty=1.2,
                                                  stop_at_eot=False), draft_tree=0)[1].accepted for p in PROMPTS[:6])
    if tree >= 3:
        assert accepted > chain  # the tree's alternatives are really used
    assert rate > 0.2


# -- the tree's parts ------------------------------------------------------------------


def test_draft_tree_takes_the_most_probable_branches_best_first() -> None:
    cands = [[(10, 0.6), (11, 0.3), (12, 0.1)], [(20, 0.5), (21, 0.4)], [(30, 0.9)]]
    tokens, parents = speculative.draft_tree(cands, 6)
    depth, score = [0], [1.0]  # per row; row 0 is the token before the drafts
    for t, p in zip(tokens, parents):
        assert p < len(depth)  # the parent's row comes first: a prefix of the nodes is a tree
        depth.append(depth[p] + 1)
        score.append(score[p] * dict(cands[depth[-1] - 1])[t])
    # every branch's probability: 10 .6, 10-20 .3, 11 .3, 10-20-30 .27, 10-21 .24, 10-21-30 .216, 11-20 .15, ...
    assert score[1:] == pytest.approx([0.6, 0.3, 0.3, 0.27, 0.24, 0.216])
    assert tokens[0] == 10 and parents[0] == 0
    assert speculative.draft_tree(cands, 0) == ([], []) and speculative.draft_tree([], 5) == ([], [])
    everything, _ = speculative.draft_tree(cands, 100)
    assert len(everything) == 3 + 3 * 2 + 3 * 2 * 1  # every branch once, no more


def test_tree_masks_describe_branches() -> None:
    depths, ancestors, branches = speculative.tree_masks([0, 0, 1, 3], torch.device("cpu"))
    assert branches == [[0], [0, 1], [0, 2], [0, 1, 3], [0, 1, 3, 4]]
    assert depths.tolist() == [0, 1, 1, 2, 3]
    assert ancestors.tolist() == [[j in b for j in range(5)] for b in branches]


@pytest.mark.parametrize("pos", ["learned", "rope"])
@torch.inference_mode()
def test_a_tree_pass_gives_each_branch_what_feeding_it_alone_gives(pos: str) -> None:
    from shiftstudio.core.generate.decoder import Decoder

    model = random_gpt(2, 0, pos=pos, block_size=16)
    prefix = TOK.encode("ROMEO: O")
    tree_tokens = TOK.encode("xabcde")  # root x; a, b under it; c under a; d under c; e under b
    parents = [0, 0, 1, 3, 2]
    depths, ancestors, branches = speculative.tree_masks(parents, torch.device("cpu"))
    dec = Decoder(model)
    dec.forward_states(torch.tensor([prefix]))
    x = dec.forward_states(torch.tensor([tree_tokens]), (depths, ancestors))
    assert dec.cache.length == len(prefix) + len(tree_tokens)
    for row, branch in enumerate(branches):
        alone = Decoder(model)
        y = alone.forward_states(torch.tensor([prefix + [tree_tokens[r] for r in branch]]))
        torch.testing.assert_close(x[row], y[-1], rtol=0, atol=2e-5)
    # keep branch x-a-c-d: its slots move together and the cache then continues as if only it had been fed
    first = len(prefix)
    dec.cache.keep_slots(first, [first + r for r in branches[4]])
    assert dec.cache.length == len(prefix) + 4
    nxt = dec.forward_states(torch.tensor([TOK.encode("f")]))
    ref = Decoder(model).forward_states(torch.tensor([prefix + [tree_tokens[r] for r in branches[4]] + TOK.encode("f")]))
    torch.testing.assert_close(nxt[-1], ref[-1], rtol=0, atol=2e-5)


@pytest.mark.parametrize("kind", ["residual", "linear", "block"])
@pytest.mark.parametrize("bias", [False, True])
@torch.inference_mode()
def test_the_drafter_gives_the_heads_logits_of_the_model(kind: str, bias: bool) -> None:
    model = random_gpt(4, 1, head_kind=kind, bias=bias, norm="rmsnorm" if bias else "layernorm")
    for head in model.shift_heads:  # away from the initial weights, so that each head differs
        for p in head.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    idx = torch.tensor([TOK.encode("First Citizen")])
    h, _ = model.trunk(idx)
    full = model(idx).logits[0, 1:, -1, : model.vocab_size]  # heads 2..4 at the last position
    from shiftstudio.core.generate.decoder import Decoder

    drafter = speculative.Drafter(model, Decoder(model).unembedding_t)
    assert drafter.window == (kind == "block")
    torch.testing.assert_close(drafter.logits(h[0]), full, rtol=0, atol=1e-4)


@pytest.mark.parametrize("kind", ["residual", "linear", "block"])
@torch.inference_mode()
def test_the_drafter_caps_its_logits_as_the_model_does(kind: str) -> None:
    """With qk_norm (block heads recompute attention), relu2 and a soft cap reached by the logits."""
    model = random_gpt(4, 2, head_kind=kind, pos="rope", **{**RECIPE, "logit_softcap": 1.0})
    for p in model.parameters():  # away from the initial weights (zeroed projections, unit gains), logits past the cap
        p.add_(torch.randn_like(p) * 0.1)
    model.wte.weight.mul_(3.0)
    idx = torch.tensor([TOK.encode("First Citizen")])
    h, _ = model.trunk(idx)
    full = model(idx).logits[0, 1:, -1, : model.vocab_size]  # heads 2..4 at the last position, capped
    assert 0.5 < full.abs().max() <= 1.0
    from shiftstudio.core.generate.decoder import Decoder

    drafted = speculative.Drafter(model, Decoder(model).unembedding_t).logits(h[0])
    assert drafted.dtype == torch.float32
    torch.testing.assert_close(drafted, full, rtol=0, atol=1e-5)


def test_a_bad_draft_tree_size_is_refused(trained: GPT) -> None:
    with pytest.raises(GenerationError, match="draft_tree must be between 0"):
        Generation(trained, TOK, "ROMEO:", SamplingSettings(max_new_tokens=3), draft_tree=-1)


def test_tokens_say_which_came_from_drafts_and_the_stats_add_up(trained: GPT) -> None:
    settings = SamplingSettings(max_new_tokens=60, temperature=0, stop_at_eot=False)
    tokens = list(g := Generation(trained, TOK, "ROMEO:", settings))
    assert g.speculative  # on by default for K >= 2
    drafted = sum(t.drafted for t in tokens)
    assert drafted == g.accepted > 0 and any(not t.drafted for t in tokens)
    assert len(tokens) == g.passes + g.accepted  # one token of head 1's own per pass, plus the accepted drafts
    assert sum(g.accepted_histogram) == g.passes and len(g.accepted_histogram) == 4
    assert sum(n * c for n, c in enumerate(g.accepted_histogram)) == g.accepted
    assert g.mean_accepted_per_pass == pytest.approx(g.accepted / g.passes)
    assert [t.index for t in tokens] == list(range(60))
    assert all(0 < t.prob <= 1 and len(t.top) == 5 for t in tokens)
    plain = list(Generation(trained, TOK, "ROMEO:", settings, speculative=False))
    assert [(t.id, t.text, t.top[0][0]) for t in tokens] == [(t.id, t.text, t.top[0][0]) for t in plain]
    assert [t.prob for t in tokens] == pytest.approx([t.prob for t in plain], abs=1e-5)
    assert g.text == "".join(t.text for t in tokens)


def test_stops_end_of_document_and_max_tokens_cut_a_pass_short(trained: GPT) -> None:
    base = dict(temperature=0, stop_at_eot=False)
    full, _ = run(trained, "ROMEO:", SamplingSettings(max_new_tokens=40, **base))
    for n in (1, 3, 7, 13):  # a budget ending inside a pass of accepted drafts
        ids, g = run(trained, "ROMEO:", SamplingSettings(max_new_tokens=n, **base))
        assert ids == full[:n] and g.finish_reason == "length"
    text = "".join(TOK.decode([i]) for i in full)
    stop = text[10:13]
    g = Generation(trained, TOK, "ROMEO:", SamplingSettings(max_new_tokens=40, stop=(stop,), **base))
    list(g)
    assert g.finish_reason == "stop" and g.text == text[: text.index(stop)]


def test_sampling_is_seeded(trained: GPT) -> None:
    settings = dict(max_new_tokens=50, temperature=1.0, top_k=20, top_p=0.95, repetition_penalty=1.2)
    a, _ = run(trained, "ROMEO:", SamplingSettings(seed=7, **settings))
    b, g = run(trained, "ROMEO:", SamplingSettings(seed=7, **settings))
    c, _ = run(trained, "ROMEO:", SamplingSettings(seed=8, **settings))
    assert a == b != c and g.accepted > 0


def test_speculative_needs_two_heads(tiny_run: Path) -> None:
    from shiftstudio.core.runs.loading import load_model

    model, tokenizer, _ = load_model(tiny_run)
    assert model.config.shift == 1
    with pytest.raises(GenerationError) as info:
        Generation(model, tokenizer, "ROMEO:", SamplingSettings(max_new_tokens=3), speculative=True)
    assert str(info.value) == "speculative decoding needs a model with shift >= 2 heads; this one has 1"
    # no end-of-document stop: a 4-step model may sample <|endoftext|> first, and the count below would vary
    g = Generation(model, tokenizer, "ROMEO:", SamplingSettings(max_new_tokens=3, stop_at_eot=False))
    assert not g.speculative and len(list(g)) == 3 and g.passes == 3 and g.accepted == 0


# -- sampling: plain sampling's distribution ---------------------------------------------

N_SAMPLES = 1500
PROMPT = "poor citizens.\n\n"  # a speaker name comes next: its 2nd letter depends on its 1st


@torch.no_grad()
def exact_triples(model: GPT, settings: SamplingSettings, min_count: int) -> dict[tuple[int, int, int], float]:
    """The exact distribution of the first three tokens plain sampling draws (every triple that ``min_count``
    samples could expect 5 times) (same filter chain as Generation:
    penalty over the text so far, <unk> never, temperature, top-k, top-p), from the model's uncached forward."""
    prompt = TOK.encode(PROMPT)

    def dist(prefixes: list[list[int]]) -> torch.Tensor:
        logits = model(torch.tensor(prefixes)).logits[:, 0, -1].float()  # (N, V)
        rows = []
        for prefix, row in zip(prefixes, logits):
            row = apply_repetition_penalty(row, torch.tensor(sorted(set(prefix))), settings.repetition_penalty)
            if TOK.unk_id is not None:
                row = row.index_fill(0, torch.tensor([TOK.unk_id]), float("-inf"))
            row = top_p_filter(top_k_filter(apply_temperature(row, settings.temperature), settings.top_k), settings.top_p)
            rows.append(F.softmax(row, dim=-1))
        return torch.stack(rows)

    out: dict[tuple[int, int, int], float] = {}
    p1 = dist([prompt])[0]
    firsts = [int(a) for a in p1.nonzero()]
    p2 = dist([prompt + [a] for a in firsts])
    pairs = [(a, int(b), float(p1[a] * p2[i, b])) for i, a in enumerate(firsts) for b in p2[i].nonzero()]
    pairs = [(a, b, w) for a, b, w in pairs if w * min_count >= 5]  # a triple of a rarer pair goes to the pooled bin
    p3 = dist([prompt + [a, b] for a, b, _ in pairs])
    for i, (a, b, w) in enumerate(pairs):
        for c in p3[i].nonzero():
            out[(a, b, int(c))] = w * float(p3[i, c])
    return out


def chi_square_p_value(samples: list[tuple[int, int, int]], exact: dict[tuple[int, int, int], float]) -> float:
    """Goodness of fit of sampled triples to the exact distribution: a bin for every triple expected at least
    5 times, the rest pooled in one bin; p-value from the chi-square law (regularised upper gamma)."""
    n = len(samples)
    counts = Counter(samples)
    big = {t for t, p in exact.items() if p * n >= 5}
    stat, rest_expected, rest_seen = 0.0, n, n
    for t in big:
        e = exact[t] * n
        stat += (counts[t] - e) ** 2 / e
        rest_expected -= e
        rest_seen -= counts[t]
    bins = len(big)
    if rest_expected >= 5:
        stat += (rest_seen - rest_expected) ** 2 / rest_expected
        bins += 1
    dof = bins - 1
    return float(torch.special.gammaincc(torch.tensor(dof / 2, dtype=torch.float64), torch.tensor(stat / 2, dtype=torch.float64)))


def sampled_triples(model: GPT, settings: dict, speculative_on: bool, seed0: int, n: int = N_SAMPLES) -> list[tuple[int, int, int]]:
    out = []
    for seed in range(seed0, seed0 + n):
        ids, _ = run(model, PROMPT, SamplingSettings(max_new_tokens=3, seed=seed, stop_at_eot=False, **settings),
                     speculative=speculative_on)
        out.append(tuple(ids))
    return out


SAMPLING = [
    dict(temperature=1.0),
    dict(temperature=0.8, top_k=12, top_p=0.9, repetition_penalty=1.5),
]


@pytest.mark.parametrize("settings", SAMPLING, ids=["plain-softmax", "filters-and-penalty"])
def test_speculative_sampling_draws_from_plain_samplings_distribution(trained: GPT, settings: dict) -> None:
    """Fixed seeds, so the outcome is fixed: chi-square p-value of 1,500 triples (tokens 1-3, which cross a
    verification: token 1 from the prefill, 2 and 3 accepted drafts, head 1's correction or a bonus) against the
    exact distribution. Plain sampling passes the same check (the oracle itself is right), and an always-accept
    rule — the drafts' distribution instead of head 1's — fails it by a mile (next test)."""
    exact = exact_triples(trained, SamplingSettings(**settings), N_SAMPLES)
    spec = sampled_triples(trained, settings, True, 0)
    assert chi_square_p_value(spec, exact) > 1e-3
    if settings is SAMPLING[0]:
        assert chi_square_p_value(sampled_triples(trained, settings, False, 10_000), exact) > 1e-3


def test_a_wrong_acceptance_rule_fails_the_same_check(trained: GPT, monkeypatch) -> None:
    settings, n = SAMPLING[0], 1000
    exact = exact_triples(trained, SamplingSettings(**settings), n)
    assert chi_square_p_value(sampled_triples(trained, settings, True, 0, n), exact) > 1e-3  # the right rule passes
    monkeypatch.setattr(speculative, "accept", lambda u, p, q: torch.ones_like(u, dtype=torch.bool))  # always accept
    assert chi_square_p_value(sampled_triples(trained, settings, True, 0, n), exact) < 1e-6


# -- checkpoints whose heads do not match their config ------------------------------


def test_a_checkpoint_with_more_heads_than_its_config_is_refused(tmp_path: Path, capsys) -> None:
    from shiftstudio.cli import main
    from shiftstudio.config import RunConfig
    from shiftstudio.core.runs.folder import prepare_and_create
    from shiftstudio.core.runs.loading import load_model
    from shiftstudio.core.train.trainer import Trainer

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    config = RunConfig().updated({
        "corpus": [str(corpus)], "n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 16, "batch_size": 2,
        "max_iters": 2, "eval_interval": 2, "eval_iters": 1, "log_interval": 2, "warmup_iters": 0, "lr_decay_iters": 2,
        "device": "cpu", "compile": False, "shift": 4,
    })
    run_dir = prepare_and_create(config, out_dir=tmp_path / "run")
    list(Trainer(run_dir).run())
    model, _, _ = load_model(run_dir)
    assert model.config.shift == 4
    record_file = run_dir / "run.json"
    record = json.loads(record_file.read_text())
    record["config"]["model"]["shift"] = 2
    record_file.write_text(json.dumps(record))
    with pytest.raises(IncompatibleCheckpoint) as info:
        load_model(run_dir)
    assert "\n" not in str(info.value) and "unexpected shift_heads.1" in str(info.value)
    assert main(["generate", str(run_dir), "--max_new_tokens=3", "--device=cpu"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("shiftstudio: error:") and "shift_heads" in err
