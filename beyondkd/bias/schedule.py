"""Schedules for the dynamic-learning weight γ (BTKD eq. 9).

``L = (1 - γ)(L_CE + L_easy) + γ L_hard`` with ``γ`` growing over training, so the student
first learns the easy (teacher-right) rows and later the hard (rectified) ones.

A schedule maps a :class:`Progress` to ``γ ∈ [0, 1]``. Built-in schedules:

``linear``   ``γ = e / E`` (eq. 9). ``per="step"`` (default) uses iterations, as the paper's
             text says; ``per="epoch"`` uses whole epochs.
``sin2``     ``γ = sin²(π e / 2E)``, per epoch, as the authors' public code does.
``constant`` ``γ = value`` throughout.
``none``     no dynamic learning: ``γ`` is reported as 0 and the loss uses constant weights
             (see :class:`beyondkd.bias.loss.BiasAwareKD`).

Every schedule takes ``cap`` (``γ = min(γ, cap)``) and ``warmup`` (a fraction of training
during which ``γ = 0`` before the schedule starts, rescaled to the remaining fraction). New
schedules register with :func:`register_schedule`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal

from beyondkd.core import Progress
from beyondkd.errors import ConfigError, suggest

__all__ = ["GammaSchedule", "Progress", "register_schedule", "schedule_names"]


@dataclass(frozen=True)
class GammaSchedule:
    """A γ schedule: ``γ = min(cap, shape(x))`` where ``x`` is the (warm-up adjusted) progress.

    Attributes:
        name: registered shape name (``linear``, ``sin2``, ``constant``, ``none`` or a custom one).
        per: ``"step"`` to follow iterations, ``"epoch"`` to follow whole epochs.
        value: the constant of the ``constant`` shape.
        cap: upper bound on γ.
        warmup: fraction of training with ``γ = 0`` before the shape starts.
    """

    name: str = "linear"
    per: Literal["step", "epoch"] = "step"
    value: float = 0.5
    cap: float = 1.0
    warmup: float = 0.0

    def __post_init__(self) -> None:
        if self.name not in _SHAPES:
            raise ConfigError(
                f"unknown gamma schedule '{self.name}'{suggest(self.name, list(_SHAPES))}: "
                f"choose one of {', '.join(sorted(_SHAPES))}"
            )
        if self.per not in ("step", "epoch"):
            raise ConfigError(f"gamma schedule 'per' must be 'step' or 'epoch', got '{self.per}'")
        for field, low, high in (("value", 0.0, 1.0), ("cap", 0.0, 1.0), ("warmup", 0.0, 1.0)):
            v = getattr(self, field)
            if not low <= v <= high:
                raise ConfigError(f"gamma schedule '{field}' must be in [{low}, {high}], got {v}")
        if self.warmup >= 1.0:
            raise ConfigError("gamma schedule 'warmup' must be < 1")

    @property
    def dynamic(self) -> bool:
        """False for ``none``: the loss then uses constant weights instead of γ."""
        return self.name != "none"

    def __call__(self, progress: Progress | float) -> float:
        """γ at ``progress`` (a :class:`Progress` or a fraction in ``[0, 1]``)."""
        if not isinstance(progress, Progress):
            progress = Progress.from_fraction(float(progress))
        x = progress.fraction if self.per == "step" else progress.epoch_fraction
        if self.warmup > 0:
            x = max(0.0, (x - self.warmup) / (1.0 - self.warmup))
        return float(min(self.cap, max(0.0, _SHAPES[self.name](x, self))))


_SHAPES: dict[str, Callable[[float, GammaSchedule], float]] = {
    "linear": lambda x, s: x,  # eq. 9: γ = e / E
    "sin2": lambda x, s: math.sin(math.pi * x / 2.0) ** 2,  # the authors' code
    "constant": lambda x, s: s.value,
    "none": lambda x, s: 0.0,
}


def register_schedule(name: str, shape: Callable[[float, GammaSchedule], float]) -> None:
    """Register a new γ shape ``shape(x, schedule) -> γ`` for ``x`` in ``[0, 1]``."""
    if name in _SHAPES:
        raise ValueError(f"gamma schedule '{name}' is already registered")
    _SHAPES[name] = shape


def schedule_names() -> list[str]:
    """Names of the registered γ shapes."""
    return sorted(_SHAPES)
