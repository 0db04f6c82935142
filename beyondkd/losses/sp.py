"""Similarity-preserving distillation (Tung & Mori, ICCV 2019), per row of the batch.

For a batch of ``b`` activations reshaped to ``Q ∈ R^{b × chw}``: ``G = Q Qᵀ`` (eq. 1),
each row L2-normalised, ``G̃[i,:] = G[i,:]/‖G[i,:]‖₂`` (eq. 2); the loss (eq. 3) is
``γ/b² · ‖G̃_T − G̃_S‖²_F`` (γ = 3000 on CIFAR).

SP is *batch-relational*: a row's loss depends on the other rows. We return the row sums
``l_i = (1/b) Σ_j (G̃_T − G̃_S)²_ij`` so that ``mean_i l_i`` equals the paper's
``‖·‖²_F / b²`` exactly; a row's value is that sample's share of the relational loss.
"""

from __future__ import annotations

from torch import Tensor

from beyondkd.losses._safe import EPS, safe_normalize
from beyondkd.losses.precision import full_precision


@full_precision
def similarity_matrix(features: Tensor) -> Tensor:
    """Row-normalised batch similarity ``G̃`` (eq. 1–2) of ``features`` ``(b, ...)`` -> ``(b, b)``."""
    q = features.flatten(1)
    q = q / q.detach().abs().amax().clamp_min(EPS)  # one global scale: G̃ is unchanged, G cannot overflow
    g = q @ q.t()
    return safe_normalize(g, dim=1)


@full_precision
def sp_loss(student_features: Tensor, teacher_features: Tensor) -> Tensor:
    """Per-row similarity-preserving loss.

    Args:
        student_features: ``(b, ...)`` student activations.
        teacher_features: ``(b, ...)`` teacher activations (any shape per sample);
            gradients do not flow into them.

    Returns:
        ``(b,)`` with ``mean`` equal to ``‖G̃_T − G̃_S‖²_F / b²``.
    """
    gs = similarity_matrix(student_features)
    gt = similarity_matrix(teacher_features.detach())
    b = gs.shape[0]
    return (gt - gs).pow(2).sum(1) / b
