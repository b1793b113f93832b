"""Export a ShiftStudio GPT to the Hugging Face layout that ``transformers`` loads, and read GPT-NeoX back.

Two layouts carry our architecture exactly (same logits, same greedy text):

* **GPT-2** (``model_type: gpt2``, ``GPT2LMHeadModel``) for learned absolute positions. GPT-2's linear
  layers are ``Conv1D`` modules, whose weights are stored transposed: (in, out). Its ``c_attn`` output is
  laid out as q (all heads), k, v, the same as ours. GPT-2 always has biases and LayerNorm biases: where
  our model has none (``bias = false``) they are written as zeros.
* **GPT-NeoX** (``model_type: gpt_neox``, ``GPTNeoXForCausalLM``) for rotary positions, with
  ``use_parallel_residual = false`` (our sequential pre-norm block), the full head rotated
  (``partial_rotary_factor = 1``), base 10000. NeoX rotates pairs (x[i], x[i + hs/2]) ("rotate_half"),
  as :func:`~shiftstudio.core.model.gpt.apply_rope` does, with the same inverse frequencies. Its
  ``query_key_value`` output is viewed as (nh, 3, hs) — q, k, v of head 0, then of head 1 … — while ours is
  (3, nh, hs), so the rows (and the bias) are permuted. Its MLP and LayerNorms always have biases (zeros when
  we have none); its attention biases follow ``attention_bias``.

Not carried, so refused: RMSNorm (both layouts are LayerNorm only), ReLU² (``activation = relu2``), the
query/key norm (``qk_norm``) and the logit soft cap (``logit_softcap``) — a model written without them
would load and give other logits. ``zero_init_proj`` is only an initialisation: exported as any other
model. Not carried either: heads 2..K of the shifted objective, which no layout has: they go to a side
file (``shift_heads.safetensors``, our own tensor names) that
``transformers`` ignores, and a short note says so. The vocabulary's padding rows (see
:class:`~shiftstudio.core.model.gpt.GPT`) are left out: the exported vocabulary is the tokenizer's.

The folder is written into a hidden temporary folder beside ``out_dir`` and renamed into place. An
existing ``out_dir`` is replaced only when it is empty or is a previous ShiftStudio export (it holds
``shiftstudio_export.json`` and only files an export writes); anything else is refused.

This module never imports ``transformers`` (a test dependency only): ``config.json`` and the tokenizer
files are written by hand, and the tests load them with the real ``transformers``.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from shiftstudio.config import ModelConfig
from shiftstudio.core import io
from shiftstudio.core.data.tokenizer import EOT, UNK, TextTokenizer
from shiftstudio.core.errors import ConfigError, ShiftStudioError
from shiftstudio.core.model.estimate import padded_vocab
from shiftstudio.core.model.gpt import GPT

GPT2 = "gpt2"
NEOX = "gpt_neox"
LAYOUT_NAMES = {GPT2: "GPT-2 (GPT2LMHeadModel)", NEOX: "GPT-NeoX (GPTNeoXForCausalLM)"}
ARCHITECTURES = {GPT2: "GPT2LMHeadModel", NEOX: "GPTNeoXForCausalLM"}

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
GENERATION_CONFIG_FILE = "generation_config.json"
SHIFT_HEADS_FILE = "shift_heads.safetensors"
NOTE_FILE = "shiftstudio_export.json"
README_FILE = "SHIFTSTUDIO.md"
EXPORT_FILES = (
    CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE, TOKENIZER_CONFIG_FILE, GENERATION_CONFIG_FILE,
    SHIFT_HEADS_FILE, NOTE_FILE, README_FILE,
)
EXPORT_SCHEMA = 1
ROPE_BASE = 10000.0  # rope_tables' default: the only base our models use
GELU_NAMES = {"gelu": "gelu", "gelu_tanh": "gelu_new"}  # our activation -> transformers' ACT2FN name
NEOX_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}


class UnsupportedArchitecture(ConfigError):
    """A model setting that no Hugging Face layout we write (GPT-2, GPT-NeoX) can carry, or a NeoX config
    that ShiftStudio's GPT cannot represent. One line naming the setting."""


