"""FitNets hint loss (Romero et al., ICLR 2015, eq. 3), per sample.

``L_HT = ½ ‖u_h(x) − r(v_g(x))‖²`` between the teacher's hint layer ``u_h`` and the student's
guided layer ``v_g`` after a regressor ``r``. As in the field's implementations (CRD,
mdistiller) the squared error is *averaged* over channels and positions (not summed) and the
½ is folded into the weight (β = 100 on CIFAR-100).
"""

from __future__ import annotations

from torch import Tensor

from beyondkd.losses.precision import full_precision


@full_precision
def hint_loss(student_hint: Tensor, teacher_hint: Tensor) -> Tensor:
    """Per-sample mean squared error between regressed student and teacher features.

    Args:
        student_hint: ``(N, C, H, W)`` (or ``(N, D)``) regressed student features.
        teacher_hint: same shape; gradients do not flow into it.

    Returns:
        ``(N,)`` mean over all non-batch dimensions of ``(s − t)²``.
    """
    diff = student_hint - teacher_hint.detach()
    return diff.pow(2).flatten(1).mean(1)
