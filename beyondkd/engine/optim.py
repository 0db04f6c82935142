"""Optimizers and per-iteration learning-rate schedules built from config."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from beyondkd.config import OptimizerConfig, SchedulerConfig


def build_optimizer(params: list[nn.Parameter], cfg: OptimizerConfig, device: torch.device) -> torch.optim.Optimizer:
    """SGD (momentum, optional Nesterov), Adam or AdamW; fused kernels on CUDA where offered."""
    extra = {"fused": True} if device.type == "cuda" else {}
    if cfg.name == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
            nesterov=cfg.nesterov and cfg.momentum > 0, **extra,
        )
    opt_cls = torch.optim.AdamW if cfg.name == "adamw" else torch.optim.Adam
    return opt_cls(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay, **extra)


def clip_gradients_per_optimizer(optimizers: list[torch.optim.Optimizer], max_norm: float) -> list[torch.Tensor]:
    """Clip the gradient norm of each optimizer's parameters to ``max_norm`` on its own.

    Each parameter group of a distiller (the student; SLKD's SL-teachers) is a separate network
    with its own optimizer, so each is clipped separately: a large gradient in one group never
    shrinks another group's step. With one optimizer this is ``clip_grad_norm_`` of all
    trainable parameters.

    Args:
        optimizers: the optimizers that step in this iteration (gradients already unscaled).
        max_norm: the largest total L2 norm allowed per optimizer, ``> 0``.

    Returns:
        The norm of each optimizer's gradients before clipping, in the given order.
    """
    norms = []
    for opt in optimizers:
        params = [p for group in opt.param_groups for p in group["params"] if p.grad is not None]
        norms.append(torch.nn.utils.clip_grad_norm_(params, max_norm))
    return norms


def lr_factor(step: int, steps_per_epoch: int, total_steps: int, cfg: SchedulerConfig, base_lr: float) -> float:
    """Multiplier of the base LR at iteration ``step`` (0-based).

    Linear warm-up over ``warmup_epochs``, then ``cosine`` (to ``min_lr``), ``multistep``
    (× ``gamma`` at each epoch milestone) or ``constant``.
    """
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    if step < warmup:
        return (step + 1) / warmup
    if cfg.name == "constant":
        return 1.0
    if cfg.name == "multistep":
        epoch = step // max(steps_per_epoch, 1)
        return cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
    span = max(total_steps - warmup, 1)
    t = min((step - warmup) / span, 1.0)
    floor = cfg.min_lr / base_lr if base_lr > 0 else 0.0
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t))


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: SchedulerConfig, steps_per_epoch: int, total_steps: int, start_step: int = 0
) -> LambdaLR:
    """A ``LambdaLR`` stepped once per iteration.

    ``start_step`` delays the schedule: iteration ``start_step`` of the run is its step 0 (a
    group trained only in a later phase); ``total_steps`` is the length of the schedule itself.
    """
    base_lr = optimizer.param_groups[0]["lr"]
    return LambdaLR(optimizer, lambda step: lr_factor(max(step - start_step, 0), steps_per_epoch, total_steps, cfg, base_lr))
