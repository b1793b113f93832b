"""Export to the Hugging Face layout, judged by the real ``transformers``: same logits, same greedy text,
same token ids, no missing or unexpected weights; and GPT-NeoX read back into an identical state dict."""

from __future__ import annotations

import io as _io
import json
import logging
import warnings
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from shiftstudio.config import ModelConfig
from shiftstudio.core.data.tokenizer import EOT, TextTokenizer, char_tokenizer, train_bpe
from shiftstudio.core.errors import ConfigError
from shiftstudio.core.model.gpt import GPT
from shiftstudio.core.model.hf_export import (
    NOTE_FILE,
    README_FILE,
    SHIFT_HEADS_FILE,
    ExportError,
    UnsupportedArchitecture,
    _qkv_to_neox,
    export_hf,
    export_problem,
    neox_model_config,
    neox_state_dict,
)

AWKWARD = [
    "Hello,   world!\tTabs\t\tand  spaces   ",
    "Ünïcödé àccents — and emoji 🙂🚀 in a line\r\nwith CRLF\r\n",
    "  leading spaces, trailing\n\n\nnewlines <|endoftext|> and more",
    "café naïve façade déjà vu ½ ∑ 漢字",
]
TRAIN_TEXT = [
    "The quick brown fox jumps over the lazy dog.  Tabs\tand spaces   here.\r\n",
    "Ünïcödé àccents, café, naïve, déjà vu; emoji 🙂 too.\n",
    "First Citizen: Before we proceed any further, hear me speak.\n",
] * 20
PROMPTS = ["The quick brown", "café  déjà\tvu", "First Citizen:"]


@pytest.fixture(scope="module")
def bpe() -> TextTokenizer:
    return train_bpe(iter(TRAIN_TEXT), 320)


@pytest.fixture(scope="module")
def chars() -> TextTokenizer:
    return char_tokenizer("".join(TRAIN_TEXT))


@pytest.fixture
def hf_log():
    """Everything transformers logs at warning level or above (its load report included), and Python warnings."""
    transformers.utils.logging.set_verbosity_warning()
    transformers.utils.logging.disable_progress_bar()
    buf = _io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setLevel(logging.WARNING)
    logger = transformers.utils.logging.get_logger()
    logger.addHandler(handler)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield lambda: buf.getvalue() + "".join(f"{w.category.__name__}: {w.message}\n" for w in caught)
    logger.removeHandler(handler)


def random_model(config: ModelConfig, vocab_size: int, seed: int = 0) -> GPT:
    """Every weight random (biases and norm weights too, so that zeros hide no bug), large enough that
    a wrong layout changes the logits by far more than the tolerance."""
    torch.manual_seed(seed)
    model = GPT(config, vocab_size)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or ".ln_" in name or name.startswith("ln_f"):
                p.uniform_(0.5, 1.5) if name.endswith("weight") else p.normal_(0.0, 0.2)
            else:
                p.normal_(0.0, 0.25)
    return model.eval()


def load_hf(folder: Path):
    model, info = AutoModelForCausalLM.from_pretrained(str(folder), output_loading_info=True)
    for key in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"):
        assert not info[key], (key, info[key])
    return model.float().eval(), AutoTokenizer.from_pretrained(str(folder))


def our_greedy(model: GPT, ids: list[int], n: int, eos: int | None) -> list[int]:
    """Greedy continuation through our KV-cache path (head 1), stopping after end-of-text as HF does."""
    out: list[int] = []
    logits, past = model.next_token_logits(torch.tensor([ids]))
    for _ in range(n):
        nxt = int(logits[0].argmax())
        out.append(nxt)
        if nxt == eos:
            break
        logits, past = model.next_token_logits(torch.tensor([[nxt]]), past)
    return out


