"""DistributedDataParallel set-up for ``torchrun``: which rank this is, its device, and the process group."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist

from resnet_edge.errors import InvalidInput


@dataclass(frozen=True)
class Ranks:
    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        """Rank 0: the one that writes checkpoints and prints."""
        return self.rank == 0


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InvalidInput(f"--device '{name}' is not a device; use auto, cpu or cuda.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInput("--device cuda was asked for, but PyTorch sees no CUDA GPU here.")
    return device


@contextlib.contextmanager
def process_group(device_name: str, threads: int = 0) -> Iterator[Ranks]:
    """This process's rank, world size and device; under ``torchrun``, a process group (gloo on CPU, nccl on CUDA)
    for the duration, each rank on its own GPU before the first collective touches it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = resolve_device(device_name)
    if world > 1 or "LOCAL_RANK" in os.environ:
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cpu":
        torch.set_num_threads(threads or max(1, (os.cpu_count() or 1) // world))
    else:
        torch.backends.cudnn.benchmark = True
    try:
        yield Ranks(rank, world, device)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def wrap(model: torch.nn.Module) -> torch.nn.Module:
    return torch.nn.parallel.DistributedDataParallel(model) if dist.is_initialized() else model


def all_reduce(t: torch.Tensor) -> None:
    if dist.is_initialized():
        dist.all_reduce(t)


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()
