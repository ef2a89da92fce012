"""The process this is under ``torchrun``: the one reader of its environment.

``torchrun`` starts one process per GPU (or CPU worker) and tells each its
place with ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``. ``sruc batch`` splits
the files by it and ``sruc train`` runs data-parallel by it; both ask here.
No torch import: the CLI reads it too.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Launch:
    """This process's place among ``world`` processes (``rank`` 0 is the main one)."""

    rank: int
    world: int
    local_rank: int  # the GPU index on this machine
    local_world: int = 1  # processes on this machine (they share its CPUs)


def torchrun(env: Mapping[str, str] | None = None) -> Launch | None:
    """This process's place under a torchrun of more than one process, else None.

    Malformed or inconsistent variables (``RANK=x``, ``RANK`` >= ``WORLD_SIZE``)
    count as no torchrun, so a stray variable never splits the work wrongly.
    """
    env = os.environ if env is None else env
    try:
        world = int(env.get("WORLD_SIZE", "1"))
        rank = int(env.get("RANK", "0"))
        local = int(env.get("LOCAL_RANK", str(rank)))
    except ValueError:
        return None
    if not (world > 1 and 0 <= rank < world):
        return None
    try:  # torchrun sets it; a missing or malformed one: all processes on this machine
        local_world = int(env.get("LOCAL_WORLD_SIZE", str(world)))
    except ValueError:
        local_world = world
    return Launch(rank, world, local, max(1, min(local_world, world)))


def rank_prefix(env: Mapping[str, str] | None = None) -> str:
    """``[rank N] `` under a multi-process torchrun, so interleaved lines can be told apart."""
    launch = torchrun(env)
    return f"[rank {launch.rank}] " if launch is not None else ""


__all__ = ["Launch", "rank_prefix", "torchrun"]
