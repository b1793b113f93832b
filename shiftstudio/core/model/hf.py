"""Pretrained decoders from a local Hugging Face folder: GPT-2 (and our own GPT-NeoX exports).

A Hugging Face model folder is ``config.json`` plus weights —
``model.safetensors``, a sharded ``model.safetensors.index.json``, or a
``pytorch_model.bin`` (read only with ``torch.load(weights_only=True)``: no
pickled objects are ever run) — and a tokenizer, ``tokenizer.json`` or
GPT-2's ``vocab.json`` + ``merges.txt``. Nothing is downloaded: the folder is
what a user saved on a connected machine.

GPT-2 maps onto :class:`~shiftstudio.core.model.gpt.GPT` exactly: learned
positions, LayerNorm with biases, biases on every linear layer, the tanh GELU
(``gelu_new``), a tied head. Its ``Conv1D`` layers store weights as
(in, out), the transpose of ``nn.Linear``; its 50,257-row vocabulary is padded
here to a multiple of 64 with zero rows that are never scored or sampled.
Heads 2..K of a shifted model are new: their projections start at zero, so
each starts out predicting exactly what head 1 predicts.

Folders are checked before any weight is read, and every problem is one
line: :class:`HFError` names the file, the field or the first tensor.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

from shiftstudio.config import ModelConfig
from shiftstudio.core.data.tokenizer import EOT, TextTokenizer
from shiftstudio.core.errors import ConfigError, TokenizerError
from shiftstudio.core.model.gpt import GPT

CONFIG_FILE = "config.json"
SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
BIN_FILE = "pytorch_model.bin"
TOKENIZER_JSON = "tokenizer.json"
VOCAB_JSON = "vocab.json"
MERGES_TXT = "merges.txt"
TOKENIZER_CONFIG = "tokenizer_config.json"
SUPPORTED_TYPES = ("gpt2", "gpt_neox")

# The parts of ModelConfig a source decides (read-only for a fine-tuning run); the rest are the user's.
# (zero_init_proj is not one: it only initialises weights, and a source's weights are loaded.)
ARCHITECTURE_KEYS = (
    "n_layer", "n_head", "n_embd", "bias", "pos", "norm", "activation", "tie_weights", "norm_eps", "qk_norm", "logit_softcap",
)
GPT2_ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu_fast": "gelu_tanh", "gelu": "gelu"}


class HFError(ConfigError):
    """A Hugging Face folder that cannot be used (one line, naming the file or field)."""


@dataclass
class HFSource:
    """What a Hugging Face folder holds, checked, before any weight is read."""

    folder: Path
    model_type: str
    config: dict[str, Any]
    architecture: dict[str, Any]  # ModelConfig fields the model fixes
    n_positions: int  # the longest context it was trained for (and, for GPT-2, its position table's rows)
    vocab_size: int
    weight_files: list[Path] = field(default_factory=list)

    @property
    def label(self) -> str:
        a = self.architecture
        return f"{self.model_type} {a['n_layer']}x{a['n_embd']} ({self.folder.name})"


def is_hf_folder(path: str | Path) -> bool:
    """A folder with a ``config.json`` (what to call it is decided by :func:`read_hf_folder`)."""
    path = Path(path)
    return path.is_dir() and (path / CONFIG_FILE).is_file()


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HFError(f"{path} is not readable {what} ({str(exc).splitlines()[0]})") from None


def _int_field(cfg: dict, key: str, path: Path, default: Any = None) -> int:
    value = cfg.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise HFError(f"{path}: {key} must be a positive integer, got {value!r}")
    return value


def _gpt2_architecture(cfg: dict, path: Path) -> tuple[dict[str, Any], int, int]:
    n_layer, n_head, n_embd = (_int_field(cfg, k, path) for k in ("n_layer", "n_head", "n_embd"))
    n_positions = _int_field(cfg, "n_positions", path, cfg.get("n_ctx", 1024))
    vocab = _int_field(cfg, "vocab_size", path)
    act = cfg.get("activation_function", "gelu_new")
    if act not in GPT2_ACTIVATIONS:
        raise HFError(f"{path}: activation_function {act!r} is not supported (gelu_new or gelu)")
    n_inner = cfg.get("n_inner")
    if n_inner not in (None, 4 * n_embd):
        raise HFError(f"{path}: n_inner {n_inner} is not 4 × n_embd ({4 * n_embd}); ShiftStudio's MLP is 4 × wide")
    for key, ok in (("scale_attn_by_inverse_layer_idx", False), ("add_cross_attention", False), ("scale_attn_weights", True)):
        if bool(cfg.get(key, ok)) != ok:
            raise HFError(f"{path}: {key} = {cfg.get(key)} is not supported")
    eps = cfg.get("layer_norm_epsilon", 1e-5)
    if not isinstance(eps, (int, float)) or not 0 < eps <= 0.1:
        raise HFError(f"{path}: layer_norm_epsilon must be a small positive number, got {eps!r}")
    architecture = {
        "n_layer": n_layer, "n_head": n_head, "n_embd": n_embd, "bias": True, "pos": "learned", "norm": "layernorm",
        "activation": GPT2_ACTIVATIONS[act], "tie_weights": bool(cfg.get("tie_word_embeddings", True)),
        "norm_eps": float(eps), "qk_norm": False, "logit_softcap": 0.0,  # GPT-2 has neither
    }
    return architecture, n_positions, vocab


def _weight_files(folder: Path) -> list[Path]:
    index = folder / SAFETENSORS_INDEX
    if (folder / SAFETENSORS_FILE).is_file():
        return [folder / SAFETENSORS_FILE]
    if index.is_file():
        data = _read_json(index, "as a safetensors index")
        weight_map = data.get("weight_map") if isinstance(data, dict) else None
        if not isinstance(weight_map, dict) or not weight_map:
            raise HFError(f"{index} has no weight_map")
        files = [folder / name for name in dict.fromkeys(weight_map.values())]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise HFError(f"{folder}: shard {missing[0]} named in {SAFETENSORS_INDEX} is missing")
        return files
    if (folder / BIN_FILE).is_file():
        return [folder / BIN_FILE]
    raise HFError(f"{folder} has no weights ({SAFETENSORS_FILE}, {SAFETENSORS_INDEX} or {BIN_FILE})")


def read_hf_folder(folder: str | Path) -> HFSource:
    """Check a folder's config, weights and tokenizer files (without reading weights); raises :class:`HFError`."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise HFError(f"not a folder: {folder}")
    cfg_path = folder / CONFIG_FILE
    if not cfg_path.is_file():
        raise HFError(f"{folder} has no {CONFIG_FILE}: not a Hugging Face model folder")
    cfg = _read_json(cfg_path, "JSON")
    if not isinstance(cfg, dict):
        raise HFError(f"{cfg_path} is not a JSON object")
    model_type = cfg.get("model_type")
    if model_type not in SUPPORTED_TYPES:
        raise HFError(f"not a GPT-2 model: model_type {model_type!r} in {cfg_path} (ShiftStudio imports gpt2, and gpt_neox as it exports)")
    if model_type == "gpt2":
        architecture, n_positions, vocab = _gpt2_architecture(cfg, cfg_path)
    else:
        from shiftstudio.core.model.hf_export import neox_model_config

        try:
            architecture = neox_model_config(cfg)
        except ConfigError as exc:
            raise HFError(f"{cfg_path}: {exc}") from None
        n_positions = _int_field(cfg, "max_position_embeddings", cfg_path)
        vocab = _int_field(cfg, "vocab_size", cfg_path)
        architecture = {k: architecture[k] for k in ARCHITECTURE_KEYS if k in architecture}
    if architecture["n_embd"] % architecture["n_head"]:
        raise HFError(f"{cfg_path}: n_embd {architecture['n_embd']} is not divisible by n_head {architecture['n_head']}")
    if not (folder / TOKENIZER_JSON).is_file() and not ((folder / VOCAB_JSON).is_file() and (folder / MERGES_TXT).is_file()):
        raise HFError(f"{folder} has no tokenizer ({TOKENIZER_JSON}, or {VOCAB_JSON} + {MERGES_TXT})")
    return HFSource(folder, model_type, cfg, architecture, n_positions, vocab, _weight_files(folder))


