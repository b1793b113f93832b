"""FSDP2 (``parallel = fsdp``): the model's weights, gradients and optimizer state sharded across ranks.

:func:`shard` applies ``torch.distributed.fsdp.fully_shard`` to every transformer block (and every block-kind
shift head), then to the model itself (embeddings, final norm, the other heads, the unembedding — tied or not,
one unit). The module stays the same :class:`~shiftstudio.core.model.gpt.GPT` object; its parameters become
``DTensor`` shards and a forward gathers each unit's weights just in time. Every forward and backward is
therefore *collective*: all ranks must take the same ones, in the same order (evaluation pads the ranks with
fewer batches to the same count; the batch view and samples are computed where every rank takes part).

Checkpoints stay what every other tool reads: full (gathered) tensors, written by rank 0 in the usual
safetensors files, the optimizer state keyed ``'<param name>::<slot>'`` as for one process
(:func:`full_weights`, :func:`full_optimizer_tensors`). Resuming loads the full tensors on every rank and
keeps each rank's shard (:func:`load_weights`, :func:`load_optimizer_tensors`), so a checkpoint written by
one process resumes under FSDP and the reverse.

What FSDP here does not do (refused with a message by :func:`check_settings`): LoRA (the frozen base would
be sharded for nothing), a weight EMA (a second sharded copy; not built yet) and float16 (its loss scaler
does not cover sharded gradients; use bfloat16).
"""

from __future__ import annotations

import sys
import warnings
from typing import Any

import torch

from shiftstudio.config import RunConfig
from shiftstudio.core.errors import ConfigError, IncompatibleCheckpoint


def check_settings(config: RunConfig, world: int) -> None:
    """Refuse the combinations FSDP does not support here (one-line :class:`ConfigError`)."""
    tc = config.train
    if tc.parallel != "fsdp" or world < 2:
        return
    refused = []
    if tc.lora_rank > 0:
        refused.append("LoRA (lora_rank > 0): use parallel = ddp, the adapters are small")
    if tc.ema_decay > 0:
        refused.append("a weight EMA (ema_decay > 0): set it to 0 or use parallel = ddp")
    if tc.dtype == "float16":
        refused.append("float16: use bfloat16 (or parallel = ddp)")
    if getattr(tc, "optimizer", "adamw") != "adamw":
        refused.append(f"the {tc.optimizer} optimizer (it needs whole matrices): use adamw or parallel = ddp")
    if refused:
        raise ConfigError("parallel = fsdp does not support " + "; ".join(refused))


def is_sharded(model: torch.nn.Module) -> bool:
    if "torch.distributed.fsdp" not in sys.modules:  # never imported: nothing is sharded (and no import cost)
        return False
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def shard(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """Shard ``model`` in place, one FSDP unit per transformer block (block-kind heads too) and one for the
    rest. Under bfloat16/float16 the gathered weights are cast for compute and gradients are reduced in
    float32 (the shards, the optimizer state and the checkpoints stay float32)."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    from shiftstudio.core.model.gpt import Block

    # a block returns its keys and values (views) beside its output; training never changes them in place
    warnings.filterwarnings("ignore", message="FSDP2-wrapped module .* returned a view tensor")
    policy = MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32) if dtype != torch.float32 \
        else MixedPrecisionPolicy()
    for unit in [*model.blocks, *(h for h in model.shift_heads if isinstance(h, Block))]:
        fully_shard(unit, mp_policy=policy)
    fully_shard(model, mp_policy=policy)
    return model


def _options(**kw: Any):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kw)


def full_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every weight, gathered, on the CPU of rank 0 (an empty dict on the others). Collective."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(model, options=_options(cpu_offload=True))


def full_optimizer_tensors(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """The optimizer state, gathered and flattened as a one-process checkpoint holds it (``'<param>::<slot>'``),
    on rank 0 (empty on the others). Collective."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    full = get_optimizer_state_dict(model, optimizer, options=_options(cpu_offload=True))
    out: dict[str, torch.Tensor] = {}
    for name, slots in full.get("state", {}).items():
        for slot, value in slots.items():
            out[f"{name}::{slot}"] = value if torch.is_tensor(value) else torch.tensor(value)
    return out


def load_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """Full weights (the same on every rank) into the sharded model: each rank keeps its shard."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict

    set_model_state_dict(model, weights, options=_options())


def load_optimizer_tensors(model: torch.nn.Module, optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    """Inverse of :func:`full_optimizer_tensors`, from a checkpoint read on every rank; hyperparameters stay the
    current optimizer's."""
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}  # global shapes (DTensor)
    state: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        name, _, slot = key.rpartition("::")
        if name not in shapes:
            raise IncompatibleCheckpoint(f"optimizer state does not match the run's config: unknown parameter {name}")
        if slot != "step" and tuple(value.shape) != shapes[name]:
            raise IncompatibleCheckpoint(
                f"optimizer state does not match the run's config: {key} has shape {tuple(value.shape)}, "
                f"the model needs {shapes[name]}"
            )
        state.setdefault(name, {})[slot] = value
    names = {id(p): n for n, p in model.named_parameters()}
    groups = [{**{k: v for k, v in g.items() if k != "params"}, "params": [names[id(p)] for p in g["params"]]}
              for g in optimizer.param_groups]
    set_optimizer_state_dict(model, optimizer, {"state": state, "param_groups": groups}, options=_options())


def gathered_copy(model: torch.nn.Module, device: torch.device | str = "cpu"):
    """A plain float32 :class:`GPT` with the sharded model's weights on rank 0 (None on the others), for samples.
    Collective."""
    import torch.distributed as dist

    from shiftstudio.core.model.gpt import GPT

    weights = full_weights(model)
    if dist.get_rank() != 0:
        return None
    with torch.device("meta"):
        copy = GPT(model.config, model.vocab_size)
    copy = copy.to_empty(device=device)
    with torch.no_grad():
        source = dict(model.named_buffers())
        for name, buffer in copy.named_buffers():  # rotary tables: not in the state dict
            buffer.copy_(source[name])
        copy.load_state_dict({k: v.float() for k, v in weights.items()})
    return copy.eval()


def local_finite(params: list[torch.nn.Parameter]) -> bool:
    """Whether this rank's shards of ``params`` are all finite (no communication)."""
    with torch.no_grad():
        return all(bool(torch.isfinite(_local(p)).all()) for p in params)


def _local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if hasattr(t, "to_local") else t


def plain(t: torch.Tensor) -> torch.Tensor:
    """A DTensor's full value (e.g. the global gradient norm), else ``t``."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t
