"""Data-parallel training: the process group, and what every rank must agree on.

Under ``torchrun`` (``RANK``/``WORLD_SIZE`` set, read by
:func:`sruc.engine.launch.torchrun`) every process trains a DDP replica on its
own disjoint slice of each global batch (NCCL on CUDA, Gloo on the CPU); rank 0
validates, logs and writes files.

At the end of every data-parallel session the ranks compare a SHA-256 of
their weights; rank 0 records it in metrics.jsonl (``kind: "replicas"``), and
replicas that differ stop the run with an error instead of saving one of them.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from sruc.engine.device import resolve_device, tune_cpu_allocator
from sruc.engine.launch import torchrun
from sruc.errors import ModelError, UsageError
from sruc.train.model import weights_sha256
from sruc.train.state import append_jsonl


@dataclass
class Dist:
    """This process among the ``world_size`` of a data-parallel run (1: not one)."""

    rank: int = 0
    world_size: int = 1
    owns_group: bool = False  # this call initialised the process group and must destroy it

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()


def setup_distributed(spec: str) -> tuple[Dist, torch.device]:
    """The process group under torchrun (RANK/WORLD_SIZE set) and this process's device."""
    device = resolve_device(spec)
    tune_cpu_allocator()  # a step's activations come back from the heap, not fresh pages
    launch = torchrun()
    if launch is None:
        return Dist(), device
    rank, world = launch.rank, launch.world
    if device.type == "cuda":
        device = torch.device("cuda", launch.local_rank)  # one GPU per process
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        raise UsageError(f"data-parallel training runs on CUDA or the CPU, not {device.type}")
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(rank, world, owns), device


def end_distributed(ddp: Dist) -> None:
    """Tear down the process group this process set up, while Python is still whole.

    The DDP wrapper's reducer holds the Gloo group inside reference cycles, so
    ``destroy_process_group`` alone leaves the group (and its worker threads) to
    be freed at interpreter shutdown, where a rank was seen to die with SIGABRT
    ("terminate called without an active exception") after a finished run.
    Collecting the cycles first frees the replica and its group here, in order.
    """
    if not ddp.owns_group:
        return
    gc.collect()
    dist.destroy_process_group()
    gc.collect()


def agree(flag: bool, ddp: Dist, device: torch.device) -> bool:
    """Rank 0's decision, on every rank (time-based stops must not diverge)."""
    if ddp.world_size == 1:
        return flag
    t = torch.tensor([int(flag)], device=device)
    dist.broadcast(t, 0)
    return bool(t.item())


def weights_hash(net: nn.Module) -> str:
    """The SHA-256 of the weights, in state_dict order."""
    return weights_sha256(net.state_dict().items())


def check_replicas(net: nn.Module, ddp: Dist, out: Path, step: int) -> None:
    """Every rank's weights are rank 0's (DDP keeps them so); rank 0 records the hash."""
    mine = weights_hash(net)
    hashes: list[str] = [""] * ddp.world_size
    dist.all_gather_object(hashes, mine)
    if len(set(hashes)) > 1:
        raise ModelError(
            f"the {ddp.world_size} data-parallel replicas ended step {step} with different "
            "weights; the state is not saved (please report it)"
        )
    if ddp.main:
        record = {"kind": "replicas", "step": step, "world_size": ddp.world_size, "sha256": mine}
        append_jsonl(out / "metrics.jsonl", record)
