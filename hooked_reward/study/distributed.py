"""Running one study in several processes with torch.distributed (launched by `torchrun` or `accelerate launch`).

`init_distributed()` reads the launcher's environment (`WORLD_SIZE`, `RANK`, `LOCAL_RANK`, `MASTER_ADDR`, ...):
without it (or with `WORLD_SIZE=1`) it returns a one-process context and starts nothing. Under a launcher each
process joins the default process group — `nccl` when CUDA is available (each rank on `cuda:LOCAL_RANK`), `gloo`
on CPU — and gets the device its model should live on.

Work is split deterministically: `shard(items)` is `items[rank::world_size]` (round-robin, so that pairs sorted
by length spread evenly). The collectives used by studies are object collectives (`broadcast`, `gather`), which
work on both backends and do not need a shared filesystem.

The process group's timeout defaults to 7 days (`HOOKED_REWARD_DIST_TIMEOUT` seconds to change it): ranks wait at
the final barrier for the slowest shard, which for a long study can be hours.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar, cast

import torch
import torch.distributed as dist

from hooked_reward.devices import check_device

__all__ = ["DistContext", "init_distributed", "launched"]

T = TypeVar("T")
DEFAULT_TIMEOUT_S = 7 * 24 * 3600


def launched() -> bool:
    """Whether this process was started by a distributed launcher with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@dataclass
class DistContext:
    """Where this process stands in the run: `rank` of `world_size`, `local_rank` on its machine, the `device`
    its model belongs on, and the `backend` (None when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.backend is not None and self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, items: Sequence[T]) -> list[T]:
        """This rank's share of `items`: every `world_size`-th item from position `rank` (all items alone)."""
        return list(items[self.rank :: self.world_size])

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def broadcast(self, obj: T) -> T:
        """Rank 0's `obj` on every rank (picklable objects)."""
        if not self.enabled:
            return obj
        box: list[T | None] = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0, device=self._collective_device())
        return cast(T, box[0])  # every rank's slot now holds rank 0's object

    def gather(self, obj: T) -> list[T] | None:
        """Every rank's `obj`, in rank order, on rank 0 (None elsewhere)."""
        if not self.enabled:
            return [obj]
        out: list[Any] | None = [None] * self.world_size if self.is_main else None
        dist.gather_object(obj, out, dst=0)
        return out

    def _collective_device(self) -> torch.device | None:
        return self.device if self.backend == "nccl" else None

    def close(self) -> None:
        """Leave the process group (no-op when not distributed)."""
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()
            self.backend = None


def init_distributed(device: str | torch.device | None = None) -> DistContext:
    """Join the launcher's process group, or return a one-process context.

    `device`: where the model goes; by default `cuda:LOCAL_RANK` when CUDA is available, else the CPU. A CPU
    device uses `gloo`, a CUDA device `nccl` (`HOOKED_REWARD_DIST_BACKEND` overrides).
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        dev = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    else:
        check_device(device)  # an unknown device, or CUDA on a CPU-only torch: one line, before anything runs
        dev = torch.device(device)
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device(f"cuda:{local_rank}")
    if world_size <= 1:
        return DistContext(device=dev)
    backend = os.environ.get("HOOKED_REWARD_DIST_BACKEND") or ("nccl" if dev.type == "cuda" else "gloo")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        timeout = timedelta(seconds=float(os.environ.get("HOOKED_REWARD_DIST_TIMEOUT", DEFAULT_TIMEOUT_S)))
        dist.init_process_group(backend=backend, timeout=timeout)
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=dev, backend=backend)
