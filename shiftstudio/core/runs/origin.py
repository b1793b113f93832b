"""Where a fine-tuning run starts from: a Hugging Face folder, or another run's checkpoint.

``init_from`` names the source: ``scratch`` (no source), a run folder (its
best checkpoint, else its latest), one of its checkpoints
(``RUN/checkpoints/step-N``), or a local Hugging Face folder. A source decides
the architecture (:data:`~shiftstudio.core.model.hf.ARCHITECTURE_KEYS`) and the
tokenizer; the context may be shortened, the number of heads (``shift``) and
every training setting are the user's.

When a run is created its starting weights are converted once and written
into the run folder as ``base.safetensors`` (ShiftStudio's own layout), and
``run.json`` records the origin: path, kind, the source weights' sha256 and
the base file's. So a run resumes, and a LoRA run finds the weights its
adapters sit on, without the source folder, and a base file that changed
since is refused.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from shiftstudio.config import SCRATCH, ModelConfig, RunConfig
from shiftstudio.core.data.tokenizer import TextTokenizer
from shiftstudio.core.errors import ConfigError, RunError
from shiftstudio.core.model import hf
from shiftstudio.core.model.gpt import GPT
from shiftstudio.core.runs.checkpoint import list_checkpoints
from shiftstudio.core.runs.layout import MODEL_FILE, RunLayout, is_run_dir, step_of

BASE_FILE = "base.safetensors"


@dataclass
class Source:
    """A checked source of starting weights (nothing heavy is read until :meth:`weights`)."""

    kind: str  # "hf" | "run"
    path: Path  # the folder named by init_from (a run folder for run sources)
    architecture: dict[str, Any]
    n_positions: int
    label: str
    checkpoint: str | None = None  # run sources: 'step-N'
    hf_source: hf.HFSource | None = None

    def tokenizer(self) -> TextTokenizer:
        if self.kind == "hf":
            return hf.load_hf_tokenizer(self.path)
        return TextTokenizer.load(RunLayout(self.path).tokenizer_file)

    def weight_files(self) -> list[Path]:
        if self.kind == "hf":
            return list(self.hf_source.weight_files)
        return [RunLayout(self.path).checkpoints_dir / self.checkpoint / MODEL_FILE]

    def sha256(self) -> str:
        return hf.weights_sha256(self.weight_files())

    def weights(self, config: ModelConfig, vocab_size: int) -> dict[str, torch.Tensor]:
        """The source's weights as a full state dict of ``GPT(config, vocab_size)`` (new heads zero-started)."""
        if self.kind == "hf":
            return hf.hf_weights(self.hf_source, config, vocab_size)
        from shiftstudio.core.runs.loading import load_model

        model, tokenizer, _ = load_model(self.path, self.checkpoint)
        if tokenizer.vocab_size != vocab_size:
            raise RunError(f"the tokenizer has {vocab_size:,} tokens, run {self.path.name} was trained with {tokenizer.vocab_size:,}")
        state = model.state_dict()
        if "wpe.weight" in state:
            state["wpe.weight"] = state["wpe.weight"][: config.block_size]
        with torch.device("meta"):
            shell = GPT(config, vocab_size)
        return hf.complete_state_dict(shell, state)

    def record(self) -> dict[str, Any]:
        out = {"kind": self.kind, "path": str(self.path), "label": self.label, "sha256": self.sha256()}
        if self.checkpoint:
            out["checkpoint"] = self.checkpoint
        if self.hf_source is not None:
            out["model_type"] = self.hf_source.model_type
        return out


def _run_source(path: Path) -> Source:
    if path.parent.name == "checkpoints" and step_of(path.name) is not None and is_run_dir(path.parent.parent):
        run_dir, checkpoint = path.parent.parent, path.name
        if not (path / MODEL_FILE).is_file():
            raise RunError(f"{path} is not a complete checkpoint (no {MODEL_FILE})")
    else:
        run_dir = path
        infos = list_checkpoints(run_dir)
        if not infos:
            raise RunError(f"run {run_dir.name} has no checkpoints to start from: train it first")
        best = [i for i in infos if i.is_best]
        checkpoint = (best[-1] if best else infos[-1]).path.name
    from shiftstudio.core.runs.folder import load_run_config

    config = load_run_config(run_dir).model
    architecture = {k: getattr(config, k) for k in hf.ARCHITECTURE_KEYS}
    return Source("run", run_dir, architecture, config.block_size, f"{run_dir.name} @ {checkpoint}", checkpoint)