class ExportError(ShiftStudioError):
    """The export cannot be written where it was asked to go (not an empty folder or a previous export)."""


@dataclass(frozen=True)
class ExportResult:
    out_dir: Path
    layout: str  # 'gpt2' | 'gpt_neox'
    architecture: str  # the transformers class: GPT2LMHeadModel | GPTNeoXForCausalLM
    files: tuple[str, ...]  # names inside out_dir
    size_bytes: int  # all files together
    n_params: int  # parameters in model.safetensors (the real vocabulary, zeros for biases we lack)
    vocab_size: int
    side_file: str | None  # shift_heads.safetensors when the model has heads 2..K, else None

    @property
    def layout_name(self) -> str:
        return LAYOUT_NAMES[self.layout]

    def describe(self) -> list[str]:
        """What was written, a few lines for a person."""
        lines = [
            f"exported to {self.out_dir}",
            f"layout: Hugging Face {self.layout_name}, {self.n_params:,} parameters, vocabulary {self.vocab_size:,}",
            f"files: {', '.join(self.files)} ({_human_bytes(self.size_bytes)})",
        ]
        if self.side_file:
            lines.append(
                f"note: heads 2..K of the shifted objective are not part of the layout; they are in {self.side_file} "
                f"(transformers ignores it; see {README_FILE})"
            )
        return lines


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


# -- what can be exported -------------------------------------------------------------------------------


def hf_layout(config: ModelConfig) -> str:
    """The layout that carries ``config``: 'gpt2' (learned positions) or 'gpt_neox' (rotary).

    Raises :class:`UnsupportedArchitecture` naming the setting no layout carries.
    """
    if config.norm != "layernorm":
        raise UnsupportedArchitecture(
            f"cannot export: norm = {config.norm} has no Hugging Face GPT-2/GPT-NeoX layout (layernorm only)"
        )
    if config.activation not in GELU_NAMES:
        raise UnsupportedArchitecture(f"cannot export: activation = {config.activation} has no Hugging Face name here")
    if config.qk_norm:
        raise UnsupportedArchitecture("cannot export: qk_norm = true has no Hugging Face GPT-2/GPT-NeoX layout (no query/key norm)")
    if config.logit_softcap:
        raise UnsupportedArchitecture(
            f"cannot export: logit_softcap = {config.logit_softcap:g} has no Hugging Face GPT-2/GPT-NeoX layout (no logit soft cap)"
        )
    if config.pos == "learned":
        return GPT2
    if config.pos == "rope":
        return NEOX
    raise UnsupportedArchitecture(f"cannot export: pos = {config.pos} has no Hugging Face GPT-2/GPT-NeoX layout")


def export_problem(config: ModelConfig) -> str | None:
    """Why a model of ``config`` cannot be exported (one line), or None when it can."""
    try:
        hf_layout(config)
    except UnsupportedArchitecture as exc:
        return str(exc)
    return None


# -- weights --------------------------------------------------------------------------------------------


def _plain_state(model: GPT) -> dict[str, torch.Tensor]:
    model = getattr(model, "_orig_mod", model)
    state = {k: v.detach().to("cpu", torch.float32) for k, v in model.state_dict().items()}
    stray = [k for k in state if ".base." in k or ".lora_" in k]
    if stray:
        raise ExportError(f"cannot export a model with LoRA adapters in place ({stray[0]}): merge them first")
    return state


def _bias(state: dict[str, torch.Tensor], name: str, width: int) -> torch.Tensor:
    """``name``'s bias, or zeros where the model has none."""
    b = state.get(name)
    return b if b is not None else torch.zeros(width)