def check_same_model(ours: GPT, tokenizer: TextTokenizer, folder: Path) -> None:
    hf, hf_tok = load_hf(folder)
    # logits of head 1 on a few sequences, in float32
    for prompt in PROMPTS + AWKWARD[:2]:
        ids = tokenizer.encode(prompt)[: ours.config.block_size]
        x = torch.tensor([ids])
        with torch.no_grad():
            mine = ours(x).logits[:, 0]  # (1, T, V)
            theirs = hf(x).logits
        assert theirs.shape == mine.shape
        torch.testing.assert_close(theirs, mine, atol=1e-4, rtol=1e-4)
    # 20 greedy tokens
    eos = tokenizer.eot_id
    for prompt in PROMPTS:
        ids = tokenizer.encode(prompt)
        with torch.no_grad():
            gen = hf.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                              do_sample=False, max_new_tokens=20)
        theirs = gen[0, len(ids):].tolist()
        mine = our_greedy(ours, ids, 20, eos)
        assert theirs[: len(mine)] == mine
        assert all(t == eos for t in theirs[len(mine):])  # HF pads with end-of-text once it stopped
    # the tokenizer: same ids, nothing added, same text back
    assert hf_tok.model_max_length == ours.config.block_size
    hf_tok.model_max_length = 10_000  # (texts longer than the context would only be warned about)
    for text in AWKWARD:
        assert hf_tok(text)["input_ids"] == tokenizer.encode(text), text
        assert hf_tok.decode(tokenizer.encode(text)) == tokenizer.decode(tokenizer.encode(text))
    assert hf_tok.eos_token == EOT and hf_tok.eos_token_id == tokenizer.eot_id


GPT2_CASES = [
    dict(bias=True, tie_weights=True, activation="gelu"),
    dict(bias=False, tie_weights=True, activation="gelu_tanh"),
    dict(bias=True, tie_weights=False, activation="gelu_tanh"),
    dict(bias=False, tie_weights=False, activation="gelu"),
]