def open_source(init_from: str) -> Source:
    """The source ``init_from`` names; raises :class:`ConfigError` (HF folders) or :class:`RunError` (runs)."""
    text = init_from.strip()
    if text in ("", SCRATCH):
        raise ConfigError("init_from is 'scratch': there is no source")
    path = Path(text).expanduser()
    if not path.exists():
        raise ConfigError(f"init_from: {path} does not exist (a run folder, RUN/checkpoints/step-N or a Hugging Face folder)")
    if is_run_dir(path) or (path.parent.name == "checkpoints" and is_run_dir(path.parent.parent)):
        return _run_source(path.resolve())
    if hf.is_hf_folder(path):
        found = hf.read_hf_folder(path.resolve())
        return Source("hf", found.folder, dict(found.architecture), found.n_positions, found.label, hf_source=found)
    raise ConfigError(f"init_from: {path} is neither a run folder nor a Hugging Face model folder (no run.json, no config.json)")


def cached_tokenizer_path(tokenizer: TextTokenizer) -> Path:
    """A copy of ``tokenizer`` in the cache, named by its content (so prepared data finds it by path)."""
    from shiftstudio import paths

    path = paths.cache_dir() / "tokenizers" / f"{tokenizer.fingerprint()}.json"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tokenizer.save(path)
    return path


def apply_source(config: RunConfig, source: Source | None = None) -> RunConfig:
    """``config`` with what its source decides: the architecture, a context no longer than the source's,
    and the source's tokenizer (a cached copy, as ``data.tokenizer``). A scratch config comes back as is."""
    if config.model.from_scratch:
        return config
    source = source or open_source(config.model.init_from)
    block = min(config.model.block_size, source.n_positions)
    model = dataclasses.replace(config.model, **source.architecture, block_size=block, init_from=str(source.path if source.kind == "hf" else _init_text(source)))
    data = dataclasses.replace(config.data, tokenizer=str(cached_tokenizer_path(source.tokenizer())))
    return dataclasses.replace(config, model=model, data=data)


def _init_text(source: Source) -> str:
    """How a run source is written back into init_from: the checkpoint it resolved to, so the run records it."""
    return str(RunLayout(source.path).checkpoints_dir / source.checkpoint)


def check_against_source(config: RunConfig, source: Source, tokenizer: TextTokenizer) -> None:
    """Raise :class:`ConfigError` when ``config`` changes what the source decides, or the data's tokenizer is
    not the source's."""
    for key, value in source.architecture.items():
        ours = getattr(config.model, key)
        if ours != value:
            raise ConfigError(f"{key} comes from the source model ({value}); this config has {ours}")
    if config.model.block_size > source.n_positions:
        raise ConfigError(f"block_size {config.model.block_size} is longer than the source model's context ({source.n_positions})")
    if tokenizer.fingerprint() != source.tokenizer().fingerprint():
        raise ConfigError("the data was tokenized with another tokenizer than the source model's: prepare it with the source's tokenizer")


def write_base(run_dir: str | Path, config: RunConfig, vocab_size: int, source: Source) -> dict[str, Any]:
    """Convert the source's weights for this run and write them as ``base.safetensors``; returns the origin
    record for ``run.json`` (with both sha256s)."""
    from safetensors.torch import save_file

    from shiftstudio.core import io

    state = source.weights(config.model, vocab_size)
    path = Path(run_dir) / BASE_FILE
    with io.atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt", "shiftstudio": "base weights"})
        io.fsync_file(tmp)
    return {**source.record(), "base_file": BASE_FILE, "base_sha256": file_sha256(path)}


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def load_base(run_dir: str | Path, record: dict[str, Any], verify: bool = True) -> dict[str, torch.Tensor]:
    """The starting weights of a fine-tuning run (its ``base.safetensors``), checked against ``run.json``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    origin = record.get("origin") or {}
    path = Path(run_dir) / origin.get("base_file", BASE_FILE)
    if not path.is_file():
        raise RunError(f"{path.name} of run {Path(run_dir).name} is missing: the starting weights of this fine-tuning run are gone")
    if verify and origin.get("base_sha256") and file_sha256(path) != origin["base_sha256"]:
        raise RunError(f"{path.name} of run {Path(run_dir).name} has changed since the run was created (sha256 differs): refusing to train on another base")
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise RunError(f"{path.name} of run {Path(run_dir).name} is corrupt ({exc})") from None