# -- tokenizer ------------------------------------------------------------------------------------------


def load_hf_tokenizer(folder: str | Path) -> TextTokenizer:
    """The folder's tokenizer: ``tokenizer.json``, else a byte-level BPE from ``vocab.json`` + ``merges.txt``
    (GPT-2's pre-tokenizer and decoder, ``<|endoftext|>`` registered as a special token)."""
    folder = Path(folder)
    if (folder / TOKENIZER_JSON).is_file():
        tok = TextTokenizer.load(folder / TOKENIZER_JSON)
        if tok.eot_id is not None:
            tok.tk.add_special_tokens([AddedToken(EOT, special=True, normalized=False)])  # no-op if already special
        return tok
    vocab_path, merges_path = folder / VOCAB_JSON, folder / MERGES_TXT
    if not vocab_path.is_file() or not merges_path.is_file():
        raise TokenizerError(f"{folder} has no tokenizer ({TOKENIZER_JSON}, or {VOCAB_JSON} + {MERGES_TXT})")
    vocab = _read_json(vocab_path, "as a vocabulary")
    if not isinstance(vocab, dict) or not all(isinstance(v, int) for v in vocab.values()):
        raise TokenizerError(f"{vocab_path} is not a token → id map")
    try:
        lines = merges_path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise TokenizerError(f"{merges_path} is not readable ({exc})") from None
    merges = []
    for number, line in enumerate(lines, 1):
        if not line.strip() or (number == 1 and line.startswith("#version")):
            continue
        parts = line.split(" ")
        if len(parts) != 2:
            raise TokenizerError(f"{merges_path} line {number}: a merge is two tokens separated by one space")
        merges.append((parts[0], parts[1]))
    try:
        tk = Tokenizer(models.BPE(vocab, merges))
    except Exception as exc:  # tokenizers raises plain Exception for inconsistent vocab/merges
        raise TokenizerError(f"{folder}: vocab.json and merges.txt do not fit together ({str(exc).splitlines()[0]})") from None
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tk.decoder = decoders.ByteLevel()
    if EOT in vocab:
        tk.add_special_tokens([AddedToken(EOT, special=True, normalized=False)])
    return TextTokenizer(tk, "file")


