"""Everything a training loop needs before its first step, and the state it carries between steps.

:func:`build` resolves the device, seeds every generator, builds the model,
optimizer, gradient scaler, weight EMA and batch sampler, and restores them
from the run's latest checkpoint if it has one. What the loop changes as it
goes (step, tokens, best validation loss …) lives in :class:`Progress`, which
is exactly what a checkpoint's ``state.json`` records besides RNG and sampler
state. Which parameters train is decided here too (those that require
gradients): fine-tuning only has to freeze the others before the optimizer is
built.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ContextManager

import numpy as np
import torch

from shiftstudio.config import RunConfig
from shiftstudio.core.data.store import TokenStore
from shiftstudio.core.errors import CorruptCheckpoint, IncompatibleCheckpoint, RunError
from shiftstudio.core.model.gpt import GPT
from shiftstudio.core.model.lora import apply_lora_settings, has_lora, trainable_state_dict
from shiftstudio.core.runs import checkpoint as ckpt
from shiftstudio.core.runs.folder import open_run_store
from shiftstudio.core.runs.origin import BASE_FILE, load_base
from shiftstudio.core.train import device as dev
from shiftstudio.core.train import sharding
from shiftstudio.core.train.optim import WeightEMA, build_optimizer
from shiftstudio.core.train.ranks import Ranks, RankSampler


@dataclass
class Progress:
    """What the loop changes between steps (and a checkpoint restores)."""

    step: int = 0
    tokens: int = 0
    best_val: float = math.inf
    best_step: int | None = None
    evals_since_best: int = 0
    last_val: tuple[int, float] | None = None  # (step, val loss) of the latest evaluation
    time_offset_s: float = 0.0  # run time before this session (resumed runs)
    last_saved: int = -1  # step of the newest checkpoint on disk, -1 = none

    @property
    def best_val_or_none(self) -> float | None:
        return self.best_val if math.isfinite(self.best_val) else None


@dataclass
class Setup:
    """The objects one training session works with."""

    info: dev.DeviceInfo
    autocast: ContextManager
    store: TokenStore
    model: GPT  # the raw module: checkpoints, EMA, snapshots and batch views use it
    train_model: torch.nn.Module  # what the step calls (compiled when asked for)
    params: list[torch.nn.Parameter]  # the parameters that train
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    ema: WeightEMA | None
    sampler: Any  # BatchSampler or ExampleSampler: next(), state_dict(), load_state_dict()
    progress: Progress = field(default_factory=Progress)
    resumed: bool = False
    origin: dict[str, Any] | None = None  # a fine-tuning run's source and base weights (run.json "origin")
    saved_ranks: int = 1  # how many processes trained up to the checkpoint resumed from
    micro_splits: int = 1  # pieces each micro-batch is cut into since a step ran out of memory (on_out_of_memory)

    @property
    def base_sha256(self) -> str | None:
        return (self.origin or {}).get("base_sha256")

    @property
    def device(self) -> torch.device:
        return self.info.device

    @property
    def tokenizer(self) -> Any:
        return self.store.tokenizer


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build(run_dir: Path, config: RunConfig, record: dict[str, Any], store: TokenStore | None = None,
          ranks: Ranks | None = None) -> Setup:
    """Set up a session for the run in ``run_dir``, resumed from its latest checkpoint when it has one. Under
    ``torchrun`` (``ranks`` of more than one process) the model is wrapped in DDP on this rank's device and the
    sampler gives this rank its share of the run's batch stream (:mod:`~shiftstudio.core.train.ranks`).

    Raises the core's expected errors (bad device, missing or mismatched data, corrupt checkpoint).
    """
    tc, mc = config.train, config.model
    ranks = ranks or Ranks()
    device_name = str(ranks.init(tc.device)) if ranks.distributed else tc.device
    info = dev.setup(device_name, tc.dtype, tc.num_threads)
    if store is None:
        store = open_run_store(run_dir)
    vocab = int(record["data"]["vocab_size"])
    if int(store.vocab_size) != vocab:
        raise RunError(f"the token data has vocabulary {store.vocab_size}, the run was made for {vocab}")
    store.check_windows(mc.block_size, mc.shift)
    seed_everything(tc.seed)
    model = GPT(mc, vocab)
    latest = ckpt.latest_checkpoint(run_dir)
    lora = tc.lora_rank > 0
    if record.get("origin") and (latest is None or lora):  # start from the source's weights (a LoRA run always)
        base = load_base(run_dir, record)
        ckpt.check_shapes(f"{BASE_FILE} of run {Path(run_dir).name}", base, model.state_dict())
        model.load_state_dict(base)
        del base
    if lora:
        apply_lora_settings(model, tc)
    model = model.to(info.device)
    fsdp = ranks.distributed and tc.parallel == "fsdp"
    if fsdp:  # weights, gradients and optimizer state sharded per block: the optimizer is built on the shards
        sharding.shard(model, info.dtype)
    optimizer = build_optimizer(model, tc, info.device)
    s = Setup(
        info=info,
        autocast=dev.autocast(info.device, info.dtype),
        store=store,
        model=model,
        train_model=model,
        params=[p for p in model.parameters() if p.requires_grad],
        optimizer=optimizer,
        scaler=torch.amp.GradScaler(info.device.type, enabled=info.dtype == torch.float16),
        ema=WeightEMA(model, tc.ema_decay) if tc.ema_decay > 0 else None,
        sampler=store.sampler("train", tc.batch_size, mc.block_size, mc.shift, seed=tc.seed, device=info.device),
        origin=record.get("origin"),
    )
    if latest is not None:
        try:
            restore(s, ckpt.load_checkpoint(latest.path))
        except CorruptCheckpoint as exc:
            raise RunError(f"{exc}; nothing was changed (to resume from an earlier checkpoint, delete {latest.path})") from None
    if tc.compile:
        s.train_model = torch.compile(model)
    if ranks.distributed:
        s.sampler = RankSampler(s.sampler, ranks)
    if ranks.distributed and not fsdp:
        from torch.nn.parallel import DistributedDataParallel

        # buffers (rotary tables) never change: no broadcast on every forward (the option's name moved in 2.13)
        import inspect

        quiet = "forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters \
            else "broadcast_buffers"
        s.train_model = DistributedDataParallel(
            s.train_model, device_ids=[info.device.index] if info.device.type == "cuda" else None, **{quiet: False})
    return s


def saved_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """What a checkpoint holds of the model: every weight, or for a LoRA run only what trains (the adapters
    and new heads; the frozen base is the run's ``base.safetensors``)."""
    return trainable_state_dict(model) if has_lora(model) else model.state_dict()


def restore(s: Setup, c: ckpt.Checkpoint) -> None:
    """Put a checkpoint's weights, optimizer, EMA, sampler, scaler, RNG and progress into ``s``."""
    lora = c.state.get("lora")
    if has_lora(s.model) != bool(lora):
        raise IncompatibleCheckpoint(
            f"checkpoint {c.path.name} holds {'LoRA adapters' if lora else 'full weights'}, but the run is set to "
            f"{'LoRA' if has_lora(s.model) else 'full fine-tuning'}: lora_rank cannot change within a run (fork it instead)"
        )
    if lora and s.base_sha256 and lora.get("base_sha256") != s.base_sha256:
        raise IncompatibleCheckpoint(f"checkpoint {c.path.name} was trained on another base model (sha256 differs): refusing to resume")
    ckpt.check_shapes(f"checkpoint {c.path.name}", c.model, saved_weights(s.model))
    if sharding.is_sharded(s.model):  # every rank read the full tensors: each keeps its shard
        sharding.load_weights(s.model, c.model)
        sharding.load_optimizer_tensors(s.model, s.optimizer, c.optimizer)
    else:
        s.model.load_state_dict(c.model, strict=not lora)
        ckpt.load_optimizer_tensors(s.model, s.optimizer, c.optimizer)
    if s.ema is not None:
        if c.ema is not None:
            ckpt.check_shapes(f"EMA weights of {c.path.name}", c.ema, s.ema.state_dict())
            s.ema.load_state_dict(c.ema)
        else:  # the run turned EMA on when resumed: start the average from the current weights
            s.ema.load_state_dict(s.model.state_dict())
    state = c.state
    try:
        s.sampler.load_state_dict(state["sampler"])  # one stream whoever trains it: any number of ranks
        if s.scaler.is_enabled() and state.get("scaler"):
            s.scaler.load_state_dict(state["scaler"])
        best = state.get("best_val_loss")
        s.progress = Progress(
            step=int(state["step"]),
            tokens=int(state["tokens"]),
            best_val=float(best) if best is not None else math.inf,
            best_step=state.get("best_step"),
            evals_since_best=int(state.get("evals_since_best", 0)),
            time_offset_s=float(state.get("time_s", 0.0)),
            last_saved=int(state["step"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptCheckpoint(f"checkpoint {c.path.name}: {ckpt.STATE_FILE} is corrupt ({exc})") from None
    ckpt.set_rng_state(state.get("rng", {}))
    s.saved_ranks = int(state.get("ranks", 1) or 1)
    splits = state.get("micro_splits", 1)
    s.micro_splits = splits if isinstance(splits, int) and 1 <= splits <= s.sampler.batch_size else 1
    s.resumed = True


def checkpoint_state(s: Setup, time_s: float, max_iters: int, ranks: int = 1) -> dict[str, Any]:
    """The JSON half of a checkpoint: progress, sampler position, scaler and RNG states, the plan."""
    p = s.progress
    return {
        "step": p.step,
        "tokens": p.tokens,
        "time_s": time_s,
        "best": p.best_step == p.step,
        "val_loss": p.last_val[1] if p.last_val and p.last_val[0] == p.step else None,
        "best_val_loss": p.best_val_or_none,
        "best_step": p.best_step,
        "evals_since_best": p.evals_since_best,
        "sampler": s.sampler.state_dict(),
        "scaler": s.scaler.state_dict() if s.scaler.is_enabled() else None,
        "rng": ckpt.rng_state(),
        "max_iters": max_iters,
        "ranks": ranks,
        "micro_splits": s.micro_splits,
        **({"lora": _lora_record(s)} if has_lora(s.model) else {}),
    }


def _lora_record(s: Setup) -> dict[str, Any]:
    """What a LoRA checkpoint says about the base its adapters sit on."""
    origin = s.origin or {}
    return {"base_sha256": s.base_sha256, "base_file": origin.get("base_file", BASE_FILE), "source": origin.get("path"),
            "source_sha256": origin.get("sha256")}


def teardown(s: Setup | None) -> None:
    """Drop the session's tensors (and the CUDA cache), so a finished run leaves no memory held."""
    if s is not None:
        s.model = s.train_model = s.optimizer = s.ema = s.sampler = None  # type: ignore[assignment]
        s.params = []
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
