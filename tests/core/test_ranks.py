"""Ranks without processes: where this process is among torchrun's, each rank's share of the one batch stream,
and the settings several ranks refuse."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shiftstudio.config import RunConfig
from shiftstudio.core.data.batches import BatchSampler
from shiftstudio.core.errors import ConfigError
from shiftstudio.core.train.ranks import Ranks, RankSampler, from_env, weights_checksum


def test_from_env_reads_torchrun_and_refuses_nonsense() -> None:
    assert from_env({}) == Ranks(0, 0, 1) and not from_env({}).distributed
    assert from_env({"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4"}) == Ranks(3, 1, 4)
    for bad in ({"RANK": "4", "WORLD_SIZE": "4"}, {"RANK": "x", "WORLD_SIZE": "2"}, {"WORLD_SIZE": "0"}):
        with pytest.raises(ConfigError):
            from_env(bad)


@pytest.mark.parametrize("world", [2, 3])
def test_the_ranks_share_out_one_stream_exactly(world: int) -> None:
    """Rank r's batches are the single stream's r, r + N, …; every rank ends in the stream's state."""
    ids = np.arange(5000, dtype=np.uint16)

    def sampler() -> BatchSampler:
        return BatchSampler(ids, batch_size=3, block_size=8, shift=2, seed=11)

    single = sampler()
    stream = [single.next().x for _ in range(world * 4)]
    shares = []
    for rank in range(world):
        mine = RankSampler(sampler(), Ranks(rank, rank, world))
        shares.append([mine.next().x for _ in range(4)])
        assert mine.state_dict() == single.state_dict() and mine.batch_size == 3
    for i, x in enumerate(stream):
        assert torch.equal(shares[i % world][i // world], x)


def test_accumulation_must_divide_among_the_ranks(tmp_path, monkeypatch, tiny_run) -> None:
    from shiftstudio.core.train.trainer import Trainer

    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ConfigError, match=r"gradient_accumulation_steps \(1\) must be a multiple of the number of processes \(3\)"):
        Trainer(tiny_run)
    assert RunConfig().train.gradient_accumulation_steps >= 1


def test_the_weights_checksum_sees_a_swap() -> None:
    torch.manual_seed(0)
    a = torch.nn.Linear(4, 3)
    b = torch.nn.Linear(4, 3)
    b.load_state_dict(a.state_dict())
    assert weights_checksum(a) == weights_checksum(b)
    with torch.no_grad():
        b.weight[0, 0], b.weight[0, 1] = a.weight[0, 1].item(), a.weight[0, 0].item()
    assert weights_checksum(a) != weights_checksum(b)


def test_mfu_peaks_come_from_the_device_name_and_are_unknown_on_a_cpu() -> None:
    import torch

    from shiftstudio.core.train.device import peak_flops, peak_for_name

    assert peak_for_name("NVIDIA H100 80GB HBM3", torch.bfloat16) == 989e12
    assert peak_for_name("NVIDIA H100 PCIe", torch.bfloat16) == 756e12  # the longer name first
    assert peak_for_name("NVIDIA A100-SXM4-40GB", torch.float32, tf32=True) == 156e12
    assert peak_for_name("NVIDIA A100-SXM4-40GB", torch.float32, tf32=False) is None
    assert peak_for_name("Some Future GPU", torch.bfloat16) is None
    assert peak_flops(torch.device("cpu"), torch.float32) is None


def test_step_reports_carry_mfu_only_where_the_peak_is_known(make_tiny_run) -> None:
    from shiftstudio.core.train.reports import StepReport
    from shiftstudio.core.train.trainer import Trainer

    run = make_tiny_run("mfu")  # (trained 4 steps)
    steps = [r for r in Trainer(run, max_iters=8).run() if isinstance(r, StepReport)]
    assert steps and all(r.mfu is None and r.tokens_per_s > 0 for r in steps)  # a CPU: no peak, no made-up figure