# -- weights --------------------------------------------------------------------------------------------


def read_weight_files(files: list[Path]) -> dict[str, torch.Tensor]:
    """All tensors of the weight files, on the CPU; raises :class:`HFError` for unreadable or unsafe files."""
    tensors: dict[str, torch.Tensor] = {}
    for path in files:
        if path.suffix == ".bin":
            try:
                loaded = torch.load(path, map_location="cpu", weights_only=True)
            except pickle.UnpicklingError as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unsafe content"
                raise HFError(
                    f"{path.name} holds more than tensors and is not loaded (weights_only refused it: {first[:120]}); "
                    "save the model as model.safetensors instead"
                ) from None
            except (RuntimeError, OSError, EOFError, ValueError) as exc:
                raise HFError(f"{path.name} is not a readable PyTorch weights file ({str(exc).splitlines()[0][:160]})") from None
            if not isinstance(loaded, dict) or not all(torch.is_tensor(v) for v in loaded.values()):
                raise HFError(f"{path.name} is not a dictionary of tensors")
            tensors.update(loaded)
        else:
            try:
                tensors.update(load_file(str(path), device="cpu"))
            except (SafetensorError, OSError, ValueError) as exc:
                raise HFError(f"{path.name} is not a readable safetensors file ({str(exc).splitlines()[0][:160]})") from None
    return tensors


def weights_sha256(files: list[Path]) -> str:
    """The sha256 of the weight files, in order (one file: the file's own sha256)."""
    digests = []
    for path in files:
        h = hashlib.sha256()
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
        digests.append(h.hexdigest())
    if len(digests) == 1:
        return digests[0]
    return hashlib.sha256("".join(digests).encode()).hexdigest()


def _expect(tensors: dict[str, torch.Tensor], name: str, shape: tuple[int, ...], source: str) -> torch.Tensor:
    if name not in tensors:
        raise HFError(f"{source}: weight {name} is missing")
    t = tensors[name]
    if tuple(t.shape) != shape:
        raise HFError(f"{source}: {name} has shape {tuple(t.shape)}, the config needs {shape}")
    return t


