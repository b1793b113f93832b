"""The samples written during training: the playground's sampler with the trainer's settings — special
tokens are never written, a sample ends at a document's end, and sampling leaves training alone."""

from __future__ import annotations

import torch

from shiftstudio.config import ModelConfig
from shiftstudio.core.data.tokenizer import EOT, UNK, char_tokenizer
from shiftstudio.core.generate.generation import Generation
from shiftstudio.core.model.gpt import GPT
from shiftstudio.core.train.trainer import SAMPLE_TOKENS, sample_settings

TOK = char_tokenizer("abcdefgh ")


def model_that_prefers(first: int, second: int) -> GPT:
    """Every position's logits rank ``first`` highest and ``second`` next, whatever the input: the final norm
    has weight 0, so its output is its bias ``u``, and the unembedding scores each token as row · u."""
    torch.manual_seed(0)
    model = GPT(ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=32, bias=True, tie_weights=False), TOK.vocab_size)
    with torch.no_grad():
        model.ln_f.weight.zero_()
        u = torch.randn(16)
        model.ln_f.bias.copy_(u)
        model.lm_head.weight.copy_(torch.randn_like(model.lm_head.weight) * 0.01)
        model.lm_head.weight[first] = 10.0 * u / u.norm() ** 2  # logit 10
        model.lm_head.weight[second] = 8.0 * u / u.norm() ** 2  # logit 8
    return model.eval()


def test_a_sample_never_writes_unk_and_ends_at_the_end_of_a_document() -> None:
    unk, eot = TOK.tk.token_to_id(UNK), TOK.tk.token_to_id(EOT)
    model = model_that_prefers(unk, eot)  # <unk> is by far the likeliest token, <|endoftext|> next
    gen = Generation(model, TOK, "ab", sample_settings(seed=1))
    tokens = list(gen)
    assert unk not in [t.id for t in tokens]
    assert tokens[-1].id == eot and gen.finish_reason == "eot"  # stopped at the document's end…
    text = "".join(t.text for t in tokens)
    assert UNK not in text and EOT not in text  # …and neither special token shows as text


def test_a_sample_runs_to_its_length_without_a_document_end() -> None:
    a = TOK.tk.token_to_id("a")
    model = model_that_prefers(a, TOK.tk.token_to_id("b"))
    tokens = list(Generation(model, TOK, "", sample_settings(seed=2)))
    assert len(tokens) == SAMPLE_TOKENS and set("".join(t.text for t in tokens)) <= set("abcdefgh ")


def test_sampling_is_seeded_private_and_leaves_the_model_as_it_was() -> None:
    torch.manual_seed(3)
    model = GPT(ModelConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, dropout=0.1, shift=2), TOK.vocab_size).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(123)
    rng = torch.get_rng_state()
    a = [t.id for t in Generation(model, TOK, "abc", sample_settings(seed=5))]
    assert torch.equal(torch.get_rng_state(), rng)  # the global generator (training's dropout, init) is untouched
    assert model.training  # back in training mode
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert [t.id for t in Generation(model, TOK, "abc", sample_settings(seed=5))] == a  # dropout off: same seed, same ids
    assert [t.id for t in Generation(model, TOK, "abc", sample_settings(seed=6))] != a