def gpt2_tensors(model: GPT) -> dict[str, torch.Tensor]:
    """Our weights in GPT-2's names and shapes (``transformer.`` prefix, Conv1D weights (in, out))."""
    cfg, V, C = model.config, model.vocab_size, model.config.n_embd
    s = _plain_state(model)
    out = {"transformer.wte.weight": s["wte.weight"][:V], "transformer.wpe.weight": s["wpe.weight"]}
    widths = {"attn.c_attn": 3 * C, "attn.c_proj": C, "mlp.c_fc": 4 * C, "mlp.c_proj": C}
    for i in range(cfg.n_layer):
        ours, theirs = f"blocks.{i}.", f"transformer.h.{i}."
        for norm in ("ln_1", "ln_2"):
            out[f"{theirs}{norm}.weight"] = s[f"{ours}{norm}.weight"]
            out[f"{theirs}{norm}.bias"] = _bias(s, f"{ours}{norm}.bias", C)
        for layer, width in widths.items():
            out[f"{theirs}{layer}.weight"] = s[f"{ours}{layer}.weight"].t()  # Linear (out, in) -> Conv1D (in, out)
            out[f"{theirs}{layer}.bias"] = _bias(s, f"{ours}{layer}.bias", width)
    out["transformer.ln_f.weight"] = s["ln_f.weight"]
    out["transformer.ln_f.bias"] = _bias(s, "ln_f.bias", C)
    if not cfg.tie_weights:
        out["lm_head.weight"] = s["lm_head.weight"][:V]
    return out


def _qkv_to_neox(t: torch.Tensor, n_head: int) -> torch.Tensor:
    """Rows (3, nh, hs) -> (nh, 3, hs) of a c_attn weight (3C, C) or bias (3C,)."""
    rest = t.shape[1:]
    return t.reshape(3, n_head, -1, *rest).transpose(0, 1).reshape(t.shape)


def _qkv_from_neox(t: torch.Tensor, n_head: int) -> torch.Tensor:
    """Rows (nh, 3, hs) -> (3, nh, hs): the inverse of :func:`_qkv_to_neox`."""
    rest = t.shape[1:]
    return t.reshape(n_head, 3, -1, *rest).transpose(0, 1).reshape(t.shape)


def neox_tensors(model: GPT) -> dict[str, torch.Tensor]:
    """Our weights in GPT-NeoX's names (``gpt_neox.`` prefix; ``embed_out`` when untied)."""
    cfg, V, C, nh = model.config, model.vocab_size, model.config.n_embd, model.config.n_head
    s = _plain_state(model)
    out = {"gpt_neox.embed_in.weight": s["wte.weight"][:V]}
    for i in range(cfg.n_layer):
        ours, theirs = f"blocks.{i}.", f"gpt_neox.layers.{i}."
        for a, b in (("ln_1", "input_layernorm"), ("ln_2", "post_attention_layernorm")):
            out[f"{theirs}{b}.weight"] = s[f"{ours}{a}.weight"]
            out[f"{theirs}{b}.bias"] = _bias(s, f"{ours}{a}.bias", C)
        out[f"{theirs}attention.query_key_value.weight"] = _qkv_to_neox(s[f"{ours}attn.c_attn.weight"], nh)
        out[f"{theirs}attention.dense.weight"] = s[f"{ours}attn.c_proj.weight"]
        if cfg.bias:  # attention_bias = bias: no attention biases at all when we have none
            out[f"{theirs}attention.query_key_value.bias"] = _qkv_to_neox(s[f"{ours}attn.c_attn.bias"], nh)
            out[f"{theirs}attention.dense.bias"] = s[f"{ours}attn.c_proj.bias"]
        out[f"{theirs}mlp.dense_h_to_4h.weight"] = s[f"{ours}mlp.c_fc.weight"]
        out[f"{theirs}mlp.dense_h_to_4h.bias"] = _bias(s, f"{ours}mlp.c_fc.bias", 4 * C)  # always there in NeoX
        out[f"{theirs}mlp.dense_4h_to_h.weight"] = s[f"{ours}mlp.c_proj.weight"]
        out[f"{theirs}mlp.dense_4h_to_h.bias"] = _bias(s, f"{ours}mlp.c_proj.bias", C)
    out["gpt_neox.final_layer_norm.weight"] = s["ln_f.weight"]
    out["gpt_neox.final_layer_norm.bias"] = _bias(s, "ln_f.bias", C)
    if not cfg.tie_weights:
        out["embed_out.weight"] = s["lm_head.weight"][:V]
    return out


