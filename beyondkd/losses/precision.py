"""The dtype a loss computes in: its inputs' own, never below float32.

A loss on float64 inputs is computed (value and gradient) in float64; on float32 inputs in
float32; on half-precision inputs (float16, bfloat16, as autocast produces) in float32, since
exponentials, logarithms and sums over classes or positions lose too much in 8–11 mantissa
bits. :func:`full_precision` applies this to a loss function: it casts the floating-point
tensor arguments to :func:`loss_dtype` and turns autocast off inside the function, so that
autocast cannot put a loss's matrix products (SP's Gram matrix, RKD's angles, CRD's scores)
back into half precision.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, TypeVar

import torch
from torch import Tensor

F = TypeVar("F", bound=Callable[..., Any])


def loss_dtype(*tensors: Tensor) -> torch.dtype:
    """The promoted floating dtype of ``tensors``, at least float32 (float64 stays float64)."""
    return functools.reduce(torch.promote_types, (t.dtype for t in tensors if t.is_floating_point()), torch.float32)


def _floating(values: Any) -> list[Tensor]:
    out = []
    for v in values:
        if isinstance(v, Tensor) and v.is_floating_point():
            out.append(v)
        elif isinstance(v, (list, tuple)):
            out.extend(x for x in v if isinstance(x, Tensor) and x.is_floating_point())
    return out


def _cast(value: Any, dtype: torch.dtype) -> Any:
    if isinstance(value, Tensor):
        return value.to(dtype) if value.is_floating_point() else value
    if isinstance(value, (list, tuple)) and any(isinstance(x, Tensor) for x in value):
        return type(value)(_cast(x, dtype) for x in value)
    return value


def full_precision(fn: F) -> F:
    """Run ``fn`` in :func:`loss_dtype` of its floating tensor arguments, autocast off.

    Floating tensors among the arguments (also inside a list or tuple argument) are cast to
    the common dtype (differentiably); other arguments pass unchanged.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        tensors = _floating([*args, *kwargs.values()])
        if not tensors:
            return fn(*args, **kwargs)
        dtype = loss_dtype(*tensors)
        with torch.autocast(tensors[0].device.type, enabled=False):
            return fn(*(_cast(a, dtype) for a in args), **{k: _cast(v, dtype) for k, v in kwargs.items()})

    return wrapper  # type: ignore[return-value]