def gpt2_state_dict(tensors: dict[str, torch.Tensor], config: ModelConfig, vocab_size: int, source: str = "weights") -> dict[str, torch.Tensor]:
    """GPT-2 tensors (with or without the ``transformer.`` prefix) as a ShiftStudio GPT state dict for
    ``config`` (heads 2..K and padded vocabulary rows are filled in by :func:`complete_state_dict`)."""
    plain = {k.removeprefix("transformer."): v for k, v in tensors.items()}
    C, L, T = config.n_embd, config.n_layer, config.block_size
    out: dict[str, torch.Tensor] = {}
    wte = _expect(plain, "wte.weight", (vocab_size, C), source)
    out["wte.weight"] = wte
    wpe = plain.get("wpe.weight")
    if wpe is None or wpe.dim() != 2 or wpe.shape[1] != C or wpe.shape[0] < T:
        got = tuple(wpe.shape) if wpe is not None else "missing"
        raise HFError(f"{source}: wpe.weight has shape {got}, the config needs at least ({T}, {C})")
    out["wpe.weight"] = wpe[:T]
    conv = {"attn.c_attn": 3 * C, "attn.c_proj": C, "mlp.c_fc": 4 * C, "mlp.c_proj": C}
    fan_in = {"attn.c_attn": C, "attn.c_proj": C, "mlp.c_fc": C, "mlp.c_proj": 4 * C}
    for i in range(L):
        p = f"h.{i}."
        for norm in ("ln_1", "ln_2"):
            out[f"blocks.{i}.{norm}.weight"] = _expect(plain, f"{p}{norm}.weight", (C,), source)
            out[f"blocks.{i}.{norm}.bias"] = _expect(plain, f"{p}{norm}.bias", (C,), source)
        for layer, width in conv.items():
            w = _expect(plain, f"{p}{layer}.weight", (fan_in[layer], width), source)
            out[f"blocks.{i}.{layer}.weight"] = w.t()  # Conv1D (in, out) -> Linear (out, in)
            out[f"blocks.{i}.{layer}.bias"] = _expect(plain, f"{p}{layer}.bias", (width,), source)
    out["ln_f.weight"] = _expect(plain, "ln_f.weight", (C,), source)
    out["ln_f.bias"] = _expect(plain, "ln_f.bias", (C,), source)
    if not config.tie_weights:
        head = tensors.get("lm_head.weight")
        out["lm_head.weight"] = head if head is not None else _expect(tensors, "lm_head.weight", (vocab_size, C), source)
    return out


