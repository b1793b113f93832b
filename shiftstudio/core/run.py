"""Run folders: create one from a config and a token store, read one back.

A run is a folder::

    run.json         schema version, full config, versions, created time, data location and shape
    tokenizer.json   the run's tokenizer (a run keeps its own copy)
    metrics.jsonl    every report, one JSON object a line (see metrics.py)
    checkpoints/     step-N/ folders (see checkpoint.py)

The token ids themselves stay in the token store (usually the cache); a run
records where, and :func:`open_run_store` finds or rebuilds them.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import re
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from shiftstudio import __version__
from shiftstudio.config import ConfigError, RunConfig
from shiftstudio.core.checkpoint import CheckpointInfo, RunError, list_checkpoints
from shiftstudio.core.estimate import count_params, flops_per_token

log = logging.getLogger(__name__)

RUN_SCHEMA = 1
RUN_FILE = "run.json"
TOKENIZER_FILE = "tokenizer.json"
DATA_LINK = "data"  # an optional prepared folder inside the run, preferred over the recorded store

__all__ = [
    "RUN_SCHEMA", "RunError", "CheckpointInfo", "create_run", "load_run", "load_run_config", "list_checkpoints",
    "validate_against_store", "open_run_store", "prepare_and_create", "run_summary", "default_run_dir",
]


def _slug(text: str, limit: int = 24) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit].strip("-") or "run"


def default_run_dir(config: RunConfig) -> Path:
    """``runs_dir()/<YYYYmmdd-HHMMSS>-<corpus>-<layers>x<width>``, unique."""
    from shiftstudio import paths

    corpus = Path(config.data.corpus[0]).stem if config.data.corpus else "sample"
    base = f"{time.strftime('%Y%m%d-%H%M%S')}-{_slug(corpus)}-{config.model.n_layer}x{config.model.n_embd}"
    parent = paths.runs_dir()
    candidate, n = parent / base, 2
    while candidate.exists():
        candidate, n = parent / f"{base}-{n}", n + 1
    return candidate


def validate_against_store(config: RunConfig, store: Any) -> None:
    """Config checks that need the data: each split must hold at least one window. Raises ConfigError."""
    need = config.model.block_size + config.model.shift
    for split, ids in (("training", store.train), ("validation", store.val)):
        if len(ids) < need:
            raise ConfigError(
                f"block_size {config.model.block_size} (+ shift {config.model.shift}) is larger than the {split} split "
                f"({len(ids):,} tokens): use a smaller block_size, "
                + ("a larger val_fraction or more text" if split == "validation" else "or more text")
            )
    if store.vocab_size < 2:
        raise ConfigError(f"the tokenizer has only {store.vocab_size} token(s)")


def create_run(config: RunConfig, store: Any, out_dir: str | Path | None = None) -> Path:
    """A new run folder for ``config`` trained on ``store``; returns its path.

    Raises :class:`ConfigError` when the config does not fit the data and
    :class:`RunError` when ``out_dir`` already holds a run or other files.
    """
    validate_against_store(config, store)
    run_dir = Path(out_dir) if out_dir is not None else default_run_dir(config)
    if run_dir.exists():
        if (run_dir / RUN_FILE).exists():
            raise RunError(f"{run_dir} already holds a run: resume it ('shiftstudio resume {run_dir}') or pick another folder")
        if not run_dir.is_dir() or any(run_dir.iterdir()):
            raise RunError(f"{run_dir} exists and is not an empty folder")
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
    store.tokenizer.save(run_dir / TOKENIZER_FILE)
    _write_json(run_dir / RUN_FILE, record)  # last: a folder with run.json is a complete run
    log.info("created run %s", run_dir)
    return run_dir


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
    os.replace(tmp, path)


def load_run(run_dir: str | Path) -> dict[str, Any]:
    """The raw ``run.json``; raises :class:`RunError` if missing, corrupt or from a newer ShiftStudio."""
    path = Path(run_dir) / RUN_FILE
    if not path.is_file():
        raise RunError(f"{run_dir} is not a run folder (no {RUN_FILE})")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunError(f"{path} is corrupt: {exc}") from None
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
        return RunConfig.from_dict(record["config"])
    except ConfigError as exc:
        raise RunError(f"{Path(run_dir) / RUN_FILE}: {exc}") from None


def open_run_store(run_dir: str | Path, prepare_missing: bool = False, progress: Callable | None = None) -> Any:
    """The token store a run trains on: ``RUN_DIR/data``, else the recorded folder, else (if allowed) rebuilt
    from the corpus in the config. The store's tokenizer must be the run's."""
    from shiftstudio.core.tokenizer import TextTokenizer
    from shiftstudio.core.tokens import DataError, TokenStore, prepare

    run_dir = Path(run_dir)
    record = load_run(run_dir)
    recorded = record["data"].get("store")
    store = None
    for candidate in (run_dir / DATA_LINK, Path(recorded) if recorded else None):
        if candidate is not None and (candidate / "meta.json").is_file():
            store = TokenStore.open(candidate)
            break
    if store is None:
        if not prepare_missing:
            raise RunError(f"the token data of {run_dir} is gone ({recorded}); run 'shiftstudio resume {run_dir}' to rebuild it")
        store = prepare(load_run_config(run_dir).data, progress=progress)
    expected = record["data"].get("tokenizer_fingerprint")
    run_tok = run_dir / TOKENIZER_FILE
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
    from shiftstudio.core.tokens import TokenStore, prepare

    if data_dir is not None:
        store = TokenStore.open(data_dir)
    else:
        store = prepare(config.data, progress=progress, cancel=cancel, errors=errors)
    return create_run(config, store, out_dir)


def run_summary(run_dir: str | Path) -> dict[str, Any]:
    """What ``shiftstudio info`` and the GUI's run list show: config, size, steps, best val loss."""
    from shiftstudio.core.metrics import iter_metrics

    record = load_run(run_dir)
    config = load_run_config(run_dir)
    checkpoints = list_checkpoints(run_dir)
    best = [c for c in checkpoints if c.is_best]
    last_step, tokens, best_val, time_s = 0, 0, None, 0.0
    for rec in iter_metrics(run_dir, ("train", "eval", "finished")):
        last_step = max(last_step, int(rec.get("step") or 0))
        tokens = max(tokens, int(rec.get("tokens") or 0))
        time_s = max(time_s, float(rec.get("time_s") or 0.0))
        if rec.get("kind") == "eval" and isinstance(rec.get("val_loss"), (int, float)):
            best_val = rec["val_loss"] if best_val is None else min(best_val, rec["val_loss"])
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
        "steps": last_step,
        "max_iters": config.train.max_iters,
        "tokens": tokens,
        "time_s": time_s,
        "best_val_loss": best[-1].val_loss if best and best[-1].val_loss is not None else best_val,
        "checkpoints": checkpoints,
        "latest_step": checkpoints[-1].step if checkpoints else None,
    }
