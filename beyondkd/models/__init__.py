"""Model zoo: one registry for every architecture (see :mod:`beyondkd.models.registry`)."""

from beyondkd._discovery import import_submodules
from beyondkd.models.features import FeatureHooks, resolve_feature_point
from beyondkd.models.registry import (
    ModelSpec,
    build_model,
    count_flops,
    count_parameters,
    get_spec,
    model_names,
    register_model,
)

import_submodules(__name__)

__all__ = [
    "FeatureHooks",
    "ModelSpec",
    "build_model",
    "count_flops",
    "count_parameters",
    "get_spec",
    "model_names",
    "register_model",
    "resolve_feature_point",
]