def shift_head_tensors(model: GPT) -> dict[str, torch.Tensor]:
    """Heads 2..K under our own names (``shift_heads.J.norm.weight`` …), for the side file."""
    return {k: v for k, v in _plain_state(model).items() if k.startswith("shift_heads.")}


# -- config files ---------------------------------------------------------------------------------------


def _token_id(tokenizer: TextTokenizer, token: str) -> int | None:
    return tokenizer.tk.token_to_id(token)


def hf_config(model: GPT, tokenizer: TextTokenizer) -> dict[str, Any]:
    """``config.json`` for the model's layout."""
    cfg = model.config
    layout = hf_layout(cfg)
    eos = _token_id(tokenizer, EOT)
    common = {
        "architectures": [ARCHITECTURES[layout]],
        "model_type": layout,
        "vocab_size": model.vocab_size,
        "bos_token_id": eos,
        "eos_token_id": eos,
        "tie_word_embeddings": bool(cfg.tie_weights),
        "use_cache": True,
        "initializer_range": 0.02,
        "dtype": "float32",
    }
    if layout == GPT2:
        return {
            **common,
            "n_layer": cfg.n_layer,
            "n_head": cfg.n_head,
            "n_embd": cfg.n_embd,
            "n_positions": cfg.block_size,
            "n_ctx": cfg.block_size,
            "n_inner": None,
            "activation_function": GELU_NAMES[cfg.activation],
            "layer_norm_epsilon": cfg.norm_eps,
            "resid_pdrop": cfg.dropout,
            "embd_pdrop": cfg.dropout,
            "attn_pdrop": cfg.dropout,
            "scale_attn_weights": True,
            "scale_attn_by_inverse_layer_idx": False,
            "reorder_and_upcast_attn": False,
        }
    return {
        **common,
        "num_hidden_layers": cfg.n_layer,
        "num_attention_heads": cfg.n_head,
        "hidden_size": cfg.n_embd,
        "intermediate_size": 4 * cfg.n_embd,
        "hidden_act": GELU_NAMES[cfg.activation],
        "max_position_embeddings": cfg.block_size,
        "layer_norm_eps": cfg.norm_eps,
        "use_parallel_residual": False,
        "attention_bias": bool(cfg.bias),
        "attention_dropout": cfg.dropout,
        "hidden_dropout": cfg.dropout,
        # both spellings: rope_parameters (transformers >= 5), rotary_pct / rotary_emb_base (4.x)
        "rope_parameters": {"rope_type": "default", "rope_theta": ROPE_BASE, "partial_rotary_factor": 1.0},
        "rotary_pct": 1.0,
        "rotary_emb_base": ROPE_BASE,
    }


def tokenizer_config(tokenizer: TextTokenizer, block_size: int) -> dict[str, Any]:
    """``tokenizer_config.json``: a fast tokenizer over ``tokenizer.json``, adding no special tokens."""
    out: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": block_size,
        "clean_up_tokenization_spaces": False,
        "add_bos_token": False,
        "add_eos_token": False,
    }
    if _token_id(tokenizer, EOT) is not None:
        out["eos_token"] = EOT
        out["bos_token"] = EOT
    if _token_id(tokenizer, UNK) is not None:
        out["unk_token"] = UNK
    return out