@pytest.mark.parametrize("case", GPT2_CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_gpt2_layout_matches_transformers(case: dict, bpe: TextTokenizer, tmp_path: Path, hf_log) -> None:
    config = ModelConfig(n_layer=2, n_head=2, n_embd=32, block_size=64, pos="learned", norm_eps=1e-5, **case)
    model = random_model(config, bpe.vocab_size)
    result = export_hf(model, bpe, tmp_path / "hf", source_note={"run": "test"})
    assert result.layout == "gpt2" and result.architecture == "GPT2LMHeadModel" and result.side_file is None
    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert cfg["model_type"] == "gpt2" and cfg["vocab_size"] == bpe.vocab_size and cfg["n_positions"] == 64
    assert cfg["tie_word_embeddings"] is case["tie_weights"]
    assert cfg["activation_function"] == {"gelu": "gelu", "gelu_tanh": "gelu_new"}[case["activation"]]
    tensors = load_file(str(tmp_path / "hf" / "model.safetensors"))
    assert tensors["transformer.wte.weight"].shape == (bpe.vocab_size, 32)  # padding rows sliced away
    assert tensors["transformer.h.0.attn.c_attn.weight"].shape == (32, 96)  # Conv1D: (in, out)
    assert ("lm_head.weight" in tensors) is (not case["tie_weights"])
    check_same_model(model, bpe, tmp_path / "hf")
    hf, _ = load_hf(tmp_path / "hf")
    assert (hf.lm_head.weight.data_ptr() == hf.transformer.wte.weight.data_ptr()) is case["tie_weights"]
    assert hf_log() == ""


@pytest.mark.parametrize("case", [dict(bias=False, tie_weights=True), dict(bias=True, tie_weights=False, activation="gelu_tanh")],
                         ids=["nobias-tied", "bias-untied"])
def test_neox_layout_matches_transformers(case: dict, bpe: TextTokenizer, tmp_path: Path, hf_log) -> None:
    config = ModelConfig(n_layer=2, n_head=4, n_embd=32, block_size=64, pos="rope", **case)
    model = random_model(config, bpe.vocab_size)
    result = export_hf(model, bpe, tmp_path / "hf")
    assert result.layout == "gpt_neox" and result.architecture == "GPTNeoXForCausalLM"
    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert cfg["model_type"] == "gpt_neox" and cfg["use_parallel_residual"] is False and cfg["rotary_pct"] == 1.0
    assert cfg["attention_bias"] is case["bias"]
    check_same_model(model, bpe, tmp_path / "hf")
    assert hf_log() == ""


def test_char_tokenizer_cpu_tiny_shape_exports(chars: TextTokenizer, tmp_path: Path, hf_log) -> None:
    """The cpu-tiny preset's architecture (rope, no bias, tied) with a character tokenizer (has <unk>)."""
    from shiftstudio.presets import load_preset

    model_config = load_preset("cpu-tiny").model
    assert model_config.pos == "rope" and model_config.qk_norm  # (GPT-2/NeoX hold no QK-norm: export refuses it)
    small = ModelConfig(**{**model_config.__dict__, "n_layer": 2, "n_embd": 32, "qk_norm": False})
    model = random_model(small, chars.vocab_size)
    export_hf(model, chars, tmp_path / "hf")
    check_same_model(model, chars, tmp_path / "hf")
    _, hf_tok = load_hf(tmp_path / "hf")
    assert hf_tok.unk_token == "<unk>" and hf_tok("漢")["input_ids"] == chars.encode("漢") == [chars.unk_id]
    assert hf_log() == ""


def test_qkv_permutation_is_needed_and_matches_neox_view() -> None:
    """Our c_attn rows are (3, nh, hs); NeoX views them per head as (nh, 3, hs)."""
    nh, hs, C = 3, 4, 12
    rows = torch.arange(3 * C, dtype=torch.float32)  # row r of our layout = r
    neox = _qkv_to_neox(rows, nh).view(nh, 3, hs)
    ours = rows.view(3, nh, hs)
    for h in range(nh):
        for j in range(3):  # q, k, v
            assert torch.equal(neox[h, j], ours[j, h])
    assert not torch.equal(_qkv_to_neox(rows, nh), rows)


def test_rmsnorm_is_refused(bpe: TextTokenizer, tmp_path: Path) -> None:
    config = ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=16, norm="rmsnorm")
    line = "cannot export: norm = rmsnorm has no Hugging Face GPT-2/GPT-NeoX layout (layernorm only)"
    assert export_problem(config) == line
    with pytest.raises(UnsupportedArchitecture, match="norm = rmsnorm") as info:
        export_hf(GPT(config, bpe.vocab_size), bpe, tmp_path / "hf")
    assert isinstance(info.value, ConfigError) and "\n" not in str(info.value)
    assert not (tmp_path / "hf").exists()
    assert export_problem(ModelConfig()) is None


@pytest.mark.parametrize(("option", "line"), [
    ({"qk_norm": True}, "cannot export: qk_norm = true has no Hugging Face GPT-2/GPT-NeoX layout (no query/key norm)"),
    ({"activation": "relu2"}, "cannot export: activation = relu2 has no Hugging Face name here"),
    ({"logit_softcap": 30.0}, "cannot export: logit_softcap = 30 has no Hugging Face GPT-2/GPT-NeoX layout (no logit soft cap)"),
    ({"logit_softcap": 2.5, "pos": "rope"}, "cannot export: logit_softcap = 2.5 has no Hugging Face GPT-2/GPT-NeoX layout (no logit soft cap)"),
])
def test_options_no_layout_carries_are_refused(option: dict, line: str, bpe: TextTokenizer, tmp_path: Path) -> None:
    """A model written without them would load in transformers and give other logits: refused, in one line."""
    config = ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=16, **option)
    assert export_problem(config) == line
    with pytest.raises(UnsupportedArchitecture) as info:
        export_hf(GPT(config, bpe.vocab_size), bpe, tmp_path / "hf")
    assert str(info.value) == line and isinstance(info.value, ConfigError)
    assert not (tmp_path / "hf").exists() and not list(tmp_path.iterdir())


def test_zero_initialised_projections_export_as_any_model(bpe: TextTokenizer, tmp_path: Path, hf_log) -> None:
    """zero_init_proj is only how training starts: a trained model of that config is a plain GPT-2."""
    config = ModelConfig(n_layer=2, n_head=2, n_embd=32, block_size=32, zero_init_proj=True)
    assert export_problem(config) is None
    model = random_model(config, bpe.vocab_size)
    assert export_hf(model, bpe, tmp_path / "hf").layout == "gpt2"
    check_same_model(model, bpe, tmp_path / "hf")


