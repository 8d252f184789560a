"""Data-parallel training on PyTorch's own engine: torchrun + DistributedDataParallel.

``torchrun --nproc_per_node=N -m wavegen train ...`` starts N processes with RANK,
WORLD_SIZE, LOCAL_RANK and a rendezvous in the environment; ``setup`` joins them into one
process group (nccl on CUDA, gloo on CPU). A plain ``wavegen train`` is a world of one and
touches nothing in torch.distributed.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from .config import ConfigError, resolve_device
from .errors import WavegenError

R = TypeVar("R")

# Rank 0 validates and writes checkpoints while the others wait at their next collective.
TIMEOUT = datetime.timedelta(minutes=60)
# The others wait this long for a machine's first process to scan a corpus (hours of
# decoding for thousands of hours of audio); its failure ends the wait at once.
LEADER_TIMEOUT = datetime.timedelta(days=7)


class PeerError(WavegenError):
    """Another training process failed at work this one waited for."""


@dataclass
class World:
    """This process's place among the training processes."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # setup() created the process group, close() destroys it

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum of ``values`` over all processes (float64)."""
        if self.size == 1:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.float64, device=_collective_device())
        dist.all_reduce(tensor)
        return tensor.tolist()

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every process."""
        if self.size == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def leaders_first(self, work: Callable[[], R], what: str) -> R:
        """``work()`` on every process, the first process of each machine (LOCAL_RANK 0)
        before the others: they then read what it cached (a folder's decoded audio) rather
        than each doing the same work at once. When it fails on a first process, every
        process raises (the others a PeerError naming ``what``), none waits for ever."""
        if self.size == 1:
            return work()
        # The wait has a group of its own: under the process group's TIMEOUT, a scan of more
        # than an hour timed the others out.
        waiting = dist.new_group(backend="gloo", timeout=LEADER_TIMEOUT)
        leader = self.local_rank == 0
        result: R | None = None
        failed: BaseException | None = None
        if leader:
            try:
                result = work()
            except Exception as err:  # raised below, once every process knows
                failed = err
        flag = torch.tensor([float(failed is not None)], dtype=torch.float64)
        dist.all_reduce(flag, group=waiting)
        dist.destroy_process_group(waiting)
        if flag.item():
            if failed is not None:
                raise failed
            raise PeerError(f"{what} failed on another process (its error is above)")
        return result if leader else work()

    def close(self, wait: bool = True) -> None:
        """Wait for every process (``wait``; not after an error, when some may never come),
        then destroy the group, before interpreter exit: gloo's worker threads must not
        outlive the objects they hold."""
        if self.owns_group and dist.is_initialized():
            try:
                if wait:
                    dist.barrier()
            finally:
                dist.destroy_process_group()
                self.owns_group = False


def launched_ranks() -> int:
    """WORLD_SIZE as set by torchrun (1 without it)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def env_rank() -> int:
    return int(os.environ.get("RANK", "0"))


def setup(device_name: str) -> tuple[World, torch.device]:
    """Join the process group torchrun prepared (if any) and pick this process's device:
    with CUDA, process LOCAL_RANK of a node takes cuda:LOCAL_RANK."""
    size = launched_ranks()
    device = resolve_device(device_name)
    if size == 1 and not dist.is_initialized():
        return World(), device
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if device_name not in ("auto", "cuda"):
            raise ConfigError(f"train.device={device_name!r}: with several processes each "
                              f"takes cuda:LOCAL_RANK; use train.device=cuda or auto")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    owns = False
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=TIMEOUT)
        owns = True
    return World(dist.get_rank(), dist.get_world_size(), local_rank, owns), device


def _collective_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
