"""The engine's batch view: targets are the inputs shifted by k; its losses are the model's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shiftstudio.config import ModelConfig
from shiftstudio.core.train.evaluation import batch_view
from shiftstudio.core.model.gpt import GPT
from shiftstudio.core.data.batches import BatchSampler


@pytest.mark.parametrize("shift", [1, 2, 3])
def test_targets_are_inputs_shifted_by_k_and_losses_match(shift: int) -> None:
    ids = np.arange(500, dtype=np.uint16) % 50  # a known sequence: id at position i is i % 50
    torch.manual_seed(0)
    model = GPT(ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=12, dropout=0.0, shift=shift), 50)
    batch = BatchSampler(ids, batch_size=3, block_size=12, shift=shift, seed=4).next()
    view = batch_view(model, batch.x, batch.y, batch.mask, row=1, step=7)
    start = int(view.input_ids[0])
    assert view.input_ids.tolist() == [(start + t) % 50 for t in range(12)]
    assert view.target_ids.shape == (shift, 12) and view.loss.shape == (shift, 12)
    for k in range(1, shift + 1):
        assert view.target_ids[k - 1].tolist() == [(start + t + k) % 50 for t in range(12)]
    # per-position losses average to the model's own loss for that row, head by head
    with torch.no_grad():
        model.eval()
        out = model(batch.x[1:2], batch.y[1:2], batch.mask[1:2])
    np.testing.assert_allclose(view.loss.mean(axis=1), out.head_losses.numpy(), rtol=1e-5)
    # top-5 are sorted probabilities of real ids; p(target) = exp(-loss) is consistent with the top-5
    assert (np.diff(view.top_probs, axis=-1) <= 1e-7).all()
    hit = view.top_ids == view.target_ids[..., None]
    np.testing.assert_allclose(view.top_probs[hit], np.exp(-view.loss)[hit.any(-1)], rtol=1e-4)
    assert view.step == 7 and view.row == 1 and (view.mask == 1).all()
