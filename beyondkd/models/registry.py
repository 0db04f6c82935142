"""One registry for every model: build by name, list, and find its feature points.

A model is registered with the size of image it is made for and its *feature points*: semantic
names (``stage1`` ... ``stageK``, ``pool``, ``preact_stageK``) mapped to module paths that the
feature methods hook (:mod:`beyondkd.models.features`). A path ending in ``:in`` means "the
input of that module", which is how pre-ReLU features are read without rewriting a model.

Any ``timm`` model is available as ``timm:<name>`` when timm is installed, and any torchvision
classification model as ``torchvision:<name>``; their feature points are found on the built
model (:mod:`beyondkd.models.discover`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from beyondkd.errors import BeyondKDError, ConfigError, suggest

ModelBuilder = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelSpec:
    """A registered model.

    Attributes:
        name: registry name.
        builder: ``builder(num_classes=..., in_channels=..., **kwargs) -> nn.Module``.
        family: ``mnist``, ``cifar`` (32×32 stem) or ``imagenet`` (224×224 stem).
        input_size: the image side the model is made for.
        feature_points: semantic feature name -> module path (``path:in`` for a module's input).
        description: one line for ``beyondkd models``.
        discover: ``discover(model, in_channels) -> feature_points``, run on each built model
            when the points depend on the model (timm's ``feature_info``; torchvision's traced).
        weights: where the library's pretrained weights come from (``timm:<name>``,
            ``torchvision:<builder>``; :mod:`beyondkd.models.pretrained`), None if nowhere.
    """

    name: str
    builder: ModelBuilder
    family: str
    input_size: int
    feature_points: dict[str, str] = field(default_factory=dict)
    description: str = ""
    discover: Callable[[nn.Module, int], dict[str, str]] | None = None
    weights: str | None = None


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(
    name: str,
    *,
    family: str,
    input_size: int,
    feature_points: dict[str, str] | None = None,
    description: str = "",
    weights: str | None = None,
) -> Callable[[ModelBuilder], ModelBuilder]:
    """Decorator registering ``builder`` under ``name`` (``weights``: see :class:`ModelSpec`)."""

    def wrap(builder: ModelBuilder) -> ModelBuilder:
        if name in _REGISTRY:
            raise ValueError(f"model '{name}' is already registered")
        _REGISTRY[name] = ModelSpec(name, builder, family, input_size, dict(feature_points or {}), description,
                                    weights=weights)
        return builder

    return wrap


def _ensure_loaded() -> None:
    # Importing the package registers every built-in architecture.
    import beyondkd.models  # noqa: F401


def model_names() -> list[str]:
    """Registered model names, sorted."""
    _ensure_loaded()
    return sorted(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of ``name`` (``timm:<name>`` and ``torchvision:<name>`` get generic specs)."""
    _ensure_loaded()
    from beyondkd.models import discover

    if name.startswith("timm:"):
        return ModelSpec(name, _timm_builder(name[5:]), "timm", 224, {}, f"timm model {name[5:]}",
                         discover=discover.timm_feature_points, weights=name)
    if name.startswith("torchvision:"):
        return ModelSpec(name, _torchvision_builder(name[12:]), "torchvision", 224, {},
                         f"torchvision model {name[12:]}", discover=discover.traced_feature_points, weights=name)
    if name not in _REGISTRY:
        raise ConfigError(
            f"unknown model '{name}'{suggest(name, list(_REGISTRY))}: run 'beyondkd models' to list "
            "the models, or use timm:<name> / torchvision:<name> for a timm or torchvision model"
        )
    return _REGISTRY[name]


def _timm_builder(timm_name: str) -> ModelBuilder:
    def build(num_classes: int, in_channels: int = 3, pretrained: bool = False, **kwargs: object) -> nn.Module:
        try:
            import timm
        except ImportError as exc:
            raise BeyondKDError("model 'timm:...' needs timm: pip install timm") from exc
        arch = timm_name.partition(".")[0]  # resnet50.a1_in1k: an architecture and a weights tag
        if arch not in timm.list_models():
            raise ConfigError(f"unknown timm model '{arch}'{suggest(arch, timm.list_models())}")
        if pretrained:
            from beyondkd.models.pretrained import build_timm_pretrained

            return build_timm_pretrained(f"timm:{timm_name}", num_classes, in_channels, **kwargs)
        return timm.create_model(
            timm_name, pretrained=False, num_classes=num_classes, in_chans=in_channels, **kwargs
        )

    return build


