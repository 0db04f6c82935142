"""Bias rectification: turn the teacher's wrong rows into right knowledge.

BTKD §"Rectifying Biased Knowledge", equations 3–7. For a row where the teacher is wrong let
``a`` be the label, ``b`` the teacher's top class, ``t_a`` and ``t_b`` their probabilities and
``t_o`` all other probabilities.

``paper`` (eq. 4–7)
    ``t'_a = (t_a + 1) / 2``, ``t'_b = t_b / 2`` (eq. 4), then both are rescaled by
    ``(t_a + t_b) / (t'_a + t'_b)`` (eq. 7) so the row still sums to 1 and ``t_o`` is untouched.
    The denominator is ``(t_a + t_b + 1) / 2 >= 1/2``: it never vanishes. Contrary to the
    paper's text, the label does not always become the top class: with ``t = (a: 0.00,
    b: 0.34, c: 0.33)`` the new ``t_a`` is about 0.25 < 0.33. A saturated row (``t_b = 1``)
    becomes an exact tie ``0.5 / 0.5``.
``strict`` (ours)
    Like ``paper`` but guarantees ``argmax = label`` with a strict margin. The mass
    ``m = t_a + t_b`` is shared between ``a`` and ``b`` exactly as in eq. 7, except that the
    label receives at least ``(m + max(o, m/2)) / 2`` where ``o`` is the largest other
    probability: halfway between the smallest share that would make it the top class and the
    whole of ``m``. ``t_o`` is untouched. Only when that is impossible (the teacher's top class
    ties another class and the label has ~0 mass, so ``m <= o``) is the row mixed half-and-half
    with the one-hot label, which puts at least 1/2 on the label and at most 1/4 elsewhere.
``swap``
    Exchanges ``t_a`` and ``t_b`` (one version of the authors' code swaps the two logits, which
    is the same thing after a softmax). The label becomes a top class (ties keep the lowest
    index, as ``argmax`` does).
``label_smooth`` (research option)
    Replaces the wrong row by the label-smoothed one-hot ``(1 - eps) * onehot(a) + eps / C``.
``toward_label`` (research option, ours)
    Moves the wrong row toward the one-hot label in proportion to the teacher's error on it:
    ``t' = (1 - α) t + α onehot(a)`` with ``α = 1 - t_a``. A row that is nearly right moves
    little, a confidently wrong one (``t_a ≈ 0``) becomes almost one-hot. The label is always
    the strict top class: ``t'_a = 1 - t_a + t_a²`` while every other entry is at most
    ``t_a (1 - t_a)``, and ``1 - 2 t_a + 2 t_a² > 0``. The other classes keep their ratios.

Rows on which the teacher is right are returned bit-for-bit unchanged by every variant. Which
rows are right is decided once, by the caller's mask when one is given (the plug-in passes the
mask it computed from the logits, so a near-tie that the float32 softmax would flip is never
rectified), else by ``argmax`` of the input.

Computation is in the input's dtype (float64 stays float64); half-precision inputs are computed
in float32 and returned in their own dtype.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import Tensor

from beyondkd.bias.mask import teacher_right_mask

RectifyVariant = Literal["paper", "strict", "swap", "label_smooth", "toward_label"]
RECTIFY_VARIANTS: tuple[str, ...] = get_args(RectifyVariant)


def _check_variant(variant: str) -> None:
    if variant not in RECTIFY_VARIANTS:
        raise ValueError(
            f"unknown rectification variant '{variant}': choose one of {', '.join(RECTIFY_VARIANTS)}"
        )


def _compute_dtype(x: Tensor) -> torch.dtype:
    """The dtype to compute in: the input's, or float32 for half-precision and integer inputs."""
    return x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32


def _right_rows(x: Tensor, target: Tensor, right: Tensor | None) -> Tensor:
    """The caller's mask of right rows (checked), or ``argmax(x) == target``."""
    if right is None:
        return teacher_right_mask(x, target)
    if right.shape != target.shape or right.dtype != torch.bool:
        raise ValueError(f"right must be a (N,) bool mask like target {tuple(target.shape)}, got {tuple(right.shape)} {right.dtype}")
    return right