def generation_config(tokenizer: TextTokenizer) -> dict[str, Any]:
    eos = _token_id(tokenizer, EOT)
    # (no max_length: generate(max_new_tokens=...) would warn that both are set; model_max_length is in the
    # tokenizer config and n_positions / max_position_embeddings in config.json)
    out: dict[str, Any] = {"bos_token_id": eos, "eos_token_id": eos}
    if eos is not None:
        out["pad_token_id"] = eos  # no padding token: generate() pads with end-of-text, as for GPT-2
    return out


def _readme(layout: str, config: ModelConfig) -> str:
    K = config.shift
    return (
        "# Exported by ShiftStudio\n\n"
        f"This folder is a Hugging Face {LAYOUT_NAMES[layout]} model: load it with\n"
        "`AutoModelForCausalLM.from_pretrained(folder)` and `AutoTokenizer.from_pretrained(folder)`.\n\n"
        f"The model was trained with the shifted objective and K = {K} heads: head k predicts token t+k.\n"
        "Only head 1 (the next token) is part of the layout. Heads 2..K are not: they are in\n"
        f"`{SHIFT_HEADS_FILE}` under ShiftStudio's names (`shift_heads.J.*`, head kind `{config.head_kind}`:\n"
        f"head J+2 = {HEAD_FORMULAS[config.head_kind]}, applied to the last hidden state before the final\n"
        "LayerNorm and the shared unembedding). `transformers` ignores that file; ShiftStudio reads it for\n"
        "self-speculative decoding.\n"
    )


HEAD_FORMULAS = {
    "residual": "h + proj(norm(h))",
    "linear": "proj(h)",
    "block": "a transformer block over h (causal attention, then the MLP, pre-norm)",
}


# -- the folder -----------------------------------------------------------------------------------------


def check_destination(out_dir: str | Path) -> None:
    """Raise :class:`ExportError` unless ``out_dir`` is new, empty, or a previous export (replaced whole)."""
    out_dir = Path(out_dir).expanduser()
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise ExportError(f"cannot export to {out_dir}: it is a file, not a folder")
    entries = [p.name for p in out_dir.iterdir()]
    if not entries:
        return
    if NOTE_FILE in entries and all(name in EXPORT_FILES for name in entries):
        return  # a previous export: replaced as a whole
    raise ExportError(f"cannot export to {out_dir}: the folder is not empty (choose a new or empty folder)")


def _save_tensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> int:
    save_file({k: v.contiguous().clone() for k, v in tensors.items()}, str(path), metadata=metadata)
    io.fsync_file(path)
    return sum(v.numel() for v in tensors.values())


