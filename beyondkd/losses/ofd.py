"""Overhaul of feature distillation (Heo et al., ICCV 2019), per sample.

* Teacher transform (§3.1, eq. 2): the *margin ReLU* ``σ_m(x) = max(x, m)`` applied to the
  teacher's pre-ReLU feature, with a per-channel margin ``m = E[x | x < 0]``. Assuming the
  pre-ReLU response is Gaussian with the mean ``β`` and standard deviation ``|γ|`` of the batch
  norm before it, ``m = β − |γ| φ(β/|γ|) / Φ(−β/|γ|)`` (the mean of a Gaussian truncated
  above at 0); when ``Φ(−β/|γ|)`` is tiny (the ReLU almost never clips) the authors use
  ``m = −3|γ|``.
* Distance (§3.3, eq. 4): the *partial L2*
  ``d_p(T, S) = Σ_i 0 if S_i ≤ T_i ≤ 0 else (T_i − S_i)²`` — no penalty where the teacher is
  negative (clipped by the ReLU) and the student is already below it.

The per-sample loss is the sum over channels and positions, as in the paper.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from beyondkd.losses.precision import full_precision

#: below this probability of a negative response the Gaussian margin is unreliable
_MIN_NEGATIVE_PROB = 1e-3


def margin_from_bn(bn_weight: Tensor, bn_bias: Tensor) -> Tensor:
    """Per-channel margin ``E[x | x < 0]`` for ``x ~ N(bias, weight²)`` ``(C,)`` (eq. 2).

    Args:
        bn_weight: ``(C,)`` the batch norm's scale ``γ`` (std of its output).
        bn_bias: ``(C,)`` its shift ``β`` (mean of its output).

    Returns:
        ``(C,)`` negative margins (``−3|γ|`` where ``Φ(−β/|γ|) ≤ 1e-3``).
    """
    s = bn_weight.detach().double().abs().clamp_min(1e-12)
    m = bn_bias.detach().double()
    z = m / s
    neg_prob = torch.special.ndtr(-z)
    pdf = torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    margin = m - s * pdf / neg_prob.clamp_min(1e-300)
    margin = torch.where(neg_prob > _MIN_NEGATIVE_PROB, margin, -3.0 * s)
    return margin.to(bn_weight.dtype)


@full_precision
def margin_relu(teacher_preact: Tensor, margin: Tensor) -> Tensor:
    """``max(x, m_c)`` per channel on ``(N, C, H, W)`` (or ``(N, C)``) with ``margin`` ``(C,)``."""
    shape = (1, -1) + (1,) * (teacher_preact.dim() - 2)
    return torch.maximum(teacher_preact, margin.to(teacher_preact.dtype).view(shape))


@full_precision
def partial_l2(student: Tensor, teacher: Tensor) -> Tensor:
    """Per-sample partial L2 distance (eq. 4), summed over all non-batch dimensions.

    Args:
        student: ``(N, ...)`` transformed student pre-ReLU features.
        teacher: same shape, the margin-ReLU'd teacher features; no gradient flows into it.

    Returns:
        ``(N,)``; entries where ``S ≤ T ≤ 0`` contribute nothing.
    """
    s, t = student, teacher.detach()
    skip = (s <= t) & (t <= 0)
    return ((t - s).pow(2) * (~skip)).flatten(1).sum(1)


@full_precision
def ofd_loss(student: Tensor, teacher_preact: Tensor, margin: Tensor) -> Tensor:
    """Partial L2 between ``student`` and ``σ_m(teacher_preact)``, per sample ``(N,)``."""
    return partial_l2(student, margin_relu(teacher_preact.detach(), margin))
