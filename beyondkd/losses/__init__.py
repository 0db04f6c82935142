"""Pure, per-sample loss functions (``reduction="none"`` so masks compose)."""

from beyondkd.losses.kd import cross_entropy, kd_kl

__all__ = ["cross_entropy", "kd_kl"]
