"""Numerically safe building blocks shared by the feature losses.

Feature tensors can be large (``±1e4`` after an un-normalised layer), constant (a dead ReLU
map) or come in a batch of one; a plain ``x / x.norm()`` or ``sqrt(d²)`` then gives ``inf``,
``NaN`` or a ``NaN`` gradient. These helpers keep every value and gradient finite.
"""

from __future__ import annotations

import torch
from torch import Tensor

#: floor of norms and of squared distances; small enough not to change ordinary values
EPS = 1e-12


def safe_normalize(x: Tensor, dim: int = -1, eps: float = EPS) -> Tensor:
    """``x / max(‖x‖₂, eps)`` along ``dim`` (a zero vector stays zero, gradient finite).

    The norm is computed on ``x`` scaled by its largest absolute value, so squares of
    ``1e4``-sized entries never overflow in half precision or float32 sums.
    """
    scale = x.detach().abs().amax(dim=dim, keepdim=True).clamp_min(eps)
    y = x / scale
    return y / y.norm(dim=dim, keepdim=True).clamp_min(eps)


def safe_sqrt(x: Tensor, eps: float = EPS) -> Tensor:
    """``sqrt(max(x, eps))``: the gradient of ``sqrt`` at 0 would be infinite."""
    return x.clamp_min(eps).sqrt()


def pairwise_distances(x: Tensor, eps: float = EPS) -> Tensor:
    """Euclidean distances between the rows of ``x`` ``(N, D)`` -> ``(N, N)``, zero diagonal.

    Computed from explicit differences (not ``‖a‖² + ‖b‖² − 2ab``, which cancels badly for
    large, close vectors); the diagonal is exactly 0 and carries no gradient.
    """
    diff = x.unsqueeze(1) - x.unsqueeze(0)
    d = safe_sqrt(diff.pow(2).sum(-1), eps)
    eye = torch.eye(x.shape[0], dtype=torch.bool, device=x.device)
    return d.masked_fill(eye, 0.0)


def safe_div(num: Tensor, den: Tensor, eps: float = EPS) -> Tensor:
    """``num / max(den, eps)`` for non-negative denominators."""
    return num / den.clamp_min(eps)
