"""Typed, self-validating configuration for data, model and training.

Three dataclasses, one per concern, share a single flat namespace of keys so
that ``--n_layer=4`` on the command line, a TOML preset and the GUI's form all
speak the same names (nanoGPT's, where nanoGPT has one). Every field carries a
one-line help text in its metadata: the CLI prints it, the GUI shows it as a
tooltip. :class:`RunConfig` bundles the three and round-trips to TOML and JSON
with a schema version.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator

from shiftstudio.core import io
from shiftstudio.core.errors import ConfigError, one_line

SCHEMA_VERSION = 1

POS_CHOICES = ("learned", "rope")
NORM_CHOICES = ("layernorm", "rmsnorm")
ACTIVATION_CHOICES = ("gelu", "gelu_tanh", "relu2")
DEVICE_PREFIXES = ("auto", "cpu", "cuda", "mps")
DTYPE_CHOICES = ("auto", "float32", "bfloat16", "float16")
ENCODING_ERROR_CHOICES = ("strict", "replace")
LORA_TARGET_CHOICES = ("attn_qkv", "attn_out", "mlp_in", "mlp_out")  # the block's linear layers
HEAD_KIND_CHOICES = ("residual", "linear", "block")  # heads 2..K: h + W·norm(h), W·h, or a transformer block
SHIFT_WEIGHT_SCHEDULE_CHOICES = ("constant", "linear_to_zero")
PARALLEL_CHOICES = ("ddp", "fsdp")  # how several torchrun processes share the model
OOM_CHOICES = ("split", "stop")  # what a step that runs out of device memory does
OPTIMIZER_CHOICES = ("adamw", "muon")
HALVING = "halving"  # shift_weights: 1, 0.5, 0.25, ... for however many heads
# Settings whose default changed after runs were recorded without them: a stored run config that lacks one was
# trained with the old value (run.json keeps every setting of its time), and resumes with it.
LEGACY_DEFAULTS = {"train": {"shift_weights": "", "shift_weight_schedule": "constant"}}
SCRATCH = "scratch"
UINT32_MAX = 2**32 - 1  # token ids are stored as uint32 at most
SEED_MAX = 2**31 - 1
STEPS_MAX = 100_000_000


def _f(default: Any, help: str, **extra: Any) -> Any:
    """A dataclass field with its help text and its value range attached.

    The metadata is the one definition of a field's valid values: ``minimum``
    and ``maximum`` (inclusive; ``exclusive_minimum=True`` makes the lower
    bound exclusive) and ``choices``. Validation, the CLI's messages and the
    GUI's editors and tooltips all read it; ``step`` and ``decimals`` are
    hints for the GUI's spin boxes.
    """
    meta = {"help": help, **extra}
    if isinstance(default, list):
        return field(default_factory=lambda d=default: list(d), metadata=meta)
    return field(default=default, metadata=meta)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _num(value: float) -> str:
    return f"{value:,}" if isinstance(value, int) and abs(value) >= 100_000 else f"{value:g}"


def range_text(meta: Any) -> str:
    """A field's range as a tooltip shows it ('1 … 256', 'above 0 … 0.5'); '' when it has none."""
    low, high = meta.get("minimum"), meta.get("maximum")
    if low is None or high is None:
        return ""
    return f"{'above ' if meta.get('exclusive_minimum') else ''}{_num(low)} … {_num(high)}"


def field_problem(key: str, value: Any) -> str:
    """Why ``value`` is not valid for ``key`` on its own (type, range, choices), or '' when it is.

    The single range check: ``__post_init__`` raises it, the GUI's form shows it as the user types.
    """
    return _problem(field_index()[key][1], value)