def _gather(x: Tensor, index: Tensor) -> Tensor:
    return x.gather(1, index.unsqueeze(1)).squeeze(1)


def _scatter(x: Tensor, index: Tensor, values: Tensor) -> Tensor:
    return x.scatter(1, index.unsqueeze(1), values.unsqueeze(1))


def paper_rectified_pair(t_a: Tensor, t_b: Tensor) -> tuple[Tensor, Tensor]:
    """Equations 4 and 7: the rectified probabilities of the label and of the top wrong class.

    Args:
        t_a: ``(N,)`` teacher probability of the label.
        t_b: ``(N,)`` teacher probability of its top (wrong) class.

    Returns:
        ``(t_a_new, t_b_new)``, each ``(N,)``, with ``t_a_new + t_b_new = t_a + t_b``.
    """
    t_a_half = (t_a + 1.0) / 2.0  # eq. 4
    t_b_half = t_b / 2.0  # eq. 4
    scale = (t_a + t_b) / (t_a_half + t_b_half)  # eq. 7; denominator >= 1/2
    return t_a_half * scale, t_b_half * scale


def rectify(
    teacher_probs: Tensor,
    target: Tensor,
    variant: RectifyVariant = "paper",
    *,
    smoothing: float = 0.1,
    right: Tensor | None = None,
    top: Tensor | None = None,
) -> Tensor:
    """Rectify the rows of a teacher distribution on which the teacher is wrong.

    Args:
        teacher_probs: ``(N, C)`` rows of probabilities (each row sums to 1), e.g.
            ``softmax(teacher_logits / T)``.
        target: ``(N,)`` integer labels.
        variant: ``"paper"`` (eq. 4–7), ``"strict"``, ``"swap"``, ``"label_smooth"`` or
            ``"toward_label"``; see the module docstring.
        smoothing: ``eps`` of the ``label_smooth`` variant, in ``[0, 1)``.
        right: ``(N,)`` bool mask of the rows the teacher gets right (left unchanged); by
            default ``argmax(teacher_probs) == target``.
        top: ``(N,)`` the teacher's top class on each row (``b``), when the caller decided it on
            the logits; by default ``argmax(teacher_probs)`` (the runner-up where that is the
            label of a row ``right`` calls wrong).

    Returns:
        ``(N, C)`` tensor of the input's dtype. Right rows are unchanged; every row still sums
        to 1; for ``paper``, ``strict`` (bar its documented fallback) and ``swap`` only the
        label's and the teacher's top class's entries change.
    """
    _check_variant(variant)
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
    right = _right_rows(teacher_probs, target, right)
    p = teacher_probs.detach().to(_compute_dtype(teacher_probs))
    a = target.long()
    # the wrong row's top class; on a row that ``right`` calls wrong although its top class is
    # the label (a near-tie decided on the logits), the runner-up plays the teacher's top class
    if top is None:
        b = _scatter(p, a, torch.full_like(_gather(p, a), -1.0)).argmax(dim=1)
        b = torch.where(p.argmax(dim=1) == a, b, p.argmax(dim=1))
    else:
        b = top.long()
    t_a, t_b = _gather(p, a), _gather(p, b)
    num_classes = p.shape[1]

    if variant == "swap":
        new = _scatter(_scatter(p, b, t_a), a, t_b)
    elif variant == "label_smooth":
        onehot = torch.nn.functional.one_hot(a, num_classes).to(p.dtype)
        new = (1.0 - smoothing) * onehot + smoothing / num_classes
    elif variant == "toward_label":
        alpha = (1.0 - t_a).unsqueeze(1)
        new = (1.0 - alpha) * p + alpha * torch.nn.functional.one_hot(a, num_classes).to(p.dtype)
    else:
        new_a, new_b = paper_rectified_pair(t_a, t_b)
        if variant == "strict":
            mass = t_a + t_b
            others = _scatter(_scatter(p, a, torch.zeros_like(t_a)), b, torch.zeros_like(t_a))
            top_other = others.max(dim=1).values
            lowest_winning = torch.maximum(top_other, mass / 2.0)
            new_a = torch.maximum(new_a, (mass + lowest_winning) / 2.0)
            new_b = (mass - new_a).clamp_min(0.0)
        new = _scatter(_scatter(p, b, new_b), a, new_a)
        if variant == "strict":
            new_a_row = _gather(new, a)
            rivals = _scatter(new, a, torch.full_like(new_a_row, -1.0))
            impossible = new_a_row <= rivals.max(dim=1).values
            onehot = torch.nn.functional.one_hot(a, num_classes).to(p.dtype)
            new = torch.where(impossible.unsqueeze(1), 0.5 * new + 0.5 * onehot, new)

    out = torch.where(right.unsqueeze(1), p, new)
    return out.to(teacher_probs.dtype) if teacher_probs.dtype != out.dtype else out


