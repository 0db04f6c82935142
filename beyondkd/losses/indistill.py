"""InDistill (Sarridis et al., WACV 2025): width matching by channel pruning, then direct MSE.

InDistill makes a teacher layer as narrow as the student's by *structured L1 pruning*: the
teacher layer's convolution filters are ranked by the L1 norm of their weights and only the
``C_s`` largest are kept. The pruned layer is applied to the *unpruned* teacher's input to that
layer, so its output is exactly the kept channels of the teacher's feature map (batch norm,
ReLU and pooling act per channel). Those channels are transferred directly to the student's
layer with a mean squared error — no encoder or connector between them.
"""

from __future__ import annotations

import torch
from torch import Tensor

from beyondkd.losses.precision import full_precision


def l1_kept_channels(conv_weight: Tensor, keep: int) -> Tensor:
    """Indices (ascending) of the ``keep`` output filters with the largest L1 norm.

    Args:
        conv_weight: ``(C_out, C_in, k, k)`` weights of the teacher layer's convolution.
        keep: number of channels to keep (the student layer's width), ``1 ≤ keep ≤ C_out``.

    Returns:
        ``(keep,)`` long tensor; ties are broken by the lower index.
    """
    c_out = conv_weight.shape[0]
    if not 1 <= keep <= c_out:
        raise ValueError(f"cannot keep {keep} of {c_out} channels")
    norms = conv_weight.detach().abs().flatten(1).sum(1).double()
    # stable ordering: sort by (-norm, index)
    order = sorted(range(c_out), key=lambda i: (-float(norms[i]), i))[:keep]
    return torch.tensor(sorted(order), dtype=torch.long, device=conv_weight.device)


@full_precision
def pruned_feature_mse(student: Tensor, teacher: Tensor, kept: Tensor) -> Tensor:
    """Per-sample MSE between the student's map and the teacher's kept channels.

    Args:
        student: ``(N, C_s, H, W)`` (or ``(N, C_s)``).
        teacher: ``(N, C_t, H, W)`` with ``C_t ≥ C_s``; no gradient flows into it.
        kept: ``(C_s,)`` channel indices of the pruned teacher layer.

    Returns:
        ``(N,)`` mean over channels and positions of ``(S − T[:, kept])²``.
    """
    t = teacher.detach().index_select(1, kept.to(teacher.device))
    return (student - t).pow(2).flatten(1).mean(1)
