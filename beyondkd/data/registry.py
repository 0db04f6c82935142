"""One registry of datasets: ``build_splits(name, root=..., ...)`` returns train/val :class:`Splits`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

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
    """

    name: str
    builder: SplitsBuilder
    default_root: str | None
    description: str


_REGISTRY: dict[str, DatasetSpec] = {}


def register_dataset(name: str, *, default_root: str | None, description: str) -> Callable[[SplitsBuilder], SplitsBuilder]:
    """Decorator registering a splits builder under ``name``."""

    def wrap(builder: SplitsBuilder) -> SplitsBuilder:
        if name in _REGISTRY:
            raise ValueError(f"dataset '{name}' is already registered")
        _REGISTRY[name] = DatasetSpec(name, builder, default_root, description)
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


def build_splits(name: str, root: str | None = None, **kwargs: object) -> Splits:
    """Load a dataset's splits from ``root`` (or its default location)."""
    spec = get_dataset_spec(name)
    return spec.builder(root=root if root is not None else spec.default_root, **kwargs)
