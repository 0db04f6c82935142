"""Distillation methods, one class per method (see :mod:`beyondkd.distillers.base`)."""

from beyondkd._discovery import import_submodules
from beyondkd.distillers.base import Distiller, DistillerContext, StepOutput, freeze
from beyondkd.distillers.registry import (
    build_distiller,
    get_distiller_class,
    method_names,
    register_distiller,
    validate_params,
)

import_submodules(__name__)

__all__ = [
    "Distiller",
    "DistillerContext",
    "StepOutput",
    "build_distiller",
    "freeze",
    "get_distiller_class",
    "method_names",
    "register_distiller",
    "validate_params",
]
