"""LoRA adapters: an adapted model starts as its base, only the adapters train, merging changes nothing,
and the merged model runs through the fast decoder like any GPT."""

from __future__ import annotations

import pytest
import torch

from shiftstudio.config import ModelConfig
from shiftstudio.core.errors import ConfigError
from shiftstudio.core.generate.decoder import Decoder, KVCache
from shiftstudio.core.model.gpt import GPT
from shiftstudio.core.model.lora import LoRALinear, adapter_state_dict, apply_lora, has_lora, merge_lora

VOCAB = 41
ALL = ("attn_qkv", "attn_out", "mlp_in", "mlp_out")


def base_model(seed: int = 0, bias: bool = True) -> GPT:
    torch.manual_seed(seed)
    return GPT(ModelConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, bias=bias, pos="rope", shift=2), VOCAB).eval()


def batch(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, VOCAB, (4, 16), generator=g)
    y = torch.randint(0, VOCAB, (4, 2, 16), generator=g)
    return x, y, torch.ones(4, 2, 16)


def test_an_adapted_model_starts_out_computing_exactly_what_its_base_does() -> None:
    base, adapted = base_model(), base_model()
    trainable = apply_lora(adapted, rank=4, alpha=8, targets=ALL)
    x, _, _ = batch()
    with torch.no_grad():
        assert torch.equal(adapted(x).logits, base(x).logits)  # B starts at zero
    # r · (in + out) per adapted layer, per block: qkv 32→96, out 32→32, fc 32→128, proj 128→32
    per_block = 4 * (32 + 96) + 4 * (32 + 32) + 4 * (32 + 128) + 4 * (128 + 32)
    assert trainable == 2 * per_block == sum(p.numel() for p in adapted.parameters() if p.requires_grad)
    assert {n.rsplit(".", 1)[-1] for n, p in adapted.named_parameters() if p.requires_grad} == {"lora_a", "lora_b"}


def test_training_moves_only_the_adapters() -> None:
    model = base_model()
    apply_lora(model, rank=2, alpha=4, targets=("attn_qkv", "mlp_out"))
    frozen = {k: v.clone() for k, v in model.state_dict().items() if "lora_" not in k}
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-2)
    model.train()
    x, y, mask = batch()
    first = None
    for _ in range(5):
        loss = model(x, y, mask).loss
        first = first if first is not None else float(loss.detach())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    assert float(model(x, y, mask).loss.detach()) < first  # it learns…
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in frozen.items())  # …with every base weight untouched
    assert any(float(v.abs().sum()) > 0 for k, v in adapter_state_dict(model).items() if k.endswith("lora_b"))


def test_merging_gives_a_plain_gpt_with_the_same_outputs_through_every_path() -> None:
    model = base_model()
    apply_lora(model, rank=4, alpha=16, targets=ALL)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, LoRALinear):
                m.lora_b.normal_(0.0, 0.05)  # as if trained
    x, _, _ = batch()
    with torch.no_grad():
        adapted = model(x).logits
        merge_lora(model)
        assert not has_lora(model) and all(type(m) is not LoRALinear for m in model.modules())
        merged = model(x).logits
        torch.testing.assert_close(merged, adapted, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(Decoder(model, KVCache(model, batch=4))(x), merged[:, 0, -1], rtol=1e-5, atol=1e-5)
    assert set(model.state_dict()) == set(base_model().state_dict())  # the layout of the base: exportable as is


def test_adapters_saved_alone_restore_the_fine_tuned_model_on_the_same_base() -> None:
    tuned = base_model()
    apply_lora(tuned, rank=3, alpha=3, targets=("attn_out", "mlp_in"))
    with torch.no_grad():
        for m in tuned.modules():
            if isinstance(m, LoRALinear):
                m.lora_b.normal_(0.0, 0.1)
    saved = adapter_state_dict(tuned)
    assert saved and all(k.endswith((".lora_a", ".lora_b")) for k in saved)
    again = base_model()  # the same base, rebuilt
    apply_lora(again, rank=3, alpha=3, targets=("attn_out", "mlp_in"))
    missing, unexpected = again.load_state_dict(saved, strict=False)
    assert not unexpected and all("lora_" not in k for k in missing)
    x, _, _ = batch()
    with torch.no_grad():
        assert torch.equal(again(x).logits, tuned(x).logits)


def test_bad_settings_are_refused_with_a_line_naming_them() -> None:
    with pytest.raises(ConfigError, match="lora_targets must be one or more of attn_qkv"):
        apply_lora(base_model(), rank=2, alpha=2, targets=("attn_qkv", "embeddings"))
    with pytest.raises(ConfigError, match="lora_rank must be at least 1"):
        apply_lora(base_model(), rank=0, alpha=2)
    model = base_model()
    apply_lora(model, rank=2, alpha=2)
    with pytest.raises(ConfigError, match="already has adapters"):
        apply_lora(model, rank=2, alpha=2)
