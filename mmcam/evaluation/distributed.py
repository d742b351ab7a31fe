"""Scale-out under ``torchrun``: the process group joined and left in one place (``distributed``), which
shards this process computes, and gathering results on rank 0."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist

from mmcam.engine.devices import chosen_device


@dataclass(frozen=True)
class Processes:
    rank: int = 0
    world: int = 1
    device: str = "cpu"

    @property
    def leader(self) -> bool:
        return self.rank == 0

    def owns(self, shard: int) -> bool:
        """Shards go round-robin: shard i to rank i mod world."""
        return shard % self.world == self.rank

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def gather(self, results: list) -> list:
        """Every rank's ``results`` concatenated on rank 0 (in rank order); [] on the other ranks."""
        if self.world == 1:
            return results
        gathered = [None] * self.world if self.leader else None
        dist.gather_object(results, gathered, dst=0)
        return [row for part in gathered for row in part] if self.leader else []


@contextmanager
def distributed(device: str | None) -> Iterator[Processes]:
    """The processes of this run, for the length of a ``with`` block: one process, or (under ``torchrun``:
    WORLD_SIZE > 1) this process in the process group, gloo on the CPU, nccl with one GPU per local rank.
    The group is left when the block ends, however it ends. ``device`` None: CUDA when available, else the
    CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = str(chosen_device(device))
    if world == 1:
        yield Processes(device=device)
        return
    if device.startswith("cuda"):
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    joined = not dist.is_initialized()
    if joined:
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    try:
        yield Processes(dist.get_rank(), dist.get_world_size(), device)
    finally:
        if joined and dist.is_initialized():
            dist.destroy_process_group()
