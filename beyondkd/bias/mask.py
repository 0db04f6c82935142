"""Bias elimination: which rows of a batch the teacher gets right.

BTKD §"Eliminating Biased Knowledge from Teacher": the teacher's prediction ``argmax(P^T)`` is
compared with the label; rows where they agree carry *right knowledge* (the easy set), the
others carry *biased knowledge* (the hard set). The mask is computed per sample on the very
batch the student sees (augmented or not).
"""

from __future__ import annotations

import torch
from torch import Tensor


def teacher_right_mask(teacher_logits: Tensor, target: Tensor) -> Tensor:
    """Mask of rows on which the teacher's top class equals the label.

    Args:
        teacher_logits: ``(N, C)`` teacher logits or probabilities (argmax is the same).
        target: ``(N,)`` integer class labels.

    Returns:
        ``(N,)`` boolean tensor, ``True`` where ``argmax(teacher_logits) == target``.
        Ties are broken towards the lowest class index (``torch.argmax``'s rule).
    """
    if teacher_logits.dim() != 2:
        raise ValueError(f"teacher_logits must be (N, C), got shape {tuple(teacher_logits.shape)}")
    if target.shape != teacher_logits.shape[:1]:
        raise ValueError(
            f"target must be (N,) with N={teacher_logits.shape[0]}, got shape {tuple(target.shape)}"
        )
    with torch.no_grad():
        return teacher_logits.argmax(dim=1) == target
