"""Training in several processes: torchrun starts them, torch.distributed (gloo on CPU, nccl on CUDA) joins them,
and DistributedDataParallel averages the gradients. One process is a world of one, and every method below is
then a no-op, so the engine has one code path.

    torchrun --nproc_per_node 2 -m retinaseg train ...     (one machine)
    torchrun --nnodes 2 --node_rank R --master_addr HOST --nproc_per_node 4 -m retinaseg train ...

--batch-size is the global batch: each process draws batch_size / processes patches per step from its own
generator (seeded by --seed and its rank), so the same command trains the same schedule in 1 or N processes.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist

from retinaseg.errors import OptionError

RANK_SEED_STRIDE = 1_000_003  # rank r draws patches from seed + r * stride; rank 0 draws what one process would


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Only the main process writes logs, checkpoints and progress bars."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def seed(self, seed: int) -> int:
        return seed + RANK_SEED_STRIDE * self.rank

    def device(self, device: torch.device) -> torch.device:
        """Under torchrun, 'cuda' means this process's GPU (LOCAL_RANK)."""
        if self.distributed and device.type == "cuda" and device.index is None:
            return torch.device("cuda", self.local_rank)
        return device

    def share(self, batch_size: int) -> int:
        """This process's part of the global batch."""
        if batch_size % self.size:
            raise OptionError(f"--batch-size {batch_size} is the global batch and must split evenly over the "
                              f"{self.size} training processes")
        return batch_size // self.size

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """The model whose backward pass averages gradients over the processes."""
        if not self.distributed:
            return model
        from torch.nn.parallel import DistributedDataParallel
        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sums over the processes (every process gets them)."""
        if not self.distributed:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.float64, device=self._collective_device())
        dist.all_reduce(tensor)
        return tensor.tolist()

    def gather(self, value) -> list:
        """Every process's value, in rank order."""
        if not self.distributed:
            return [value]
        values = [None] * self.size
        dist.all_gather_object(values, value)
        return values

    def average_buffers(self, module: torch.nn.Module) -> None:
        """BatchNorm statistics are updated by each process on its own patches: averaging them keeps every
        process's copy, and so validation and the checkpoint, the same."""
        if not self.distributed:
            return
        for buffer in module.buffers():
            if buffer.is_floating_point():
                dist.all_reduce(buffer)
                buffer /= self.size

    def _collective_device(self) -> torch.device:
        return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" \
            else torch.device("cpu")


@contextmanager
def joined(device: torch.device):
    """The World this process belongs to: under torchrun (WORLD_SIZE > 1) it joins the process group for the
    duration, with nccl when training on CUDA and gloo otherwise."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1 or dist.is_initialized():
        yield World() if size <= 1 else World(dist.get_rank(), dist.get_world_size(),
                                              int(os.environ.get("LOCAL_RANK", "0")))
        return
    world = World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0")))
    backend = "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(world.device(device))
    dist.init_process_group(backend)
    try:
        yield world
    finally:
        dist.destroy_process_group()
