"""Multi-process training with ``torchrun`` (PyTorch distributed, one process per device).

``beyondkd distill`` / ``train-teacher`` / ``detect ...`` started under ``torchrun`` read the
``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` variables torchrun sets, join the process group
(``nccl`` on CUDA, ``gloo`` on CPU) and train data-parallel:

* every process checks the run folder first (already a run there? something to resume? the
  same settings?), before joining the group, so a refused start is one line on every process;
* every process builds the same models from the same seed;
* the trainable part of the method (student, connectors, SLKD's SL-teachers; never the frozen
  teacher) is wrapped in ``torch.nn.parallel.DistributedDataParallel``: gradients are averaged
  in buckets while the backward runs (see :func:`wrap_replicated`);
* each epoch's sample order is the same permutation on all ranks, and rank ``r`` takes every
  ``K``-th sample starting at ``r`` (trimmed so every rank runs the same number of steps), so a
  run resumes mid-epoch exactly (:func:`beyondkd.data.loaders.shard`);
* floating-point buffers of the replicated modules (BatchNorm running statistics) are averaged
  over the ranks before every evaluation and checkpoint (:func:`average_buffers`), so the
  recorded validation accuracy is the accuracy of the saved model;
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


def leave_process_group() -> None:
    """Destroy the process group if this process joined one (before exit: a live group with
    DistributedDataParallel's communication threads aborts the interpreter's shutdown)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class ReplicatedStep(nn.Module):
    """The trainable children of a method as one module whose ``forward`` is its training step.

    ``DistributedDataParallel`` needs the computation to run through its ``forward`` and reduces
    the gradients of exactly the parameters of the module it wraps; this module holds the
    method's :meth:`~beyondkd.core.Trainable.replicated_modules` (the frozen teacher is not one
    of them) and calls the method's ``training_step``.
    """

    def __init__(self, method: nn.Module) -> None:
        super().__init__()
        for name, child in method.replicated_modules().items():
            self.add_module(name, child)
        object.__setattr__(self, "_method", method)  # not a child: the teacher stays outside

    def forward(self, batch: Any, progress: Any) -> Any:
        return self._method.training_step(batch, progress)


def wrap_replicated(method: nn.Module, env: DistEnv, device: torch.device) -> nn.Module:
    """``DistributedDataParallel`` around the method's trainable children.

    Buffers are synchronised once, at construction, and not at each forward;
    :func:`average_buffers` synchronises BatchNorm statistics before evaluations and checkpoints. ``find_unused_parameters`` is set only for methods that
    declare steps leaving some trainable parameter without gradient (SLKD's sequential phases).
    """
    from torch.nn.parallel import DistributedDataParallel

    step = ReplicatedStep(method)
    replicated = {id(p) for p in step.parameters()}
    outside = [n for n, p in method.named_parameters() if p.requires_grad and id(p) not in replicated]
    if outside:
        raise RuntimeError(f"method '{method.name}' trains parameters outside its replicated modules: {outside[:3]}")
    return DistributedDataParallel(
        step,
        device_ids=[device.index if device.index is not None else env.local_rank] if device.type == "cuda" else None,
        forward_sync_buffers=False,
        find_unused_parameters=bool(method.find_unused_parameters),
    )


@torch.no_grad()
def average_buffers(module: nn.Module, env: DistEnv) -> None:
    """Average ``module``'s floating-point buffers over the ranks (one all-reduce per dtype).

    BatchNorm running statistics are exponential averages of each rank's own batches; after
    this every rank (and so the checkpoint rank 0 writes) holds the same statistics. Integer
    buffers (``num_batches_tracked``) advance identically on every rank and are left as they are.
    """
    if not env.enabled:
        return
    by_dtype: dict[torch.dtype, list[Tensor]] = {}
    for b in module.buffers():
        if b.is_floating_point():
            by_dtype.setdefault(b.dtype, []).append(b)
    for bufs in by_dtype.values():
        flat = torch.cat([b.reshape(-1) for b in bufs])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= env.world_size
        offset = 0
        for b in bufs:
            n = b.numel()
            b.copy_(flat[offset : offset + n].view_as(b))
            offset += n


def all_gather_rows(t: Tensor) -> Tensor:
    """Concatenate ``t`` (same shape on every rank) along dim 0 over all ranks, without gradient.

    Identity outside a multi-process run. Methods with per-sample state (CRD's memory banks)
    receive it as ``DistillerContext.gather_rows`` so every rank applies every rank's update and
    the copies stay identical.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return t
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t.detach().contiguous())
    return torch.cat(parts, dim=0)
