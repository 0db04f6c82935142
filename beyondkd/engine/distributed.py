"""Multi-process training with ``torchrun`` (PyTorch distributed, one process per device).

``beyondkd distill`` / ``train-teacher`` started under ``torchrun --nproc_per_node=K`` read the
``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` variables torchrun sets, join the process group
(``nccl`` on CUDA, ``gloo`` on CPU) and train data-parallel:

* every process builds the same models from the same seed;
* each epoch's sample order is the same permutation on all ranks, and rank ``r`` takes every
  ``K``-th sample starting at ``r`` (trimmed so every rank runs the same number of steps);
* after each backward, gradients of every trainable parameter (student, connectors, extra
  networks) are averaged across ranks in one flattened all-reduce per dtype, so the
  optimizers step identically everywhere;
* evaluation shards the validation set without padding and all-reduces the sums, so every
  validation sample is counted exactly once;
* only rank 0 writes metrics, TensorBoard events and checkpoints.

``data.batch_size`` is per process: the effective batch is ``batch_size × K``. We do not
rescale the learning rate silently; the usual rule (Goyal et al. 2017) is to scale it linearly
with the effective batch, e.g. ``lr × K`` when keeping the per-process batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn


def world_size_from_env() -> int:
    """The number of processes torchrun started (1 outside torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


@dataclass(frozen=True)
class DistEnv:
    """Distributed context (single process by default). Only rank 0 writes files."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_env(cls, device_type: str = "cpu") -> "DistEnv":
        """Join the process group torchrun describes in the environment (no-op when absent)."""
        world = world_size_from_env()
        if world <= 1:
            return cls()
        rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        if not dist.is_initialized():
            backend = "nccl" if device_type == "cuda" else "gloo"
            if device_type == "cuda":
                torch.cuda.set_device(local)
            dist.init_process_group(backend=backend)
        return cls(rank, world, local)

    def all_reduce_sum(self, t: Tensor) -> Tensor:
        """Sum ``t`` over ranks (in place; returns it). Identity for one process."""
        if self.enabled:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def all_reduce_min(self, t: Tensor) -> Tensor:
        """Minimum of ``t`` over ranks (in place; returns it). Identity for one process."""
        if self.enabled:
            dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return t

    def all_gather_objects(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` (picklable), in rank order; ``[obj]`` for one process."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def all_true(self, flag: bool, device: torch.device) -> bool:
        """True only if ``flag`` is true on every rank."""
        if not self.enabled:
            return flag
        t = torch.tensor([0.0 if flag else 1.0], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return bool(t.item() == 0)

    def average_gradients(self, params: list[nn.Parameter]) -> None:
        """Average the gradients of ``params`` across ranks (one all-reduce per dtype)."""
        if not self.enabled:
            return
        by_dtype: dict[torch.dtype, list[Tensor]] = {}
        for p in params:
            if p.grad is not None:
                by_dtype.setdefault(p.grad.dtype, []).append(p.grad)
        for grads in by_dtype.values():
            flat = torch.cat([g.reshape(-1) for g in grads])
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            flat /= self.world_size
            offset = 0
            for g in grads:
                n = g.numel()
                g.copy_(flat[offset : offset + n].view_as(g))
                offset += n

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def shutdown(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


def all_gather_rows(t: Tensor) -> Tensor:
    """Concatenate ``t`` (same shape on every rank) along dim 0 over all ranks, without gradient.

    Identity outside a multi-process run. Methods with per-sample state (CRD's memory banks)
    use it so every rank applies every rank's update and the copies stay identical.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return t
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t.detach().contiguous())
    return torch.cat(parts, dim=0)

