"""One registry of datasets: ``build_splits(name, root=..., ...)`` returns train/val :class:`Splits`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from pydantic import BaseModel, ValidationError

from beyondkd.data.base import Splits
from beyondkd.errors import ConfigError, suggest

SplitsBuilder = Callable[..., Splits]


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset.

    Attributes:
        name: registry name.
        builder: ``builder(root=..., download=..., image_size=...) -> Splits``.
        default_root: where the data is looked for when no root is given.
        description: one line for ``beyondkd datasets``.
        options: pydantic model of the dataset's ``data.options`` (None: it takes none); the
            validated fields are passed to ``builder`` as keyword arguments.
    """

    name: str
    builder: SplitsBuilder
    default_root: str | None
    description: str
    options: type[BaseModel] | None = None


_REGISTRY: dict[str, DatasetSpec] = {}


def register_dataset(
    name: str, *, default_root: str | None, description: str, options: type[BaseModel] | None = None
) -> Callable[[SplitsBuilder], SplitsBuilder]:
    """Decorator registering a splits builder under ``name`` (``options``: see :class:`DatasetSpec`)."""

    def wrap(builder: SplitsBuilder) -> SplitsBuilder:
        if name in _REGISTRY:
            raise ValueError(f"dataset '{name}' is already registered")
        _REGISTRY[name] = DatasetSpec(name, builder, default_root, description, options)
        return builder

    return wrap


def dataset_names() -> list[str]:
    import beyondkd.data  # noqa: F401  (registers the built-in datasets)

    return sorted(_REGISTRY)


def get_dataset_spec(name: str) -> DatasetSpec:
    import beyondkd.data  # noqa: F401

    if name not in _REGISTRY:
        raise ConfigError(
            f"unknown dataset '{name}'{suggest(name, list(_REGISTRY))}: choose one of {', '.join(sorted(_REGISTRY))}"
        )
    return _REGISTRY[name]


def validate_options(name: str, options: dict[str, Any] | None) -> dict[str, Any]:
    """``data.options`` of dataset ``name`` checked against its options model, as builder keyword arguments.

    Raises:
        ConfigError: one line naming the key (unknown, or a bad value) or, for a dataset
            without options, that it takes none.
    """
    spec = get_dataset_spec(name)
    options = dict(options or {})
    if spec.options is None:
        if options:
            raise ConfigError(f"dataset '{name}' takes no data.options (got {', '.join(sorted(options))}): remove them")
        return {}
    try:
        return spec.options(**options).model_dump()
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        allowed = sorted(spec.options.model_fields)
        if err["type"] == "extra_forbidden":
            raise ConfigError(f"unknown key 'data.options.{key}' for dataset '{name}'{suggest(key, allowed)}: "
                              f"allowed are {', '.join(allowed)}") from None
        msg = err["msg"].removeprefix("Value error, ")
        raise ConfigError(f"bad value for 'data.options.{key}' of dataset '{name}': {msg} (got {err.get('input')!r})") from None


def build_splits(name: str, root: str | None = None, options: dict[str, Any] | None = None, **kwargs: object) -> Splits:
    """Load a dataset's splits from ``root`` (or its default location), with its validated ``options``.

    An option that is also a keyword argument (``image_size``) may be given in either place, not
    two different values.
    """
    spec = get_dataset_spec(name)
    merged = dict(kwargs)
    for key, value in validate_options(name, options).items():
        given = merged.get(key)
        if given is not None and value is not None and given != value:
            raise ConfigError(f"data.{key} is {given!r} but data.options.{key} is {value!r}: give it once")
        if given is None:
            merged[key] = value
    return spec.builder(root=root if root is not None else spec.default_root, **merged)