def complete_state_dict(model: GPT, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` (the source's tensors, real vocabulary rows) made into ``model``'s full state dict: float32,
    contiguous; vocabulary rows padded with zeros; heads 2..K that the source lacks (or has of another
    ``head_kind``: its tensors under ``shift_heads.J.`` are not the model's) new, each starting as head 1:

    - residual (``h + W·norm(h)``): W = 0, unit norm;
    - linear (``W·h``): W = identity, zero bias;
    - block (a transformer block): both residual projections (``attn.c_proj``, ``mlp.c_proj``) zero, so the
      block is the identity; unit norms; ``c_attn`` and ``c_fc`` N(0, 0.02) from a fixed seed (not zero: the
      block must be able to learn) — the same numbers on every import."""
    target_state = model.state_dict()

    def head_parts(names: Any, j: int) -> set[str]:
        prefix = f"shift_heads.{j}."
        return {n[len(prefix):] for n in names if n.startswith(prefix)}

    fresh = {j for j in range(len(model.shift_heads)) if head_parts(target_state, j) != head_parts(state, j)}
    full: dict[str, torch.Tensor] = {}
    for name, target in target_state.items():
        head = int(name.split(".")[1]) if name.startswith("shift_heads.") else None
        if name in state and head not in fresh:
            t = state[name].detach().to(torch.float32)
            if name in ("wte.weight", "lm_head.weight") and t.shape[0] < target.shape[0]:
                t = torch.cat((t, torch.zeros(target.shape[0] - t.shape[0], t.shape[1])), dim=0)
            if tuple(t.shape) != tuple(target.shape):
                raise HFError(f"{name} has shape {tuple(t.shape)}, the model needs {tuple(target.shape)}")
            full[name] = t.contiguous()
        elif head is not None:
            full[name] = _new_head_tensor(model.config.head_kind, name, tuple(target.shape), head)
        else:
            raise HFError(f"the source has no weight for {name}")
    return full


def _new_head_tensor(kind: str, name: str, shape: tuple[int, ...], head: int) -> torch.Tensor:
    """One tensor of a new head 2..K that starts as head 1 (see :func:`complete_state_dict`)."""
    part = name.rsplit(".", 1)
    if part[1] == "bias":
        return torch.zeros(shape)
    if kind == "linear":
        return torch.eye(shape[0])
    if len(shape) == 1:  # a norm's weight
        return torch.ones(shape)
    if kind == "block" and not part[0].endswith("c_proj"):  # c_attn, c_fc: random, so the block can learn
        gen = torch.Generator().manual_seed(1337 + 1000 * head + (0 if "attn" in part[0] else 1))
        return torch.randn(shape, generator=gen) * 0.02
    return torch.zeros(shape)  # residual projections: the head adds nothing at first


def model_config_for(source: HFSource, base: ModelConfig | None = None, block_size: int | None = None) -> ModelConfig:
    """The run's model config: the source's architecture, the user's shift and dropout, and a context of
    ``block_size`` (default: the source's) no longer than the source's."""
    base = base or ModelConfig()
    context = source.n_positions if block_size is None else block_size
    if context > source.n_positions:
        raise HFError(f"block_size {context} is longer than the source model's context ({source.n_positions} positions)")
    fields = {**{k: getattr(base, k) for k in ("dropout", "shift", "head_kind", "init_from")}, **source.architecture, "block_size": context}
    try:
        return ModelConfig(**fields)
    except ConfigError as exc:
        raise HFError(f"{source.folder}: {exc}") from None


def hf_weights(source: HFSource, config: ModelConfig, vocab_size: int) -> dict[str, torch.Tensor]:
    """The source's weights as a full state dict of ``GPT(config, vocab_size)``."""
    if vocab_size != source.vocab_size:
        raise HFError(f"the tokenizer has {vocab_size:,} tokens, the model's vocabulary has {source.vocab_size:,}")
    tensors = read_weight_files(source.weight_files)
    where = source.weight_files[0].name
    if source.model_type == "gpt2":
        state = gpt2_state_dict(tensors, config, vocab_size, where)
    else:
        from shiftstudio.core.model.hf_export import neox_state_dict

        try:
            state = neox_state_dict(tensors, config, vocab_size)
        except ConfigError as exc:
            raise HFError(f"{where}: {exc}") from None
    with torch.device("meta"):
        shell = GPT(config, vocab_size)
    return complete_state_dict(shell, state)


def load_hf_model(
    folder: str | Path, *, shift: int = 1, block_size: int | None = None, device: str | torch.device = "cpu"
) -> tuple[GPT, TextTokenizer, dict[str, Any]]:
    """A Hugging Face folder's model (float32, eval mode) and tokenizer, ready to generate from."""
    source = read_hf_folder(folder)
    tokenizer = load_hf_tokenizer(source.folder)
    config = model_config_for(source, ModelConfig(shift=shift, init_from=str(source.folder)), block_size)
    state = hf_weights(source, config, tokenizer.vocab_size)
    with torch.device("meta"):
        model = GPT(config, tokenizer.vocab_size)
    model = model.to_empty(device=device)
    with torch.no_grad():
        if model.wpe is None:  # rotary tables are derived, not in the state dict
            from shiftstudio.core.model.gpt import rope_tables

            cos, sin = rope_tables(config.head_size, config.block_size)
            model.rope_cos.copy_(cos)
            model.rope_sin.copy_(sin)
        model.load_state_dict(state)
    meta = {"path": str(source.folder), "model_type": source.model_type, "label": source.label, "step": None, "ema": False}
    return model.eval(), tokenizer, meta
