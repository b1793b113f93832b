"""The trainer's sampler (``sample_ids``): what it draws, from which context, and what it leaves alone."""

from __future__ import annotations

import torch

from shiftstudio.config import ModelConfig
from shiftstudio.core.model.gpt import GPT
from shiftstudio.core.train.evaluation import sample_ids

VOCAB, BLOCK = 40, 16


def tiny_model(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    model = GPT(ModelConfig(n_layer=2, n_head=2, n_embd=32, block_size=BLOCK, dropout=0.1, shift=2), VOCAB)
    with torch.no_grad():  # far from init, so greedy output depends on the context instead of repeating one token
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    return model


def greedy_oracle(model: GPT, prompt: list[int], n: int) -> list[int]:
    """Argmax of head 1 from a full forward over the last ``BLOCK`` tokens, one token at a time (no cache)."""
    ids = list(prompt)
    model.eval()
    with torch.no_grad():
        for _ in range(n):
            logits = model(torch.tensor([ids[-BLOCK:]])).logits[0, 0, -1]
            ids.append(int(logits.argmax()))
    return ids[len(prompt):]


def test_top_1_sampling_is_the_greedy_continuation_across_a_full_window() -> None:
    model = tiny_model()
    prompt = [3, 1, 4, 1, 5]
    out = sample_ids(model, prompt, 30, top_k=1, seed=0)  # 5 + 30 tokens: past the 16-token window
    assert len(out) == 30
    assert out == greedy_oracle(model, prompt, 30)
    assert len(set(out)) > 1  # not a degenerate stream that any bug would reproduce


def test_sampling_is_seeded_private_and_leaves_the_model_as_it_was() -> None:
    model = tiny_model().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(123)
    rng = torch.get_rng_state()
    a = sample_ids(model, [7], 50, temperature=1.0, top_k=None, seed=5)
    assert torch.equal(torch.get_rng_state(), rng)  # the global generator (training's dropout, init) is untouched
    assert model.training  # back in training mode
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert sample_ids(model, [7], 50, temperature=1.0, top_k=None, seed=5) == a  # dropout was off: same seed, same ids
    assert sample_ids(model, [7], 50, temperature=1.0, top_k=None, seed=6) != a
    assert len(a) == 50 and all(0 <= i < VOCAB for i in a)  # never a padding id of the 64-wide unembedding