def test_imports_have_the_options_off(gpt2_folder: Path, chars: TextTokenizer, tmp_path: Path) -> None:
    """GPT-2 and GPT-NeoX have no query/key norm and no soft cap: a model read from them has both off, and a
    fine-tuning run's config takes that from the source."""
    from shiftstudio.core.model.hf import model_config_for, read_hf_folder

    source = read_hf_folder(gpt2_folder)
    assert (source.architecture["qk_norm"], source.architecture["logit_softcap"]) == (False, 0.0)
    base = ModelConfig(qk_norm=True, logit_softcap=30.0, zero_init_proj=True, shift=2)
    config = model_config_for(source, base)
    assert (config.qk_norm, config.logit_softcap, config.zero_init_proj) == (False, 0.0, False)
    rope = ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=16, pos="rope")
    export_hf(random_model(rope, chars.vocab_size), chars, tmp_path / "neox")
    neox = read_hf_folder(tmp_path / "neox")
    assert (neox.architecture["qk_norm"], neox.architecture["logit_softcap"]) == (False, 0.0)


def test_shift_heads_go_to_a_side_file(bpe: TextTokenizer, tmp_path: Path, hf_log) -> None:
    config = ModelConfig(n_layer=2, n_head=2, n_embd=32, block_size=32, shift=3, bias=True)
    model = random_model(config, bpe.vocab_size)
    result = export_hf(model, bpe, tmp_path / "hf")
    folder = tmp_path / "hf"
    assert result.side_file == SHIFT_HEADS_FILE and (folder / SHIFT_HEADS_FILE).is_file()
    heads = load_file(str(folder / SHIFT_HEADS_FILE))
    state = model.state_dict()
    assert sorted(heads) == sorted(k for k in state if k.startswith("shift_heads."))
    for k, v in heads.items():
        assert torch.equal(v, state[k])
    assert "Heads 2..K are not" in (folder / README_FILE).read_text()
    note = json.loads((folder / NOTE_FILE).read_text())
    assert note["shift_heads"]["horizons"] == [2, 3] and "not part of" in note["shift_heads"]["note"]
    assert any("not part of the layout" in line for line in result.describe())
    check_same_model(model, bpe, folder)  # head 1 is the model; no warning about the extra file
    assert hf_log() == ""


def test_destination_rules(bpe: TextTokenizer, tmp_path: Path) -> None:
    config = ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=16)
    model = random_model(config, bpe.vocab_size)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="not empty"):
        export_hf(model, bpe, busy)
    assert (busy / "notes.txt").read_text() == "mine" and len(list(busy.iterdir())) == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    export_hf(model, bpe, empty)
    assert (empty / "config.json").is_file()
    # a previous export is replaced whole (a shift-2 export's side file does not linger)
    shifted = random_model(ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=16, shift=2), bpe.vocab_size)
    export_hf(shifted, bpe, empty)
    assert (empty / SHIFT_HEADS_FILE).is_file()
    export_hf(model, bpe, empty)
    assert not (empty / SHIFT_HEADS_FILE).exists() and not (empty / README_FILE).exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left
    file = tmp_path / "file"
    file.write_text("x")
    with pytest.raises(ExportError, match="not a folder"):
        export_hf(model, bpe, file)
    with pytest.raises(ExportError, match="tokenizer has"):
        export_hf(GPT(config, bpe.vocab_size + 1), bpe, tmp_path / "other")


@pytest.mark.parametrize("case", [dict(bias=False, tie_weights=True), dict(bias=True, tie_weights=False, activation="gelu_tanh")],
                         ids=["nobias-tied", "bias-untied"])
