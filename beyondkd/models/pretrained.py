"""The pretrained weights timm and torchvision publish, loaded by name through their own caches.

``model: {name: timm:resnet50, pretrained: true}`` (or ``torchvision:resnet18``, or a registry
wrapper of a torchvision builder such as ``resnet18_imagenet``) builds the model with the
library's weights:

* **timm** (``timm:<name>`` or ``timm:<name>.<tag>``): ``timm.create_model(pretrained=True)``,
  which reads the Hugging Face hub cache (``$HF_HUB_CACHE``, by default
  ``~/.cache/huggingface/hub``; ``HF_HUB_OFFLINE=1`` keeps it off the network) or, for weights
  hosted elsewhere, the torch hub cache;
* **torchvision**: the builder's ``DEFAULT`` weights through ``torch.hub`` (the file
  ``$TORCH_HOME/hub/checkpoints/<file>``, by default ``~/.cache/torch/hub/checkpoints``).

A file already in the cache is used without touching the network; a missing one is downloaded
when the machine is online, and otherwise the error names the cache path and the alternative
(``checkpoint:`` with a local file). With another class count than the weights' (an ImageNet
head on a 10-class task) the classifier is new and randomly initialised (*re-headed*), every
other weight is the library's; with 1 input channel the first convolution's kernels are summed
over RGB (timm's convention, followed for torchvision too).
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from beyondkd.errors import BeyondKDError, ConfigError


def _library_name(source: str) -> str:
    return source.split(":", 1)[1]


def _tv_weights(builder: str):
    import torchvision.models as tvm

    try:
        return tvm.get_model_weights(builder).DEFAULT
    except ValueError:
        raise ConfigError(f"torchvision publishes no weights for '{builder}': remove pretrained: true") from None


def pretrained_classes(source: str) -> int:
    """Number of classes of the published weights (read from metadata; nothing is loaded)."""
    if source.startswith("timm:"):
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(_library_name(source))
        if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
            raise ConfigError(f"timm publishes no pretrained weights for '{_library_name(source)}': remove pretrained: true "
                              "or give a local weights file as checkpoint:")
        return int(cfg.num_classes)
    return len(_tv_weights(_library_name(source)).meta["categories"])


def _offline_error(source: str, cache: str, exc: BaseException) -> BeyondKDError:
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return BeyondKDError(
        f"no cached pretrained weights for {source} in {cache} and they could not be downloaded ({reason[:120]}): "
        "connect once to fill the cache, or give a local weights file as checkpoint: instead of pretrained: true"
    )


def hf_hub_cache() -> str:
    """The Hugging Face hub cache folder timm reads (``$HF_HUB_CACHE``)."""
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def torch_hub_cache() -> Path:
    """The folder ``torch.hub`` keeps downloaded weight files in."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def build_timm_pretrained(source: str, num_classes: int, in_channels: int, **options: object) -> nn.Module:
    """``timm.create_model(pretrained=True)`` with the cache-miss error of this module."""
    import timm

    name = _library_name(source)
    pretrained_classes(source)  # refuses names without weights before anything is built
    try:
        return timm.create_model(name, pretrained=True, num_classes=num_classes, in_chans=in_channels, **options)
    except OSError as exc:  # hub cache miss offline, connection errors (URLError, HTTP errors)
        raise _offline_error(source, f"{hf_hub_cache()} (or {torch_hub_cache()})", exc) from None
    except Exception as exc:  # noqa: BLE001 - errors of the hub client (httpx/requests) are not OSErrors everywhere
        if type(exc).__module__.split(".")[0] in ("huggingface_hub", "httpx", "requests", "urllib3"):
            raise _offline_error(source, hf_hub_cache(), exc) from None
        raise


def torchvision_state_dict(builder: str) -> dict[str, torch.Tensor]:
    """The ``DEFAULT`` weights of a torchvision builder, from the torch hub cache (downloaded if online)."""
    weights = _tv_weights(builder)
    cached = torch_hub_cache() / os.path.basename(urlparse(weights.url).path)
    try:
        return weights.get_state_dict(progress=False, check_hash=False)
    except OSError as exc:
        raise _offline_error(f"torchvision:{builder} ({weights})", str(cached), exc) from None


def adapt_first_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """RGB kernels ``(O, 3, kh, kw)`` for ``in_channels`` inputs: summed for 1, repeated and rescaled otherwise."""
    if in_channels == weight.shape[1]:
        return weight
    if in_channels == 1:
        return weight.sum(1, keepdim=True)
    reps = -(-in_channels // weight.shape[1])
    return weight.repeat(1, reps, 1, 1)[:, :in_channels] * (weight.shape[1] / in_channels)


def load_torchvision_pretrained(model: nn.Module, builder: str) -> None:
    """Load torchvision's weights into ``model`` (built with ``weights=None``), re-heading and adapting the stem.

    Keys whose shapes differ are either the first convolution (adapted with
    :func:`adapt_first_conv`) or the classifier, which keeps its random initialisation; any
    other difference is an error.
    """
    state = torchvision_state_dict(builder)
    own = model.state_dict()
    first_conv = next(n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)) + ".weight"
    keep = {}
    head = []
    for key, value in state.items():
        if key not in own:
            raise BeyondKDError(f"torchvision weights of {builder} do not fit the model: unexpected key '{key}'")
        if own[key].shape == value.shape:
            keep[key] = value
        elif key == first_conv:
            keep[key] = adapt_first_conv(value, own[key].shape[1])
        else:
            head.append(key)
    classifier = {k.rsplit(".", 1)[0] for k in head}
    if len(classifier) > 1 or (classifier and not isinstance(model.get_submodule(classifier.pop()), nn.Linear)):
        raise BeyondKDError(f"torchvision weights of {builder} do not fit the model: shapes differ at {head[:3]}")
    missing = [k for k in own if k not in keep and k not in head]
    if missing:
        raise BeyondKDError(f"torchvision weights of {builder} do not fit the model: missing '{missing[0]}'")
    model.load_state_dict({**own, **keep})


def classifier_name(model: nn.Module) -> str:
    """Module path of the classifier (timm's ``get_classifier()``, else the last ``Linear``)."""
    get = getattr(model, "get_classifier", None)
    head = get() if callable(get) else None
    names = [n for n, m in model.named_modules() if (m is head if head is not None else isinstance(m, nn.Linear))]
    return names[-1] if names else "the classifier"
