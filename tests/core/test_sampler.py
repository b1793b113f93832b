"""Generation: the filters on hand-made distributions, the KV cache against full forwards,
streams that stop, slide and hold back split characters, and loading runs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from shiftstudio.config import ModelConfig
from shiftstudio.core.model.gpt import GPT
from shiftstudio.core.generate.generation import Generation, TextStream
from shiftstudio.core.errors import GenerationError
from shiftstudio.core.generate.filters import (
    SamplingSettings, apply_repetition_penalty, apply_temperature, top_k_filter, top_p_filter,
)
from shiftstudio.core.model.gpt import clone_model
from shiftstudio.core.runs.loading import load_model
from shiftstudio.core.data.tokenizer import char_tokenizer, train_bpe

NEG = float("-inf")


def logits_of(probs: list[float]) -> torch.Tensor:
    return torch.log(torch.tensor(probs))


def kept(logits: torch.Tensor) -> set[int]:
    return set(torch.isfinite(logits).nonzero().flatten().tolist())


# -- filters --------------------------------------------------------------------


def test_top_k_keeps_exactly_the_k_largest() -> None:
    logits = logits_of([0.05, 0.4, 0.1, 0.3, 0.15])
    assert kept(top_k_filter(logits, 1)) == {1}
    assert kept(top_k_filter(logits, 3)) == {1, 3, 4}
    assert kept(top_k_filter(logits, 0)) == {0, 1, 2, 3, 4}
    assert kept(top_k_filter(logits, 99)) == {0, 1, 2, 3, 4}
    # survivors keep their values
    assert torch.equal(top_k_filter(logits, 3)[[1, 3, 4]], logits[[1, 3, 4]])


def test_top_p_keeps_the_smallest_set_reaching_p() -> None:
    logits = logits_of([0.15, 0.5, 0.05, 0.3])  # sorted: 1 (0.5), 3 (0.3), 0 (0.15), 2 (0.05)
    assert kept(top_p_filter(logits, 0.5)) == {1}  # 0.5 alone reaches 0.5
    assert kept(top_p_filter(logits, 0.51)) == {1, 3}
    assert kept(top_p_filter(logits, 0.8)) == {1, 3}
    assert kept(top_p_filter(logits, 0.81)) == {0, 1, 3}
    assert kept(top_p_filter(logits, 0.99)) == {0, 1, 2, 3}
    assert kept(top_p_filter(logits, 1e-6)) == {1}  # the most likely token always survives
    assert kept(top_p_filter(logits, 1.0)) == {0, 1, 2, 3}


def test_repetition_penalty_and_temperature() -> None:
    logits = torch.tensor([2.0, -1.0, 0.5, 3.0])
    out = apply_repetition_penalty(logits, torch.tensor([0, 1]), 2.0)
    assert out.tolist() == [1.0, -2.0, 0.5, 3.0]  # positive halved, negative doubled, unseen untouched
    assert logits.tolist() == [2.0, -1.0, 0.5, 3.0]  # pure: input unchanged
    assert apply_repetition_penalty(logits, torch.tensor([0]), 1.0) is logits
    assert apply_temperature(logits, 0.5).tolist() == [4.0, -2.0, 1.0, 6.0]


def test_settings_reject_absurd_values() -> None:
    for bad in ({"temperature": -1}, {"top_p": 0}, {"top_p": 1.5}, {"top_k": -2}, {"max_new_tokens": 0},
                {"repetition_penalty": 0}, {"temperature": math.nan}):
        with pytest.raises(GenerationError):
            SamplingSettings(**bad)


# -- the cache ------------------------------------------------------------------


def tiny_model(pos: str = "learned", block: int = 16, vocab: int = 40, seed: int = 0, bias: bool = False) -> GPT:
    torch.manual_seed(seed)
    cfg = ModelConfig(n_layer=2, n_head=2, n_embd=32, block_size=block, dropout=0.0, pos=pos, bias=bias)
    model = GPT(cfg, vocab).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):  # they start at zero, where a bias left out would go unnoticed
                p.normal_(0.0, 0.1)
    return model


@pytest.mark.parametrize("pos", ["learned", "rope"])
def test_greedy_is_identical_with_and_without_cache_across_slides(pos: str) -> None:
    tok = char_tokenizer("abcdefghij klmnop\n")
    model = tiny_model(pos, block=16, vocab=tok.vocab_size, seed=3)
    settings = SamplingSettings(max_new_tokens=60, temperature=0, stop_at_eot=False)
    cached = [t.id for t in Generation(model, tok, "abc def", settings)]
    plain = [t.id for t in Generation(model, tok, "abc def", settings, use_cache=False)]
    assert len(cached) == 60  # 7 + 60 tokens: the 16-token window slides several times
    assert cached == plain


def test_seeded_sampling_is_reproducible(shakespeare_text: str) -> None:
    tok = char_tokenizer(shakespeare_text)
    model = tiny_model(vocab=tok.vocab_size, block=32)
    s = SamplingSettings(max_new_tokens=40, temperature=1.0, top_k=20, top_p=0.95, repetition_penalty=1.1, seed=7)
    a = Generation(model, tok, "ROMEO:", s)
    tokens = list(a)
    first = "".join(t.text for t in tokens)
    second = "".join(t.text for t in Generation(model, tok, "ROMEO:", s))
    other = "".join(t.text for t in Generation(model, tok, "ROMEO:", SamplingSettings(**{**vars(s), "seed": 8})))
    assert first == second == a.text
    assert first != other
    # the stream ends on <|endoftext|> (stop_at_eot) or after exactly max_new_tokens
    ended_on_eot = tokens[-1].id == tok.eot_id
    assert a.finish_reason == ("eot" if ended_on_eot else "length")
    assert a.n_generated == len(tokens) and (ended_on_eot or len(tokens) == 40)
    assert tok.eot_id not in [t.id for t in tokens[:-1]]


def test_tokens_carry_probabilities_and_top_five(shakespeare_text: str) -> None:
    tok = char_tokenizer(shakespeare_text)
    model = tiny_model(vocab=tok.vocab_size, block=32)
    tokens = list(Generation(model, tok, "To be", SamplingSettings(max_new_tokens=10, temperature=0, stop_at_eot=False)))
    for t in tokens:
        assert len(t.top) == 5
        probs = [p for _, _, p in t.top]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
        assert t.id == t.top[0][0] and t.prob == pytest.approx(probs[0])  # greedy picks the top guess
        assert t.top[0][1] == tok.token_text(t.id)


def test_generation_leaves_a_training_model_in_training_mode(shakespeare_text: str) -> None:
    tok = char_tokenizer(shakespeare_text)
    model = tiny_model(vocab=tok.vocab_size, block=32).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    list(Generation(model, tok, "A", SamplingSettings(max_new_tokens=5, seed=1)))
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# -- text streaming ---------------------------------------------------------------


def test_stop_strings_end_the_stream_without_the_stop_text() -> None:
    tok = char_tokenizer("abcxyz")
    stream = TextStream(tok, stop=["xyz"])
    out = [stream.push(i) for i in tok.encode("abxyxyzc")]
    assert "".join(out) == "abxy"  # "xy" is held until the next char shows it is not "xyz"...
    assert out[2] == "" and out[3] == ""
    assert stream.stopped and stream.text == "abxy"


def test_stop_string_in_a_generation() -> None:
    tok = char_tokenizer("ab")
    model = tiny_model(vocab=tok.vocab_size)
    settings = SamplingSettings(max_new_tokens=50, temperature=0, stop_at_eot=False)
    free = Generation(model, tok, "a", settings)
    text = "".join(t.text for t in free)
    stop = text[3:5]
    gen = Generation(model, tok, "a", SamplingSettings(max_new_tokens=50, temperature=0, stop_at_eot=False, stop=[stop]))
    pieces = [t.text for t in gen]
    assert gen.finish_reason == "stop"
    assert "".join(pieces) == text[: text.find(stop)]
    assert len(pieces) <= text.find(stop) + len(stop)


def test_bpe_pieces_hold_back_split_characters(shakespeare_text: str) -> None:
    tok = train_bpe([shakespeare_text], vocab_size=300)  # ASCII text: é and 🙂 stay as separate bytes
    ids = tok.encode("né🙂!")
    assert len(ids) > 4
    stream = TextStream(tok)
    pieces = [stream.push(i) for i in ids]
    assert all("\ufffd" not in p for p in pieces)
    assert "".join(pieces) + stream.flush() == "né🙂!"
    assert "" in pieces  # something was held back


def test_prompt_with_unknown_characters_is_refused_clearly() -> None:
    tok = char_tokenizer("abc ")
    model = tiny_model(vocab=tok.vocab_size)
    with pytest.raises(GenerationError, match="never saw: 'é', 'ü'"):
        Generation(model, tok, "abc éü")
    assert Generation(model, tok, "").prompt_ids == [tok.eot_id]  # empty: start a document


# -- models from runs ------------------------------------------------------------------


def test_load_model_from_a_run_and_clone(tiny_run: Path) -> None:
    model, tok, meta = load_model(tiny_run)
    assert meta["step"] == 4 and not meta["ema"]
    assert load_model(tiny_run, "step-4")[2]["path"] == meta["path"]
    gen = Generation(model, tok, "ROMEO", SamplingSettings(max_new_tokens=8, seed=0, stop_at_eot=False))
    assert len(list(gen)) == 8 and gen.finish_reason == "length"
    copy = clone_model(model)
    assert copy is not model
    assert all(torch.equal(a, b) for a, b in zip(copy.state_dict().values(), model.state_dict().values()))
    original = model.wte.weight.detach().clone()
    copy.wte.weight.data.zero_()
    assert torch.equal(model.wte.weight, original) and original.abs().sum() > 0  # independent storage
    from shiftstudio.core.errors import RunError

    with pytest.raises(RunError, match="no EMA"):
        load_model(tiny_run, ema=True)
    with pytest.raises(RunError, match="step-999"):
        load_model(tiny_run, "step-999")
