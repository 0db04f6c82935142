"""Decoupled knowledge distillation (Zhao et al., CVPR 2022), per sample.

DKD rewrites Hinton's KD loss for one sample with label ``y`` (their eq. 1–7) as::

    KD = TCKD + (1 - p_y^T) · NCKD

* **TCKD** (target-class KD): KL between the *binary* distributions
  ``b = (p_y, 1 - p_y)`` of teacher and student (eq. 2–3, "how confident is the prediction of
  the label").
* **NCKD** (non-target-class KD): KL between the distributions over the ``C - 1`` *non-target*
  classes renormalised among themselves, ``p̂_i = p_i / (1 - p_y)`` for ``i ≠ y`` (eq. 4–5,
  "the dark knowledge among the wrong classes").

and then decouples the two weights (eq. 7)::

    DKD = α · TCKD + β · NCKD

Everything is at temperature ``T`` and, as in the authors' code, multiplied by ``T²``.

Numerics: every log-probability is a difference of two ``logsumexp`` over finite logits, never
``log`` of a probability, so no ``log(0)`` appears even for ``±1e4`` logits. The non-target
distribution is formed by *removing* the target column (boolean mask, ``(N, C-1)``), not by
subtracting a large constant from it; for ``C = 2`` the non-target distribution has one class,
so NCKD is exactly 0 (the "NCKD diverges for two classes" pitfall of large-constant masking
cannot occur).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from beyondkd.losses.precision import full_precision


def _as_column(temperature: float | Tensor, like: Tensor) -> Tensor:
    """``T`` as a 0-dim tensor or an ``(N, 1)`` column (per-sample temperatures)."""
    t = torch.as_tensor(temperature, dtype=like.dtype, device=like.device)
    if t.dim() == 2:
        t = t.reshape(-1)
    return t.unsqueeze(1) if t.dim() == 1 else t


def _split_log_probs(logits: Tensor, target: Tensor, temperature: Tensor) -> tuple[Tensor, Tensor]:
    """Binary target log-probabilities and non-target log-probabilities at temperature ``T``.

    Args:
        logits: ``(N, C)`` logits, ``C >= 2``.
        target: ``(N,)`` labels.
        temperature: 0-dim or ``(N, 1)``.

    Returns:
        ``(log_b, log_nt)``: ``(N, 2)`` with ``log p_y`` and ``log(1 - p_y)`` (eq. 2), and
        ``(N, C-1)`` with ``log p̂_i`` over the non-target classes in their original order (eq. 4).
    """
    z = logits / temperature
    n, c = z.shape
    is_target = F.one_hot(target.long(), c).bool()
    z_target = z.gather(1, target.long().view(-1, 1))  # (N, 1)
    z_other = z[~is_target].view(n, c - 1)  # (N, C-1): the target column removed
    lse_all = torch.logsumexp(z, dim=1, keepdim=True)
    lse_other = torch.logsumexp(z_other, dim=1, keepdim=True)
    log_b = torch.cat([z_target - lse_all, lse_other - lse_all], dim=1)
    log_nt = z_other - lse_other
    return log_b, log_nt


def _kl_rows(log_p_teacher: Tensor, log_p_student: Tensor) -> Tensor:
    """``Σ_c p_t,c (log p_t,c − log p_s,c)`` per row, from log-probabilities (``(N,)``)."""
    return F.kl_div(log_p_student, log_p_teacher, reduction="none", log_target=True).sum(dim=1)


@full_precision
def dkd_parts(
    student_logits: Tensor,
    teacher_logits: Tensor,
    target: Tensor,
    temperature: float | Tensor = 4.0,
) -> tuple[Tensor, Tensor]:
    """TCKD and NCKD per sample, each multiplied by ``T²`` (DKD eq. 3 and 5).

    Args:
        student_logits: ``(N, C)``, ``C >= 2``.
        teacher_logits: ``(N, C)``; detached here (the teacher never receives gradient).
        target: ``(N,)`` integer labels.
        temperature: ``T > 0``: a float, a 0-dim tensor, or ``(N,)`` / ``(N, 1)`` per-sample
            temperatures (CTKD); gradient flows into a tensor temperature.

    Returns:
        ``(tckd, nckd)``, two ``(N,)`` tensors, each ``>= 0`` up to rounding, finite for finite
        logits, and 0 when the student's logits equal the teacher's.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} and teacher logits {tuple(teacher_logits.shape)} differ")
    if student_logits.shape[1] < 2:
        raise ValueError("DKD needs at least 2 classes")
    t = _as_column(temperature, student_logits)
    log_b_s, log_nt_s = _split_log_probs(student_logits, target, t)
    log_b_t, log_nt_t = _split_log_probs(teacher_logits.detach(), target, t)
    scale = (t * t).reshape(-1)
    tckd = _kl_rows(log_b_t, log_b_s) * scale
    nckd = _kl_rows(log_nt_t, log_nt_s) * scale
    return tckd, nckd


@full_precision
def dkd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    target: Tensor,
    alpha: float = 1.0,
    beta: float = 8.0,
    temperature: float | Tensor = 4.0,
) -> Tensor:
    """Per-sample DKD loss ``T² (α · TCKD + β · NCKD)`` (DKD eq. 7).

    Args:
        student_logits: ``(N, C)``.
        teacher_logits: ``(N, C)``; no gradient flows into them.
        target: ``(N,)`` labels.
        alpha: weight of TCKD (field default 1).
        beta: weight of NCKD (field default 8; 6 or 2 for some CIFAR-100 pairs).
        temperature: as in :func:`dkd_parts`.

    Returns:
        ``(N,)`` tensor (no reduction).
    """
    tckd, nckd = dkd_parts(student_logits, teacher_logits, target, temperature)
    return alpha * tckd + beta * nckd


def warmup_factor(epoch: int, warmup_epochs: float) -> float:
    """DKD's linear warm-up of the distillation weight: ``min((epoch + 1) / E_w, 1)``.

    Args:
        epoch: 0-based epoch (the first epoch already gets ``1 / E_w``, as the authors' code
            does with its 1-based epoch counter).
        warmup_epochs: ``E_w``; ``<= 0`` means no warm-up (factor 1).
    """
    if warmup_epochs <= 0:
        return 1.0
    return min((epoch + 1) / warmup_epochs, 1.0)
