"""Hinton et al. (2015) knowledge distillation, per sample.

``KD(z_s, z_t) = T² · KL(softmax(z_t / T) ‖ softmax(z_s / T))`` (BTKD eq. 1, with the usual
``T²`` factor that keeps gradient magnitudes comparable across temperatures).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from beyondkd.losses.precision import full_precision


@full_precision
def kd_kl(student_logits: Tensor, teacher_logits: Tensor, temperature: float | Tensor = 4.0) -> Tensor:
    """Per-sample temperature-scaled KL divergence from teacher to student.

    Args:
        student_logits: ``(N, C)``.
        teacher_logits: ``(N, C)``; gradients do not flow into them.
        temperature: ``T > 0``, a float, a 0-dim tensor or an ``(N,)`` / ``(N, 1)`` tensor of
            per-sample temperatures (CTKD); the factor ``T²`` is applied per sample.

    Returns:
        ``(N,)`` tensor, ``T² · Σ_c p_t,c (log p_t,c − log p_s,c)`` (no reduction), always ≥ 0 up
        to rounding, finite for finite logits.
    """
    t = torch.as_tensor(temperature, dtype=student_logits.dtype, device=student_logits.device)
    if t.dim() == 1:
        t = t.unsqueeze(1)
    log_p_s = F.log_softmax(student_logits / t, dim=1)
    log_p_t = F.log_softmax(teacher_logits.detach() / t, dim=1)
    kl = F.kl_div(log_p_s, log_p_t, reduction="none", log_target=True).sum(dim=1)
    return kl * (t.reshape(-1) ** 2 if t.dim() else t**2)


@full_precision
def cross_entropy(logits: Tensor, target: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Per-sample cross-entropy ``(N,)`` (``reduction="none"`` so masks compose)."""
    return F.cross_entropy(logits, target, reduction="none", label_smoothing=label_smoothing)