def test_neox_import_round_trips(case: dict, chars: TextTokenizer, tmp_path: Path) -> None:
    config = ModelConfig(n_layer=2, n_head=4, n_embd=32, block_size=24, pos="rope", norm_eps=1e-6, **case)
    model = random_model(config, chars.vocab_size)
    with torch.no_grad():  # the padded vocabulary rows come back as zeros
        model.wte.weight[chars.vocab_size:] = 0
        if model.lm_head is not None:
            model.lm_head.weight[chars.vocab_size:] = 0
    export_hf(model, chars, tmp_path / "hf")
    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    fields = neox_model_config(cfg)
    back_config = ModelConfig(**fields)
    assert back_config == config
    state = neox_state_dict(load_file(str(tmp_path / "hf" / "model.safetensors")), back_config, chars.vocab_size)
    original = model.state_dict()
    assert sorted(state) == sorted(original)
    for k in original:
        assert torch.equal(state[k], original[k]), k
    rebuilt = GPT(back_config, chars.vocab_size)
    rebuilt.load_state_dict(state)


@pytest.mark.parametrize(
    "change, needle",
    [
        ({"use_parallel_residual": True}, "use_parallel_residual"),
        ({"rotary_pct": 0.25, "rope_parameters": None}, "rotary_pct = 0.25"),
        ({"rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5}}, "partial rotary"),
        ({"rope_parameters": None, "rotary_emb_base": 50000}, "rotary_emb_base = 50000"),
        ({"rope_parameters": {"rope_type": "linear", "factor": 2.0}}, "rope_type"),
        ({"intermediate_size": 100}, "intermediate_size"),
        ({"hidden_act": "relu"}, "hidden_act"),
        ({"hidden_size": None}, "hidden_size is missing"),
    ],
)
def test_neox_config_refusals(change: dict, needle: str) -> None:
    base = {
        "model_type": "gpt_neox", "num_hidden_layers": 2, "num_attention_heads": 2, "hidden_size": 32,
        "intermediate_size": 128, "max_position_embeddings": 64, "use_parallel_residual": False, "rotary_pct": 1.0,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 1.0},
    }
    cfg = {k: v for k, v in {**base, **change}.items() if v is not None}
    with pytest.raises(ConfigError, match=needle) as info:
        neox_model_config(cfg)
    assert "\n" not in str(info.value)
    # a missing use_parallel_residual is NeoX's default: parallel, refused too
    with pytest.raises(ConfigError, match="use_parallel_residual"):
        neox_model_config({k: v for k, v in base.items() if k != "use_parallel_residual"})


def test_neox_state_dict_refusals(tmp_path: Path, chars: TextTokenizer) -> None:
    config = ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=16, pos="rope", bias=False)
    model = random_model(config, chars.vocab_size)
    export_hf(model, chars, tmp_path / "hf")
    tensors = load_file(str(tmp_path / "hf" / "model.safetensors"))
    missing = {k: v for k, v in tensors.items() if "dense_4h_to_h.weight" not in k}
    with pytest.raises(ConfigError, match="dense_4h_to_h.weight is missing"):
        neox_state_dict(missing, config, chars.vocab_size)
    biased = dict(tensors)
    biased["gpt_neox.layers.0.mlp.dense_h_to_4h.bias"] = torch.ones(64)
    with pytest.raises(ConfigError, match="is not zero but bias = false"):
        neox_state_dict(biased, config, chars.vocab_size)
    stray = {**tensors, "gpt_neox.layers.0.extra.weight": torch.zeros(2)}
    with pytest.raises(ConfigError, match="extra.weight has no place"):
        neox_state_dict(stray, config, chars.vocab_size)
    # a transformers 5 save names the head lm_head and may keep the inv_freq buffers: both are accepted
    renamed = {("lm_head.weight" if k == "embed_out.weight" else k): v for k, v in tensors.items()}
    renamed["gpt_neox.rotary_emb.inv_freq"] = torch.zeros(4)
    assert set(neox_state_dict(renamed, config, chars.vocab_size)) == set(model.state_dict())


def test_export_needs_no_transformers_at_run_time() -> None:
    import subprocess
    import sys

    code = "import sys, shiftstudio.core.model.hf_export, shiftstudio.cli.export; assert 'transformers' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
