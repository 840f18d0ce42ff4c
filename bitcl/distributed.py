"""The process group seen by the engine and the strategies.

In a single process every collective is the identity, so one code path serves
one process and ``torchrun``. Under ``torchrun`` (``WORLD_SIZE > 1``) the group
is initialised with gloo on CPU and nccl on CUDA, the training forward runs
through ``DistributedDataParallel``, and everything else (evaluation counts,
importance sums, curvature) is all-reduced explicitly by the engine and the
strategies, so every rank holds identical state.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from bitcl.errors import ConfigError


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    owns_group: bool = False  # this context initialised the process group, so it also tears it down

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over ranks, in place (identity in one process)."""
        if self.enabled:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def shutdown(self, clean: bool = True) -> None:
        """Tear down the process group this context created (no-op otherwise).

        Without it gloo's worker threads are still joinable when the interpreter exits, and a rank
        can die with ``terminate called without an active exception`` (SIGABRT) after a
        successful run. ``clean``: all ranks reached the end, so wait for each other first.
        """
        if not (self.owns_group and dist.is_initialized()):
            return
        try:
            if clean:
                dist.barrier()
        finally:
            dist.destroy_process_group()
            self.owns_group = False

    def gather_ints(self, value: int) -> list[int]:
        """Every rank's ``value`` (a 63-bit int), in rank order."""
        if not self.enabled:
            return [value]
        mine = torch.tensor([value], dtype=torch.int64)
        every = [torch.zeros(1, dtype=torch.int64) for _ in range(self.world_size)]
        dist.all_gather(every, mine)
        return [int(t) for t in every]

    def require_agreement(self, value: int, what: str) -> None:
        """Stop on every rank with a clear error unless all ranks hold the same ``value``."""
        values = self.gather_ints(value)
        if len(set(values)) > 1:
            odd = [r for r, v in enumerate(values) if v != values[0]]
            raise ConfigError(f"ranks disagree on {what} (ranks {odd} differ from rank 0)")


def digest(*tensors_or_bytes) -> int:
    """A 63-bit hash of tensors' bytes (or of bytes), equal on ranks holding equal data."""
    h = hashlib.sha256()
    for item in tensors_or_bytes:
        if isinstance(item, torch.Tensor):
            h.update(item.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        else:
            h.update(item)
    return int.from_bytes(h.digest()[:8], "little") & (2**63 - 1)


def init_from_env(device: str) -> DistContext:
    """Join the process group that ``torchrun`` describes in the environment, if any."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    owns = not dist.is_initialized()
    if owns:
        # torchrun's rendezvous store outlives a restart (--max-restarts): prefix every key with
        # the attempt, so a restarted group never reads the dead attempt's gloo addresses
        store, rank, world = next(dist.rendezvous("env://"))
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        dist.init_process_group(backend="nccl" if device == "cuda" else "gloo",
                                store=dist.PrefixStore(f"bitcl/attempt-{attempt}", store), rank=rank, world_size=world)
    return DistContext(dist.get_rank(), dist.get_world_size(), owns_group=owns)
