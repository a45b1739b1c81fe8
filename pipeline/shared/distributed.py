"""torchrun support: one process per device, Gloo on CPU and NCCL on GPUs.

On GPUs the process group is `cpu:gloo,cuda:nccl`: collectives on CUDA tensors (batch-norm
statistics, DDP gradients) go through NCCL, and those on CPU tensors (the logged losses,
the stop flag, `all_gather_object`'s sizes) through Gloo; an NCCL-only group rejects CPU
tensors and the first training step would die.

`torchrun --nproc-per-node N --no-python augment train ...` sets RANK/WORLD_SIZE/LOCAL_RANK;
without them everything here is a no-op and training is a plain single process.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def mean(self, values: list[float]) -> list[float]:
        """Average a few scalars over ranks (for logging)."""
        if not self.enabled:
            return values
        t = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(t)
        return (t / self.world).tolist()

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's `obj` on every rank (our own processes' numpy arrays, not untrusted data)."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out


def backend_for(device: torch.device) -> str:
    """The process-group backend for ranks on `device`: it must serve CPU tensors too."""
    return "cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo"


def from_env(device: torch.device) -> tuple[Dist, torch.device]:
    """Join the process group torchrun describes; returns the context and this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), device
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend_for(device))
    return Dist(rank, world, local), device


def shutdown(ctx: Dist) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
