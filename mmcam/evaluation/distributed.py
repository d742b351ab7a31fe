"""Scale-out under ``torchrun``: which shards this process computes, and gathering results on rank 0."""

from __future__ import annotations

import os
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


def start_processes(device: str | None) -> Processes:
    """One process, or (under ``torchrun``: WORLD_SIZE > 1) join the process group: gloo on the CPU,
    nccl with one GPU per local rank. ``device`` None: CUDA when available, else the CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = str(chosen_device(device))
    if world == 1:
        return Processes(device=device)
    if device.startswith("cuda"):
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return Processes(dist.get_rank(), dist.get_world_size(), device)


def stop_processes(processes: Processes) -> None:
    if processes.world > 1 and dist.is_initialized():
        dist.destroy_process_group()
