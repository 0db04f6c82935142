"""Curriculum temperature (CTKD, Li et al., AAAI 2023): the pure pieces.

CTKD learns the distillation temperature *adversarially*: the student minimises the KD loss,
the temperature module maximises it. The sign flip is a gradient-reversal layer (GRL) between
the temperature module and the loss (CTKD eq. 6–7): identity forward, gradient multiplied by
``-λ`` backward. The curriculum is the growth of ``λ`` with a cosine schedule (CTKD eq. 8)::

    λ_n = λ_min + ½ (λ_max − λ_min) (1 + cos(π (1 + min(n, E) / E)))

which rises from ``λ_min`` at ``n = 0`` to ``λ_max`` at ``n = E`` (``cos_epochs``) and stays
there: an easy task (small adversarial strength) first, a harder one later. The distillers pass
the 1-based epoch number ``n``, as the authors' code does.

The temperature is kept in ``(t_min, t_max)`` by a sigmoid range map of an unconstrained value
``θ`` (as the authors' code does with ``t_start + t_end · sigmoid(θ)``):
``T = t_min + (t_max − t_min) · sigmoid(θ)``. A sigmoid of a finite number is finite, so ``T`` is
never NaN, 0 or negative, whatever ``θ`` does.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from beyondkd.losses.precision import full_precision


class _GradReverse(torch.autograd.Function):
    """Identity forward; backward multiplies the incoming gradient by ``-λ``."""

    @staticmethod
    def forward(ctx, x: Tensor, lambda_: float) -> Tensor:  # type: ignore[override]
        ctx.lambda_ = float(lambda_)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return -ctx.lambda_ * grad, None


def grad_reverse(x: Tensor, lambda_: float) -> Tensor:
    """Gradient-reversal layer (CTKD eq. 7): ``x`` forward, ``-λ · ∂L/∂x`` backward.

    Args:
        x: any tensor.
        lambda_: reversal strength ``λ >= 0`` (0 blocks the gradient).
    """
    return _GradReverse.apply(x, lambda_)


def cosine_lambda(epoch: float, cos_epochs: float, lambda_min: float = 0.0, lambda_max: float = 1.0) -> float:
    """The curriculum's adversarial strength ``λ`` at ``epoch`` (CTKD eq. 8).

    Args:
        epoch: the epoch number ``n`` (fractions allowed; the CTKD distillers pass the 1-based
            epoch, as the authors' code).
        cos_epochs: ``E``, epochs over which ``λ`` rises; ``<= 0`` gives ``λ_max`` at once.
        lambda_min, lambda_max: the range of ``λ``.

    Returns:
        ``λ ∈ [λ_min, λ_max]``, ``λ_min`` at epoch 0, ``λ_max`` from epoch ``E`` on, monotone.
    """
    if cos_epochs <= 0:
        return float(lambda_max)
    x = min(max(epoch, 0.0), cos_epochs) / cos_epochs
    return float(lambda_min + 0.5 * (lambda_max - lambda_min) * (1.0 + math.cos(math.pi * (1.0 + x))))


@full_precision
def bounded_temperature(theta: Tensor, t_min: float, t_max: float) -> Tensor:
    """``T = t_min + (t_max − t_min) · sigmoid(θ)``, clamped to ``[t_min, t_max]`` (never NaN for
    finite ``θ``; ``±inf`` maps to the bounds)."""
    t = t_min + (t_max - t_min) * torch.sigmoid(theta)
    return t.clamp(t_min, t_max)


def temperature_to_theta(temperature: float, t_min: float, t_max: float) -> float:
    """Inverse of :func:`bounded_temperature` for ``t_min < temperature < t_max``."""
    if not t_min < temperature < t_max:
        raise ValueError(f"initial temperature {temperature} must lie strictly inside ({t_min}, {t_max})")
    u = (temperature - t_min) / (t_max - t_min)
    return math.log(u / (1.0 - u))
