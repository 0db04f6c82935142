"""Relational knowledge distillation (Park et al., CVPR 2019), per row of the batch.

On embeddings ``t_i`` (teacher) and ``s_i`` (student):

* distance-wise (eq. 4–5): ``ψ_D(t_i, t_j) = ‖t_i − t_j‖₂ / μ`` with ``μ`` the mean distance
  over pairs ``i ≠ j`` of the batch; ``L_D = Σ_{i,j} l_δ(ψ_D(t_i,t_j), ψ_D(s_i,s_j))``;
* angle-wise (eq. 6–7): ``ψ_A(t_i, t_j, t_k) = ⟨e_ij, e_kj⟩`` with
  ``e_ij = (t_i − t_j)/‖t_i − t_j‖``; ``L_A = Σ_{i,j,k} l_δ(ψ_A(t), ψ_A(s))``;

``l_δ`` is the Huber loss (δ = 1). As in the field's implementations, sums are means over all
entries (diagonals included) and the paper's weights are λ_D = 25, λ_A = 50.

RKD is *batch-relational*: we return per-row means (row ``i`` = pairs ``(i, ·)`` for the
distance term, triplets with vertex ``i`` for the angle term), so ``mean`` over rows equals
the mean over all pairs/triplets, which is the usual loss.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from beyondkd.losses._safe import EPS, pairwise_distances, safe_div, safe_normalize
from beyondkd.losses.precision import full_precision


def _scaled(x: Tensor) -> Tensor:
    """``x`` divided by one global constant (both ψ are scale-free; avoids overflow)."""
    return x / x.detach().abs().amax().clamp_min(EPS)


@full_precision
def distance_potential(embeddings: Tensor) -> Tensor:
    """``ψ_D`` ``(N, N)``: pairwise distances over their mean off-diagonal value (eq. 4)."""
    d = pairwise_distances(_scaled(embeddings.flatten(1)))
    n = d.shape[0]
    mean = d.sum() / max(n * (n - 1), 1)
    return safe_div(d, mean)


@full_precision
def angle_potential(embeddings: Tensor) -> Tensor:
    """``ψ_A`` ``(N, N, N)``: entry ``[j, i, k] = ⟨e(t_i − t_j), e(t_k − t_j)⟩`` (vertex ``j``, eq. 6)."""
    x = _scaled(embeddings.flatten(1))
    e = safe_normalize(x.unsqueeze(0) - x.unsqueeze(1), dim=2)  # e[j, i] = unit(t_i - t_j)
    return e @ e.transpose(1, 2)


@full_precision
def rkd_distance_loss(student_embeddings: Tensor, teacher_embeddings: Tensor) -> Tensor:
    """Per-row distance-wise RKD loss ``(N,)`` (Huber between ψ_D of student and teacher)."""
    ps = distance_potential(student_embeddings)
    pt = distance_potential(teacher_embeddings.detach())
    return F.smooth_l1_loss(ps, pt, reduction="none").mean(1)


@full_precision
def rkd_angle_loss(student_embeddings: Tensor, teacher_embeddings: Tensor) -> Tensor:
    """Per-row angle-wise RKD loss ``(N,)`` (Huber between ψ_A; row = the vertex sample)."""
    ps = angle_potential(student_embeddings)
    pt = angle_potential(teacher_embeddings.detach())
    return F.smooth_l1_loss(ps, pt, reduction="none").flatten(1).mean(1)


def rkd_loss(student_embeddings: Tensor, teacher_embeddings: Tensor, distance_weight: float = 25.0,
             angle_weight: float = 50.0) -> Tensor:
    """``λ_D · L_D + λ_A · L_A`` per row ``(N,)``; embeddings ``(N, D_s)`` and ``(N, D_t)``."""
    return (distance_weight * rkd_distance_loss(student_embeddings, teacher_embeddings)
            + angle_weight * rkd_angle_loss(student_embeddings, teacher_embeddings))