def _torchvision_builder(tv_name: str) -> ModelBuilder:
    def build(num_classes: int, in_channels: int = 3, **kwargs: object) -> nn.Module:
        import torchvision.models as tvm

        from beyondkd.models.imagenet_torchvision import replace_first_conv

        known = tvm.list_models(module=tvm)
        if tv_name not in known:
            raise ConfigError(f"unknown torchvision classification model '{tv_name}'{suggest(tv_name, known)}")
        return replace_first_conv(tvm.get_model(tv_name, weights=None, num_classes=num_classes, **kwargs), in_channels)

    return build


def _build_pretrained(spec: ModelSpec, num_classes: int, in_channels: int, **kwargs: object) -> nn.Module:
    """``spec``'s model with its library's pretrained weights (:mod:`beyondkd.models.pretrained`)."""
    from beyondkd.models import pretrained as lib

    if spec.weights is None:
        raise ConfigError(
            f"model '{spec.name}' has no published pretrained weights: remove pretrained: true, give a local weights "
            "file as checkpoint:, or use a timm:<name> / torchvision:<name> model"
        )
    if spec.weights.startswith("timm:"):
        return spec.builder(num_classes=num_classes, in_channels=in_channels, pretrained=True, **kwargs)
    model = spec.builder(num_classes=num_classes, in_channels=in_channels, **kwargs)
    lib.load_torchvision_pretrained(model, spec.weights.split(":", 1)[1])
    return model


def build_model(
    name: str,
    num_classes: int,
    in_channels: int = 3,
    pretrained: str | Path | None = None,
    library_weights: bool = False,
    **kwargs: object,
) -> nn.Module:
    """Build a registered model.

    Args:
        name: registry name or ``timm:<name>``.
        num_classes: size of the classifier output.
        in_channels: image channels (1 for Fashion-MNIST).
        pretrained: optional path of a local weights file (a beyondkd checkpoint, a plain
            ``state_dict``, or a CRD/mdistiller ``cifar_teachers`` file); never downloaded.
        library_weights: start from the pretrained weights timm / torchvision publish for the
            model, through their caches (:mod:`beyondkd.models.pretrained`); a classifier of
            another size starts from random init.
        **kwargs: architecture options (e.g. ``width_mult``).

    Returns:
        The model, with ``model.beyondkd_spec`` set to its :class:`ModelSpec`.
    """
    if num_classes < 1:
        raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
    if in_channels < 1:
        raise ConfigError(f"in_channels must be >= 1, got {in_channels}")
    spec = get_spec(name)
    try:
        if library_weights:
            model = _build_pretrained(spec, num_classes, in_channels, **kwargs)
        else:
            model = spec.builder(num_classes=num_classes, in_channels=in_channels, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"model '{name}' does not accept the options {sorted(kwargs)}: {exc}") from exc
    if spec.discover is not None:
        spec = replace(spec, feature_points=spec.discover(model, in_channels))
    model.beyondkd_spec = spec  # type: ignore[attr-defined]
    if pretrained is not None:
        from beyondkd.models.weights import load_pretrained

        load_pretrained(model, pretrained)
    return model


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (trainable or not) of ``model``."""
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, input_size: int, in_channels: int) -> int:
    """Multiply-accumulates of one forward pass on a ``1×C×S×S`` input, counted by FlopCounterMode.

    Works on a model built on the ``meta`` device too (no memory, no initialisation cost).

    Returns:
        MACs (FLOPs / 2) of a single image.
    """
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    first = next(iter(model.parameters()), None)
    x = torch.zeros(1, in_channels, input_size, input_size, device=first.device if first is not None else "cpu")
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    model.train(was_training)
    return counter.get_total_flops() // 2


def model_cost(name: str, num_classes: int, in_channels: int = 3, input_size: int | None = None, flops: bool = True) -> tuple[int, int]:
    """``(parameters, MACs)`` of a registered model, built on the ``meta`` device (fast, no memory).

    ``input_size`` defaults to the model's native size; MACs are 0 when ``flops`` is False.
    """
    spec = get_spec(name)
    with torch.device("meta"):
        model = build_model(name, num_classes, in_channels)
    macs = count_flops(model, input_size or spec.input_size, in_channels) if flops else 0
    return count_parameters(model), macs