def rectified_teacher_logits(
    teacher_logits: Tensor,
    target: Tensor,
    temperature: float = 1.0,
    variant: RectifyVariant = "paper",
    *,
    smoothing: float = 0.1,
    right: Tensor | None = None,
) -> Tensor:
    """Rectify at temperature ``T`` and re-express the result as logits.

    Returns ``z'`` with ``softmax(z' / T) == rectify(softmax(z / T))``, so that any logit-based
    method (KD, DKD, CTKD, ...) can consume a rectified teacher without change. Entries that
    rectification leaves untouched keep their exact ``T * log_softmax(z / T)`` value; changed
    entries are ``T * log(p_new)`` with ``p_new`` clamped to the smallest normal float, so the
    result is finite for any finite input.

    Args:
        teacher_logits: ``(N, C)`` raw teacher logits.
        target: ``(N,)`` integer labels.
        temperature: ``T > 0`` at which the teacher distribution is rectified.
        variant: see :func:`rectify`.
        right: ``(N,)`` bool mask of right rows (kept unchanged); by default
            ``argmax(teacher_logits) == target``, decided on the logits, not on the softmax.

    Returns:
        ``(N, C)`` tensor of logits (rows shifted by a per-row constant), in the logits' dtype
        (float32 for half-precision logits).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    right = _right_rows(teacher_logits, target, right)
    z = teacher_logits.detach()
    log_p = torch.log_softmax(z.to(_compute_dtype(z)) / temperature, dim=1)
    p = log_p.exp()
    # which rows are wrong and which class the teacher puts on top are decided once, on the logits
    # (a float32 softmax can round a near-tie either way)
    p_new = rectify(p, target, variant, smoothing=smoothing, right=right, top=z.argmax(dim=1))
    tiny = torch.finfo(p_new.dtype).tiny
    log_p_new = torch.where(p_new == p, log_p, p_new.clamp_min(tiny).log())
    return torch.where(right.unsqueeze(1), temperature * log_p, temperature * log_p_new)


def paper_formula_on_logits(teacher_logits: Tensor, target: Tensor, eps: float = 1e-3, right: Tensor | None = None) -> Tensor:
    """Equations 4–7 applied to *raw logits*, as one version of the authors' code does.

    This is offered only to reproduce that code: logits are not probabilities, so the result
    has no probabilistic meaning, and the denominator ``(z_a + z_b + 1) / 2`` vanishes when
    ``z_a + z_b = -1``. Here its magnitude is clamped to at least ``eps`` (keeping its sign), so
    the output is always finite. Right rows are unchanged.

    Args:
        teacher_logits: ``(N, C)`` raw logits.
        target: ``(N,)`` integer labels.
        eps: smallest allowed magnitude of the denominator.
        right: ``(N,)`` bool mask of right rows (kept unchanged); by default from ``argmax``.

    Returns:
        ``(N, C)`` tensor in the logits' dtype (float32 for half precision).
    """
    right = _right_rows(teacher_logits, target, right)
    z = teacher_logits.detach().to(_compute_dtype(teacher_logits))
    a = target.long()
    b = z.argmax(dim=1)
    z_a, z_b = _gather(z, a), _gather(z, b)
    z_a_half, z_b_half = (z_a + 1.0) / 2.0, z_b / 2.0
    denom = z_a_half + z_b_half
    sign = torch.where(denom < 0, -1.0, 1.0)
    denom = torch.where(denom.abs() < eps, sign * eps, denom)
    scale = (z_a + z_b) / denom
    new = _scatter(_scatter(z, b, z_b_half * scale), a, z_a_half * scale)
    return torch.where(right.unsqueeze(1), z, new)