def _problem(f: dataclasses.Field, value: Any) -> str:
    key, meta, kind = f.name, f.metadata, field_type(f)
    if kind in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
            return f"{key} must be {'an integer' if kind is int else 'a number'}, got {value!r}"
        if isinstance(value, float) and not math.isfinite(value):  # (an int is finite, however large: no float())
            return f"{key} must be a finite number, got {value}"
        low, high = meta.get("minimum"), meta.get("maximum")
        too_low = low is not None and (value <= low if meta.get("exclusive_minimum") else value < low)
        too_high = high is not None and value > high
        if too_low or too_high:
            if low is not None and high is not None:
                lower = f"above {_num(low)} and at most" if meta.get("exclusive_minimum") else f"between {_num(low)} and"
                return f"{key} must be {lower} {_num(high)}, got {_num(value)}"
            bound = f"at least {_num(low)}" if too_low else f"at most {_num(high)}"
            return f"{key} must be {bound}, got {_num(value)}"
    elif kind is bool and not isinstance(value, bool):
        return f"{key} must be true or false, got {value!r}"
    elif kind is str:
        if not isinstance(value, str):
            return f"{key} must be text, got {value!r}"
        if "choices" in meta and value not in meta["choices"]:
            return f"{key} must be one of {', '.join(meta['choices'])}, got {value!r}"
    return ""


def _check_fields(obj: Any) -> None:
    for f in fields(obj):
        problem = _problem(f, getattr(obj, f.name))
        _check(not problem, problem)


@dataclass
class DataConfig:
    """Which text to train on and how it becomes tokens."""

    corpus: list[str] = _f([], "Text files or folders to train on (.txt, .md, .py, .jsonl …); empty = the sample corpus.")
    tokenizer: str = _f("char", "Tokenizer: 'char' (one token per character), 'bpe' (byte-level BPE trained on the corpus) or a path to a tokenizer.json.")
    vocab_size: int = _f(4096, "Target vocabulary size when training a BPE tokenizer (ignored for 'char').", minimum=2, maximum=UINT32_MAX)
    min_frequency: int = _f(2, "A BPE merge must occur at least this often in the training split.", minimum=1, maximum=1_000_000)
    val_fraction: float = _f(0.1, "Share of the corpus held out for validation (by document, by example for prompt/completion or chat records; a single text file is cut near this fraction).", minimum=0.0, exclusive_minimum=True, maximum=0.5, step=0.01)
    split_seed: int = _f(1337, "Seed of the train/validation split of documents.", minimum=0, maximum=SEED_MAX)
    encoding_errors: str = _f("strict", "Invalid UTF-8 in the corpus: 'strict' (stop and say where) or 'replace' (read bad bytes as U+FFFD).", choices=ENCODING_ERROR_CHOICES)

    def __post_init__(self) -> None:
        _check(isinstance(self.corpus, list) and all(isinstance(p, str) for p in self.corpus), "corpus must be a list of paths")
        _check_fields(self)
        _check(bool(self.tokenizer.strip()), "tokenizer must be 'char', 'bpe' or a path to a tokenizer.json")


