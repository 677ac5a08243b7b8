"""Process groups under torchrun: one place that reads WORLD_SIZE/RANK/LOCAL_RANK and sets up or tears down.

Training (DDP) and FID sampling (sharded batches) run the same code on one process or on N; with
``WORLD_SIZE > 1`` (set by torchrun) :func:`setup` initialises the default group (nccl on GPUs, gloo on CPU).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup() -> Ranks:
    """This process's place: initialises the process group once when torchrun started several processes."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return Ranks(dist.get_rank(), world, int(os.environ.get("LOCAL_RANK", "0")))


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def process_group() -> Iterator[Ranks]:
    """``with process_group() as ranks:`` — the group exists inside the block and is torn down however it ends."""
    try:
        yield setup()
    finally:
        teardown()


def local_device(device: torch.device, ranks: Ranks) -> torch.device:
    """Under torchrun each rank takes its local GPU when CUDA is asked for."""
    if device.type == "cuda" and ranks.world > 1:
        device = torch.device("cuda", ranks.local_rank)
        torch.cuda.set_device(device)
    return device
