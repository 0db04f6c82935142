"""Attention transfer (Zagoruyko & Komodakis, ICLR 2017), per sample.

Activation-based spatial attention (§3.1): ``F(A) = Σ_c |A_c|^p`` over the channels of an
``(C, H, W)`` activation, flattened to ``Q = vec(F(A))`` of length ``H·W``. The loss (eq. 2) is
``β/2 · Σ_j ‖Q_S^j/‖Q_S^j‖₂ − Q_T^j/‖Q_T^j‖₂‖_p`` over layer pairs ``j``. Following the field's
implementation (the authors' code, CRD, mdistiller), ``F`` uses the channel *mean* of ``A^p``
(a constant factor that the normalisation removes), and the distance is the *mean* squared
difference over the ``H·W`` positions, weighted by β = 1000.
"""

from __future__ import annotations

from torch import Tensor

from beyondkd.losses._safe import safe_normalize
from beyondkd.losses.precision import full_precision


@full_precision
def attention_map(features: Tensor, p: float = 2.0) -> Tensor:
    """Normalised spatial attention ``Q/‖Q‖₂`` of ``features`` ``(N, C, H, W)`` -> ``(N, H·W)``."""
    q = features.abs().pow(p).mean(1).flatten(1)
    return safe_normalize(q, dim=1)


@full_precision
def at_loss(student_features: Tensor, teacher_features: Tensor, p: float = 2.0) -> Tensor:
    """Per-sample attention-transfer distance for one layer pair.

    Args:
        student_features: ``(N, C_s, H, W)``.
        teacher_features: ``(N, C_t, H, W)`` (channel counts may differ; the maps are
            channel-free); gradients do not flow into it.
        p: exponent of the attention map (2 in the paper's experiments).

    Returns:
        ``(N,)`` mean over positions of ``(Q_s/‖Q_s‖ − Q_t/‖Q_t‖)²``; 0 when the maps agree.
    """
    qs = attention_map(student_features, p)
    qt = attention_map(teacher_features.detach(), p)
    return (qs - qt).pow(2).mean(1)