@dataclass
class ModelConfig:
    """The shape of the GPT-style decoder."""

    n_layer: int = _f(4, "Number of transformer blocks.", minimum=1, maximum=256)
    n_head: int = _f(4, "Attention heads per block (must divide n_embd).", minimum=1, maximum=256)
    n_embd: int = _f(128, "Width of the residual stream (embedding size).", minimum=8, maximum=16384)
    block_size: int = _f(64, "Context length: how many tokens the model reads at once.", minimum=2, maximum=65536)
    dropout: float = _f(0.0, "Dropout probability in attention and MLP (0 = off; use 0.1–0.2 on small data).", minimum=0.0, maximum=0.9, step=0.05)
    bias: bool = _f(False, "Use bias terms in Linear and LayerNorm layers (GPT-2 did; off is slightly faster and as good).")
    pos: str = _f("learned", "Position encoding: 'learned' absolute embeddings or 'rope' (rotary).", choices=POS_CHOICES)
    norm: str = _f("layernorm", "Normalisation: 'layernorm' or 'rmsnorm'.", choices=NORM_CHOICES)
    activation: str = _f("gelu", "MLP activation: 'gelu' (exact), 'gelu_tanh' (GPT-2's tanh approximation) or 'relu2' (ReLU squared, relu(x)²; not exportable to Hugging Face).", choices=ACTIVATION_CHOICES)
    tie_weights: bool = _f(True, "Share the token embedding with the output projection (fewer parameters).")
    norm_eps: float = _f(1e-5, "Epsilon of the normalisation layers (GPT-2: 1e-5).", minimum=0.0, exclusive_minimum=True, maximum=0.1, decimals=8)
    qk_norm: bool = _f(False, "Normalise each attention head's queries and keys before rotary and attention: a plain RMS norm over the head size (whatever 'norm' is) with a learnable gain per channel (2 × head size weights a block). Steadier at high learning rates; not exportable to Hugging Face.")
    zero_init_proj: bool = _f(False, "Initialise the output projections of attention and MLP (c_proj) of every block to zero instead of small random values, so that each block starts as the identity. Only the initialisation: the other weights are the same as without it.")
    logit_softcap: float = _f(0.0, "Soft cap on the logits of every head: cap · tanh(logits / cap), in training, evaluation and generation (0 = off; else at least 1, e.g. 30). Not exportable to Hugging Face.", minimum=0.0, maximum=1000.0, step=1.0, decimals=1)
    init_from: str = _f(SCRATCH, "Start from: 'scratch' (new weights), a run folder (its best checkpoint) or RUN/checkpoints/step-N, or a local Hugging Face GPT-2 folder. With a source, the architecture and the tokenizer are the source's.")
    shift: int = _f(1, "Horizons K of the shifted objective: head k predicts token t+k; 1 = plain next-token prediction.", minimum=1, maximum=16)
    head_kind: str = _f("residual", "Heads 2..K: 'residual' (h + W·norm(h), light), 'linear' (W·h) or 'block' (a whole transformer block per head, most parameters, best drafts).", choices=HEAD_KIND_CHOICES)

    def __post_init__(self) -> None:
        _check_fields(self)
        _check(self.n_embd % self.n_head == 0, f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        _check(bool(self.init_from.strip()), "init_from must be 'scratch', a run folder or a Hugging Face folder")
        _check(self.logit_softcap == 0 or self.logit_softcap >= 1, f"logit_softcap must be 0 (off) or between 1 and 1000, got {self.logit_softcap:g}")
        if self.pos == "rope":
            _check((self.n_embd // self.n_head) % 2 == 0, f"rope needs an even head size, got n_embd/n_head = {self.n_embd // self.n_head}")

    @property
    def from_scratch(self) -> bool:
        return self.init_from.strip() in ("", SCRATCH)

    @property
    def head_size(self) -> int:
        return self.n_embd // self.n_head


@dataclass
class TrainConfig:
    """How the model is optimised, evaluated and saved."""

    batch_size: int = _f(12, "Sequences per micro-batch.", minimum=1, maximum=65536)
    gradient_accumulation_steps: int = _f(1, "Micro-batches summed before each optimizer step (effective batch = batch_size × this).", minimum=1, maximum=4096)
    learning_rate: float = _f(1e-3, "Peak learning rate of AdamW, reached after warmup (with optimizer = muon, of the weights AdamW trains).", minimum=0.0, exclusive_minimum=True, maximum=10.0, decimals=6)
    max_iters: int = _f(2000, "Number of optimizer steps to train for.", minimum=1, maximum=STEPS_MAX)
    warmup_iters: int = _f(100, "Steps of linear learning-rate warmup from 0.", minimum=0, maximum=STEPS_MAX)
    lr_decay_iters: int = _f(2000, "Step at which cosine decay reaches min_lr (usually = max_iters).", minimum=1, maximum=STEPS_MAX)
    min_lr: float = _f(1e-4, "Learning rate at the end of cosine decay (usually learning_rate / 10).", minimum=0.0, maximum=10.0, decimals=6)
    weight_decay: float = _f(0.1, "Weight decay on matrices, AdamW's and (optimizer = muon) Muon's (embeddings, norms and biases are not decayed).", minimum=0.0, maximum=10.0, decimals=4)
    beta1: float = _f(0.9, "AdamW beta1 (momentum of the gradient).", minimum=0.0, maximum=0.9999, decimals=4)
    beta2: float = _f(0.99, "AdamW beta2 (momentum of the squared gradient; 0.95–0.99).", minimum=0.0, maximum=0.99999, decimals=5)
    optimizer: str = _f("adamw", "Optimizer: 'adamw' (every weight, at learning_rate) or 'muon' (Muon, at muon_lr, on the hidden matrices of the blocks and of heads 2..K; AdamW, at learning_rate, on embeddings, an untied output head, norms, biases and LoRA adapters).", choices=OPTIMIZER_CHOICES)
    muon_lr: float = _f(0.02, "Peak learning rate of Muon (optimizer = muon), in Keller Jordan's convention (not AdamW's scale): each matrix's orthogonalised update times muon_lr · sqrt(max(1, rows/cols)); 0.02–0.05 is usual. It follows learning_rate's schedule (warmup, then cosine down to min_lr × muon_lr / learning_rate); Muon's weight decay per step is its current rate × weight_decay.", minimum=0.0, exclusive_minimum=True, maximum=1.0, decimals=5)
    muon_momentum: float = _f(0.95, "Muon's Nesterov momentum (optimizer = muon).", minimum=0.0, maximum=0.999, decimals=3)
    grad_clip: float = _f(1.0, "Clip the global gradient norm to this value (0 = no clipping).", minimum=0.0, maximum=1e6, decimals=3)
    eval_interval: int = _f(250, "Evaluate train and validation loss every this many steps.", minimum=1, maximum=STEPS_MAX)
    eval_iters: int = _f(20, "Batches averaged per evaluation.", minimum=1, maximum=100_000)
    log_interval: int = _f(10, "Report step metrics (and the batch view) every this many steps.", minimum=1, maximum=STEPS_MAX)
    device: str = _f("auto", "Where to train: 'auto' (CUDA, then MPS, then CPU), 'cpu', 'cuda', 'cuda:N' or 'mps'.")
    dtype: str = _f("auto", "Compute precision: 'auto' (bf16 on capable CUDA, fp16 on older CUDA, fp32 otherwise), 'float32', 'bfloat16', 'float16'.", choices=DTYPE_CHOICES)
    compile: bool = _f(False, "Compile the model with torch.compile (faster on GPU after a warm-up).")
    seed: int = _f(1337, "Seed of weights init, batch sampling and dropout: same seed, same run.", minimum=0, maximum=SEED_MAX)
    ema_decay: float = _f(0.0, "Decay of an exponential moving average of the weights used for evaluation and sampling (0 = off; e.g. 0.999).", minimum=0.0, maximum=0.999999, decimals=6)
    keep_checkpoints: int = _f(3, "How many recent checkpoints to keep (the best one is always kept).", minimum=1, maximum=1000)
    checkpoint_interval: int = _f(0, "Save a checkpoint every this many steps (0 = at every evaluation).", minimum=0, maximum=STEPS_MAX)
    early_stop_patience: int = _f(0, "Stop after this many evaluations without a better validation loss (0 = off).", minimum=0, maximum=100_000)
    num_threads: int = _f(0, "CPU threads for PyTorch (0 = automatic).", minimum=0, maximum=1024)
    on_out_of_memory: str = _f("split", "When a step runs out of device memory: 'split' (free the cache, cut each micro-batch into twice as many pieces — the batch per step and the results stay the same — and redo the step; said in the terminal, the window and the run's log) or 'stop' (end the run: the last completed step is saved, and a resume with twice the pieces — micro_splits, or the window's offer — goes on from it with the same results). One process only: under torchrun a step out of memory ends the job.", choices=OOM_CHOICES)
    parallel: str = _f("ddp", "Under torchrun (several processes): 'ddp' (each process holds the whole model and optimizer; gradients are averaged) or 'fsdp' (FSDP2: weights, gradients and optimizer state are sharded per block across processes, for models that do not fit on one device). One process ignores it.", choices=PARALLEL_CHOICES)
    lora_rank: int = _f(0, "LoRA rank: 0 = full fine-tuning (every weight trains); r > 0 freezes the model and trains rank-r adapters on lora_targets.", minimum=0, maximum=4096)
    lora_alpha: float = _f(16.0, "LoRA scale numerator: adapters are scaled by lora_alpha / lora_rank.", minimum=0.0, exclusive_minimum=True, maximum=4096.0, decimals=2)
    lora_dropout: float = _f(0.0, "Dropout on the adapters' input (LoRA only; it keeps a copy of each adapted layer's input for the backward pass).", minimum=0.0, maximum=0.9, step=0.05)
    lora_targets: str = _f(",".join(LORA_TARGET_CHOICES), "Layers that get adapters, comma-separated: attn_qkv, attn_out, mlp_in, mlp_out.")
    shift_weights: str = _f(HALVING, "Loss weight of each head, head 1 first: 'halving' (1, 0.5, 0.25, …: the default, measured best for head 1 and for drafting), K numbers separated by commas (e.g. 1,0.5,0.25), or empty (all 1). The training loss is the weighted mean of the head losses.")
    shift_weight_schedule: str = _f("linear_to_zero", "How the weights of heads 2..K move: 'linear_to_zero' (down to 0 at lr_decay_iters, where the learning rate reaches min_lr: training ends as next-token prediction; head 1 keeps its weight; the default) or 'constant'.", choices=SHIFT_WEIGHT_SCHEDULE_CHOICES)

    def __post_init__(self) -> None:
        _check(isinstance(self.device, str), f"device must be text, got {self.device!r}")
        dev = self.device.strip().lower()
        base = dev.split(":", 1)[0]
        _check(base in DEVICE_PREFIXES, f"device must be auto, cpu, cuda, cuda:N or mps, got {self.device!r}")
        if ":" in dev:
            _check(base == "cuda" and dev.split(":", 1)[1].isdigit(), f"device index is only valid as cuda:N, got {self.device!r}")
        self.device = dev
        _check_fields(self)
        _check(self.min_lr <= self.learning_rate, f"min_lr ({self.min_lr}) must not exceed learning_rate ({self.learning_rate})")
        targets = self.lora_target_list
        unknown = [t for t in targets if t not in LORA_TARGET_CHOICES]
        _check(
            bool(targets) and not unknown,
            f"lora_targets must be one or more of {', '.join(LORA_TARGET_CHOICES)}, got {', '.join(unknown) or 'none'}",
        )
        self.shift_weight_list()  # raises with a one-line message when malformed

    def shift_weight_list(self, shift: int | None = None) -> list[float] | None:
        """The heads' loss weights, head 1 first (None = all equal); with ``shift``, also checks there are K of them."""
        text = self.shift_weights.strip() if isinstance(self.shift_weights, str) else self.shift_weights
        _check(isinstance(text, str), f"shift_weights must be text like '1,0.5,0.25', got {self.shift_weights!r}")
        if not text:
            return None
        if text.lower() == HALVING:
            return None if shift is None else [0.5 ** k for k in range(shift)]
        values: list[float] = []
        for part in text.split(","):
            try:
                value = float(part.strip())
            except ValueError:
                value = math.nan
            _check(math.isfinite(value) and value >= 0, f"shift_weights must be numbers of at least 0 separated by commas, got {part.strip()!r} in {text!r}")
            values.append(value)
        _check(values[0] > 0, f"shift_weights: head 1's weight (the first) must be above 0, got {text!r}")
        if shift is not None:
            _check(len(values) == shift, f"shift_weights must have one weight per head (shift = {shift}), got {len(values)} in {text!r}")
        return values

    @property
    def lora_target_list(self) -> list[str]:
        return [t for t in dict.fromkeys(p.strip() for p in self.lora_targets.split(",")) if t]

    @property
    def tokens_per_step_factor(self) -> int:
        """Sequences per optimizer step (multiply by block_size for tokens)."""
        return self.batch_size * self.gradient_accumulation_steps


SECTIONS: dict[str, type] = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}


def iter_fields() -> Iterator[tuple[str, dataclasses.Field]]:
    """Every (section, field) pair, in display order."""
    for section, cls in SECTIONS.items():
        for f in fields(cls):
            yield section, f


@functools.cache
def field_index() -> dict[str, tuple[str, dataclasses.Field]]:
    """Flat key -> (section, field). Keys are unique across sections."""
    index: dict[str, tuple[str, dataclasses.Field]] = {}
    for section, f in iter_fields():
        assert f.name not in index, f"duplicate config key {f.name}"
        index[f.name] = (section, f)
    return index


def help_text(key: str) -> str:
    return field_index()[key][1].metadata["help"]


def field_type(f: dataclasses.Field) -> type:
    """The Python type of a field (dataclass annotations are strings here)."""
    t = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    return {"int": int, "float": float, "bool": bool, "str": str, "list[str]": list}[t]


TRUE_WORDS = frozenset({"true", "1", "yes", "on"})
FALSE_WORDS = frozenset({"false", "0", "no", "off"})


def parse_bool_word(text: str) -> bool | None:
    """True/False for a word like 'yes' or 'off' (any case), None for anything else."""
    low = text.strip().lower()
    return True if low in TRUE_WORDS else False if low in FALSE_WORDS else None


def parse_value(key: str, raw: Any) -> Any:
    """Coerce a raw value (a CLI string, or a TOML/JSON value) to the key's type.

    Raises :class:`ConfigError` with a one-line message for unknown keys and
    values of the wrong type.
    """
    index = field_index()
    if key not in index:
        raise ConfigError(f"unknown setting '{key}'")
    kind = field_type(index[key][1])
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and parse_bool_word(raw) is not None:
            return bool(parse_bool_word(raw))
        if isinstance(raw, int) and raw in (0, 1):
            return bool(raw)
        raise ConfigError(f"{key} must be true or false, got {raw!r}")
    if kind is int:
        if isinstance(raw, bool):
            raise ConfigError(f"{key} must be an integer, got {raw!r}")
        if isinstance(raw, int):
            return raw
        if isinstance(raw, float) and raw.is_integer():
            return int(raw)
        if isinstance(raw, str):
            text = raw.strip().replace("_", "")
            try:
                return int(text)
            except ValueError:
                try:
                    value = float(text)
                except ValueError:
                    value = math.nan
                if math.isfinite(value) and value.is_integer():
                    return int(value)
        raise ConfigError(f"{key} must be an integer, got {raw!r}")
    if kind is float:
        if isinstance(raw, bool):
            raise ConfigError(f"{key} must be a number, got {raw!r}")
        if isinstance(raw, float):
            return raw
        if isinstance(raw, int):
            try:
                return float(raw)
            except OverflowError:  # an integer past any float: out of every range
                raise ConfigError(f"{key} must be a finite number, got an integer too large for one") from None
        if isinstance(raw, str):
            try:
                return float(raw.strip())
            except ValueError:
                pass
        raise ConfigError(f"{key} must be a number, got {raw!r}")
    if kind is list:
        if isinstance(raw, str):
            return [p for p in (s.strip() for s in raw.split(",")) if p]
        if isinstance(raw, (list, tuple)) and all(isinstance(p, str) for p in raw):
            return list(raw)
        raise ConfigError(f"{key} must be a list of paths, got {raw!r}")
    if not isinstance(raw, str):
        raise ConfigError(f"{key} must be text, got {raw!r}")
    return raw


@dataclass
class RunConfig:
    """Everything that defines a run: data, model and training settings."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        rank, width = self.train.lora_rank, self.model.n_embd
        _check(rank <= width, f"lora_rank ({rank}) must not exceed the model width n_embd ({width})")
        self.train.shift_weight_list(self.model.shift)

    # -- flat view -----------------------------------------------------------
    def to_flat(self) -> dict[str, Any]:
        flat: dict[str, Any] = {}
        for section in SECTIONS:
            flat.update(dataclasses.asdict(getattr(self, section)))
        return flat

    def updated(self, overrides: dict[str, Any]) -> "RunConfig":
        """A new, validated config with ``overrides`` (flat keys) applied."""
        index = field_index()
        parts: dict[str, dict[str, Any]] = {s: dataclasses.asdict(getattr(self, s)) for s in SECTIONS}
        for key, raw in overrides.items():
            if key not in index:
                raise ConfigError(f"unknown setting '{key}'")
            parts[index[key][0]][key] = parse_value(key, raw)
        return RunConfig.from_sections(parts)

    @classmethod
    def from_flat(cls, flat: dict[str, Any]) -> "RunConfig":
        return cls().updated(flat)

    @classmethod
    def from_sections(cls, parts: dict[str, dict[str, Any]]) -> "RunConfig":
        built = {}
        for section, klass in SECTIONS.items():
            values = parts.get(section, {})
            try:
                built[section] = klass(**values)
            except TypeError as exc:  # unknown key inside a section
                raise ConfigError(str(exc).split("__init__() ")[-1]) from None
        return cls(**built)

    # -- files ---------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"schema_version": SCHEMA_VERSION}
        for section in SECTIONS:
            out[section] = dataclasses.asdict(getattr(self, section))
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunConfig":
        """Accepts both the sectioned form (``[model] n_layer = 4``) and a flat one."""
        version = data.get("schema_version", SCHEMA_VERSION)
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise ConfigError(
                f"this config has schema version {version}; this ShiftStudio reads up to {SCHEMA_VERSION} — update ShiftStudio"
            )
        flat: dict[str, Any] = {}
        for key, value in data.items():
            if key in ("schema_version", "name", "description"):
                continue
            if key in SECTIONS and isinstance(value, dict):
                for sub_key, sub_value in value.items():
                    if field_index().get(sub_key, (None,))[0] != key:
                        raise ConfigError(f"unknown setting '{sub_key}' in section [{key}]")
                    flat[sub_key] = sub_value
            else:
                flat[key] = value
        return cls.from_flat(flat)

    @classmethod
    def from_stored(cls, data: dict[str, Any]) -> "RunConfig":
        """A run's recorded config (``run.json``): as :meth:`from_dict`, with the values of their time for settings
        added later whose default has changed since (:data:`LEGACY_DEFAULTS`)."""
        data = dict(data)
        for section, legacy in LEGACY_DEFAULTS.items():
            stored = data.get(section)
            if isinstance(stored, dict):
                data[section] = {**{k: v for k, v in legacy.items() if k not in stored}, **stored}
        return cls.from_dict(data)

    def to_toml(self, name: str = "", description: str = "") -> str:
        lines = [f"schema_version = {SCHEMA_VERSION}"]
        if name:
            lines.append(f"name = {_toml_value(name)}")
        if description:
            lines.append(f"description = {_toml_value(description)}")
        for section in SECTIONS:
            lines.append("")
            lines.append(f"[{section}]")
            for key, value in dataclasses.asdict(getattr(self, section)).items():
                lines.append(f"{key} = {_toml_value(value)}")
        return "\n".join(lines) + "\n"

    def save(self, path: str | Path) -> None:
        path = Path(path)
        io.write_text(path, json.dumps(self.to_dict(), indent=2) if path.suffix == ".json" else self.to_toml())

    @classmethod
    def load(cls, path: str | Path) -> "RunConfig":
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        limit = 16 << 20  # a config is a few kilobytes: a file far larger is something else
        try:
            if path.stat().st_size > limit:
                raise ConfigError(f"cannot read config {path}: {path.stat().st_size:,} bytes is far too large for a config file")
            text = path.read_text(encoding="utf-8-sig")  # (a byte-order mark, as some editors write, is fine)
            data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
        except RecursionError:
            raise ConfigError(f"cannot read config {path}: nested too deeply") from None
        except (OSError, ValueError, MemoryError) as exc:  # (the decode errors of UTF-8, JSON and TOML are ValueErrors)
            raise ConfigError(f"cannot read config {path}: {one_line(exc, 200)}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"cannot read config {path}: expected a table of settings, got {type(data).__name__}")
        try:
            return cls.from_dict(data)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string
