"""Pure, per-sample loss functions (``reduction="none"`` so masks compose).

One module per method; import the functions from their module (``beyondkd.losses.dkd`` ...).
This package exports the ones every method shares.
"""

from beyondkd.losses.kd import cross_entropy, kd_kl

__all__ = ["cross_entropy", "kd_kl"]
