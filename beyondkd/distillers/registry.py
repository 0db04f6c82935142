"""Registry of distillation methods: ``@register_distiller`` and ``build_distiller``."""

from __future__ import annotations

from typing import Any, Callable

from pydantic import ValidationError
from torch import nn

from beyondkd.bias.loss import BiasConfig
from beyondkd.distillers.base import Distiller, DistillerContext
from beyondkd.errors import ConfigError, suggest

_REGISTRY: dict[str, type[Distiller]] = {}


def register_distiller(name: str) -> Callable[[type[Distiller]], type[Distiller]]:
    """Class decorator registering a :class:`Distiller` under ``name``."""

    def wrap(cls: type[Distiller]) -> type[Distiller]:
        if name in _REGISTRY:
            raise ValueError(f"method '{name}' is already registered")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def _ensure_loaded() -> None:
    import beyondkd.distillers  # noqa: F401


def method_names() -> list[str]:
    _ensure_loaded()
    return sorted(_REGISTRY)


def get_distiller_class(name: str) -> type[Distiller]:
    _ensure_loaded()
    if name not in _REGISTRY:
        raise ConfigError(
            f"unknown method '{name}'{suggest(name, list(_REGISTRY))}: choose one of {', '.join(sorted(_REGISTRY))}"
        )
    return _REGISTRY[name]


def format_validation_error(exc: ValidationError, where: str) -> str:
    """One line describing the first problem of a pydantic ``ValidationError``."""
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        return f"unknown key '{loc}' in {where}"
    if err["type"] == "missing":
        return f"missing key '{loc}' in {where}"
    msg = err["msg"].removeprefix("Value error, ")
    return f"bad value for '{loc}' in {where}: {msg} (got {err.get('input')!r})"


def validate_params(cls: type[Distiller], params: dict[str, Any] | None) -> Any:
    """Validate a method's hyper-parameters, raising a one-line :class:`ConfigError`."""
    params = dict(params or {})
    try:
        return cls.Params(**params)
    except ValidationError as exc:
        err = exc.errors()[0]
        if err["type"] == "extra_forbidden":
            key = str(err["loc"][0])
            allowed = sorted(cls.Params.model_fields)
            raise ConfigError(
                f"unknown parameter '{key}' for method '{cls.name}'{suggest(key, allowed)}: "
                f"allowed are {', '.join(allowed) or 'none'}"
            ) from None
        raise ConfigError(format_validation_error(exc, f"method '{cls.name}' params")) from None


def build_distiller(
    name: str,
    student: nn.Module,
    teacher: nn.Module | None,
    params: dict[str, Any] | None,
    bias: BiasConfig | None,
    context: DistillerContext,
) -> Distiller:
    """Instantiate method ``name`` with validated parameters."""
    cls = get_distiller_class(name)
    validated = validate_params(cls, params)
    if bias is not None and not cls.supports_bias:
        raise ConfigError(f"method '{name}' does not take the bias plug-in: remove 'method.bias' from the config")
    if cls.needs_teacher and teacher is None:
        raise ConfigError(f"method '{name}' needs a teacher: add a 'teacher:' section with a checkpoint")
    return cls(student, teacher, validated, bias, context)