def export_hf(model: GPT, tokenizer: TextTokenizer, out_dir: str | Path, *, source_note: dict | None = None) -> ExportResult:
    """Write ``model`` and ``tokenizer`` to ``out_dir`` in the Hugging Face layout (see the module doc).

    ``source_note`` (e.g. the run folder, step, EMA) is recorded in ``shiftstudio_export.json``.
    Raises :class:`UnsupportedArchitecture` (a setting no layout carries) or :class:`ExportError`
    (``out_dir`` is not empty and not a previous export; LoRA adapters not merged).
    """
    model = getattr(model, "_orig_mod", model)
    config = model.config
    layout = hf_layout(config)
    if tokenizer.vocab_size != model.vocab_size:
        raise ExportError(
            f"cannot export: the tokenizer has {tokenizer.vocab_size:,} tokens, the model's vocabulary {model.vocab_size:,}"
        )
    out_dir = Path(out_dir).expanduser().absolute()
    check_destination(out_dir)
    tensors = gpt2_tensors(model) if layout == GPT2 else neox_tensors(model)
    heads = shift_head_tensors(model) if config.shift > 1 else {}

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.export-{os.getpid()}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        n_params = _save_tensors(tensors, tmp / WEIGHTS_FILE, {"format": "pt"})
        tokenizer.tk.save(str(tmp / TOKENIZER_FILE))
        io.fsync_file(tmp / TOKENIZER_FILE)
        io.write_json(tmp / CONFIG_FILE, hf_config(model, tokenizer))
        io.write_json(tmp / TOKENIZER_CONFIG_FILE, tokenizer_config(tokenizer, config.block_size))
        io.write_json(tmp / GENERATION_CONFIG_FILE, generation_config(tokenizer))
        if heads:
            _save_tensors(heads, tmp / SHIFT_HEADS_FILE, {"format": "pt", "shiftstudio_shift": str(config.shift)})
            io.write_text(tmp / README_FILE, _readme(layout, config))
        note = {
            "schema_version": EXPORT_SCHEMA,
            "exported_by": "ShiftStudio",
            "layout": layout,
            "architecture": ARCHITECTURES[layout],
            "model": {k: getattr(config, k) for k in ModelConfig.__dataclass_fields__},
            "vocab_size": model.vocab_size,
            "shift_heads": (
                {"file": SHIFT_HEADS_FILE, "horizons": list(range(2, config.shift + 1)),
                 "note": "heads 2..K are not part of the Hugging Face layout; transformers ignores this file"}
                if heads else None
            ),
            "source": source_note or {},
        }
        io.write_text(tmp / NOTE_FILE, json.dumps(note, indent=2, default=str))
        files = tuple(sorted(p.name for p in tmp.iterdir()))
        mode = (tmp / CONFIG_FILE).stat().st_mode & 0o777  # safetensors writes 0600: the umask's mode, like the rest
        for name in files:
            os.chmod(tmp / name, mode)
        size = sum((tmp / f).stat().st_size for f in files)
        if out_dir.exists():  # empty, or a previous export (checked above): swap it out, then delete it
            old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}.tmp"
            if old.exists():
                shutil.rmtree(old)
            os.replace(out_dir, old)
            io.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            io.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ExportResult(
        out_dir=out_dir, layout=layout, architecture=ARCHITECTURES[layout], files=files, size_bytes=size,
        n_params=n_params, vocab_size=model.vocab_size, side_file=SHIFT_HEADS_FILE if heads else None,
    )


# -- GPT-NeoX back in -----------------------------------------------------------------------------------


def _field(cfg: dict, key: str, default: Any = None) -> Any:
    value = cfg.get(key, default)
    if value is None:
        raise UnsupportedArchitecture(f"{key} is missing")
    return value


