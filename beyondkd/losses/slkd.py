"""SLKD (Liu, Li & Cheng, "Improving Knowledge Distillation via Transferring Learning Ability").

Pure per-sample functions of the method's equations; shapes use ``N`` rows and ``C`` classes.

* eq. 1, 3, 4, 5 share one form, the *teacher–student loss* of a learner ``L`` supervised by a
  guide ``G`` at temperature ``τ``::

      L_GL = α · CE(y, L(x)) + (1 − α) · KD(G(x)/τ, L(x)/τ)

  with ``KD`` the temperature-scaled KL divergence of :func:`beyondkd.losses.kd.kd_kl` (it
  carries the usual ``τ²`` factor; the paper writes plain KL at ``/τ`` and uses the
  same weights as the KD it compares against). eq. 1 is teacher → student, eq. 3 fused
  SL-teacher → student, eq. 4–5 teacher → each self-learning (SL-) teacher.
  :func:`teacher_student_loss`.
* eq. 6 fuses the SL-teachers' outputs ``SL-T = ρ·SL-T₁ + (1 − ρ)·SL-T₂`` (for ``k`` teachers a
  weight vector summing to 1). :func:`fuse_outputs`, with the fusion done on logits (the
  equation, whose result eq. 3 then divides by ``τ``) or on the probabilities at ``τ`` (the
  prose, "output probability distributions be weighted fused").
* eq. 7 the student's total ``λ·L_TS + η·L_SL-TS``. :func:`slkd_student_loss`. CE is inside
  both terms, so the student's CE weight is ``(λ + η)·α``; there is no separate CE term.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from beyondkd.losses.kd import cross_entropy, kd_kl
from beyondkd.losses.precision import full_precision

Fusion = Literal["logits", "probs"]


def teacher_student_loss(
    learner_logits: Tensor, guide_logits: Tensor, targets: Tensor, alpha: float, temperature: float
) -> Tensor:
    """``α·CE(y, L) + (1 − α)·KD(G/τ, L/τ)`` per sample (SLKD eq. 1, 3, 4, 5).

    Args:
        learner_logits: ``(N, C)`` logits of the network being trained (student or SL-teacher).
        guide_logits: ``(N, C)`` logits of its supervisor (teacher or fused SL-teachers); no
            gradient flows into them.
        targets: ``(N,)`` labels.
        alpha: weight of CE, in ``[0, 1]``.
        temperature: ``τ > 0``.

    Returns:
        ``(N,)`` per-sample loss.
    """
    ce = cross_entropy(learner_logits, targets)
    kd = kd_kl(learner_logits, guide_logits, temperature)
    return alpha * ce + (1.0 - alpha) * kd


def fusion_weights(rho: float | Sequence[float] | None, k: int) -> tuple[float, ...]:
    """The weights of eq. 6 for ``k`` SL-teachers.

    Args:
        rho: ``None`` (uniform ``1/k``; the paper gives no value of ρ), a float ``ρ`` (``k = 2``:
            ``(ρ, 1 − ρ)``; ``k = 1``: must be 1) or ``k`` non-negative weights summing to 1.
        k: number of SL-teachers, ``≥ 1``.

    Returns:
        ``k`` weights in ``[0, 1]`` summing to 1.

    Raises:
        ValueError: a weight outside ``[0, 1]``, a vector of the wrong length or a sum ≠ 1.
    """
    if k < 1:
        raise ValueError(f"the number of SL-teachers must be >= 1, got {k}")
    if rho is None:
        return tuple(1.0 / k for _ in range(k))
    if isinstance(rho, (int, float)):
        rho = float(rho)
        if not 0.0 <= rho <= 1.0:
            raise ValueError(f"rho must be in [0, 1], got {rho}")
        if k == 2:
            return (rho, 1.0 - rho)
        if k == 1 and rho == 1.0:
            return (1.0,)
        raise ValueError(f"a single rho gives the weights (rho, 1 - rho) of 2 SL-teachers; with {k} give a list of {k} weights summing to 1")
    weights = tuple(float(w) for w in rho)
    if len(weights) != k:
        raise ValueError(f"rho has {len(weights)} weights but there are {k} SL-teachers")
    if any(not 0.0 <= w <= 1.0 for w in weights):
        raise ValueError(f"every rho weight must be in [0, 1], got {list(weights)}")
    if not math.isclose(sum(weights), 1.0, abs_tol=1e-6):
        raise ValueError(f"rho weights must sum to 1, got {sum(weights)}")
    return weights


@full_precision
def fuse_outputs(
    logits: Sequence[Tensor], weights: Sequence[float], fusion: Fusion = "logits", temperature: float = 4.0
) -> Tensor:
    """Weighted fusion of the SL-teachers' outputs (SLKD eq. 6), returned as logits.

    Args:
        logits: ``k`` tensors ``(N, C)``, the SL-teachers' logits.
        weights: ``k`` weights summing to 1 (:func:`fusion_weights`).
        fusion: ``"logits"``: ``Σ ρ_i z_i`` (eq. 6 as written; eq. 3 then softens it by ``τ``).
            ``"probs"``: the mixture ``p = Σ ρ_i softmax(z_i / τ)``, returned as the logits
            ``τ · log p`` whose softmax at ``τ`` is exactly ``p`` (computed with logsumexp).
        temperature: ``τ`` (used by ``"probs"`` only).

    Returns:
        ``(N, C)`` fused logits (in the inputs' dtype, at least float32, with gradient if the inputs have one; callers that
        supervise a student with them pass them to :func:`teacher_student_loss`, which detaches).
    """
    if len(logits) != len(weights) or not logits:
        raise ValueError(f"got {len(logits)} outputs and {len(weights)} weights")
    stacked = torch.stack(list(logits))  # (k, N, C)
    w = torch.tensor(list(weights), dtype=stacked.dtype, device=stacked.device).view(-1, 1, 1)
    if fusion == "logits":
        return (w * stacked).sum(dim=0)
    if fusion == "probs":
        log_p = torch.log_softmax(stacked / temperature, dim=2) + torch.log(w)  # log(ρ_i p_i); ρ_i = 0 -> -inf
        return temperature * torch.logsumexp(log_p, dim=0)
    raise ValueError(f"unknown fusion '{fusion}': choose logits or probs")


def slkd_student_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    fused_sl_logits: Tensor,
    targets: Tensor,
    alpha: float,
    temperature: float,
    lambda_ts: float = 1.0,
    eta: float = 3.0,
) -> Tensor:
    """The student's loss ``λ·L_TS + η·L_SL-TS`` per sample (SLKD eq. 7 with eq. 1 and 3).

    Args:
        student_logits: ``(N, C)``.
        teacher_logits: ``(N, C)`` frozen teacher.
        fused_sl_logits: ``(N, C)`` eq. 6 output (no gradient flows into it).
        targets: ``(N,)`` labels.
        alpha: CE weight inside each term.
        temperature: ``τ``.
        lambda_ts, eta: ``λ`` and ``η`` of eq. 7 (paper: 1 and 3).

    Returns:
        ``(N,)``, equal to ``(λ + η)·α·CE + λ·(1 − α)·KD_T + η·(1 − α)·KD_SL``.
    """
    l_ts = teacher_student_loss(student_logits, teacher_logits, targets, alpha, temperature)
    l_sl = teacher_student_loss(student_logits, fused_sl_logits, targets, alpha, temperature)
    return lambda_ts * l_ts + eta * l_sl
