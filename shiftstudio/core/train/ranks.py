"""Training on several processes: ``torchrun`` ranks, their data, and what they agree on.

Under ``torchrun`` (``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` set, ``WORLD_SIZE > 1``) every rank runs the
same trainer. :func:`from_env` says which rank this process is; :meth:`Ranks.init` joins the process group
(NCCL on CUDA, gloo on the CPU) and picks ``cuda:LOCAL_RANK`` where there are GPUs.

**Data.** The run's batch stream is one stream, whoever trains it: a step draws
``gradient_accumulation_steps`` micro-batches from the run's seeded sampler, and rank ``r`` of ``N`` trains
micro-batches ``r, r + N, r + 2N, …`` of them (:class:`RankSampler`: each rank advances the same generator
past the others' micro-batches without building them). So 2 ranks with accumulation 2 see exactly the
micro-batches one process with accumulation 2 sees, every rank's sampler state is the same (a checkpoint's
one sampler state covers every rank), and a run resumed on another number of ranks draws the same data — only
the order in which gradients are summed differs (float rounding).

**Agreement.** Gradients are averaged by DDP (all-reduced on the last micro-step only); losses for the log
and evaluations are averaged over ranks here; steering (pause / stop / checkpoint) is decided by rank 0 and
broadcast at each step boundary; at each checkpoint every rank's weights are checksummed and must agree.
"""

from __future__ import annotations

import gc
import os
import socket
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from shiftstudio.core.errors import ConfigError


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    local_rank: int = 0
    world: int = 1

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def describe(self) -> str:
        return f"rank {self.rank} of {self.world} on {socket.gethostname()}"

    # -- the process group --------------------------------------------------------------------------
    def init(self, device: str) -> torch.device:
        """Join the process group (once) and return this rank's device: ``cuda:LOCAL_RANK`` when the run's
        device is CUDA (or automatic with GPUs present), else the CPU with gloo."""
        wants_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
        if wants_cuda:
            if not torch.cuda.is_available() or self.local_rank >= torch.cuda.device_count():
                raise ConfigError(f"rank {self.rank} wants cuda:{self.local_rank}, but this machine has "
                                  f"{torch.cuda.device_count()} GPU(s): start fewer processes per node")
            torch.cuda.set_device(self.local_rank)
            chosen = torch.device("cuda", self.local_rank)
        else:
            chosen = torch.device("cpu")
        if not dist.is_initialized():
            dist.init_process_group("nccl" if chosen.type == "cuda" else "gloo")
        return chosen

    # -- agreeing ---------------------------------------------------------------------------------------
    def mean(self, values: list[float], device: torch.device) -> list[float]:
        """Each value averaged over the ranks (one all-reduce)."""
        if not self.distributed or not values:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return (t / self.world).tolist()

    def flags(self, values: list[int], device: torch.device) -> list[int]:
        """Rank 0's ``values`` on every rank (steering decided in one place)."""
        if not self.distributed:
            return values
        t = torch.tensor(values, dtype=torch.int64, device=device)
        dist.broadcast(t, 0)
        return [int(v) for v in t.tolist()]

    def every(self, value: bool, device: torch.device) -> bool:
        """Whether ``value`` holds on every rank (one all-reduce)."""
        if not self.distributed:
            return value
        t = torch.tensor([int(value)], dtype=torch.int64, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return bool(t.item())

    def text(self, value: str) -> str:
        """Rank 0's string on every rank (a run folder's path), as bytes in tensors: nothing is pickled."""
        if not self.distributed:
            return value
        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
        data = torch.tensor(list(value.encode("utf-8")) if self.main else [], dtype=torch.uint8, device=device)
        size = torch.tensor([data.numel()], dtype=torch.int64, device=device)
        dist.broadcast(size, 0)
        if not self.main:
            data = torch.zeros(int(size.item()), dtype=torch.uint8, device=device)
        dist.broadcast(data, 0)
        return bytes(data.cpu().tolist()).decode("utf-8")

    def same_on_all(self, value: float, device: torch.device) -> bool:
        """Whether every rank holds the same ``value`` (e.g. a weight checksum)."""
        if not self.distributed:
            return True
        t = torch.tensor([value, -value], dtype=torch.float64, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return float(t[0]) == value and float(-t[1]) == value

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def close(self) -> None:
        if self.distributed and dist.is_initialized():
            gc.collect()  # a DDP reducer or pending work left in a reference cycle: freed while the group lives
            dist.destroy_process_group()
            # and the group itself, now: a gloo group freed at interpreter exit can abort the process from its
            # worker threads (SIGABRT, "terminate called without an active exception": twice in six full test runs)
            gc.collect()


def from_env(environ: Any = None) -> Ranks:
    """This process's place among ``torchrun``'s ranks (rank 0 of 1 outside ``torchrun``)."""
    env = os.environ if environ is None else environ
    try:
        world = int(env.get("WORLD_SIZE", "1"))
        rank = int(env.get("RANK", "0"))
        local = int(env.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise ConfigError("RANK, LOCAL_RANK and WORLD_SIZE must be whole numbers (as torchrun sets them)") from None
    if world < 1 or not 0 <= rank < world or local < 0:
        raise ConfigError(f"rank {rank} of {world} (local {local}) is not a valid place among torchrun's ranks")
    return Ranks(rank, local, world)


def check_config(config: Any, world: int) -> None:
    """Refuse settings that cannot train on ``world`` processes (a one-line :class:`ConfigError`): the
    accumulation must share out evenly, and FSDP has its own limits (:func:`sharding.check_settings`)."""
    from shiftstudio.core.train.sharding import check_settings

    accum = config.train.gradient_accumulation_steps
    if accum % world:
        raise ConfigError(
            f"gradient_accumulation_steps ({accum}) must be a multiple of the number of processes ({world}): each "
            "trains an equal share of a step's micro-batches, so the batch per step stays what the settings say"
        )
    check_settings(config, world)


def weights_checksum(model: torch.nn.Module) -> float:
    """A float64 sum over every weight, position-weighted so that swapped values change it too."""
    total = 0.0
    with torch.no_grad():
        for i, p in enumerate(model.parameters(), 1):
            flat = p.detach().double().flatten()
            total += float((flat * torch.arange(1, flat.numel() + 1, dtype=torch.float64, device=flat.device)).sum()) * i
    return total


class RankSampler:
    """Rank ``r`` of ``N``'s share of a sampler: micro-batches ``r, r + N, …`` of the run's one stream (see the
    module docstring). Its state is the stream's, the same on every rank."""

    def __init__(self, sampler: Any, ranks: Ranks) -> None:
        self.sampler, self.ranks = sampler, ranks

    def next(self):
        r, n = self.ranks.rank, self.ranks.world
        for _ in range(r):
            self.sampler.skip()
        batch = self.sampler.next()
        for _ in range(n - 1 - r):
            self.sampler.skip()
        return batch

    def __next__(self):
        return self.next()

    def state_dict(self) -> dict[str, Any]:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state)

    def __getattr__(self, name: str) -> Any:  # batch_size, block_size, shift …: the wrapped sampler's
        return getattr(self.sampler, name)
