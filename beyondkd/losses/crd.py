"""Contrastive representation distillation (CRD, Tian et al., ICLR 2020): the pure pieces.

CRD maximises a lower bound on the mutual information between teacher and student
representations. For a sample ``i`` with L2-normalised embeddings ``s_i`` (student) and ``t_i``
(teacher), the *positive* pair is ``(s_i, t_i)`` and the ``K`` *negatives* are ``(s_i, t_j)``
for other samples ``j`` read from a memory bank of past teacher embeddings (and symmetrically
for the teacher side against a student memory bank).

The critic is ``h(s, t) = exp(s·t / τ) / Z`` (CRD eq. 19, τ = 0.07), where ``Z`` is a constant
estimating the partition function (the authors set it once, from the first batch, to
``mean(exp(s·t/τ)) · M`` for a dataset of ``M`` samples). With ``P_n = 1/M`` the uniform noise
distribution, the NCE loss of a sample (CRD eq. 18 applied to the ``1 + K`` pairs) is::

    − log( h_pos / (h_pos + K P_n) ) − Σ_k log( K P_n / (h_k + K P_n) )

:func:`nce_loss` computes it per sample; :func:`contrast_scores` computes ``exp(v·m/τ)`` for
a batch of embeddings against gathered memory rows; :func:`momentum_update` is the bank update
``m ← normalise(μ m + (1 − μ) v)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from beyondkd.losses.precision import full_precision


@full_precision
def contrast_scores(embeddings: Tensor, memory_rows: Tensor, nce_t: float = 0.07) -> Tensor:
    """Unnormalised critic scores ``exp(v_i · m_ik / τ)``.

    Args:
        embeddings: ``(N, D)`` L2-normalised embeddings ``v``.
        memory_rows: ``(N, 1 + K, D)`` memory rows per sample (column 0 the positive).
        nce_t: temperature ``τ``.

    Returns:
        ``(N, 1 + K)`` positive scores (``≤ exp(1/τ)`` for unit vectors).
    """
    dots = torch.bmm(memory_rows, embeddings.unsqueeze(2)).squeeze(2)
    return torch.exp(dots / nce_t)


@full_precision
def nce_loss(scores: Tensor, noise_prob: float, eps: float = 1e-7) -> Tensor:
    """Per-sample NCE loss of CRD (eq. 18) for scores already divided by ``Z``.

    Args:
        scores: ``(N, 1 + K)`` normalised critic values ``h``; column 0 is the positive pair.
        noise_prob: ``P_n = 1 / M``, the probability of a sample under uniform noise.
        eps: added inside the logarithms' denominators, as in the authors' code.

    Returns:
        ``(N,)`` ``−log D(pos) − Σ_k log(1 − D(neg_k))`` with ``D(h) = h / (h + K P_n)``.
    """
    k = scores.shape[1] - 1
    m_pn = k * noise_prob
    pos = scores[:, 0]
    neg = scores[:, 1:]
    log_d1 = torch.log(pos / (pos + m_pn + eps))
    log_d0 = torch.log(m_pn / (neg + m_pn + eps))
    return -(log_d1 + log_d0.sum(dim=1))


@torch.no_grad()
def momentum_update(memory: Tensor, indices: Tensor, embeddings: Tensor, momentum: float = 0.5) -> None:
    """In place: ``memory[i] ← normalise(μ · memory[i] + (1 − μ) · v_i)`` for the batch rows.

    Args:
        memory: ``(M, D)`` bank (a buffer), updated in place.
        indices: ``(N,)`` dataset positions of the batch.
        embeddings: ``(N, D)`` new embeddings (detached here).
        momentum: ``μ ∈ [0, 1)``.
    """
    rows = memory.index_select(0, indices)
    mixed = rows * momentum + embeddings.detach().to(memory.dtype) * (1.0 - momentum)
    memory.index_copy_(0, indices, F.normalize(mixed, dim=1))


def sample_negatives(indices: Tensor, num_samples: int, k: int, generator: torch.Generator | None = None) -> Tensor:
    """``K`` uniform negatives per sample, never the sample itself, drawn on ``indices.device``.

    ``j = (i + 1 + r) mod M`` with ``r`` uniform in ``[0, M − 1)`` is uniform over the ``M − 1``
    other samples.

    Args:
        indices: ``(N,)`` dataset positions (the positives).
        num_samples: ``M``, the dataset size (> 1).
        k: negatives per sample.
        generator: optional generator on the same device.

    Returns:
        ``(N, 1 + K)`` int64: column 0 ``indices``, columns 1.. the negatives.
    """
    if num_samples < 2:
        raise ValueError("CRD needs at least 2 training samples")
    n = indices.shape[0]
    r = torch.randint(0, num_samples - 1, (n, k), device=indices.device, generator=generator)
    negatives = (indices.view(-1, 1) + 1 + r) % num_samples
    return torch.cat([indices.view(-1, 1), negatives], dim=1)