def _positive_int(cfg: dict, key: str) -> int:
    value = _field(cfg, key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UnsupportedArchitecture(f"{key} must be a positive integer, got {value!r}")
    return value


def neox_model_config(cfg: dict) -> dict:
    """The :class:`ModelConfig` fields of a GPT-NeoX ``config.json`` (a dict).

    Architecture fields only (n_layer, n_head, n_embd, block_size, bias, pos, norm, activation, tie_weights,
    norm_eps; qk_norm and logit_softcap off, as NeoX has neither); the rest keep ModelConfig's defaults.
    Raises :class:`UnsupportedArchitecture` (a
    :class:`ConfigError`), one line naming the field, for what our GPT cannot represent: parallel residual,
    partial rotary, another rotary base or scaling, an MLP not 4× wide, another activation …
    """
    if cfg.get("model_type", NEOX) != NEOX:
        raise UnsupportedArchitecture(f"model_type {cfg.get('model_type')!r} is not gpt_neox")
    n_layer = _positive_int(cfg, "num_hidden_layers")
    n_head = _positive_int(cfg, "num_attention_heads")
    n_embd = _positive_int(cfg, "hidden_size")
    block_size = _positive_int(cfg, "max_position_embeddings")
    if n_embd % n_head:
        raise UnsupportedArchitecture(f"hidden_size {n_embd} is not divisible by num_attention_heads {n_head}")
    head_dim = cfg.get("head_dim")
    if head_dim not in (None, n_embd // n_head):
        raise UnsupportedArchitecture(f"head_dim = {head_dim} is not hidden_size / num_attention_heads ({n_embd // n_head})")
    if cfg.get("use_parallel_residual", True):  # NeoX's default is parallel
        raise UnsupportedArchitecture(
            "use_parallel_residual = true is not supported (ShiftStudio's blocks are sequential: attention, then MLP)"
        )
    intermediate = cfg.get("intermediate_size", 4 * n_embd)
    if intermediate != 4 * n_embd:
        raise UnsupportedArchitecture(f"intermediate_size = {intermediate} is not 4 × hidden_size ({4 * n_embd})")
    act = cfg.get("hidden_act", "gelu")
    if act not in NEOX_ACTIVATIONS:
        raise UnsupportedArchitecture(f"hidden_act = {act!r} is not supported (gelu, gelu_new or gelu_pytorch_tanh)")
    rope = cfg.get("rope_parameters") or {}
    if not isinstance(rope, dict):
        raise UnsupportedArchitecture(f"rope_parameters must be an object, got {rope!r}")
    scaling = cfg.get("rope_scaling")
    if scaling:
        raise UnsupportedArchitecture(f"rope_scaling = {json.dumps(scaling)} is not supported (plain rotary only)")
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type != "default":
        raise UnsupportedArchitecture(f"rope_type = {rope_type!r} is not supported (plain rotary only)")
    pct = rope.get("partial_rotary_factor", cfg.get("rotary_pct", 0.25))  # NeoX's default rotates a quarter
    if not isinstance(pct, (int, float)) or float(pct) != 1.0:
        raise UnsupportedArchitecture(f"partial rotary (rotary_pct = {pct}) is not supported: ShiftStudio rotates the whole head")
    base = rope.get("rope_theta", cfg.get("rotary_emb_base", ROPE_BASE))
    if not isinstance(base, (int, float)) or float(base) != ROPE_BASE:
        raise UnsupportedArchitecture(f"rotary base (rotary_emb_base = {base}) is not supported: ShiftStudio uses {ROPE_BASE:g}")
    eps = cfg.get("layer_norm_eps", 1e-5)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps <= 0.1:
        raise UnsupportedArchitecture(f"layer_norm_eps must be a small positive number, got {eps!r}")
    if (n_embd // n_head) % 2:
        raise UnsupportedArchitecture(f"rotary needs an even head size, got hidden_size / num_attention_heads = {n_embd // n_head}")
    return {
        "n_layer": n_layer,
        "n_head": n_head,
        "n_embd": n_embd,
        "block_size": block_size,
        "bias": bool(cfg.get("attention_bias", True)),
        "pos": "rope",
        "norm": "layernorm",
        "activation": NEOX_ACTIVATIONS[act],
        "tie_weights": bool(cfg.get("tie_word_embeddings", False)),
        "norm_eps": float(eps),
        "qk_norm": False,
        "logit_softcap": 0.0,
    }


NEOX_IGNORED = ("attention.bias", "attention.masked_bias", "attention.rotary_emb.inv_freq", "rotary_emb.inv_freq")


def neox_state_dict(tensors: dict[str, torch.Tensor], config: ModelConfig, vocab_size: int) -> dict[str, torch.Tensor]:
    """GPT-NeoX tensors (``gpt_neox.`` prefix or none; ``embed_out`` or ``lm_head``) as our GPT's state dict
    for ``config`` (from :func:`neox_model_config`): float32, the wte (and lm_head) rows padded with zeros to
    the padded vocabulary. Heads 2..K are not included. Raises :class:`UnsupportedArchitecture` for a missing
    or misshapen tensor, a tensor we have no place for, or non-zero biases when ``config.bias`` is off."""
    C, L, nh = config.n_embd, config.n_layer, config.n_head
    plain: dict[str, torch.Tensor] = {}
    for k, v in tensors.items():
        if k.endswith(NEOX_IGNORED):
            continue
        plain[k.removeprefix("gpt_neox.")] = v
    used: set[str] = set()

    def take(name: str, shape: tuple[int, ...]) -> torch.Tensor:
        if name not in plain:
            raise UnsupportedArchitecture(f"weight {name} is missing")
        t = plain[name]
        if tuple(t.shape) != shape:
            raise UnsupportedArchitecture(f"weight {name} has shape {tuple(t.shape)}, the config needs {shape}")
        used.add(name)
        return t.detach().to("cpu", torch.float32)

    def vocab_rows(name: str) -> torch.Tensor:
        if name not in plain:
            raise UnsupportedArchitecture(f"weight {name} is missing")
        t = plain[name]
        if t.dim() != 2 or t.shape[1] != C or t.shape[0] < vocab_size:
            raise UnsupportedArchitecture(f"weight {name} has shape {tuple(t.shape)}, the config needs ({vocab_size}, {C})")
        used.add(name)
        t = t.detach().to("cpu", torch.float32)[:vocab_size]
        pad = torch.zeros(padded_vocab(vocab_size) - vocab_size, C)
        return torch.cat((t, pad), dim=0)

    def bias(name: str, width: int, ours: str) -> None:
        """A bias NeoX always has (MLP, LayerNorm): ours when config.bias, else it must be all zeros."""
        b = take(name, (width,))
        if config.bias:
            out[ours] = b
        elif bool(b.any()):
            raise UnsupportedArchitecture(f"{name} is not zero but bias = false (the config's attention_bias): cannot represent it")

    out: dict[str, torch.Tensor] = {"wte.weight": vocab_rows("embed_in.weight")}
    for i in range(L):
        p, ours = f"layers.{i}.", f"blocks.{i}."
        for theirs, mine in (("input_layernorm", "ln_1"), ("post_attention_layernorm", "ln_2")):
            out[f"{ours}{mine}.weight"] = take(f"{p}{theirs}.weight", (C,))
            bias(f"{p}{theirs}.bias", C, f"{ours}{mine}.bias")
        out[f"{ours}attn.c_attn.weight"] = _qkv_from_neox(take(f"{p}attention.query_key_value.weight", (3 * C, C)), nh)
        out[f"{ours}attn.c_proj.weight"] = take(f"{p}attention.dense.weight", (C, C))
        if config.bias:
            qkv_b = f"{p}attention.query_key_value.bias"
            out[f"{ours}attn.c_attn.bias"] = _qkv_from_neox(take(qkv_b, (3 * C,)), nh) if qkv_b in plain else torch.zeros(3 * C)
            dense_b = f"{p}attention.dense.bias"
            out[f"{ours}attn.c_proj.bias"] = take(dense_b, (C,)) if dense_b in plain else torch.zeros(C)
        else:
            for name, width in ((f"{p}attention.query_key_value.bias", 3 * C), (f"{p}attention.dense.bias", C)):
                if name in plain:
                    bias(name, width, "")
        out[f"{ours}mlp.c_fc.weight"] = take(f"{p}mlp.dense_h_to_4h.weight", (4 * C, C))
        bias(f"{p}mlp.dense_h_to_4h.bias", 4 * C, f"{ours}mlp.c_fc.bias")
        out[f"{ours}mlp.c_proj.weight"] = take(f"{p}mlp.dense_4h_to_h.weight", (C, 4 * C))
        bias(f"{p}mlp.dense_4h_to_h.bias", C, f"{ours}mlp.c_proj.bias")
    out["ln_f.weight"] = take("final_layer_norm.weight", (C,))
    bias("final_layer_norm.bias", C, "ln_f.bias")
    head = "embed_out.weight" if "embed_out.weight" in plain else "lm_head.weight"
    if not config.tie_weights:
        out["lm_head.weight"] = vocab_rows(head)
    elif head in plain:
        used.add(head)  # a tied model's saved copy of the embedding: transformers ties it anyway
    stray = sorted(set(plain) - used)
    if stray:
        raise UnsupportedArchitecture(f"weight {stray[0]} has no place in ShiftStudio's GPT ({len(stray)} such)")
    return out
