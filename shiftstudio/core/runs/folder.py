"""Run folders: create one from a config and a token store, read one back.

The folder's files are named in :mod:`~shiftstudio.core.runs.layout`. The
token ids themselves stay in the token store (usually the cache); a run
records where, and :func:`open_run_store` finds or rebuilds them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import platform
import re
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from shiftstudio import __version__
from shiftstudio.config import RunConfig
from shiftstudio.core import io
from shiftstudio.core.data.store import META_FILE, TokenStore, prepare
from shiftstudio.core.data.tokenizer import TextTokenizer
from shiftstudio.core.errors import ConfigError, DataError, RunError, one_line
from shiftstudio.core.model.estimate import count_params, count_trainable, flops_per_token
from shiftstudio.core.runs.checkpoint import list_checkpoints
from shiftstudio.core.runs.layout import RUN_FILE, RunLayout
from shiftstudio.core.runs.metrics import headline_val_loss, iter_metrics

log = logging.getLogger(__name__)

RUN_SCHEMA = 1
MAX_RUN_FILE_BYTES = 64 << 20  # run.json is a few kilobytes: anything far larger is not one


def _slug(text: str, limit: int = 24) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit].strip("-") or "run"


# Short tags for the settings that tell runs apart (a shift = 2 run is "...-4x128-k2").
_TAGS = {
    "shift": lambda v: f"k{v}", "pos": str, "norm": lambda v: {"rmsnorm": "rms", "layernorm": "ln"}[v],
    "activation": lambda v: {"gelu": "gelu", "gelu_tanh": "tanh", "relu2": "relu2"}[v], "block_size": lambda v: f"T{v}",
    "qk_norm": lambda v: "qknorm" if v else "noqknorm", "logit_softcap": lambda v: f"cap{v:g}" if v else "nocap",
    "optimizer": str,
    "n_head": lambda v: f"h{v}", "dropout": lambda v: f"drop{v:g}", "bias": lambda v: "bias" if v else "nobias",
    "tie_weights": lambda v: "tied" if v else "untied", "learning_rate": lambda v: f"lr{v:g}",
    "batch_size": lambda v: f"b{v}", "ema_decay": lambda v: f"ema{v:g}",
}


def _source_tag(init_from: str) -> str:
    """'ft-gpt2' for a Hugging Face folder 'gpt2', 'ft-RUN' for RUN/checkpoints/step-N or a run folder."""
    path = Path(init_from)
    if path.parent.name == "checkpoints":
        path = path.parent.parent
    return f"ft-{path.name}"


def run_name_tags(config: RunConfig, base: RunConfig | None = None) -> list[str]:
    """Tags for the settings in which ``config`` differs from ``base`` (the preset it came from; the
    defaults when None), in a fixed order; ``shift`` is always named when it is above 1. A fine-tuning run
    is tagged with its source (and LoRA rank) first, and not with the architecture its source decided."""
    base = base or RunConfig()
    ours, theirs = config.to_flat(), base.to_flat()
    fixed: tuple[str, ...] = ()
    lead: list[str] = []
    if not config.model.from_scratch:
        from shiftstudio.core.model.hf import ARCHITECTURE_KEYS

        fixed = ARCHITECTURE_KEYS
        lead = [_source_tag(config.model.init_from)] + ([f"lora{config.train.lora_rank}"] if config.train.lora_rank else [])
    tags = lead + [_TAGS[key](ours[key]) for key in _TAGS if key not in fixed and ours[key] != theirs[key]]
    if config.model.shift > 1 and f"k{config.model.shift}" not in tags:
        tags.insert(len(lead), f"k{config.model.shift}")
    return tags


def default_run_dir(config: RunConfig, base: RunConfig | None = None) -> Path:
    """``runs_dir()/<YYYYmmdd-HHMMSS>-<corpus>-<layers>x<width>[-<what differs from base>]``, unique."""
    from shiftstudio import paths

    corpus = Path(config.data.corpus[0]).stem if config.data.corpus else "sample"
    tags = "".join(f"-{_slug(t, 12)}" for t in run_name_tags(config, base)[:4])
    base_name = f"{time.strftime('%Y%m%d-%H%M%S')}-{_slug(corpus)}-{config.model.n_layer}x{config.model.n_embd}{tags}"
    parent = paths.runs_dir()
    candidate, n = parent / base_name, 2
    while candidate.exists():
        candidate, n = parent / f"{base_name}-{n}", n + 1
    return candidate


def validate_against_store(config: RunConfig, store: TokenStore) -> None:
    """Config checks that need the data: each split must hold at least one window (raises DataError), the
    vocabulary at least two tokens (ConfigError)."""
    try:
        store.check_windows(config.model.block_size, config.model.shift)
    except DataError as exc:  # the data is fine; the setting does not fit it
        raise ConfigError(str(exc)) from None
    if store.vocab_size < 2:
        raise ConfigError(f"the tokenizer has only {store.vocab_size} token(s)")


def _is_creation_leftover(path: Path, layout: RunLayout) -> bool:
    """A file :func:`create_run` writes before ``run.json`` (the tokenizer, a fine-tune's base weights), or the
    temporary file of one: what a creation killed mid-way (``kill -9``, power loss) leaves in the folder."""
    names = (layout.tokenizer_file.name, "base.safetensors")
    return path.is_file() and (path.name in names or any(
        path.name.startswith(f".{name}.") and path.name.endswith(".tmp") for name in (*names, layout.run_file.name)))


def create_run(config: RunConfig, store: TokenStore, out_dir: str | Path | None = None, base: RunConfig | None = None) -> Path:
    """A new run folder for ``config`` trained on ``store``; returns its path.

    Raises :class:`ConfigError` when the config does not fit the data and
    :class:`RunError` when ``out_dir`` already holds a run or other files.
    """
    validate_against_store(config, store)
    source = None
    if not config.model.from_scratch:
        from shiftstudio.core.runs.origin import check_against_source, open_source

        source = open_source(config.model.init_from)
        check_against_source(config, source, store.tokenizer)
    elif config.train.lora_rank > 0:
        raise ConfigError("lora_rank > 0 adapts a pretrained model: set init_from to a run or a Hugging Face folder (or use lora_rank 0)")
    run_dir = Path(out_dir) if out_dir is not None else default_run_dir(config, base)
    layout = RunLayout(run_dir)
    if run_dir.exists():
        if layout.is_run():
            raise RunError(f"{run_dir} already holds a run: resume it ('shiftstudio resume {run_dir}') or pick another folder")
        if not run_dir.is_dir():
            raise RunError(f"{run_dir} exists and is not an empty folder")
        contents = list(run_dir.iterdir())
        if any(not _is_creation_leftover(p, layout) for p in contents):
            raise RunError(f"{run_dir} exists and is not an empty folder")
        for leftover in contents:  # a creation killed before run.json: only files this function writes, redone
            leftover.unlink()
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    import torch

    vocab = int(store.vocab_size)
    record = {
        "schema_version": RUN_SCHEMA,
        "name": run_dir.name,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": {"shiftstudio": __version__, "torch": torch.__version__, "python": platform.python_version()},
        "config": config.to_dict(),
        "data": {
            "store": str(Path(store.dir).resolve()),
            "vocab_size": vocab,
            "tokenizer_kind": store.tokenizer.kind,
            "tokenizer_fingerprint": store.tokenizer.fingerprint(),
            "train_tokens": int(len(store.train)),
            "val_tokens": int(len(store.val)),
        },
        "model": {
            "n_params": count_params(config.model, vocab),
            "n_params_non_embedding": count_params(config.model, vocab, non_embedding=True),
            "flops_per_token": flops_per_token(config.model, vocab),
        },
    }
    if config.train.lora_rank > 0:
        record["model"]["n_trainable"], record["model"]["n_params_with_adapters"] = count_trainable(config.model, config.train, vocab)
    try:
        if source is not None:
            from shiftstudio.core.runs.origin import write_base

            record["origin"] = write_base(run_dir, config, vocab, source)
        store.tokenizer.save(layout.tokenizer_file)
        io.write_json(layout.run_file, record)  # last: a folder with run.json is a complete run
    except BaseException:  # nothing half-written: the folder goes back to what it was
        for name in ("base.safetensors", layout.tokenizer_file.name):
            (run_dir / name).unlink(missing_ok=True)
        if created:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    log.info("created run %s", run_dir)
    return run_dir


def save_run_record(run_dir: str | Path, record: dict[str, Any]) -> None:
    """Replace ``run.json`` (atomically) with ``record``."""
    io.write_json(RunLayout(run_dir).run_file, record)


def update_plan(run_dir: str | Path, max_iters: int) -> RunConfig:
    """Record a new ``max_iters`` (a run continued further, or stopped sooner, than first planned) in
    ``run.json``, so that reopening the run, ``info`` and a later resume all see the plan it trains to."""
    record = load_run(run_dir)
    record["config"].setdefault("train", {})["max_iters"] = int(max_iters)
    try:
        config = RunConfig.from_stored(record["config"])
    except ConfigError as exc:
        raise RunError(f"{RunLayout(run_dir).run_file}: {exc}") from None
    save_run_record(run_dir, record)
    return config


def load_run(run_dir: str | Path) -> dict[str, Any]:
    """The raw ``run.json``; raises :class:`RunError` if missing, corrupt or from a newer ShiftStudio."""
    path = RunLayout(run_dir).run_file
    if not path.is_file():
        raise RunError(f"{run_dir} is not a run folder (no {RUN_FILE})")
    try:
        if path.stat().st_size > MAX_RUN_FILE_BYTES:
            raise RunError(f"{path} is corrupt: {path.stat().st_size:,} bytes, far too large for a run record")
        record = json.loads(path.read_text(encoding="utf-8-sig"))
    except RecursionError:
        raise RunError(f"{path} is corrupt: nested too deeply") from None
    except (OSError, ValueError, MemoryError) as exc:  # (UnicodeDecodeError, JSONDecodeError: ValueErrors)
        raise RunError(f"{path} is corrupt: {one_line(exc, 200)}") from None
    if not isinstance(record, dict) or not isinstance(record.get("schema_version"), int):
        raise RunError(f"{path} is corrupt: no schema_version")
    if record["schema_version"] > RUN_SCHEMA:
        raise RunError(
            f"{run_dir} was written by a newer ShiftStudio (run schema {record['schema_version']}, "
            f"this one reads up to {RUN_SCHEMA}): update ShiftStudio"
        )
    if not isinstance(record.get("config"), dict) or not isinstance(record.get("data"), dict):
        raise RunError(f"{path} is corrupt: no config or data section")
    return record


def load_run_config(run_dir: str | Path) -> RunConfig:
    record = load_run(run_dir)
    try:
        return RunConfig.from_stored(record["config"])
    except ConfigError as exc:
        raise RunError(f"{RunLayout(run_dir).run_file}: {exc}") from None


def open_run_store(run_dir: str | Path, prepare_missing: bool = False, progress: Callable | None = None) -> TokenStore:
    """The token store a run trains on: the recorded folder, else (if allowed) rebuilt from the corpus in the
    config. The store's tokenizer must be the run's."""
    run_dir = Path(run_dir)
    record = load_run(run_dir)
    recorded = record["data"].get("store")
    store = None
    if recorded and (Path(recorded) / META_FILE).is_file():
        store = TokenStore.open(recorded)
    if store is None:
        if not prepare_missing:
            raise RunError(f"the token data of {run_dir} is gone ({recorded}); run 'shiftstudio resume {run_dir}' to rebuild it")
        data = load_run_config(run_dir).data
        if data.tokenizer.strip() not in ("char", "bpe") and RunLayout(run_dir).tokenizer_file.is_file():
            # a given tokenizer file (a fine-tuning source's cached copy, say) may be gone: the run keeps its own
            data = dataclasses.replace(data, tokenizer=str(RunLayout(run_dir).tokenizer_file))
        store = prepare(data, progress=progress)
    expected = record["data"].get("tokenizer_fingerprint")
    run_tok = RunLayout(run_dir).tokenizer_file
    if run_tok.is_file():
        expected = TextTokenizer.load(run_tok).fingerprint()
    if expected and store.tokenizer.fingerprint() != expected:
        raise RunError(f"the token data at {store.dir} was made with a different tokenizer than run {run_dir.name}")
    if int(store.vocab_size) != int(record["data"].get("vocab_size", store.vocab_size)):
        raise RunError(f"the token data at {store.dir} has vocabulary {store.vocab_size}, the run was made for {record['data']['vocab_size']}")
    if len(store.train) == 0 or len(store.val) == 0:
        raise DataError(f"the token data at {store.dir} has an empty split")
    return store


def prepare_and_create(
    config: RunConfig,
    out_dir: str | Path | None = None,
    progress: Callable | None = None,
    cancel: Callable[[], bool] | None = None,
    errors: str = "strict",
    data_dir: str | Path | None = None,
) -> Path:
    """Corpus (or an already prepared ``data_dir``) -> token store -> new run folder, for the CLI and the GUI."""
    if data_dir is not None:
        store = TokenStore.open(data_dir)
    else:
        store = prepare(config.data, progress=progress, cancel=cancel, errors=errors)
    return create_run(config, store, out_dir)


def run_summary(run_dir: str | Path) -> dict[str, Any]:
    """What ``shiftstudio info`` and the GUI's run list show: config, size, steps, best val loss."""
    record = load_run(run_dir)
    config = load_run_config(run_dir)
    checkpoints = list_checkpoints(run_dir)
    best = [c for c in checkpoints if c.is_best]
    last_step, tokens, best_val, time_s = 0, 0, None, 0.0
    last_eval: dict[str, Any] | None = None
    for rec in iter_metrics(run_dir, ("train", "eval", "finished")):
        last_step = max(last_step, int(rec.get("step") or 0))
        tokens = max(tokens, int(rec.get("tokens") or 0))
        time_s = max(time_s, float(rec.get("time_s") or 0.0))
        if rec.get("kind") == "eval":
            last_eval = rec
            head1 = headline_val_loss(rec)
            if head1 is not None:
                best_val = head1 if best_val is None else min(best_val, head1)
    vocab = int(record["data"]["vocab_size"])
    return {
        "run_dir": str(Path(run_dir)),
        "name": record.get("name", Path(run_dir).name),
        "created": record.get("created", ""),
        "versions": record.get("versions", {}),
        "config": config,
        "vocab_size": vocab,
        "n_params": count_params(config.model, vocab),
        "n_params_non_embedding": count_params(config.model, vocab, non_embedding=True),
        "flops_per_token": flops_per_token(config.model, vocab),
        "data": record["data"],
        "origin": record.get("origin"),
        "steps": last_step,
        "max_iters": config.train.max_iters,
        "tokens": tokens,
        "time_s": time_s,
        "best_val_loss": best[-1].val_loss if best and best[-1].val_loss is not None else best_val,
        "checkpoints": checkpoints,
        "latest_step": checkpoints[-1].step if checkpoints else None,
        "last_eval": last_eval,
    }
